"""Memory layouts, array-likes, and the independence of inputs and outputs.

The compiled kernels read strided, negatively strided, Fortran-ordered, read-only and
byte-swapped arrays (and Python lists and tuples) as the values they hold: results are
bitwise equal (np.array_equal) to those of C-contiguous copies. Inputs are never
written to; outputs are new, writeable arrays of the inputs' dtype that share no memory
with the inputs, and changing them does not change what backward computes.
"""
from __future__ import annotations

import numpy as np
import pytest

from conftest import DTYPES, VARIANTS, assert_all_equal, make_inputs, run_contract_sequence, run_contract_step, run_sequence
from fastrnn import functional as F

N, T, D, H = 5, 4, 6, 7
LENGTHS = np.array([4, 0, 2, 4, 1])
LAYOUT_VARIANTS = ["rnn-tanh", "lstm-c0-given", "gru-reset-before"]


# ---------------------------------------------------------------- named inputs of each API


def sequence_args(v, inp) -> dict:
    a = {"x": inp.x, "h0": inp.h0, "Wx": inp.params[0], "Wh": inp.params[1], "b": inp.params[2], "dh": inp.dh,
         "dhT": inp.dhT, "lengths": LENGTHS}
    if v.cell == "lstm":
        a.update(c0=inp.c0, dcT=inp.dcT)
    if v.cell == "gru":
        a["bh"] = inp.params[3]
    return a


def run_sequence_args(v, a) -> dict:
    params = (a["Wx"], a["Wh"], a["b"]) + ((a["bh"],) if v.cell == "gru" else ())
    state0 = (a["h0"], a["c0"]) if v.cell == "lstm" else (a["h0"],)
    dfinal = (a["dhT"], a["dcT"]) if v.cell == "lstm" else (a["dhT"],)
    return run_sequence(F, v, a["x"], params, state0, a["dh"], dfinal, a["lengths"])


def contract_args(v, inp) -> dict:
    a = {"x": inp.x, "h0": inp.h0, "Wx": inp.params[0], "Wh": inp.params[1], "b": inp.params[2], "dh": inp.dh}
    if v.cell == "lstm":
        a["c0"] = inp.c0
    if v.cell == "gru":
        a["bh"] = inp.params[3]
    return a


def run_contract_args(v, a) -> dict:
    params = (a["Wx"], a["Wh"], a["b"]) + ((a["bh"],) if v.cell == "gru" else ())
    return run_contract_sequence(F, v, a["x"], a["h0"], params, a["dh"], a.get("c0"))


def step_args(v, inp) -> dict:
    a = {"x": inp.x, "prev_h": inp.h0, "Wx": inp.params[0], "Wh": inp.params[1], "b": inp.params[2],
         "dnext_h": inp.dh}
    if v.cell == "lstm":
        a.update(prev_c=inp.c0, dnext_c=inp.dcT)
    if v.cell == "gru":
        a["bh"] = inp.params[3]
    return a


def run_step_args(v, a) -> dict:
    params = (a["Wx"], a["Wh"], a["b"]) + ((a["bh"],) if v.cell == "gru" else ())
    return run_contract_step(F, v, a["x"], a["prev_h"], params, a["dnext_h"], a.get("prev_c"), a.get("dnext_c"))


# api -> (make the named arguments, run forward + backward on them, inputs are step-shaped)
APIS = {
    "sequence": (sequence_args, run_sequence_args, False),
    "contract": (contract_args, run_contract_args, False),
    "step": (step_args, run_step_args, True),
}


def named_args(api: str, variant: str, dtype: str, seed: int = 0):
    v = VARIANTS[variant]
    make, run, step = APIS[api]
    inp = make_inputs(v.cell, N, T, D, H, DTYPES[dtype], seed, step=step)
    return v, make(v, inp), run


# ---------------------------------------------------------------- layouts preserving values


def strided(a):
    """A view with step 2 along every axis of a buffer twice as large."""
    a = np.asarray(a)
    big = np.full(tuple(2 * s for s in a.shape), 99, dtype=a.dtype)
    view = big[tuple(slice(None, None, 2) for _ in a.shape)]
    view[...] = a
    assert not view.flags.c_contiguous or a.size <= 1
    return view


def reversed_strides(a):
    """The same values, every stride negative."""
    out = np.flip(np.ascontiguousarray(np.flip(a)))
    assert all(s < 0 for s, n in zip(out.strides, out.shape) if n > 1)
    return out


def fortran(a):
    return np.asfortranarray(a)


def read_only(a):
    out = np.array(a, copy=True)
    out.flags.writeable = False
    return out


def byteswapped(a):
    """The same values in the non-native byte order."""
    a = np.asarray(a)
    return a.astype(a.dtype.newbyteorder())


LAYOUTS = {
    "strided": strided,
    "negative-strides": reversed_strides,
    "fortran": fortran,
    "read-only": read_only,
    "byteswapped": byteswapped,
}


def one_argument_cases():
    for api, (make, _, step) in APIS.items():
        for variant in LAYOUT_VARIANTS:
            v = VARIANTS[variant]
            names = make(v, make_inputs(v.cell, 1, 1, 1, 1, step=step))
            for name in names:
                yield pytest.param(api, variant, name, id=f"{api}-{variant}-{name}")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("api, variant, arg", list(one_argument_cases()))
def test_one_argument_in_another_layout_gives_identical_results(api, variant, arg, layout):
    v, args, run = named_args(api, variant, "float32", seed=1)
    expected = run(v, args)
    changed = dict(args, **{arg: LAYOUTS[layout](args[arg])})
    assert np.array_equal(changed[arg], args[arg])
    assert_all_equal(run(v, changed), expected, f"{arg} {layout}")


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("variant", LAYOUT_VARIANTS)
@pytest.mark.parametrize("api", APIS)
def test_all_arguments_in_another_layout_give_identical_results(api, variant, layout, dtype):
    v, args, run = named_args(api, variant, dtype, seed=2)
    expected = run(v, args)
    changed = {k: LAYOUTS[layout](a) for k, a in args.items()}
    assert_all_equal(run(v, changed), expected, layout)


@pytest.mark.parametrize("variant", LAYOUT_VARIANTS)
def test_time_reversed_input_equals_its_contiguous_copy(variant):
    v = VARIANTS[variant]
    inp = make_inputs(v.cell, N, T, D, H, np.float64, seed=3)
    state0 = (inp.h0, inp.c0) if v.cell == "lstm" else (inp.h0,)
    x_rev = inp.x[:, ::-1]
    assert x_rev.strides[1] < 0
    a = run_sequence(F, v, x_rev, inp.params, state0, inp.dh[:, ::-1], None, LENGTHS)
    b = run_sequence(
        F, v, np.ascontiguousarray(x_rev), inp.params, state0, np.ascontiguousarray(inp.dh[:, ::-1]), None, LENGTHS
    )
    assert_all_equal(a, b, "x[:, ::-1]")


# ---------------------------------------------------------------- inputs untouched


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("variant", LAYOUT_VARIANTS + ["lstm-c0-none", "gru-reset-after", "rnn-relu"])
@pytest.mark.parametrize("api", APIS)
def test_forward_and_backward_never_modify_their_inputs(api, variant, dtype):
    v, args, run = named_args(api, variant, dtype, seed=4)
    copies = {k: np.array(a, copy=True) for k, a in args.items()}
    run(v, args)
    run(v, args)
    for k in args:
        assert args[k].dtype == copies[k].dtype and np.array_equal(args[k], copies[k]), f"{k} was modified"


# ---------------------------------------------------------------- array-likes


def to_tuples(a):
    return tuple(to_tuples(e) for e in a) if isinstance(a, list) else a


@pytest.mark.parametrize("kind", ["lists", "tuples"])
@pytest.mark.parametrize("variant", LAYOUT_VARIANTS)
@pytest.mark.parametrize("api", APIS)
def test_python_lists_and_tuples_work_like_float64_arrays(api, variant, kind):
    v, args, run = named_args(api, variant, "float64", seed=5)
    expected = run(v, args)
    convert = (lambda a: a.tolist()) if kind == "lists" else (lambda a: to_tuples(a.tolist()))
    actual = run(v, {k: convert(np.asarray(a)) for k, a in args.items()})
    assert_all_equal(actual, expected, kind)


@pytest.mark.parametrize("variant", LAYOUT_VARIANTS)
def test_lengths_as_list_or_int32_equal_int64_lengths(variant):
    v, args, run = named_args("sequence", variant, "float64", seed=6)
    expected = run(v, args)
    for lengths in (LENGTHS.tolist(), LENGTHS.astype(np.int32), LENGTHS.astype(np.uint8), tuple(LENGTHS.tolist())):
        assert_all_equal(run(v, dict(args, lengths=lengths)), expected, f"lengths {type(lengths).__name__}")


# ---------------------------------------------------------------- outputs


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("variant", LAYOUT_VARIANTS)
@pytest.mark.parametrize("api", APIS)
def test_outputs_are_new_writeable_arrays_of_the_input_dtype(api, variant, dtype):
    v, args, run = named_args(api, variant, dtype, seed=7)
    out = run(v, args)
    for name, o in out.items():
        assert type(o) is np.ndarray, f"{name} is a {type(o).__name__}"
        assert o.dtype == np.dtype(DTYPES[dtype]), f"{name} has dtype {o.dtype}, inputs {dtype}"
        assert o.flags.writeable, f"{name} is read-only"
        for k, a in args.items():
            assert not np.shares_memory(o, a), f"output {name} shares memory with input {k}"
        for other, p in out.items():
            assert other == name or not np.shares_memory(o, p), f"outputs {name} and {other} share memory"


@pytest.mark.parametrize("variant", LAYOUT_VARIANTS)
@pytest.mark.parametrize("api", APIS)
def test_changing_forward_outputs_in_place_does_not_change_backward(api, variant):
    """Forward outputs belong to the caller: scaling h in place (as in-place dropout or
    masking does) must not alter the gradients the cache later gives."""
    v = VARIANTS[variant]
    inp = make_inputs(v.cell, N, T, D, H, np.float64, seed=8, step=api == "step")
    state0 = (inp.h0, inp.c0) if v.cell == "lstm" else (inp.h0,)

    def forward():
        if api == "sequence":
            h, final, cache = F.sequence_forward(v.cell, inp.x, inp.params, state0, **v.kw)
            return [h, *final], cache
        if api == "contract":
            if v.cell == "rnn":
                h, cache = F.rnn_forward(inp.x, inp.h0, *inp.params, **v.kw)
            elif v.cell == "lstm":
                h, cache = F.lstm_forward(inp.x, inp.h0, *inp.params, c0=inp.c0)
            else:
                h, cache = F.gru_forward(inp.x, inp.h0, *inp.params, **v.kw)
            return [h], cache
        if v.cell == "rnn":
            next_h, cache = F.rnn_step_forward(inp.x, inp.h0, *inp.params, **v.kw)
            return [next_h], cache
        if v.cell == "lstm":
            next_h, next_c, cache = F.lstm_step_forward(inp.x, inp.h0, inp.c0, *inp.params)
            return [next_h, next_c], cache
        next_h, cache = F.gru_step_forward(inp.x, inp.h0, *inp.params, **v.kw)
        return [next_h], cache

    def backward(cache):
        if api == "sequence":
            dfinal = (inp.dhT, inp.dcT) if v.cell == "lstm" else (inp.dhT,)
            dx, ds, dp = F.sequence_backward(inp.dh, cache, dfinal)
            return [dx, *ds, *dp]
        if api == "contract":
            # the final-state gradients are given explicitly through sequence_backward, so
            # this test does not depend on how missing ones are treated
            dx, ds, dp = F.sequence_backward(inp.dh, cache, (inp.dhT, inp.dcT) if v.cell == "lstm" else (inp.dhT,))
            return [dx, *ds, *dp]
        if v.cell == "rnn":
            return list(F.rnn_step_backward(inp.dh, cache))
        if v.cell == "lstm":
            return list(F.lstm_step_backward(inp.dh, inp.dcT, cache))
        return list(F.gru_step_backward(inp.dh, cache))

    outputs, cache = forward()
    before = backward(cache)
    for o in outputs:
        o *= 0.5
    after = backward(cache)
    differ = [i for i, (a, b) in enumerate(zip(before, after)) if not np.array_equal(a, b)]
    assert not differ, f"gradients {differ} changed after the forward outputs were modified in place"
