"""The compiled kernels (fastrnn.functional) against the NumPy oracle (fastrnn.reference).

Every test compares ALL outputs and ALL gradients: h / next_h, final states (hT, cT),
dx, dh0 / dprev_h, dc0 / dprev_c, dWx, dWh, db, dbh. Criterion (see conftest):
float64 max |compiled - reference| <= 1e-10; float32 max |compiled - reference| /
max(1, max |reference|), per array, <= 1e-4. Shapes and dtypes must match exactly.

Every parity test runs once per micro-kernel (generic, avx2, avx512, as far as the CPU
supports them) through the `isa` fixture.
"""
from __future__ import annotations

import os
import subprocess
import sys
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import (
    DTYPES,
    GATES,
    ISAS,
    STEP_VARIANTS,
    VARIANTS,
    assert_all_equal,
    assert_all_match,
    dfinal_of,
    make_inputs,
    run_contract_sequence_inputs,
    run_contract_step_inputs,
    run_sequence,
    run_sequence_inputs,
    state0_of,
    using_isa,
)
from fastrnn import _core
from fastrnn import functional as F
from fastrnn import reference as R

# (N, T, D, H). Ones in every position, sizes that fill no SIMD width or tile
# (7, 13, 33, 129: not multiples of 4, 8 or 16 lanes, nor of 4, 6 or 12 tile rows),
# and a mid-size case.
SHAPES = {
    "N1T1D1H1": (1, 1, 1, 1),
    "N1T4D3H5": (1, 4, 3, 5),
    "N3T1D4H2": (3, 1, 4, 2),
    "N4T3D1H6": (4, 3, 1, 6),
    "N5T3D6H1": (5, 3, 6, 1),
    "N7T5D13H33": (7, 5, 13, 33),
    "N13T3D129H7": (13, 3, 129, 7),
    "N33T2D7H129": (33, 2, 7, 129),
    "N24T12D48H64": (24, 12, 48, 64),
}
DTYPE_IDS = list(DTYPES)


def seed_for(*labels) -> int:
    return zlib.crc32(repr(labels).encode())


def check_step(variant_name: str, shape, dtype_name: str) -> None:
    variant = VARIANTS[variant_name]
    N, _, D, H = shape
    inp = make_inputs(variant.cell, N, 1, D, H, DTYPES[dtype_name], seed_for(variant_name, shape), step=True)
    expected = run_contract_step_inputs(R, variant, inp)
    actual = run_contract_step_inputs(F, variant, inp)
    assert_all_match(actual, expected, label=variant_name)


def check_contract_sequence(variant_name: str, shape, dtype_name: str) -> None:
    variant = VARIANTS[variant_name]
    inp = make_inputs(variant.cell, *shape, DTYPES[dtype_name], seed_for(variant_name, shape))
    expected = run_contract_sequence_inputs(R, variant, inp)
    actual = run_contract_sequence_inputs(F, variant, inp)
    assert_all_match(actual, expected, label=variant_name)


# ---------------------------------------------------------------- the 12 contract functions


@pytest.mark.parametrize("dtype", DTYPE_IDS)
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_rnn_step_forward_and_backward_match_reference(nonlinearity, shape, dtype, isa):
    check_step(f"rnn-{nonlinearity}", shape, dtype)


@pytest.mark.parametrize("dtype", DTYPE_IDS)
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_lstm_step_forward_and_backward_match_reference(shape, dtype, isa):
    check_step("lstm-c0-given", shape, dtype)


@pytest.mark.parametrize("dtype", DTYPE_IDS)
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("reset", ["reset-after", "reset-before"])
def test_gru_step_forward_and_backward_match_reference(reset, shape, dtype, isa):
    check_step(f"gru-{reset}", shape, dtype)


@pytest.mark.parametrize("dtype", DTYPE_IDS)
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_rnn_forward_and_backward_match_reference(nonlinearity, shape, dtype, isa):
    check_contract_sequence(f"rnn-{nonlinearity}", shape, dtype)


@pytest.mark.parametrize("dtype", DTYPE_IDS)
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("c0", ["c0-given", "c0-none"])
def test_lstm_forward_and_backward_match_reference(c0, shape, dtype, isa):
    check_contract_sequence(f"lstm-{c0}", shape, dtype)


@pytest.mark.parametrize("dtype", DTYPE_IDS)
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("reset", ["reset-after", "reset-before"])
def test_gru_forward_and_backward_match_reference(reset, shape, dtype, isa):
    check_contract_sequence(f"gru-{reset}", shape, dtype)


# ---------------------------------------------------------------- sequence_forward / backward


@pytest.mark.parametrize("dtype", DTYPE_IDS)
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("variant", VARIANTS)
def test_sequence_forward_and_backward_match_reference_including_final_states(variant, shape, dtype, isa):
    """h, hT, cT, dx, dh0, dc0 and all parameter gradients, with gradients flowing into
    the final states (dfinal_state) as well as into h."""
    v = VARIANTS[variant]
    inp = make_inputs(v.cell, *shape, DTYPES[dtype], seed_for("sequence", variant, shape))
    expected = run_sequence_inputs(R, v, inp)
    actual = run_sequence_inputs(F, v, inp)
    assert_all_match(actual, expected, label=variant)


# Which upstream gradients sequence_backward gets; missing ones mean zeros.
MISSING_GRADIENTS = {
    "dh-none": lambda v, inp: (None, dfinal_of(v, inp)),
    "dfinal-none": lambda v, inp: (inp.dh, None),
    "dfinal-entries-none": lambda v, inp: (inp.dh, (None, None) if v.cell == "lstm" else (None,)),
    "only-dcT": lambda v, inp: (None, (None, inp.dcT) if v.cell == "lstm" else None),
    "all-none": lambda v, inp: (None, None),
}


MISSING_CASES = [
    pytest.param(variant, missing, id=f"{variant}-{missing}")
    for variant in VARIANTS
    for missing in MISSING_GRADIENTS
    if missing != "only-dcT" or VARIANTS[variant].cell == "lstm"
]


@pytest.mark.parametrize("dtype", DTYPE_IDS)
@pytest.mark.parametrize("variant, missing", MISSING_CASES)
def test_sequence_backward_treats_missing_upstream_gradients_as_zeros(variant, missing, dtype):
    """dh=None, dfinal_state=None, or None entries of it, mean zero gradients: the results
    match the reference and equal those of explicit zero arrays."""
    v = VARIANTS[variant]
    inp = make_inputs(v.cell, 5, 4, 3, 6, DTYPES[dtype], seed_for("missing", variant))
    dh, dfinal = MISSING_GRADIENTS[missing](v, inp)
    state0 = state0_of(v, inp)
    expected = run_sequence(R, v, inp.x, inp.params, state0, dh, dfinal)
    actual = run_sequence(F, v, inp.x, inp.params, state0, dh, dfinal)
    assert_all_match(actual, expected, label=variant)

    zeros = np.zeros_like(inp.dhT)
    dh_explicit = np.zeros_like(inp.dh) if dh is None else dh
    dfinal_explicit = tuple(zeros if d is None else d for d in (dfinal or (None,) * len(dfinal_of(v, inp))))
    explicit = run_sequence(F, v, inp.x, inp.params, state0, dh_explicit, dfinal_explicit)
    assert_all_equal(actual, explicit, "None vs explicit zeros")


# ---------------------------------------------------------------- variable lengths

LENGTHS_SHAPE = (7, 6, 5, 9)  # N, T, D, H
LENGTHS = np.array([0, 6, 3, 1, 6, 5, 0])  # none, full and partial rows


@pytest.mark.parametrize("dtype", DTYPE_IDS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_sequence_with_lengths_zeroes_outputs_past_length_and_matches_reference(variant, dtype, isa):
    v = VARIANTS[variant]
    N, T, D, H = LENGTHS_SHAPE
    inp = make_inputs(v.cell, N, T, D, H, DTYPES[dtype], seed_for("lengths", variant))
    expected = run_sequence_inputs(R, v, inp, lengths=LENGTHS)
    actual = run_sequence_inputs(F, v, inp, lengths=LENGTHS)
    assert_all_match(actual, expected, label=variant)

    h, dx = actual["h"], actual["dx"]
    for n, L in enumerate(LENGTHS):
        # outputs and input gradients past the length are exactly zero
        assert np.all(h[n, L:] == 0), f"h[{n}, {L}:] is not zero"
        assert np.all(dx[n, L:] == 0), f"dx[{n}, {L}:] is not zero"
        # the final state is the one after step L-1, or the initial state for L == 0
        if L == 0:
            assert np.array_equal(actual["hT"][n], inp.h0[n])
            if v.cell == "lstm":
                c0 = inp.c0[n] if v.c0_given else np.zeros(H, inp.dtype)
                assert np.array_equal(actual["cT"][n], c0)
                # a row that never runs passes dcT straight to dc0
                assert np.array_equal(actual["dc0"][n], inp.dcT[n])
            # ... and dhT straight to dh0
            assert np.array_equal(actual["dh0"][n], inp.dhT[n])
        else:
            assert np.array_equal(actual["hT"][n], h[n, L - 1])


@pytest.mark.parametrize("dtype", DTYPE_IDS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_sequence_backward_ignores_output_gradients_past_length(variant, dtype):
    v = VARIANTS[variant]
    N, T, D, H = LENGTHS_SHAPE
    inp = make_inputs(v.cell, N, T, D, H, DTYPES[dtype], seed_for("ignore", variant))
    base = run_sequence_inputs(F, v, inp, lengths=LENGTHS)
    noisy_dh = inp.dh.copy()
    for n, L in enumerate(LENGTHS):
        noisy_dh[n, L:] = 1e3
    inp.dh = noisy_dh
    assert_all_equal(run_sequence_inputs(F, v, inp, lengths=LENGTHS), base, "dh past length changed")


@pytest.mark.parametrize("dtype", DTYPE_IDS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_sequence_with_full_lengths_equals_sequence_without_lengths(variant, dtype):
    v = VARIANTS[variant]
    N, T, D, H = LENGTHS_SHAPE
    inp = make_inputs(v.cell, N, T, D, H, DTYPES[dtype], seed_for("full", variant))
    assert_all_equal(
        run_sequence_inputs(F, v, inp, lengths=np.full(N, T)), run_sequence_inputs(F, v, inp), "full lengths"
    )


# ---------------------------------------------------------------- step kernels == T=1 sequences


@pytest.mark.parametrize("dtype", DTYPE_IDS)
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (7, 1, 13, 33), (13, 1, 5, 7)], ids=str)
@pytest.mark.parametrize("variant", STEP_VARIANTS)
def test_step_functions_equal_length_one_sequence(variant, shape, dtype, isa):
    """The compiled step forward/backward equal the compiled sequence kernels with T=1,
    bit for bit (dnext_h enters the sequence backward as dh[:, 0])."""
    v = VARIANTS[variant]
    N, _, D, H = shape
    inp = make_inputs(v.cell, N, 1, D, H, DTYPES[dtype], seed_for("step", variant, shape), step=True)
    step = run_contract_step_inputs(F, v, inp)
    seq = run_sequence(
        F,
        v,
        inp.x[:, None, :],
        inp.params,
        state0_of(v, inp),
        inp.dh[:, None, :],
        (None, inp.dcT) if v.cell == "lstm" else None,
    )
    as_seq = {
        "h": step["next_h"][:, None, :],
        "hT": step["next_h"],
        "dx": step["dx"][:, None, :],
        "dh0": step["dprev_h"],
        **{k: step[k] for k in ("dWx", "dWh", "db", "dbh") if k in step},
    }
    if v.cell == "lstm":
        as_seq.update(cT=step["next_c"], dc0=step["dprev_c"])
    assert_all_equal(as_seq, seq, "step vs T=1 sequence")


# ---------------------------------------------------------------- zero-size dimensions

ZERO_SHAPES = {"N0": (0, 3, 4, 5), "T0": (2, 0, 4, 5), "D0": (2, 3, 0, 5), "H0": (2, 3, 4, 0), "all0": (0, 0, 0, 0)}


@pytest.mark.parametrize("dtype", DTYPE_IDS)
@pytest.mark.parametrize("shape", ZERO_SHAPES.values(), ids=ZERO_SHAPES.keys())
@pytest.mark.parametrize("variant", VARIANTS)
def test_zero_size_dimension_gives_correctly_shaped_results(variant, shape, dtype):
    v = VARIANTS[variant]
    N, T, D, H = shape
    G = GATES[v.cell]
    inp = make_inputs(v.cell, N, T, D, H, DTYPES[dtype], seed_for("zero", variant, shape))
    actual = run_sequence_inputs(F, v, inp)
    assert_all_match(actual, run_sequence_inputs(R, v, inp), label=None)

    # What the math says, independently of the reference.
    assert actual["h"].shape == (N, T, H) and actual["dx"].shape == (N, T, D)
    assert actual["dWx"].shape == (D, G * H) and actual["dWh"].shape == (H, G * H)
    if T == 0:
        c0 = inp.c0 if v.c0_given else np.zeros_like(inp.c0)
        assert np.array_equal(actual["hT"], inp.h0)
        assert np.array_equal(actual["dh0"], inp.dhT)
        if v.cell == "lstm":
            assert np.array_equal(actual["cT"], c0)
            assert np.array_equal(actual["dc0"], inp.dcT)
    if N == 0 or T == 0:
        for name in ("dWx", "dWh", "db", "dbh"):
            if name in actual:
                assert not actual[name].any(), f"{name} must be zero without any step"


@pytest.mark.parametrize("dtype", DTYPE_IDS)
@pytest.mark.parametrize("shape", [(0, 1, 4, 5), (2, 1, 0, 5), (2, 1, 4, 0)], ids=["N0", "D0", "H0"])
@pytest.mark.parametrize("variant", STEP_VARIANTS)
def test_zero_size_dimension_in_step_functions_gives_correctly_shaped_results(variant, shape, dtype):
    v = VARIANTS[variant]
    N, _, D, H = shape
    inp = make_inputs(v.cell, N, 1, D, H, DTYPES[dtype], seed_for("zero-step", variant, shape), step=True)
    assert_all_match(run_contract_step_inputs(F, v, inp), run_contract_step_inputs(R, v, inp))


# ---------------------------------------------------------------- randomized


@st.composite
def sequence_cases(draw):
    variant = draw(st.sampled_from(sorted(VARIANTS)))
    v = VARIANTS[variant]
    N = draw(st.integers(1, 6))
    T = draw(st.integers(1, 6))
    D = draw(st.integers(1, 9))
    H = draw(st.integers(1, 9))
    dtype = draw(st.sampled_from(DTYPE_IDS))
    lengths = draw(st.none() | st.lists(st.integers(0, T), min_size=N, max_size=N).map(np.array))
    give_h0 = draw(st.booleans())
    give_dh = draw(st.booleans())
    give_dfinal = draw(st.booleans())
    isa = draw(st.sampled_from(ISAS))
    seed = draw(st.integers(0, 2**32 - 1))
    return v, (N, T, D, H), dtype, lengths, give_h0, give_dh, give_dfinal, isa, seed


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(sequence_cases())
def test_random_shapes_cells_and_lengths_match_reference(case):
    v, shape, dtype, lengths, give_h0, give_dh, give_dfinal, isa, seed = case
    inp = make_inputs(v.cell, *shape, DTYPES[dtype], seed)
    state0 = state0_of(v, inp) if give_h0 else None
    dh = inp.dh if give_dh else None
    dfinal = dfinal_of(v, inp) if give_dfinal else None
    with using_isa(isa):
        actual = run_sequence(F, v, inp.x, inp.params, state0, dh, dfinal, lengths)
    expected = run_sequence(R, v, inp.x, inp.params, state0, dh, dfinal, lengths)
    assert_all_match(actual, expected, label=v.name)
    if lengths is not None:
        for n, L in enumerate(lengths):
            assert np.all(actual["h"][n, L:] == 0)


# ---------------------------------------------------------------- kernel selection


@pytest.mark.parametrize("name", ISAS)
def test_set_isa_selects_each_supported_kernel(name):
    with using_isa(name):
        assert _core.isa() == name
    assert _core.best_isa() == ISAS[-1]


@pytest.mark.parametrize("value", list(ISAS) + ["bogus"])
def test_fastrnn_isa_environment_variable_selects_kernel_at_import(value, tmp_path):
    env = dict(os.environ, FASTRNN_ISA=value)
    code = "from fastrnn import _core; print(_core.isa())"
    # Run away from the source tree, so the installed package is the one imported.
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                         cwd=tmp_path)
    assert out.stdout.strip() == (value if value in ISAS else _core.best_isa())
