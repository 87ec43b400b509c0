"""Tests of fastrnn.layers: the stacked / bidirectional recurrent layers (against the NumPy
reference composed by hand, against per-row runs for variable lengths, against numerical
gradients) and the CS231n temporal layers."""
from __future__ import annotations

from typing import Callable, Dict, List, Optional

import numpy as np
import pytest

import fastrnn
from fastrnn import reference as R
from fastrnn.layers import GRU, LSTM, RNN, Embedding, TemporalAffine, temporal_softmax_loss

from conftest import numeric_entries, rel_error

CLASSES = {"rnn": RNN, "lstm": LSTM, "gru": GRU}
# (name, class, constructor kwargs, reference kwargs)
VARIANTS = [
    ("rnn-tanh", RNN, {}, {}),
    ("rnn-relu", RNN, {"nonlinearity": "relu"}, {"nonlinearity": "relu"}),
    ("lstm", LSTM, {}, {}),
    ("gru", GRU, {}, {}),
    ("gru-reset-before", GRU, {"reset_after": False}, {"reset_after": False}),
]
VARIANT_IDS = [v[0] for v in VARIANTS]
PARITY_TOL = 1e-10
GRAD_TOL = 1e-6
WORST: Dict[str, float] = {}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny problems: one kernel thread keeps the timing stable on a busy machine (thread
    counts are covered by test_results_do_not_depend_on_thread_count)."""
    previous = fastrnn.get_num_threads()
    fastrnn.set_num_threads(1)
    yield
    fastrnn.set_num_threads(previous)


def _record(kind: str, value: float) -> None:
    WORST[kind] = max(WORST.get(kind, 0.0), value)


def cell_of(layer) -> str:
    return layer._cell


def random_state(layer, N: int, rng: np.random.Generator, scale: float = 0.5):
    LD = layer.num_layers * layer.num_directions
    make = lambda: (scale * rng.standard_normal((LD, N, layer.hidden_size))).astype(layer.dtype)
    return (make(), make()) if cell_of(layer) == "lstm" else make()


def as_tuple(state):
    return state if isinstance(state, tuple) else (state,)


# --------------------------------------------------------------------------- helpers




def pick(arr: np.ndarray, k: int, rng: np.random.Generator) -> List[tuple]:
    flat = rng.choice(arr.size, size=min(k, arr.size), replace=False)
    return [np.unravel_index(i, arr.shape) for i in flat]


def reverse_rows(a: np.ndarray, lengths: Optional[np.ndarray]) -> np.ndarray:
    """Per-row reversal within each length, written with a plain loop (independent of the
    layer's vectorised gather)."""
    out = a.copy()
    for n in range(a.shape[0]):
        L = a.shape[1] if lengths is None else int(lengths[n])
        out[n, :L] = a[n, :L][::-1]
    return out


def reference_stack(layer, x, state, lengths, ref_kw):
    """The layer's forward composed by hand from fastrnn.reference.sequence_forward."""
    cell, H, dirs = cell_of(layer), layer.hidden_size, layer.num_directions
    st = as_tuple(state) if state is not None else None
    hs, cs = [], []
    inp = x
    for l in range(layer.num_layers):
        outs = []
        for d, sfx in enumerate(["", "_reverse"][:dirs]):
            k = l * dirs + d
            params = [layer.params[f"{n}_l{l}{sfx}"] for n in ("Wx", "Wh", "b", "bh")[: 4 if cell == "gru" else 3]]
            s0 = None if st is None else tuple(s[k] for s in st)
            xin = inp if d == 0 else reverse_rows(inp, lengths)
            h, fin, _ = R.sequence_forward(cell, xin, params, s0, lengths=lengths, **ref_kw)
            outs.append(h if d == 0 else reverse_rows(h, lengths))
            hs.append(fin[0])
            if cell == "lstm":
                cs.append(fin[1])
        inp = np.concatenate(outs, axis=2)
    hT = np.stack(hs)
    return inp, ((hT, np.stack(cs)) if cell == "lstm" else hT)


# --------------------------------------------------------------------------- structure


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_shapes_params_and_state_structure(cell, bidirectional):
    N, T, D, H, L = 3, 5, 4, 6, 3
    layer = CLASSES[cell](D, H, L, bidirectional=bidirectional, seed=0)
    dirs = 2 if bidirectional else 1
    G = {"rnn": 1, "lstm": 4, "gru": 3}[cell]
    names = ["Wx", "Wh", "b"] + (["bh"] if cell == "gru" else [])
    expected = {}
    for l in range(L):
        Dl = D if l == 0 else dirs * H
        for sfx in ["", "_reverse"][:dirs]:
            shapes = {"Wx": (Dl, G * H), "Wh": (H, G * H), "b": (G * H,), "bh": (G * H,)}
            expected.update({f"{n}_l{l}{sfx}": shapes[n] for n in names})
    assert {k: v.shape for k, v in layer.params.items()} == expected
    assert set(layer.grads) == set(layer.params)
    assert all(p.dtype == np.float32 for p in layer.params.values())

    x = np.random.default_rng(0).standard_normal((N, T, D)).astype(np.float32)
    out, state = layer.forward(x)
    assert out.shape == (N, T, dirs * H) and out.dtype == np.float32
    if cell == "lstm":
        assert isinstance(state, tuple) and len(state) == 2
        assert all(s.shape == (L * dirs, N, H) for s in state)
    else:
        assert isinstance(state, np.ndarray) and state.shape == (L * dirs, N, H)
    init = layer.initial_state(N)
    assert all(s.shape == (L * dirs, N, H) and not s.any() for s in as_tuple(init))
    out2, _ = layer.forward(x, init)  # explicit zeros == None
    np.testing.assert_array_equal(out, out2)
    # The last layer's forward-direction output at the last step is its final state (torch's h_n[-dirs]).
    np.testing.assert_array_equal(out[:, -1, :H], as_tuple(state)[0][(L - 1) * dirs])
    if bidirectional:  # the reverse direction ends at t = 0
        np.testing.assert_array_equal(out[:, 0, H:], as_tuple(state)[0][(L - 1) * dirs + 1])
    dx, dstate0 = layer.backward(np.ones_like(out))
    assert dx.shape == x.shape
    assert type(dstate0) is type(state) and all(a.shape == b.shape for a, b in zip(as_tuple(dstate0), as_tuple(state)))
    assert "LSTM" in repr(LSTM(2, 3)) and "bidirectional=True" in repr(RNN(2, 3, bidirectional=True))


def test_batch_first_false_is_time_major():
    rng = np.random.default_rng(1)
    a = LSTM(3, 4, 2, bidirectional=True, dtype=np.float64, seed=3)
    b = LSTM(3, 4, 2, bidirectional=True, dtype=np.float64, seed=3, batch_first=False)
    x = rng.standard_normal((2, 5, 3))
    lengths = np.array([5, 2])
    out_a, st_a = a.forward(x, lengths=lengths)
    out_b, st_b = b.forward(x.transpose(1, 0, 2), lengths=lengths)
    np.testing.assert_array_equal(out_a, out_b.transpose(1, 0, 2))
    np.testing.assert_array_equal(st_a[0], st_b[0])
    dout = rng.standard_normal(out_a.shape)
    dx_a, ds_a = a.backward(dout)
    dx_b, ds_b = b.backward(dout.transpose(1, 0, 2))
    np.testing.assert_allclose(dx_a, dx_b.transpose(1, 0, 2), rtol=0, atol=1e-14)
    for k in a.grads:
        np.testing.assert_allclose(a.grads[k], b.grads[k], rtol=0, atol=1e-13)


# --------------------------------------------------------------------------- parity


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
def test_matches_reference_composed_by_hand(variant, with_lengths):
    _, cls, kw, ref_kw = variant
    rng = np.random.default_rng(2)
    N, T, D, H = 4, 6, 3, 5
    layer = cls(D, H, 2, bidirectional=True, dtype=np.float64, seed=4, **kw)
    x = rng.standard_normal((N, T, D))
    state = random_state(layer, N, rng)
    lengths = np.array([6, 0, 3, 1]) if with_lengths else None
    out, final = layer.forward(x, state, lengths=lengths)
    ref_out, ref_final = reference_stack(layer, x, state, lengths, ref_kw)
    err = max(
        np.abs(out - ref_out).max(),
        *(np.abs(a - b).max() for a, b in zip(as_tuple(final), as_tuple(ref_final))),
    )
    _record("parity vs reference (float64 abs)", float(err))
    assert err < PARITY_TOL
    if with_lengths:
        for n, L in enumerate(lengths):
            assert not out[n, L:].any()


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_lengths_equal_running_each_row_alone(cell):
    """Packed-sequence semantics, both directions, forward and backward: a row of a padded
    batch gives exactly what running that row alone at its own length gives."""
    rng = np.random.default_rng(3)
    N, T, D, H = 4, 5, 3, 4
    layer = CLASSES[cell](D, H, 2, bidirectional=True, dtype=np.float64, seed=5)
    x = rng.standard_normal((N, T, D))
    state = random_state(layer, N, rng)
    lengths = np.array([5, 2, 0, 4])
    out, final = layer.forward(x, state, lengths=lengths)
    dout = rng.standard_normal(out.shape)
    dfinal = random_state(layer, N, rng)
    dx, dstate0 = layer.backward(dout, dfinal)
    batch_grads = {k: g.copy() for k, g in layer.grads.items()}

    layer.zero_grad()
    for n, L in enumerate(lengths):
        row_state = tuple(s[:, n : n + 1] for s in as_tuple(state))
        row_state = row_state if cell == "lstm" else row_state[0]
        o, f = layer.forward(x[n : n + 1, :L], row_state)
        np.testing.assert_allclose(out[n, :L], o[0], rtol=0, atol=1e-13)
        assert not out[n, L:].any()
        for a, b in zip(as_tuple(final), as_tuple(f)):
            np.testing.assert_allclose(a[:, n], b[:, 0], rtol=0, atol=1e-13)
        row_dfinal = tuple(s[:, n : n + 1] for s in as_tuple(dfinal))
        d, ds = layer.backward(dout[n : n + 1, :L], row_dfinal if cell == "lstm" else row_dfinal[0])
        np.testing.assert_allclose(dx[n, :L], d[0], rtol=0, atol=1e-12)
        assert not dx[n, L:].any()
        for a, b in zip(as_tuple(dstate0), as_tuple(ds)):
            np.testing.assert_allclose(a[:, n], b[:, 0], rtol=0, atol=1e-12)
    for k in batch_grads:  # the batch's parameter gradients are the sum of the rows'
        np.testing.assert_allclose(batch_grads[k], layer.grads[k], rtol=0, atol=1e-12)


def test_float32_agrees_with_float64():
    rng = np.random.default_rng(4)
    l64 = GRU(3, 8, 2, bidirectional=True, dtype=np.float64, seed=1)
    l32 = GRU(3, 8, 2, bidirectional=True, dtype=np.float32, seed=1)
    l32.load_params(l64.params)
    x = rng.standard_normal((3, 7, 3))
    lengths = np.array([7, 4, 1])
    o64, _ = l64.forward(x, lengths=lengths)
    o32, _ = l32.forward(x.astype(np.float32), lengths=lengths)
    assert o32.dtype == np.float32
    np.testing.assert_allclose(o32, o64, rtol=0, atol=1e-5)
    d64, _ = l64.backward(np.ones_like(o64))
    d32, _ = l32.backward(np.ones_like(o32))
    np.testing.assert_allclose(d32, d64, rtol=0, atol=1e-4)


def test_results_do_not_depend_on_thread_count():
    rng = np.random.default_rng(11)
    layer = LSTM(5, 33, 2, bidirectional=True, dropout=0.2, dtype=np.float32, seed=2)
    x = rng.standard_normal((9, 6, 5)).astype(np.float32)
    lengths = np.array([6, 5, 0, 1, 2, 6, 3, 4, 6])
    dout = rng.standard_normal((9, 6, 66)).astype(np.float32)
    results = []
    for threads in (1, 2):
        fastrnn.set_num_threads(threads)
        state = layer.rng_state()
        layer.zero_grad()
        out, (h, c) = layer.forward(x, lengths=lengths)
        dx, (dh0, dc0) = layer.backward(dout)
        results.append([out, h, c, dx, dh0, dc0] + [g.copy() for g in layer.grads.values()])
        layer.set_rng_state(state)
    fastrnn.set_num_threads(1)
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------- gradients


def gradcheck_layer(layer, x, state, lengths, rng, k=3):
    """Numerical gradient check of every parameter, x and the initial state, with a
    random linear function of the output and final state as the loss. The dropout masks
    are held fixed by restoring the layer's generator before every forward."""
    out0, final0 = layer.forward(x, state, lengths=lengths)  # shapes only
    Rout = rng.standard_normal(out0.shape)
    Rfin = tuple(rng.standard_normal(s.shape) for s in as_tuple(final0))
    rng_state = layer.rng_state()

    def loss() -> float:
        layer.set_rng_state(rng_state)
        out, fin = layer.forward(x, state, lengths=lengths)
        return float(np.sum(out * Rout) + sum(np.sum(a * b) for a, b in zip(as_tuple(fin), Rfin)))

    layer.zero_grad()
    loss()
    dx, dstate0 = layer.backward(Rout, Rfin if cell_of(layer) == "lstm" else Rfin[0])
    analytic = {k_: g.copy() for k_, g in layer.grads.items()}
    checks = [(f"param {name}", layer.params[name], analytic[name]) for name in layer.params]
    checks.append(("x", x, dx))
    for i, (s, ds) in enumerate(zip(as_tuple(state), as_tuple(dstate0))):
        checks.append((f"state[{i}]", s, ds))
    worst = 0.0
    for name, arr, grad in checks:
        idxs = pick(arr, k, rng)
        if lengths is not None and name == "x":  # also probe positions past a row's length
            idxs.append((int(np.argmin(lengths)), x.shape[1] - 1, 0))
        num = numeric_entries(loss, arr, idxs)
        err = rel_error(np.array([grad[i] for i in idxs]), num)
        worst = max(worst, err)
        assert err < GRAD_TOL, f"{name}: relative error {err:.3g}"
    return worst


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("dropout", [0.0, 0.4], ids=["no-dropout", "dropout"])
def test_gradcheck_two_layer_bidirectional_with_lengths(variant, dropout):
    _, cls, kw, _ = variant
    rng = np.random.default_rng(5)
    N, T, D, H = 3, 4, 3, 4
    layer = cls(D, H, 2, bidirectional=True, dropout=dropout, dtype=np.float64, seed=6, **kw)
    x = rng.standard_normal((N, T, D))
    state = random_state(layer, N, rng)
    lengths = np.array([4, 1, 3])
    worst = gradcheck_layer(layer, x, state, lengths, rng)
    _record("gradcheck layers (float64 rel)", worst)


def test_gradcheck_three_layer_unidirectional_full_length_dropout():
    rng = np.random.default_rng(6)
    layer = LSTM(2, 3, 3, dropout=0.3, dtype=np.float64, seed=1, forget_bias=1.0)
    x = rng.standard_normal((2, 5, 2))
    _record("gradcheck layers (float64 rel)", gradcheck_layer(layer, x, random_state(layer, 2, rng), None, rng))


def test_backward_accumulates_and_zero_grad_resets():
    rng = np.random.default_rng(7)
    layer = RNN(2, 3, 2, bidirectional=True, dtype=np.float64, seed=0)
    x = rng.standard_normal((2, 3, 2))
    out, _ = layer.forward(x)
    layer.backward(np.ones_like(out))
    once = {k: g.copy() for k, g in layer.grads.items()}
    grad_ids = {k: id(g) for k, g in layer.grads.items()}
    layer.forward(x)
    layer.backward(np.ones_like(out))
    for k in once:
        np.testing.assert_allclose(layer.grads[k], 2 * once[k], rtol=1e-14)
    layer.zero_grad()
    assert all(not g.any() for g in layer.grads.values())
    assert {k: id(g) for k, g in layer.grads.items()} == grad_ids
    with pytest.raises(RuntimeError, match="forward"):
        layer.backward(np.ones_like(out))  # one backward per forward


def test_backward_with_only_state_gradient():
    rng = np.random.default_rng(8)
    layer = LSTM(2, 3, 2, dtype=np.float64, seed=0)
    x = rng.standard_normal((2, 4, 2))
    layer.forward(x)
    dh = rng.standard_normal((2, 2, 3))
    dx, (dh0, dc0) = layer.backward(None, (dh, None))
    assert np.isfinite(dx).all() and dx.any() and dh0.any() and dc0.any()


# --------------------------------------------------------------------------- dropout


def test_dropout_only_in_training_and_reproducible(tmp_path):
    rng = np.random.default_rng(9)
    x = rng.standard_normal((4, 6, 3))
    layer = GRU(3, 8, 3, dropout=0.5, dtype=np.float64, seed=11)
    plain = GRU(3, 8, 3, dropout=0.0, dtype=np.float64, seed=11)
    np.testing.assert_array_equal(layer.params["Wx_l1"], plain.params["Wx_l1"])
    ref, _ = plain.forward(x)

    # eval: no dropout, generator untouched
    s = layer.rng_state()
    assert layer.eval() is layer and not layer.training
    out_eval, _ = layer.forward(x)
    np.testing.assert_array_equal(out_eval, ref)
    assert layer.rng_state() == s
    # dropout = 0 in training: nothing drawn either
    s0 = plain.rng_state()
    np.testing.assert_array_equal(plain.train().forward(x)[0], ref)
    assert plain.rng_state() == s0

    # training: masks between layers (not after the last), inverted scaling
    layer.train()
    state = layer.rng_state()
    np.savez(tmp_path / "rng.npz", **{"rng." + k: v for k, v in state.items()})
    out1, _ = layer.forward(x)
    masks = layer._cache["masks"]
    assert masks[-1] is None and all(m is not None for m in masks[:-1])
    for m in masks[:-1]:
        assert set(np.unique(m)) <= {0.0, 2.0}
        assert 0.35 < np.mean(m == 0) < 0.65
    out2, _ = layer.forward(x)
    assert not np.allclose(out1, out2)
    # restoring the generator (here from the .npz file) reproduces the masks exactly
    loaded = np.load(tmp_path / "rng.npz")
    layer.set_rng_state({k[len("rng."):]: loaded[k] for k in loaded.files})
    np.testing.assert_array_equal(layer.forward(x)[0], out1)
    with pytest.raises(ValueError, match="bit generator"):
        layer.set_rng_state({**state, "bit_generator": "MT19937"})


# --------------------------------------------------------------------------- init


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_init_ranges_seeds_and_forget_bias(cell):
    H = 50
    layer = CLASSES[cell](7, H, 2, bidirectional=True, seed=0)
    bound = 1 / np.sqrt(H)
    for p in layer.params.values():
        assert np.abs(p).max() <= bound and np.abs(p).max() > 0.9 * bound
    char = CLASSES[cell](7, H, 2, init="charrnn", seed=0, dtype=np.float64)
    for p in char.params.values():
        assert np.abs(p).max() <= 0.08 and np.abs(p).max() > 0.07
    again = CLASSES[cell](7, H, 2, bidirectional=True, seed=0)
    other = CLASSES[cell](7, H, 2, bidirectional=True, seed=1)
    for k in layer.params:
        np.testing.assert_array_equal(layer.params[k], again.params[k])
        assert not np.array_equal(layer.params[k], other.params[k])
    if cell == "lstm":
        fb = LSTM(7, H, 2, bidirectional=True, seed=0, forget_bias=1.0)
        for k in fb.params:
            if k.startswith("b_"):
                assert np.all(fb.params[k][H : 2 * H] == 1.0)
                np.testing.assert_array_equal(fb.params[k][:H], layer.params[k][:H])
                np.testing.assert_array_equal(fb.params[k][2 * H :], layer.params[k][2 * H :])
            else:
                np.testing.assert_array_equal(fb.params[k], layer.params[k])


def test_load_params_in_place():
    a, b = RNN(2, 3, seed=0), RNN(2, 3, seed=1)
    ids = {k: id(v) for k, v in a.params.items()}
    a.load_params(b.params)
    assert {k: id(v) for k, v in a.params.items()} == ids
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])
    with pytest.raises(ValueError, match="missing"):
        a.load_params({"Wx_l0": b.params["Wx_l0"]})
    with pytest.raises(ValueError, match="Wx_l0"):
        a.load_params({**b.params, "Wx_l0": np.zeros((3, 3))})
    assert a.num_params() == 2 * 3 + 3 * 3 + 3


# --------------------------------------------------------------------------- errors


def test_arguments_after_torchs_positional_ones_are_keyword_only():
    """torch.nn.LSTM's 4th positional argument is bias (RNN's 5th): passed positionally
    here it must not turn into bidirectional or dropout."""
    for call in (lambda: LSTM(65, 256, 2, True), lambda: GRU(10, 8, 1, True),
                 lambda: RNN(10, 8, 1, "tanh", True), lambda: LSTM(65, 256, 2, True, True)):
        with pytest.raises(TypeError, match="positional argument"):
            call()
    assert RNN(10, 8, 2, "relu").nonlinearity == "relu"


def test_initialisation_values_must_be_finite():
    with pytest.raises(ValueError, match="forget_bias must be finite"):
        LSTM(3, 4, forget_bias=float("nan"))
    for bad in (float("nan"), -1.0, float("inf")):
        with pytest.raises(ValueError, match="scale must be >= 0 and finite"):
            Embedding(5, 3, scale=bad)
    with pytest.raises(TypeError, match="scale must be a real number"):
        Embedding(5, 3, scale="1")


def test_argument_errors():
    x = np.zeros((2, 3, 4), np.float32)
    layer = LSTM(4, 5, 2)
    with pytest.raises(ValueError, match=r"x .*D = input_size = 4.*got D = 3"):
        layer.forward(np.zeros((2, 3, 3), np.float32))
    with pytest.raises(ValueError, match="x must be 3-D"):
        layer.forward(np.zeros((2, 4), np.float32))
    with pytest.raises(TypeError, match="x has dtype float64 but the layer is float32"):
        layer.forward(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match=r"state\[0\] \(h\) must have shape .*\(2, 2, 5\), got \(1, 2, 5\)"):
        layer.forward(x, (np.zeros((1, 2, 5), np.float32), None))
    with pytest.raises(TypeError, match="tuple"):
        layer.forward(x, np.zeros((2, 2, 5), np.float32))
    with pytest.raises(TypeError, match="one array"):
        GRU(4, 5).forward(x, (np.zeros((1, 2, 5), np.float32),))
    with pytest.raises(ValueError, match="lengths must have shape"):
        layer.forward(x, lengths=[1, 2, 3])
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, T\] = \[0, 3\]"):
        layer.forward(x, lengths=[1, 4])
    with pytest.raises(ValueError, match="lengths must lie"):
        layer.forward(x, lengths=[-1, 2])
    with pytest.raises(TypeError, match="lengths must be an integer array"):
        layer.forward(x, lengths=np.array([1.0, 2.0]))
    out, _ = layer.forward(x)
    with pytest.raises(ValueError, match=r"dout must have the output's shape \(2, 3, 5\)"):
        layer.backward(np.zeros((2, 3, 4), np.float32))
    layer.forward(x)
    with pytest.raises(ValueError, match=r"dstate\[1\] \(c\)"):
        layer.backward(out, (None, np.zeros((2, 3, 5), np.float32)))

    with pytest.raises(ValueError, match="nonlinearity"):
        RNN(4, 5, nonlinearity="sigmoid")
    for bad in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match="dropout"):
            LSTM(4, 5, 2, dropout=bad)
    with pytest.raises(TypeError, match="dropout"):
        LSTM(4, 5, 2, dropout="0.5")
    with pytest.raises(ValueError, match="hidden_size"):
        GRU(4, 0)
    with pytest.raises(TypeError, match="input_size"):
        GRU(4.0, 5)
    with pytest.raises(TypeError, match="dtype"):
        GRU(4, 5, dtype=np.int32)
    with pytest.raises(ValueError, match="init"):
        GRU(4, 5, init="xavier")
    with pytest.raises(TypeError, match="seed"):
        GRU(4, 5, seed="a")
    with pytest.raises(TypeError, match="bidirectional"):
        GRU(4, 5, bidirectional=1)


# --------------------------------------------------------------------------- temporal layers


def test_embedding_forward_backward_accumulates_repeats():
    emb = Embedding(5, 3, dtype=np.float64, seed=0)
    ids = np.array([[0, 3, 3], [4, 0, 3]])
    out = emb.forward(ids)
    np.testing.assert_array_equal(out, emb.params["W"][ids])
    dout = np.arange(18, dtype=np.float64).reshape(2, 3, 3)
    assert emb.backward(dout) is None
    expected = np.zeros((5, 3))
    for n in range(2):
        for t in range(3):
            expected[ids[n, t]] += dout[n, t]
    np.testing.assert_array_equal(emb.grads["W"], expected)
    with pytest.raises(ValueError, match=r"x must lie in \[0, 5\)"):
        emb.forward(np.array([[5]]))
    with pytest.raises(TypeError, match="x must be an integer array"):
        emb.forward(np.array([[0.0]]))


def test_temporal_affine_gradcheck():
    rng = np.random.default_rng(10)
    aff = TemporalAffine(4, 3, dtype=np.float64, seed=0)
    assert np.abs(aff.params["W"]).max() <= 0.5
    x = rng.standard_normal((2, 5, 4))
    R_ = rng.standard_normal((2, 5, 3))
    out = aff.forward(x)
    np.testing.assert_allclose(out, np.einsum("ntd,dm->ntm", x, aff.params["W"]) + aff.params["b"], rtol=1e-14)
    dx = aff.backward(R_)
    f = lambda: float(np.sum(aff.forward(x) * R_))
    for arr, grad in [(x, dx), (aff.params["W"], aff.grads["W"]), (aff.params["b"], aff.grads["b"])]:
        idxs = pick(arr, 4, rng)
        assert rel_error(np.array([grad[i] for i in idxs]), numeric_entries(f, arr, idxs)) < GRAD_TOL
    with pytest.raises(ValueError, match="D = 4"):
        aff.forward(np.zeros((2, 5, 3)))


def test_temporal_softmax_loss_cs231n_values_and_reductions():
    rng = np.random.default_rng(231)

    def check(N, T, V, p):
        x = 0.001 * rng.standard_normal((N, T, V))
        y = rng.integers(V, size=(N, T))
        mask = rng.random((N, T)) <= p
        return temporal_softmax_loss(x, y, mask)[0]

    # CS231n's sanity checks: ~2.3, ~23, ~2.2
    assert abs(check(100, 1, 10, 1.0) - np.log(10)) < 0.01
    assert abs(check(100, 10, 10, 1.0) - 10 * np.log(10)) < 0.05
    assert abs(check(5000, 10, 10, 0.1) - np.log(10)) < 0.15

    N, T, V = 3, 4, 5
    scores = rng.standard_normal((N, T, V))
    y = rng.integers(V, size=(N, T))
    mask = rng.random((N, T)) < 0.7
    mask[0, 0], mask[0, 1] = True, False
    logp = scores - np.log(np.exp(scores).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp, y[..., None], -1)[..., 0]
    total = nll[mask].sum()
    for reduction, denom in [("batchmean", N), ("mean", mask.sum()), ("sum", 1)]:
        loss, dscores = temporal_softmax_loss(scores, y, mask, reduction=reduction)
        assert abs(loss - total / denom) < 1e-12
        f = lambda: temporal_softmax_loss(scores, y, mask, reduction=reduction)[0]
        idxs = pick(scores, 6, rng)
        assert rel_error(np.array([dscores[i] for i in idxs]), numeric_entries(f, scores, idxs)) < GRAD_TOL
        assert not dscores[~mask].any()
    # stable for huge scores, float32 stays float32, nothing masked -> 0
    big = np.zeros((1, 2, 3), np.float32)
    big[0, :, 0] = 1e4
    loss, d = temporal_softmax_loss(big, np.array([[0, 1]]))
    assert np.isfinite(loss) and abs(loss - 1e4 / 1) < 1 and d.dtype == np.float32 and np.isfinite(d).all()
    assert temporal_softmax_loss(big, np.array([[0, 1]]), np.zeros((1, 2), bool), reduction="mean")[0] == 0.0
    # targets are only checked where the mask is on (e.g. a -1 padding id)
    temporal_softmax_loss(scores, np.where(mask, y, -1), mask)
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 5\)"):
        temporal_softmax_loss(scores, np.where(mask, y, -1), None)
    with pytest.raises(ValueError, match="targets must have shape"):
        temporal_softmax_loss(scores, y[:, :2])
    with pytest.raises(ValueError, match="reduction"):
        temporal_softmax_loss(scores, y, reduction="avg")
    with pytest.raises(ValueError, match="mask must have shape"):
        temporal_softmax_loss(scores, y, mask[:2])


def test_report_worst_errors():
    """Prints the worst errors seen in this module (run with -s to see them)."""
    for kind, value in sorted(WORST.items()):
        print(f"worst {kind}: {value:.3g}")
