"""Token ids in place of a one-hot x (char-rnn's inputs, without the one-hot matrix).

An integer x of shape (N, T) ((N,) for the step functions) means the one-hot rows of an
identity of size D = Wx.shape[0]: the forward pass reads row x[n, t] of Wx, backward adds
dA's rows into dWx at those rows and returns no dx. Everything else must be what the
one-hot float input gives: the same outputs bitwise (a product with a one-hot row is exact),
the same gradients (dWx up to summation order), for every cell, dtype, thread count and
with variable lengths, whose padded ids may hold anything.
"""
from __future__ import annotations

import numpy as np
import pytest
from conftest import DTYPES, GATES, STEP_VARIANTS, VARIANTS, make_inputs, state0_of

import fastrnn
import fastrnn.functional as F
import fastrnn.reference as R
from fastrnn.models import CharRNN

V, N, T, H = 11, 4, 6, 9


def one_hot(ids: np.ndarray, dtype) -> np.ndarray:
    return np.eye(V, dtype=dtype)[ids]


def run(mod, variant, x, inp, lengths=None):
    h, final, cache = mod.sequence_forward(variant.cell, x, inp.params, state0_of(variant, inp),
                                           lengths=lengths, **variant.kw)
    dfinal = (inp.dhT, inp.dcT) if variant.cell == "lstm" else (inp.dhT,)
    dx, dstate0, dparams = mod.sequence_backward(inp.dh, cache, dfinal)
    return h, final, dx, dstate0, dparams


def close(a, b, dtype):
    tol = 1e-12 if np.dtype(dtype) == np.float64 else 1e-5
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("variant", VARIANTS.values(), ids=VARIANTS.keys())
def test_token_ids_give_the_one_hot_results(variant, dtype):
    inp = make_inputs(variant.cell, N, T, V, H, dtype, seed=1)
    ids = np.random.default_rng(2).integers(0, V, (N, T))
    h, final, dx, dstate0, dparams = run(F, variant, ids, inp)
    h1, final1, dx1, dstate01, dparams1 = run(F, variant, one_hot(ids, dtype), inp)
    assert dx is None and dx1 is not None
    np.testing.assert_array_equal(h, h1)
    for a, b in zip(final, final1):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(dstate0, dstate01):
        close(a, b, dtype)
    for a, b in zip(dparams, dparams1):
        close(a, b, dtype)
    # and the reference, fed the one-hot matrix
    hr, _, _, _, dparams_r = run(R, variant, one_hot(ids, dtype), inp)
    close(h, hr, dtype) if dtype == np.float64 else np.testing.assert_allclose(h, hr, rtol=1e-4, atol=1e-4)
    for a, b in zip(dparams, dparams_r):
        np.testing.assert_allclose(a, b, rtol=1e-4 if dtype == np.float32 else 1e-10,
                                   atol=1e-4 if dtype == np.float32 else 1e-10)


@pytest.mark.parametrize("variant", VARIANTS.values(), ids=VARIANTS.keys())
def test_padded_token_ids_may_hold_anything(variant):
    inp = make_inputs(variant.cell, N, T, V, H, np.float64, seed=3)
    lengths = np.array([T, 0, 3, 1])
    ids = np.random.default_rng(4).integers(0, V, (N, T))
    x = one_hot(ids, np.float64)
    for n, L in enumerate(lengths):
        ids[n, L:] = [-7, V + 100, 10**12, -1, V, 2**40][: T - L]
        x[n, L:] = 0.0
    h, final, _, dstate0, dparams = run(F, variant, ids, inp, lengths)
    h1, final1, _, dstate01, dparams1 = run(F, variant, x, inp, lengths)
    np.testing.assert_array_equal(h, h1)
    for a, b in zip(list(final) + list(dstate0) + list(dparams), list(final1) + list(dstate01) + list(dparams1)):
        close(a, b, np.float64)


@pytest.mark.parametrize("cell", GATES)
def test_token_ids_results_do_not_depend_on_the_thread_count(cell, threads):
    variant = next(v for v in VARIANTS.values() if v.cell == cell)
    inp = make_inputs(cell, 8, 20, 70, 64, np.float32, seed=5)
    ids = np.random.default_rng(6).integers(0, 70, (8, 20))
    results = []
    for n in (1, 2):
        threads(n)
        h, final, _, dstate0, dparams = run(F, variant, ids, inp)
        results.append([h, *final, *dstate0, *dparams])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("variant", STEP_VARIANTS.values(), ids=STEP_VARIANTS.keys())
def test_step_functions_take_token_ids(variant):
    inp = make_inputs(variant.cell, N, 1, V, H, np.float64, seed=7, step=True)
    ids = np.array([0, V - 1, 3, 3])
    prev = (inp.h0, inp.c0) if variant.cell == "lstm" else (inp.h0,)
    h, final, cache = F.sequence_forward(variant.cell, ids[:, None], inp.params, prev, **variant.kw)
    h1, final1, cache1 = F.sequence_forward(variant.cell, one_hot(ids, np.float64)[:, None], inp.params, prev,
                                            **variant.kw)
    np.testing.assert_array_equal(h, h1)
    if variant.cell == "rnn":
        Wx, Wh, b = inp.params
        nh, c = F.rnn_step_forward(ids, inp.h0, Wx, Wh, b, **variant.kw)
        nh1, c1 = F.rnn_step_forward(one_hot(ids, np.float64), inp.h0, Wx, Wh, b, **variant.kw)
        np.testing.assert_array_equal(nh, nh1)
        dx, dh, dWx, dWh, db = F.rnn_step_backward(inp.dh, c)
        dx1, dh1, dWx1, dWh1, db1 = F.rnn_step_backward(inp.dh, c1)
        assert dx is None
        for a, b_ in ((dh, dh1), (dWx, dWx1), (dWh, dWh1), (db, db1)):
            close(a, b_, np.float64)


def test_bad_token_ids_raise_errors_naming_x():
    inp = make_inputs("lstm", N, T, V, H, np.float32)
    ids = np.zeros((N, T), np.int64)
    ids[2, 4] = V
    with pytest.raises(ValueError, match=r"x must lie in \[0, 11\) \(x holds token ids; D = Wx.shape\[0\]\), got x\[2, 4\] = 11"):
        F.sequence_forward("lstm", ids, inp.params)
    ids[2, 4] = -1
    with pytest.raises(ValueError, match=r"x\[2, 4\] = -1"):
        F.sequence_forward("lstm", ids, inp.params)
    with pytest.raises(TypeError, match=r"x must be a float32 or float64 array, got dtype int64 of shape \(4, 6, 1\)"):
        F.sequence_forward("lstm", np.zeros((N, T, 1), np.int64), inp.params)
    with pytest.raises(TypeError, match=r"x must be a float32 or float64 array.*shape \(4, 1\)"):
        F.lstm_step_forward(np.zeros((N, 1), np.int32), inp.h0, inp.c0, *inp.params)


@pytest.mark.parametrize("batch_first", [True, False])
def test_layers_take_token_ids_and_return_no_dx(batch_first):
    rng = np.random.default_rng(8)
    ids = rng.integers(0, V, (N, T))
    lengths = np.array([T, 2, 0, 5])
    results = []
    for x in (ids, np.eye(V)[ids]):
        layer = fastrnn.LSTM(V, H, num_layers=2, bidirectional=True, dtype=np.float64, seed=0,
                             batch_first=batch_first)
        xin = x if batch_first else np.swapaxes(x, 0, 1)
        out, state = layer.forward(xin, lengths=lengths)
        dout = np.random.default_rng(9).standard_normal(out.shape)
        dx, dstate = layer.backward(dout)
        results.append((out, state, dx, dict(layer.grads)))
    (out, state, dx, grads), (out1, state1, dx1, grads1) = results
    assert dx is None and dx1 is not None
    np.testing.assert_array_equal(out, out1)
    for a, b in zip(state, state1):
        np.testing.assert_array_equal(a, b)
    assert grads.keys() == grads1.keys()
    for k in grads:
        close(grads[k], grads1[k], np.float64)


def test_char_rnn_without_embedding_trains_on_ids_like_one_hot():
    """CharRNN without an embedding feeds ids; its loss and gradients equal a one-hot run
    of the same stacked layer and head."""
    model = CharRNN(V, hidden_size=H, num_layers=2, cell="gru", dtype=np.float64, seed=0)
    x = np.random.default_rng(10).integers(0, V, (N, T))
    y = np.random.default_rng(11).integers(0, V, (N, T))
    loss, grads, _ = model.loss(x, y)
    grads = {k: g.copy() for k, g in grads.items()}
    out, _ = model.rnn.forward(np.eye(V)[x])
    scores = model.head.forward(out)
    loss1, dscores = fastrnn.temporal_softmax_loss(scores, y, reduction="mean")
    model.zero_grad()
    model.rnn.backward(model.head.backward(dscores))
    assert loss == pytest.approx(loss1, rel=1e-14)
    for k in grads:
        close(grads[k], model.grads[k], np.float64)


@pytest.mark.parametrize("variant", VARIANTS.values(), ids=VARIANTS.keys())
def test_one_step_sequences_with_padded_token_ids_match_one_hot_for_any_thread_count(variant, threads):
    """A single step projects x by each thread's own units: padded rows (length 0) keep their
    initial state whatever their ids hold, and the results equal the one-hot input's."""
    inp = make_inputs(variant.cell, 6, 1, V, 40, np.float64, seed=8)
    lengths = np.array([1, 0, 1, 1, 0, 1])
    ids = np.array([[0], [-3], [V - 1], [4], [V + 9], [4]])
    x = one_hot(np.where(lengths[:, None] > 0, ids, 0), np.float64)
    x[lengths == 0] = 0.0
    results = []
    for n in (1, 2):
        threads(n)
        for inputs in (ids, x):
            h, final, _, dstate0, dparams = run(F, variant, inputs, inp, lengths)
            results.append([h, *final, *dstate0, *dparams])
    for other in results[1:]:
        for a, b in zip(results[0][:2], other[:2]):
            np.testing.assert_array_equal(a, b)
        for a, b in zip(results[0][2:], other[2:]):
            close(a, b, np.float64)
    np.testing.assert_array_equal(results[0][1][lengths == 0], inp.h0[lengths == 0])
