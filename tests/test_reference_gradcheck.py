"""Numerical gradient checks for the plain NumPy oracle `fastrnn.reference`.

Every check differentiates a random linear functional of ALL outputs of a
function (h, plus the final states where the function returns them) with
respect to EVERY input, and compares the analytic gradient from the
reference's backward with a float64 central-difference estimate using the
CS231n metric  rel_error(a, b) = max(|a - b| / max(1e-8, |a| + |b|)) < 1e-7.

The finite difference is the fourth-order central stencil
(8 (f(x+h) - f(x-h)) - (f(x+2h) - f(x-2h))) / 12h, in float64 with h = 5e-4.
Its absolute error here is ~1e-11, about 100x below the two-point stencil's
at its best step (h ~ 1e-5).  That matters because the metric is taken per
element: with the two-point stencil, an element that happens to be ~1e-4 in
size fails 1e-7 for reasons that have nothing to do with the reference.  For
the same reason inputs whose numerical gradient has a nonzero element below
MIN_GRAD are redrawn (about one check in five needs one redraw), just as relu
inputs near the kink are.  Seeds are fixed, so the suite is deterministic.
"""

from __future__ import annotations

import math
import warnings
import zlib
from collections import defaultdict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastrnn import reference as ref

TOL = 1e-7  # maximum allowed relative error (CS231n metric)
STEP = 5e-4  # finite-difference step for the fourth-order central stencil
MIN_GRAD = 1e-4  # nonzero gradient elements below this are at the noise floor
MAX_DRAWS = 10  # attempts to draw inputs without such elements
KINK_MARGIN = 2e-2  # relu pre-activations must stay this far from 0

GATES = {"rnn": 1, "lstm": 4, "gru": 3}
SHAPES = {"N3T4D5H6": (3, 4, 5, 6), "N1T1D1H1": (1, 1, 1, 1)}
# variant id -> (cell, keyword arguments of sequence_forward)
VARIANTS = {
    "rnn-tanh": ("rnn", {"nonlinearity": "tanh"}),
    "rnn-relu": ("rnn", {"nonlinearity": "relu"}),
    "lstm": ("lstm", {}),
    "gru-reset-after": ("gru", {"reset_after": True}),
    "gru-reset-before": ("gru", {"reset_after": False}),
}

# Worst relative error seen per variant (printed at the end with `pytest -s`).
WORST_REL_ERROR: dict[str, float] = defaultdict(float)


@pytest.fixture(scope="module", autouse=True)
def _report_worst_relative_errors():
    yield
    if WORST_REL_ERROR:
        print("\nworst relative error per variant:")
        for label in sorted(WORST_REL_ERROR):
            print(f"  {label:18s} {WORST_REL_ERROR[label]:.2e}")


# ----------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------


def rel_error(a: np.ndarray, b: np.ndarray) -> float:
    """CS231n relative error."""
    return float(np.max(np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b))))


def numerical_gradient(f, arr: np.ndarray, step: float = STEP) -> np.ndarray:
    """Fourth-order central difference of the scalar f() w.r.t. `arr`.

    `arr` is perturbed in place (and restored), so f must read it live.
    """
    grad = np.zeros_like(arr)
    for idx in np.ndindex(arr.shape):
        old = arr[idx]
        values = []
        for k in (1, -1, 2, -2):
            arr[idx] = old + k * step
            values.append(f())
        arr[idx] = old
        fp1, fm1, fp2, fm2 = values
        grad[idx] = (8 * (fp1 - fm1) - (fp2 - fm2)) / (12 * step)
    return grad


def seed_for(*labels) -> int:
    return zlib.crc32("/".join(map(str, labels)).encode())


def relu_preactivations(inp: dict) -> np.ndarray:
    """All pre-activations a_t of a relu RNN over the full (unmasked) sequence."""
    x, h, Wx, Wh, b = inp["x"], inp["h0"], inp["Wx"], inp["Wh"], inp["b"]
    out = []
    for t in range(x.shape[1]):
        a = x[:, t] @ Wx + h @ Wh + b
        out.append(a)
        h = np.maximum(a, 0)
    return np.stack(out)


def make_inputs(cell, shape, seed, *, nonlinearity="tanh", dtype=np.float64) -> dict:
    """Random inputs, named as in the reference, in the order x, h0, c0, Wx, Wh, b, bh.

    For a relu RNN, reseeds until every pre-activation is at least KINK_MARGIN
    away from the kink, so finite differences never cross it.
    """
    N, T, D, H = shape
    G = GATES[cell]
    for attempt in range(1000):
        rng = np.random.default_rng([seed, attempt])
        inp = {"x": rng.standard_normal((N, T, D)), "h0": 0.5 * rng.standard_normal((N, H))}
        if cell == "lstm":
            inp["c0"] = 0.5 * rng.standard_normal((N, H))
        inp["Wx"] = rng.standard_normal((D, G * H)) / np.sqrt(D)
        inp["Wh"] = rng.standard_normal((H, G * H)) / np.sqrt(H)
        inp["b"] = 0.5 * rng.standard_normal(G * H)
        if cell == "gru":
            inp["bh"] = 0.5 * rng.standard_normal(G * H)
        if cell == "rnn" and nonlinearity == "relu":
            if np.min(np.abs(relu_preactivations(inp))) < KINK_MARGIN:
                continue
        return {k: v.astype(dtype) for k, v in inp.items()}
    raise RuntimeError("could not draw relu inputs away from the kink")


def params_of(cell, inp):
    return (inp["Wx"], inp["Wh"], inp["b"]) + ((inp["bh"],) if cell == "gru" else ())


def state0_of(cell, inp):
    return (inp["h0"], inp["c0"]) if cell == "lstm" else (inp["h0"],)


def named_grads(cell, dx, dstate0, dparams) -> dict:
    names = ["x", "h0"] + (["c0"] if cell == "lstm" else []) + ["Wx", "Wh", "b"]
    names += ["bh"] if cell == "gru" else []
    return dict(zip(names, (dx, *dstate0, *dparams)))


def lengths_for(shape, kind):
    """None (every sequence full) or a mix of zero, partial and full lengths."""
    N, T, _, _ = shape
    if kind == "full":
        return None
    return np.array([0, T // 2, T][:N])  # (N=1, T=1) -> [0]


def assert_gradients_match(forward, backward, draw_inputs, *, label: str, seed: int):
    """Check backward against numerical gradients of a random linear functional.

    draw_inputs(seed) -> {input name: float64 array};
    forward(inputs) -> list of output arrays (must read `inputs` live);
    backward(inputs, douts) -> {input name: gradient} for every input.

    Inputs whose numerical gradient has an element with 0 < |g| < MIN_GRAD are
    redrawn (like relu inputs near the kink): such an element sits at the
    finite-difference noise floor, where the element-wise metric says nothing
    about the backward.  Exact zeros (e.g. steps past a length) are kept.
    """
    for attempt in range(MAX_DRAWS):
        inputs = draw_inputs(seed_for(seed, attempt))
        outputs = forward(inputs)
        rng = np.random.default_rng([seed, attempt])
        douts = [rng.standard_normal(o.shape) for o in outputs]

        def loss() -> float:
            outs = forward(inputs)
            return math.fsum(np.concatenate([(o * d).ravel() for o, d in zip(outs, douts)]))

        numeric = {name: numerical_gradient(loss, arr) for name, arr in inputs.items()}
        if not any(np.any((g != 0) & (np.abs(g) < MIN_GRAD)) for g in numeric.values()):
            break
    else:
        pytest.fail(f"no inputs without tiny gradient elements in {MAX_DRAWS} draws")

    analytic = backward(inputs, douts)
    assert set(analytic) == set(inputs), "backward must return a gradient for every input"
    for name in inputs:
        assert analytic[name].shape == inputs[name].shape, name
        assert analytic[name].dtype == np.float64, name
        err = rel_error(numeric[name], analytic[name])
        WORST_REL_ERROR[label] = max(WORST_REL_ERROR[label], err)
        assert err < TOL, f"d{name}: relative error {err:.2e} >= {TOL:.0e}"


# ----------------------------------------------------------------------------
# Contract functions: step forward/backward
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_rnn_step_backward_matches_numerical_gradient(nonlinearity, shape):
    def draw(seed):
        seq = make_inputs("rnn", SHAPES[shape], seed, nonlinearity=nonlinearity)
        return {"x": seq["x"][:, 0].copy(), "prev_h": seq["h0"],
                "Wx": seq["Wx"], "Wh": seq["Wh"], "b": seq["b"]}

    def forward(i):
        next_h, _ = ref.rnn_step_forward(*i.values(), nonlinearity=nonlinearity)
        return [next_h]

    def backward(i, douts):
        _, cache = ref.rnn_step_forward(*i.values(), nonlinearity=nonlinearity)
        return dict(zip(i, ref.rnn_step_backward(douts[0], cache)))

    assert_gradients_match(forward, backward, draw, label=f"rnn-{nonlinearity}",
                           seed=seed_for("rnn_step", nonlinearity, shape))


@pytest.mark.parametrize("shape", SHAPES)
def test_lstm_step_backward_matches_numerical_gradient(shape):
    def draw(seed):
        seq = make_inputs("lstm", SHAPES[shape], seed)
        return {"x": seq["x"][:, 0].copy(), "prev_h": seq["h0"], "prev_c": seq["c0"],
                "Wx": seq["Wx"], "Wh": seq["Wh"], "b": seq["b"]}

    def forward(i):
        next_h, next_c, _ = ref.lstm_step_forward(*i.values())
        return [next_h, next_c]

    def backward(i, douts):
        _, _, cache = ref.lstm_step_forward(*i.values())
        return dict(zip(i, ref.lstm_step_backward(douts[0], douts[1], cache)))

    assert_gradients_match(forward, backward, draw, label="lstm", seed=seed_for("lstm_step", shape))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("reset_after", [True, False], ids=["reset-after", "reset-before"])
def test_gru_step_backward_matches_numerical_gradient(reset_after, shape):
    def draw(seed):
        seq = make_inputs("gru", SHAPES[shape], seed)
        return {"x": seq["x"][:, 0].copy(), "prev_h": seq["h0"], "Wx": seq["Wx"],
                "Wh": seq["Wh"], "b": seq["b"], "bh": seq["bh"]}

    def forward(i):
        next_h, _ = ref.gru_step_forward(*i.values(), reset_after=reset_after)
        return [next_h]

    def backward(i, douts):
        _, cache = ref.gru_step_forward(*i.values(), reset_after=reset_after)
        return dict(zip(i, ref.gru_step_backward(douts[0], cache)))

    label = "gru-reset-after" if reset_after else "gru-reset-before"
    assert_gradients_match(forward, backward, draw, label=label,
                           seed=seed_for("gru_step", reset_after, shape))


# ----------------------------------------------------------------------------
# Contract functions: sequence forward/backward
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_rnn_backward_matches_numerical_gradient(nonlinearity, shape):
    def draw(seed):
        return make_inputs("rnn", SHAPES[shape], seed, nonlinearity=nonlinearity)

    def forward(i):
        return [ref.rnn_forward(*i.values(), nonlinearity=nonlinearity)[0]]

    def backward(i, douts):
        _, cache = ref.rnn_forward(*i.values(), nonlinearity=nonlinearity)
        return dict(zip(i, ref.rnn_backward(douts[0], cache)))

    assert_gradients_match(forward, backward, draw, label=f"rnn-{nonlinearity}",
                           seed=seed_for("rnn", nonlinearity, shape))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("c0_given", [True, False], ids=["c0-given", "c0-none"])
def test_lstm_backward_matches_numerical_gradient(c0_given, shape):
    def draw(seed):
        inp = make_inputs("lstm", SHAPES[shape], seed)
        if not c0_given:
            del inp["c0"]
        return inp

    def run(i):
        return ref.lstm_forward(i["x"], i["h0"], i["Wx"], i["Wh"], i["b"], c0=i.get("c0"))

    def forward(i):
        return [run(i)[0]]

    def backward(i, douts):
        dx, dh0, dWx, dWh, db = ref.lstm_backward(douts[0], run(i)[1])
        grads = {"x": dx, "h0": dh0, "Wx": dWx, "Wh": dWh, "b": db}
        if c0_given:
            # lstm_backward drops dc0, so take it from sequence_backward.
            _, _, cache = ref.sequence_forward("lstm", i["x"], params_of("lstm", i), (i["h0"], i["c0"]))
            grads["c0"] = ref.sequence_backward(douts[0], cache)[1][1]
        return grads

    assert_gradients_match(forward, backward, draw, label="lstm", seed=seed_for("lstm", c0_given, shape))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("reset_after", [True, False], ids=["reset-after", "reset-before"])
def test_gru_backward_matches_numerical_gradient(reset_after, shape):
    def draw(seed):
        return make_inputs("gru", SHAPES[shape], seed)

    def forward(i):
        return [ref.gru_forward(*i.values(), reset_after=reset_after)[0]]

    def backward(i, douts):
        _, cache = ref.gru_forward(*i.values(), reset_after=reset_after)
        return dict(zip(i, ref.gru_backward(douts[0], cache)))

    label = "gru-reset-after" if reset_after else "gru-reset-before"
    assert_gradients_match(forward, backward, draw, label=label, seed=seed_for("gru", reset_after, shape))


# ----------------------------------------------------------------------------
# Extended pair: sequence_forward / sequence_backward
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("lengths_kind", ["full", "mixed"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_sequence_backward_matches_numerical_gradient_including_final_state(
    variant, shape, lengths_kind
):
    cell, kw = VARIANTS[variant]
    lengths = lengths_for(SHAPES[shape], lengths_kind)

    def draw(seed):
        return make_inputs(cell, SHAPES[shape], seed, nonlinearity=kw.get("nonlinearity", "tanh"))

    def run(i):
        return ref.sequence_forward(
            cell, i["x"], params_of(cell, i), state0_of(cell, i), lengths=lengths, **kw
        )

    def forward(i):
        h, final_state, _ = run(i)
        return [h, *final_state]

    def backward(i, douts):
        _, _, cache = run(i)
        return named_grads(cell, *ref.sequence_backward(douts[0], cache, tuple(douts[1:])))

    assert_gradients_match(forward, backward, draw, label=variant,
                           seed=seed_for("sequence", variant, shape, lengths_kind))


@pytest.mark.parametrize("lengths_kind", ["full", "mixed"])
def test_sequence_backward_with_c0_none_gives_gradient_for_zero_c0(lengths_kind):
    shape = SHAPES["N3T4D5H6"]
    lengths = lengths_for(shape, lengths_kind)

    def draw(seed):
        inp = make_inputs("lstm", shape, seed)
        inp["c0"] = np.zeros_like(inp["c0"])
        return inp

    def forward(i):
        h, final_state, _ = ref.sequence_forward(
            "lstm", i["x"], params_of("lstm", i), (i["h0"], i["c0"]), lengths=lengths
        )
        return [h, *final_state]

    def backward(i, douts):
        # forward with c0=None must equal forward with explicit zeros ...
        h, final_state, cache_none = ref.sequence_forward(
            "lstm", i["x"], params_of("lstm", i), (i["h0"], None), lengths=lengths
        )
        for a, b in zip([h, *final_state], forward(i)):
            np.testing.assert_array_equal(a, b)
        # ... and its backward must give the gradient w.r.t. those zeros
        return named_grads("lstm", *ref.sequence_backward(douts[0], cache_none, tuple(douts[1:])))

    assert_gradients_match(forward, backward, draw, label="lstm", seed=seed_for("c0-none", lengths_kind))


def _check_packed_sequence_semantics(cell, kw, shape, lengths, seed):
    inp = make_inputs(cell, shape, seed, nonlinearity=kw.get("nonlinearity", "tanh"))
    params, state0 = params_of(cell, inp), state0_of(cell, inp)
    h, final, _ = ref.sequence_forward(cell, inp["x"], params, state0, lengths=lengths, **kw)
    for n, L in enumerate(lengths):
        # outputs past the length are exactly zero
        assert np.all(h[n, L:] == 0)
        if L == 0:
            # final state is the initial state (as a new array)
            for s_final, s0 in zip(final, state0):
                np.testing.assert_array_equal(s_final[n], s0[n])
                assert not np.shares_memory(s_final, s0)
            continue
        # the first L outputs and the final state are those of row n run alone for L steps
        h_n, final_n, _ = ref.sequence_forward(
            cell, inp["x"][n : n + 1, :L], params, tuple(s[n : n + 1] for s in state0), **kw
        )
        np.testing.assert_array_equal(final[0][n], h[n, L - 1])
        np.testing.assert_allclose(h[n, :L], h_n[0], rtol=1e-12, atol=1e-14)
        for s_final, s_n in zip(final, final_n):
            np.testing.assert_allclose(s_final[n], s_n[0], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("variant", VARIANTS)
def test_sequence_forward_zeroes_outputs_past_length_and_takes_final_state_at_last_valid_step(variant):
    cell, kw = VARIANTS[variant]
    _check_packed_sequence_semantics(
        cell, kw, (5, 5, 3, 4), np.array([0, 1, 3, 5, 2]), seed_for("packed", variant)
    )


@settings(max_examples=30, deadline=None, database=None)
@given(
    variant=st.sampled_from(sorted(VARIANTS)),
    T=st.integers(1, 5),
    data=st.data(),
)
def test_sequence_forward_matches_per_row_runs_for_random_lengths(variant, T, data):
    N = data.draw(st.integers(1, 4), label="N")
    lengths = np.array(data.draw(st.lists(st.integers(0, T), min_size=N, max_size=N), label="lengths"))
    cell, kw = VARIANTS[variant]
    _check_packed_sequence_semantics(cell, kw, (N, T, 2, 3), lengths, seed_for("random", variant, T, N))


@pytest.mark.parametrize("variant", VARIANTS)
def test_sequence_backward_ignores_output_gradients_past_length(variant):
    cell, kw = VARIANTS[variant]
    shape = (4, 5, 3, 4)
    lengths = np.array([0, 2, 5, 4])
    seed = seed_for("ignore", variant)
    inp = make_inputs(cell, shape, seed, nonlinearity=kw.get("nonlinearity", "tanh"))
    _, final, cache = ref.sequence_forward(
        cell, inp["x"], params_of(cell, inp), state0_of(cell, inp), lengths=lengths, **kw
    )
    rng = np.random.default_rng(seed)
    dh = rng.standard_normal((4, 5, 4))
    dfinal = tuple(rng.standard_normal(s.shape) for s in final)
    dh_masked = dh * (np.arange(5)[None, :, None] < lengths[:, None, None])

    dx, dstate0, dparams = ref.sequence_backward(dh, cache, dfinal)
    dx_m, dstate0_m, dparams_m = ref.sequence_backward(dh_masked, cache, dfinal)
    for a, b in zip((dx, *dstate0, *dparams), (dx_m, *dstate0_m, *dparams_m)):
        np.testing.assert_array_equal(a, b)
    for n, L in enumerate(lengths):
        assert np.all(dx[n, L:] == 0)
    # an empty sequence passes the final-state gradient straight to the initial state
    for d0, dT in zip(dstate0, dfinal):
        np.testing.assert_array_equal(d0[0], dT[0])


@pytest.mark.parametrize("variant", VARIANTS)
def test_sequence_with_full_lengths_equals_sequence_without_lengths(variant):
    cell, kw = VARIANTS[variant]
    shape = (3, 4, 5, 6)
    seed = seed_for("full", variant)
    inp = make_inputs(cell, shape, seed, nonlinearity=kw.get("nonlinearity", "tanh"))
    args = (cell, inp["x"], params_of(cell, inp), state0_of(cell, inp))
    h1, f1, c1 = ref.sequence_forward(*args, **kw)
    h2, f2, c2 = ref.sequence_forward(*args, lengths=np.full(3, 4, dtype=np.int32), **kw)
    rng = np.random.default_rng(seed)
    dh = rng.standard_normal(h1.shape)
    dfinal = tuple(rng.standard_normal(s.shape) for s in f1)
    g1 = ref.sequence_backward(dh, c1, dfinal)
    g2 = ref.sequence_backward(dh, c2, dfinal)
    for a, b in zip((h1, *f1, g1[0], *g1[1], *g1[2]), (h2, *f2, g2[0], *g2[1], *g2[2])):
        np.testing.assert_array_equal(a, b)


def test_none_output_gradients_mean_zeros():
    inp = make_inputs("lstm", (3, 4, 5, 6), seed_for("none-grads"))
    _, final, cache = ref.sequence_forward("lstm", inp["x"], params_of("lstm", inp), state0_of("lstm", inp))
    rng = np.random.default_rng(0)
    dcT = rng.standard_normal(final[1].shape)
    zeros_h = np.zeros((3, 4, 6))
    a = ref.sequence_backward(None, cache, (None, dcT))
    b = ref.sequence_backward(zeros_h, cache, (np.zeros_like(dcT), dcT))
    for x, y in zip((a[0], *a[1], *a[2]), (b[0], *b[1], *b[2])):
        np.testing.assert_array_equal(x, y)
    dx, dstate0, dparams = ref.sequence_backward(None, cache)
    for g in (dx, *dstate0, *dparams):
        assert not np.any(g)


def test_short_state_tuples_are_padded_with_none():
    inp = make_inputs("lstm", (3, 4, 5, 6), seed_for("short-tuples"))
    params = params_of("lstm", inp)
    h, final, cache = ref.sequence_forward("lstm", inp["x"], params, (inp["h0"],))
    h2, final2, cache2 = ref.sequence_forward("lstm", inp["x"], params, (inp["h0"], None))
    dhT = np.random.default_rng(0).standard_normal(final[0].shape)
    got = ref.sequence_backward(None, cache, (dhT,))
    want = ref.sequence_backward(None, cache2, (dhT, None))
    for a, b in zip((h, *final, got[0], *got[1], *got[2]), (h2, *final2, want[0], *want[1], *want[2])):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError):
        ref.sequence_forward("lstm", inp["x"], params, (inp["h0"], None, None))


# ----------------------------------------------------------------------------
# Consistency between the contract functions and the sequence pair
# ----------------------------------------------------------------------------


def _step_call(cell, kw, inp, dnext):
    """Run the step contract functions on t=0; returns (outputs, grads)."""
    x0, h0 = inp["x"][:, 0], inp["h0"]
    if cell == "rnn":
        next_h, cache = ref.rnn_step_forward(x0, h0, inp["Wx"], inp["Wh"], inp["b"], **kw)
        return [next_h], list(ref.rnn_step_backward(dnext[0], cache))
    if cell == "lstm":
        next_h, next_c, cache = ref.lstm_step_forward(x0, h0, inp["c0"], inp["Wx"], inp["Wh"], inp["b"])
        return [next_h, next_c], list(ref.lstm_step_backward(dnext[0], dnext[1], cache))
    next_h, cache = ref.gru_step_forward(x0, h0, inp["Wx"], inp["Wh"], inp["b"], inp["bh"], **kw)
    return [next_h], list(ref.gru_step_backward(dnext[0], cache))


@pytest.mark.parametrize("variant", VARIANTS)
def test_step_functions_equal_length_one_sequence(variant):
    cell, kw = VARIANTS[variant]
    seed = seed_for("step=T1", variant)
    inp = make_inputs(cell, (3, 1, 5, 6), seed, nonlinearity=kw.get("nonlinearity", "tanh"))
    rng = np.random.default_rng(seed)
    dnext = [rng.standard_normal((3, 6)) for _ in state0_of(cell, inp)]

    step_out, step_grads = _step_call(cell, kw, inp, dnext)

    h, final, cache = ref.sequence_forward(cell, inp["x"], params_of(cell, inp), state0_of(cell, inp), **kw)
    # the gradient into next_h can arrive as dh[:, 0] or as the final-state gradient
    dx, dstate0, dparams = ref.sequence_backward(dnext[0][:, None, :], cache, (None, *dnext[1:]))
    dx2, dstate02, dparams2 = ref.sequence_backward(None, cache, tuple(dnext))

    np.testing.assert_array_equal(step_out[0], h[:, 0])
    for a, b in zip(step_out, final):
        np.testing.assert_array_equal(a, b)
    for seq_grads in ((dx, dstate0, dparams), (dx2, dstate02, dparams2)):
        dx_, ds_, dp_ = seq_grads
        expected = [dx_[:, 0], *ds_, *dp_]
        assert len(expected) == len(step_grads)
        for a, b in zip(step_grads, expected):
            np.testing.assert_allclose(a, b, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("variant", VARIANTS)
def test_contract_functions_equal_sequence_pair(variant):
    cell, kw = VARIANTS[variant]
    seed = seed_for("contract", variant)
    inp = make_inputs(cell, (3, 4, 5, 6), seed, nonlinearity=kw.get("nonlinearity", "tanh"))
    rng = np.random.default_rng(seed)
    dh = rng.standard_normal((3, 4, 6))
    params, state0 = params_of(cell, inp), state0_of(cell, inp)

    if cell == "rnn":
        h, cache = ref.rnn_forward(inp["x"], inp["h0"], *params, **kw)
        grads = ref.rnn_backward(dh, cache)
    elif cell == "lstm":
        h, cache = ref.lstm_forward(inp["x"], inp["h0"], *params, c0=inp["c0"])
        grads = ref.lstm_backward(dh, cache)
    else:
        h, cache = ref.gru_forward(inp["x"], inp["h0"], *params, **kw)
        grads = ref.gru_backward(dh, cache)

    h_seq, _, cache_seq = ref.sequence_forward(cell, inp["x"], params, state0, **kw)
    dx, dstate0, dparams = ref.sequence_backward(dh, cache_seq)
    np.testing.assert_array_equal(h, h_seq)
    expected = (dx, dstate0[0], *dparams)  # dc0 is dropped by lstm_backward
    assert len(grads) == len(expected)
    for a, b in zip(grads, expected):
        np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------
# dtypes, errors, numerical robustness
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_float32_inputs_give_float32_outputs(variant):
    cell, kw = VARIANTS[variant]
    shape = (3, 4, 5, 6)
    seed = seed_for("float32", variant)
    inp32 = make_inputs(cell, shape, seed, nonlinearity=kw.get("nonlinearity", "tanh"), dtype=np.float32)
    inp64 = {k: v.astype(np.float64) for k, v in inp32.items()}
    lengths = np.array([0, 2, 4])
    rng = np.random.default_rng(seed)
    dh = rng.standard_normal((3, 4, 6))
    dfinal = tuple(rng.standard_normal((3, 6)) for _ in state0_of(cell, inp32))

    results = {}
    for dtype, inp in ((np.float32, inp32), (np.float64, inp64)):
        h, final, cache = ref.sequence_forward(
            cell, inp["x"], params_of(cell, inp), state0_of(cell, inp), lengths=lengths, **kw
        )
        dx, dstate0, dparams = ref.sequence_backward(
            dh.astype(dtype), cache, tuple(d.astype(dtype) for d in dfinal)
        )
        step_out, step_grads = _step_call(cell, kw, inp, [d.astype(dtype) for d in dfinal])
        results[dtype] = [h, *final, dx, *dstate0, *dparams, *step_out, *step_grads]

    if cell == "rnn":
        h, cache = ref.rnn_forward(inp32["x"], inp32["h0"], *params_of(cell, inp32), **kw)
        contract = [h, *ref.rnn_backward(dh.astype(np.float32), cache)]
    elif cell == "lstm":
        h, cache = ref.lstm_forward(inp32["x"], inp32["h0"], *params_of(cell, inp32), c0=inp32["c0"])
        contract = [h, *ref.lstm_backward(dh.astype(np.float32), cache)]
    else:
        h, cache = ref.gru_forward(inp32["x"], inp32["h0"], *params_of(cell, inp32), **kw)
        contract = [h, *ref.gru_backward(dh.astype(np.float32), cache)]

    for out in results[np.float32] + contract:
        assert out.dtype == np.float32
    for out in results[np.float64]:
        assert out.dtype == np.float64
    for a, b in zip(results[np.float32], results[np.float64]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_unknown_cell_raises_value_error():
    inp = make_inputs("rnn", (2, 3, 4, 5), 0)
    with pytest.raises(ValueError, match="cell"):
        ref.sequence_forward("transformer", inp["x"], params_of("rnn", inp))


def test_unknown_nonlinearity_raises_value_error():
    inp = make_inputs("rnn", (2, 3, 4, 5), 0)
    x, h0, Wx, Wh, b = inp.values()
    with pytest.raises(ValueError, match="nonlinearity"):
        ref.rnn_step_forward(x[:, 0], h0, Wx, Wh, b, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="nonlinearity"):
        ref.rnn_forward(x, h0, Wx, Wh, b, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="nonlinearity"):
        ref.sequence_forward("rnn", x, (Wx, Wh, b), nonlinearity="sigmoid")


def test_backward_rejects_cache_from_another_cell():
    shape = (2, 3, 4, 5)
    caches, step_caches = {}, {}
    for cell in GATES:
        inp = make_inputs(cell, shape, seed_for("cache", cell))
        _, _, caches[cell] = ref.sequence_forward(cell, inp["x"], params_of(cell, inp), state0_of(cell, inp))
        x0, h0 = inp["x"][:, 0], inp["h0"]
        if cell == "rnn":
            step_caches[cell] = ref.rnn_step_forward(x0, h0, *params_of(cell, inp))[-1]
        elif cell == "lstm":
            step_caches[cell] = ref.lstm_step_forward(x0, h0, inp["c0"], *params_of(cell, inp))[-1]
        else:
            step_caches[cell] = ref.gru_step_forward(x0, h0, *params_of(cell, inp))[-1]
    dh, dstep = np.zeros((2, 3, 5)), np.zeros((2, 5))
    seq_backward = {"rnn": ref.rnn_backward, "lstm": ref.lstm_backward, "gru": ref.gru_backward}
    step_backward = {
        "rnn": lambda cache: ref.rnn_step_backward(dstep, cache),
        "lstm": lambda cache: ref.lstm_step_backward(dstep, dstep, cache),
        "gru": lambda cache: ref.gru_step_backward(dstep, cache),
    }
    for cell in GATES:
        for other in GATES:
            if other != cell:
                with pytest.raises((TypeError, ValueError)):
                    seq_backward[cell](dh, caches[other])
                with pytest.raises((TypeError, ValueError)):
                    step_backward[cell](step_caches[other])
        # step caches and sequence caches are not interchangeable either
        with pytest.raises((TypeError, ValueError)):
            seq_backward[cell](dh, step_caches[cell])
        with pytest.raises((TypeError, ValueError)):
            step_backward[cell](caches[cell])
        with pytest.raises((TypeError, ValueError)):
            ref.sequence_backward(dh, step_caches[cell])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("variant", VARIANTS)
def test_large_preactivations_do_not_overflow_or_warn(variant, dtype):
    cell, kw = VARIANTS[variant]
    inp = make_inputs(cell, (3, 4, 5, 6), seed_for("large", variant), dtype=dtype)
    inp["x"] = inp["x"] * dtype(1e4)  # drives every gate deep into saturation
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        h, final, cache = ref.sequence_forward(
            cell, inp["x"], params_of(cell, inp), state0_of(cell, inp), **kw
        )
        if variant in ("rnn-tanh", "lstm"):
            assert np.all(np.abs(h) <= 1)
        if cell == "gru":  # h' is a convex combination of n and h
            assert np.all(np.abs(h) <= max(1, np.max(np.abs(inp["h0"]))))
        dx, dstate0, dparams = ref.sequence_backward(np.ones_like(h), cache)
    for out in (h, *final, dx, *dstate0, *dparams):
        assert out.dtype == dtype
        assert np.all(np.isfinite(out))


def test_module_exports_the_cell_and_training_references():
    expected = {"sequence_forward", "sequence_backward"}
    for cell in ("rnn", "lstm", "gru"):
        for direction in ("forward", "backward"):
            expected |= {f"{cell}_step_{direction}", f"{cell}_{direction}"}
    expected |= {"temporal_softmax_loss", "embedding_backward", "sgd_update", "adagrad_update",
                 "rmsprop_update", "adam_update", "grad_norm"}
    assert set(ref.__all__) == expected and len(ref.__all__) == 21
    for name in ref.__all__:
        assert callable(getattr(ref, name))
