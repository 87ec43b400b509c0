"""CharRNN.train_step runs loss, gradients and the optimizer's update in one compiled
call, and CharRNN.train_steps runs K such steps over consecutive chunks in one call. Both
must give exactly the bits of ``loss`` followed by ``optimizer.step``: loss, parameters,
optimizer state, step count, final state and gradients."""
from __future__ import annotations

import numpy as np
import pytest

import fastrnn
from fastrnn import _core
from fastrnn.data import CharBatches
from fastrnn.models import CharRNN
from fastrnn.optim import SGD, Adagrad, Adam, AdamW, RMSprop

V = 13

OPTIMIZERS = {
    "sgd": lambda p, **kw: SGD(p, lr=0.1, **kw),
    "nesterov": lambda p, **kw: SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3, **kw),
    "adagrad": lambda p, **kw: Adagrad(p, lr=0.1, **kw),
    "rmsprop": lambda p, **kw: RMSprop(p, lr=2e-3, **kw),
    "adam": lambda p, **kw: Adam(p, lr=2e-3, weight_decay=1e-4, **kw),
    "adamw": lambda p, **kw: AdamW(p, lr=2e-3, weight_decay=1e-2, **kw),
}
CLIPPING = {"none": {}, "clipvalue": {"clipvalue": 0.05}, "global_clipnorm": {"global_clipnorm": 0.5}}


def as_tuple(state):
    return state if isinstance(state, tuple) else (state,)


def pair(cell, optimizer, clipping, dtype=np.float32, **model_kw):
    """Two identical models, each with its own optimizer."""
    kw = dict(hidden_size=9, cell=cell, seed=4, dtype=dtype, **model_kw)
    out = []
    for _ in range(2):
        model = CharRNN(V, **kw)
        out.append((model, OPTIMIZERS[optimizer](model.params, **CLIPPING[clipping])))
    return out


def assert_same(a, b, loss_a=None, loss_b=None, state_a=None, state_b=None):
    (ma, oa), (mb, ob) = a, b
    if loss_a is not None:
        np.testing.assert_array_equal(loss_a, loss_b)
    assert oa.t == ob.t
    for k in ma.params:
        np.testing.assert_array_equal(ma.params[k], mb.params[k], err_msg=k)
        np.testing.assert_array_equal(ma.grads[k], mb.grads[k], err_msg=k)
        for buf in oa.state:
            np.testing.assert_array_equal(oa.state[buf][k], ob.state[buf][k], err_msg=f"{buf}/{k}")
    for got, want in zip(as_tuple(state_a), as_tuple(state_b)):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
@pytest.mark.parametrize("clipping", list(CLIPPING))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_train_step_gives_the_bits_of_loss_then_step(cell, optimizer, clipping, dtype):
    ours, theirs = pair(cell, optimizer, clipping, dtype)
    rng = np.random.default_rng(0)
    s_ours = s_theirs = None
    for _ in range(3):
        x, y = rng.integers(V, size=(2, 6)), rng.integers(V, size=(2, 6))
        loss_ours, s_ours = ours[0].train_step(x, y, ours[1], s_ours)
        loss_theirs, grads, s_theirs = theirs[0].loss(x, y, s_theirs)
        theirs[1].step(grads)
        assert_same(ours, theirs, loss_ours, loss_theirs, s_ours, s_theirs)


@pytest.mark.parametrize("cell,embedding_dim,num_layers,dropout", [
    ("rnn", None, 1, 0.0), ("lstm", 5, 2, 0.3), ("gru", None, 3, 0.2),
])
@pytest.mark.parametrize("optimizer,clipping", [("adagrad", "clipvalue"), ("adam", "none"), ("rmsprop", "global_clipnorm")])
@pytest.mark.parametrize("threads", [1, 2])
def test_train_steps_gives_the_bits_of_train_step_in_a_loop(cell, embedding_dim, num_layers, dropout, optimizer,
                                                            clipping, threads):
    previous = fastrnn.get_num_threads()
    fastrnn.set_num_threads(threads)
    try:
        ours, theirs = pair(cell, optimizer, clipping, embedding_dim=embedding_dim, num_layers=num_layers,
                            dropout=dropout)
        rng = np.random.default_rng(1)
        s_ours = s_theirs = None
        for K in (4, 1, 3):
            x, y = rng.integers(V, size=(K, 2, 5)), rng.integers(V, size=(K, 2, 5))
            losses, s_ours = ours[0].train_steps(x, y, ours[1], s_ours, reduction="sum")
            assert losses.shape == (K,) and losses.dtype == np.float64
            want = []
            for k in range(K):
                loss, s_theirs = theirs[0].train_step(x[k], y[k], theirs[1], s_theirs, reduction="sum")
                want.append(loss)
            assert_same(ours, theirs, losses, np.array(want), s_ours, s_theirs)
            assert ours[0].rng_state()["state.state"] == theirs[0].rng_state()["state.state"]
    finally:
        fastrnn.set_num_threads(previous)


@pytest.mark.parametrize("mode", ["always", "timed"])
def test_train_steps_with_the_head_beside_the_cells_gives_the_bits_of_one_thread(
    default_thread_teams, head_beside, threads, mode
):
    """min-char-rnn's shapes at the default team threshold: on two threads the head and
    the update of its parameters run beside the cells (always, or when timed faster)."""
    head_beside(mode)
    results = []
    for n in (1, 2):
        threads(n)
        assert _core.head_runs_beside_cells("rnn", 1, 25, 100) == (n == 2)
        model = CharRNN(79, hidden_size=100, cell="rnn", seed=0)
        opt = Adagrad(model.params, lr=0.1, clipvalue=5.0)
        rng = np.random.default_rng(2)
        x, y = rng.integers(79, size=(6, 1, 25)), rng.integers(79, size=(6, 1, 25))
        losses, state = model.train_steps(x, y, opt, None, reduction="sum")
        results.append((losses, state, {k: p.copy() for k, p in model.params.items()},
                        {k: m.copy() for k, m in opt.state["mem"].items()}))
    (l1, s1, p1, m1), (l2, s2, p2, m2) = results
    np.testing.assert_array_equal(l1, l2)
    np.testing.assert_array_equal(s1, s2)
    for k in p1:
        np.testing.assert_array_equal(p1[k], p2[k], err_msg=k)
        np.testing.assert_array_equal(m1[k], m2[k], err_msg=k)


def test_train_steps_of_zero_chunks_return_the_state_and_change_nothing():
    model = CharRNN(V, hidden_size=6, num_layers=1, cell="lstm", seed=0)
    opt = Adam(model.params)
    before = {k: p.copy() for k, p in model.params.items()}
    h, c = (np.full((1, 2, 6), 0.25, np.float32), np.full((1, 2, 6), -0.5, np.float32))
    losses, (h2, c2) = model.train_steps(np.zeros((0, 2, 4), np.int64), np.zeros((0, 2, 4), np.int64), opt, (h, c))
    assert losses.shape == (0,) and opt.t == 0
    np.testing.assert_array_equal(h2, h)
    np.testing.assert_array_equal(c2, c)
    for k in before:
        np.testing.assert_array_equal(model.params[k], before[k])


@pytest.mark.parametrize("method", ["train_step", "train_steps"])
def test_bad_inputs_raise_and_leave_the_parameters_and_optimizer_untouched(method):
    model = CharRNN(V, hidden_size=6, cell="gru", seed=0)
    opt = Adam(model.params, clipvalue=1.0)
    model.train_step(np.ones((2, 3), np.int64), np.ones((2, 3), np.int64), opt)
    params = {k: p.copy() for k, p in model.params.items()}
    state = {b: {k: a.copy() for k, a in bufs.items()} for b, bufs in opt.state.items()}
    shape = (2, 3) if method == "train_step" else (4, 2, 3)
    x = np.ones(shape, np.int64)
    bad_x = x.copy()
    bad_x.flat[-1] = V  # out of range
    with pytest.raises(ValueError, match="inputs"):
        getattr(model, method)(bad_x, x, opt)
    with pytest.raises(ValueError, match="targets"):
        getattr(model, method)(x, x[..., :2], opt)
    with pytest.raises(ValueError, match="inputs must have shape"):
        getattr(model, method)(x[0], x[0], opt)
    with pytest.raises(TypeError, match="optimizer"):
        getattr(model, method)(x, x, "adam")
    assert opt.t == 1
    for k in params:
        np.testing.assert_array_equal(model.params[k], params[k])
        for b in state:
            np.testing.assert_array_equal(opt.state[b][k], state[b][k])


def test_an_optimizer_of_other_parameters_gets_the_step_s_error():
    model = CharRNN(V, hidden_size=6, seed=0)
    extra = dict(model.params, other=np.zeros(3, np.float32))
    opt = SGD(extra, lr=0.1)
    with pytest.raises(ValueError, match="no gradient for parameter 'other'"):
        model.train_step(np.ones((1, 4), np.int64), np.ones((1, 4), np.int64), opt)
    assert opt.t == 0


def test_a_replaced_parameter_array_gets_the_bits_of_loss_then_step():
    """After ``model.params[k] = new``, the optimizer still updates the array it holds, as
    its step() would; the single call is not used then."""
    ours, theirs = pair("rnn", "adagrad", "clipvalue")
    for model, _ in (ours, theirs):
        model.params["head.b"] = model.params["head.b"] + 0.5
    rng = np.random.default_rng(3)
    x, y = rng.integers(V, size=(2, 6)), rng.integers(V, size=(2, 6))
    loss_ours, s_ours = ours[0].train_step(x, y, ours[1])
    loss_theirs, grads, s_theirs = theirs[0].loss(x, y)
    theirs[1].step(grads)
    assert_same(ours, theirs, loss_ours, loss_theirs, s_ours, s_theirs)
    for (model, opt) in (ours, theirs):
        assert opt.params["head.b"] is not model.params["head.b"]
    np.testing.assert_array_equal(ours[1].params["head.b"], theirs[1].params["head.b"])


def test_the_compiled_update_rejects_arrays_it_cannot_update_in_place():
    model = CharRNN(V, hidden_size=6, num_layers=1, cell="rnn", seed=0)
    opt = SGD(model.params, lr=0.1)
    params, grads = model._sync()
    x = np.ones((1, 4), np.int64)
    h0 = np.zeros((1, 1, 6), np.float32)
    args = ("rnn", x, x, params, grads, False, h0, None, [], "tanh", True, 1.0)
    frozen = [p.copy() for p in params]
    frozen[1].flags.writeable = False
    with pytest.raises(ValueError, match=r"params\[1\] must be a writeable"):
        _core.language_model_loss(*args[:3], frozen, *args[4:], ("sgd", [], [], {"lr": 0.1}))
    strided = [p.copy() for p in params]
    strided[0] = np.asfortranarray(strided[0])
    with pytest.raises(ValueError, match=r"params\[0\] must be a writeable"):
        _core.language_model_loss(*args[:3], strided, *args[4:], ("sgd", [], [], {"lr": 0.1}))
    with pytest.raises(ValueError, match="list of K = 2 dicts"):
        _core.language_model_loss("rnn", np.ones((2, 1, 4), np.int64), np.ones((2, 1, 4), np.int64),
                                  *args[3:], ("sgd", [], [], [{"lr": 0.1}]))
    with pytest.raises(ValueError, match="unknown update coefficient"):
        _core.language_model_loss(*args, ("sgd", [], [], {"lr": 0.1, "momentun": 0.9}))
    assert opt.t == 0


def test_next_batches_are_next_batch_s_and_stop_at_the_end_of_the_epoch():
    data = np.arange(1000) % 37
    ours, theirs = CharBatches(data, 3, 7, val_fraction=0.1), CharBatches(data, 3, 7, val_fraction=0.1)
    sizes = []
    for _ in range(25):
        x, y = ours.next_batches(4)
        assert x.dtype == np.int32 and x.shape[1:] == (3, 7) and x.flags.c_contiguous
        sizes.append(x.shape[0])
        for k in range(x.shape[0]):
            want_x, want_y = theirs.next_batch("train")
            np.testing.assert_array_equal(x[k], want_x)
            np.testing.assert_array_equal(y[k], want_y)
        assert (ours.position, ours.epoch) == (theirs.position, theirs.epoch)
    assert len(ours) % 4 != 0 and len(ours) % 4 in sizes  # an epoch's last call was short
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="count"):
            ours.next_batches(bad)


def test_train_steps_from_several_python_threads_give_each_model_its_own_bits(default_thread_teams, threads):
    """Four threads train four models at once (the GIL is released inside the call, and
    each call may run its head beside the cells): each ends as it would alone."""
    import threading

    threads(2)

    def train(seed: int):
        model = CharRNN(40, hidden_size=64, num_layers=1, cell="rnn", seed=seed)
        opt = Adagrad(model.params, lr=0.1, clipvalue=5.0)
        rng = np.random.default_rng(seed)
        x, y = rng.integers(40, size=(8, 1, 20)), rng.integers(40, size=(8, 1, 20))
        state = None
        for _ in range(10):
            losses, state = model.train_steps(x, y, opt, state, reduction="sum")
        return losses, {k: p.copy() for k, p in model.params.items()}

    alone = [train(seed) for seed in range(4)]
    together: list = [None] * 4
    workers = [threading.Thread(target=lambda s=s: together.__setitem__(s, train(s))) for s in range(4)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(timeout=120)
    for (l1, p1), (l2, p2) in zip(alone, together):
        np.testing.assert_array_equal(l1, l2)
        for k in p1:
            np.testing.assert_array_equal(p1[k], p2[k], err_msg=k)
