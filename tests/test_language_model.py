"""CharRNN.loss runs forward, loss and backward as one compiled call
(``_core.language_model_loss``). These tests hold it to the layer-by-layer path
(``forward``, ``temporal_softmax_loss``, ``backward``), which chains the same kernels: the
loss, every gradient and the final state must be bitwise equal. The one exception is an
embedding in a batch of at least twice as many rows (N*T) as tokens (V): the compiled call
then folds the embedding into the first layer (E·Wx, a table of V rows), whose forward
gives the same bits, but whose gradients of E and of that layer's Wx are summed in
another order, equal to rounding. The tests also check the reductions, zero sizes, and
that bad arguments to the compiled call raise clear errors."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

import fastrnn
from fastrnn import _core
from fastrnn.layers import temporal_softmax_loss
from fastrnn.models import CharRNN


def as_tuple(state):
    return state if isinstance(state, tuple) else (state,)


def layer_by_layer(model: CharRNN, x, y, state, reduction):
    scores, final = model.forward(x, state)
    loss, dscores = temporal_softmax_loss(scores, y, reduction=reduction)
    model.zero_grad()
    model.backward(dscores)
    return loss, {k: g.copy() for k, g in model.grads.items()}, as_tuple(final)


def folds_embedding(model: CharRNN, N: int, T: int) -> bool:
    """Whether the compiled call runs the first layer's input side on the table E·Wx."""
    return model.embed is not None and 2 * model.vocab_size <= N * T


def assert_layer_path_grads(grads, want, folded: bool) -> None:
    """Every gradient bitwise the layer path's; folded, those of the embedding and of the
    first layer's Wx to rounding (relative to the array's largest entry)."""
    assert set(grads) == set(want)
    for k in grads:
        if folded and k in ("embed.W", "rnn.Wx_l0"):
            tol = 1e-5 if grads[k].dtype == np.float32 else 1e-13
            np.testing.assert_allclose(grads[k], want[k], rtol=tol, atol=tol * np.abs(want[k]).max(), err_msg=k)
        else:
            np.testing.assert_array_equal(grads[k], want[k], err_msg=k)


CASES = [
    (cell, emb, layers, dropout, dtype)
    for cell, emb, layers, dropout, dtype in itertools.product(
        ["rnn", "lstm", "gru"], [None, 6], [1, 3], [0.0, 0.3], [np.float32, np.float64]
    )
    if not (dropout and layers == 1)
]


@pytest.mark.parametrize("cell,embedding_dim,num_layers,dropout,dtype", CASES)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("N", [3, 4], ids=["rows-18", "rows-24-fold"])
def test_loss_is_bitwise_the_layer_by_layer_result(cell, embedding_dim, num_layers, dropout, dtype, threads, N):
    previous = fastrnn.get_num_threads()
    fastrnn.set_num_threads(threads)
    try:
        rng = np.random.default_rng(7)
        T, V, H = 6, 11, 7
        kw = dict(num_layers=num_layers, cell=cell, dropout=dropout, embedding_dim=embedding_dim, dtype=dtype, seed=1)
        ours, theirs = CharRNN(V, H, **kw), CharRNN(V, H, **kw)
        x, y = rng.integers(V, size=(N, T)), rng.integers(V, size=(N, T))
        state = tuple((0.3 * rng.standard_normal(s.shape)).astype(dtype) for s in as_tuple(ours.initial_state(N)))
        state = state if cell == "lstm" else state[0]
        for reduction in ("mean", "sum"):  # twice: the second call reuses the gradient arrays
            want_loss, want_grads, want_final = layer_by_layer(theirs, x, y, state, reduction)
            loss, grads, final = ours.loss(x, y, state, reduction=reduction)
            assert loss == want_loss
            assert grads is ours.grads and all(g.dtype == dtype for g in grads.values())
            assert_layer_path_grads(grads, want_grads, folds_embedding(ours, N, T))
            for got, want in zip(as_tuple(final), want_final):
                np.testing.assert_array_equal(got, want)
            # the dropout generators advanced alike: the next masks will match too
            assert ours.rng_state()["state.state"] == theirs.rng_state()["state.state"]
    finally:
        fastrnn.set_num_threads(previous)


# Shapes whose recurrence runs on one thread at the default team threshold, so that on two
# threads the compiled call runs the head beside the cells, a few steps at a time. They
# cover the three ways the whole-sequence head product reads Wy (in place in K blocks of
# 16, in place in one block, packed) and rows of several sequences.
BESIDE = [
    ("rnn", 1, 25, 79, 100, None, 1, 0.0),  # min-char-rnn's shapes: Wy in place, one K block
    ("rnn", 1, 30, 200, 100, None, 1, 0.0),  # Wy (100 x 200) in place, K blocks of 16
    ("gru", 2, 20, 30, 24, 5, 1, 0.0),  # 40 rows: Wy packed
    ("lstm", 3, 9, 13, 16, 6, 2, 0.3),  # two layers, dropout, an embedding (folded)
    ("gru", 2, 6, 13, 16, 6, 2, 0.0),  # an embedding not folded: more tokens than rows/2
]


@pytest.mark.parametrize("cell,N,T,V,H,embedding_dim,num_layers,dropout", BESIDE)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", ["always", "timed"])
def test_head_beside_the_cells_gives_the_layer_by_layer_bits(
    default_thread_teams, head_beside, threads, mode, cell, N, T, V, H, embedding_dim, num_layers, dropout, dtype
):
    """'always' runs every call with the head beside the cells; 'timed' (the default)
    alternates that with the whole call on one thread, then takes the faster."""
    head_beside(mode)
    threads(1)
    assert not _core.head_runs_beside_cells(cell, N, T, H)
    threads(2)
    assert _core.head_runs_beside_cells(cell, N, T, H)
    rng = np.random.default_rng(3)
    kw = dict(num_layers=num_layers, cell=cell, dropout=dropout, embedding_dim=embedding_dim, dtype=dtype, seed=2)
    ours, theirs = CharRNN(V, H, **kw), CharRNN(V, H, **kw)
    x, y = rng.integers(V, size=(N, T)), rng.integers(V, size=(N, T))
    state = None
    for _ in range(20):  # the threads meet at different points each time
        want_loss, want_grads, want_final = layer_by_layer(theirs, x, y, state, "mean")
        loss, grads, final = ours.loss(x, y, state)
        assert loss == want_loss
        assert_layer_path_grads(grads, want_grads, folds_embedding(ours, N, T))
        for got, want in zip(as_tuple(final), want_final):
            np.testing.assert_array_equal(got, want)
        state = final


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_folded_embedding_gives_the_same_bits_for_any_thread_count(threads, cell, dtype):
    """The folded first layer (table E·Wx, gradients through S) splits its products and
    the scatter by columns, never a sum: 1, 2 and 3 threads give the same bits."""
    rng = np.random.default_rng(11)
    N, T, V, H = 8, 12, 20, 40
    x, y = rng.integers(V, size=(N, T)), rng.integers(V, size=(N, T))
    kw = dict(num_layers=2, cell=cell, embedding_dim=24, dropout=0.25, dtype=dtype, seed=5)
    runs = []
    for n in (1, 2, 3):
        threads(n)
        model = CharRNN(V, H, **kw)
        assert folds_embedding(model, N, T)
        loss, grads, final = model.loss(x, y)
        runs.append((loss, {k: g.copy() for k, g in grads.items()}, as_tuple(final)))
    for loss, grads, final in runs[1:]:
        assert loss == runs[0][0]
        for k in grads:
            np.testing.assert_array_equal(grads[k], runs[0][1][k], err_msg=k)
        for got, want in zip(final, runs[0][2]):
            np.testing.assert_array_equal(got, want)


def test_timed_head_runs_both_ways_with_the_bits_of_one_thread(default_thread_teams, head_beside, threads):
    """In 'timed' mode a call runs the head beside the cells or everything on one thread,
    each way timed until the faster is known; both give the bits of 'never' (the stages
    one after another, each kernel with its own team), call after call."""
    V, H, N, T = 79, 100, 1, 25
    rng = np.random.default_rng(5)
    x, y = rng.integers(V, size=(N, T)), rng.integers(V, size=(N, T))
    threads(2)
    results = {}
    for mode in ("never", "timed"):
        head_beside(mode)
        assert _core.head_runs_beside_cells("rnn", N, T, H) == (mode == "timed")
        CharRNN(V, H, cell="rnn", seed=9).loss(x, y)  # the stats are of the last shape run
        model, state = CharRNN(V, H, cell="rnn", seed=4), None
        before = _core.head_beside_stats()
        runs = []
        for _ in range(30):
            loss, grads, state = model.loss(x, y, state)
            runs.append((loss, {k: g.copy() for k, g in grads.items()}, state.copy()))
        results[mode] = runs
        after = _core.head_beside_stats()
        ran = {way: after[way] - before[way] for way in ("beside", "alone")}
        if mode == "never":
            assert ran == {"beside": 0, "alone": 0}
        else:
            # Each way runs until it has 3 timed calls after an untimed first one; the
            # shape's very first call (seed 9, above) was one way's untimed call. So 3 or
            # more here, whichever way is the faster on this machine at this moment.
            assert ran["beside"] >= 3 and ran["alone"] >= 3 and sum(ran.values()) == 30
            assert after["beside_seconds"] > 0 and after["alone_seconds"] > 0
    for (l1, g1, s1), (l2, g2, s2) in zip(results["never"], results["timed"]):
        assert l1 == l2
        np.testing.assert_array_equal(s1, s2)
        for k in g1:
            np.testing.assert_array_equal(g1[k], g2[k], err_msg=k)


def test_head_beside_mode_must_be_known(head_beside):
    with pytest.raises(ValueError, match="'timed', 'always' or 'never'"):
        head_beside("sometimes")
    assert _core.get_head_beside() in ("timed", "always", "never")


def test_reductions_scale_the_same_sum():
    rng = np.random.default_rng(0)
    model = CharRNN(9, 8, 2, "lstm", dtype=np.float64, seed=3)
    x, y = rng.integers(9, size=(4, 5)), rng.integers(9, size=(4, 5))
    losses, grads = {}, {}
    for reduction in ("sum", "mean", "batchmean"):
        losses[reduction], g, _ = model.loss(x, y, reduction=reduction)
        grads[reduction] = {k: v.copy() for k, v in g.items()}
    assert losses["mean"] == pytest.approx(losses["sum"] / 20, rel=1e-14)
    assert losses["batchmean"] == pytest.approx(losses["sum"] / 4, rel=1e-14)
    for k in grads["sum"]:
        np.testing.assert_allclose(grads["mean"][k] * 20, grads["sum"][k], rtol=1e-12, atol=1e-15)


def test_unknown_reduction_is_a_value_error():
    model = CharRNN(5, 4, 1, "rnn")
    with pytest.raises(ValueError, match="reduction must be one of"):
        model.loss(np.zeros((1, 2), int), np.zeros((1, 2), int), reduction="avg")


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("N,T", [(0, 3), (2, 0)])
def test_zero_sizes_give_zero_loss_and_gradients(cell, N, T):
    model = CharRNN(7, 5, 2, cell, embedding_dim=4, seed=0)
    for g in model.grads.values():
        g.fill(1.0)  # stale values must be overwritten
    state = tuple(np.full(s.shape, 0.25, np.float32) for s in as_tuple(model.initial_state(N)))
    state = state if cell == "lstm" else state[0]
    ids = np.zeros((N, T), np.int64)
    loss, grads, final = model.loss(ids, ids, state)
    assert loss == 0.0
    assert all(not g.any() for g in grads.values())
    for got, given in zip(as_tuple(final), as_tuple(state)):  # T = 0: the state passes through
        np.testing.assert_array_equal(got, given)


def test_final_state_is_a_fresh_array():
    model = CharRNN(6, 4, 2, "gru", seed=0)
    ids = np.ones((2, 3), np.int64)
    _, _, final = model.loss(ids, ids)
    _, _, again = model.loss(ids, ids)
    assert final is not again and not np.shares_memory(final, again)


# ---------------------------------------------------------------- the compiled call's checks


def rnn_args(V=5, H=4, E=None, layers=1):
    """Valid arguments of _core.language_model_loss for a vanilla RNN, as a dict."""
    f = np.float32
    params = ([np.zeros((V, E), f)] if E else []) + [
        a for l in range(layers) for a in (np.zeros((E or V) if l == 0 else H, f).reshape(-1, 1).repeat(H, 1),
                                           np.zeros((H, H), f), np.zeros(H, f))
    ] + [np.zeros((H, V), f), np.zeros(V, f)]
    return dict(cell="rnn", inputs=np.zeros((2, 3), np.int64), targets=np.zeros((2, 3), np.int64), params=params,
                grads=[np.zeros_like(p) for p in params], embedding=E is not None, h0=None, c0=None, masks=[],
                nonlinearity="tanh", reset_after=True, row_scale=1.0)


def call(**changes):
    args = rnn_args()
    args.update(changes)
    return _core.language_model_loss(**args)


def test_valid_arguments_run():
    loss, hT, cT = _core.language_model_loss(**rnn_args(E=3, layers=2))
    assert loss == pytest.approx(6 * np.log(5))  # all-zero weights: uniform predictions
    assert hT.shape == (2, 2, 4) and cT is None


@pytest.mark.parametrize(
    "changes,error,match",
    [
        (dict(params=[]), ValueError, "params is empty"),
        (dict(cell="lstmx"), ValueError, "cell must be"),
        (dict(inputs=np.zeros((2, 3))), TypeError, "inputs must be an integer array"),
        (dict(inputs=np.full((2, 3), 5)), ValueError, r"inputs must lie in \[0, 5\), got inputs\[0, 0\] = 5"),
        (dict(targets=np.zeros((2, 4), np.int64)), ValueError, r"targets must have shape \(N, T\)"),
        (dict(targets=np.full((2, 3), -1)), ValueError, r"targets must lie in \[0, 5\)"),
        (dict(h0=np.zeros((1, 2, 5), np.float32)), ValueError, r"h0 must have shape \(L, N, H\)"),
        (dict(h0=np.zeros((1, 2, 4))), TypeError, "h0 has dtype float64"),
        (dict(c0=np.zeros((1, 2, 4), np.float32)), ValueError, "c0 is only defined for the LSTM"),
        (dict(masks=[np.ones((2, 3, 4), np.float32)]), ValueError, r"masks must be empty or hold L - 1 = 0"),
        (dict(nonlinearity="sigmoid"), ValueError, "nonlinearity must be"),
    ],
)
def test_bad_arguments_raise_clear_errors(changes, error, match):
    with pytest.raises(error, match=match):
        call(**changes)


def test_bad_parameter_lists_raise_clear_errors():
    args = rnn_args()
    with pytest.raises(ValueError, match=r"params must hold per layer \[Wx, Wh, b\] \+ \[Wy, by\], got 4"):
        call(params=args["params"][:4], grads=args["grads"][:4])
    bad = list(args["params"])
    bad[1] = np.zeros((4, 5), np.float32)  # Wh not (H, H)
    with pytest.raises(ValueError, match=r"Wh \(params\[1\]\) must have shape \(H, H\)"):
        call(params=bad)
    with pytest.raises(ValueError, match=r"grads has 4 arrays but params has 5"):
        call(grads=args["grads"][:4])
    grads = list(args["grads"])
    grads[2] = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match=r"grads\[2\] has shape \(3,\) but params\[2\] has shape \(4,\)"):
        call(grads=grads)
    grads[2] = np.zeros(4, np.float32)
    grads[2].flags.writeable = False
    with pytest.raises(ValueError, match=r"grads\[2\] must be a writeable"):
        call(grads=grads)
    mixed = list(args["params"])
    mixed[3] = mixed[3].astype(np.float64)
    with pytest.raises(TypeError, match=r"params\[3\] has dtype float64"):
        call(params=mixed)
