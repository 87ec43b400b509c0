"""Tests of fastrnn.models: CharRNN (training, carried state, step, gradients) and the CS231n
CaptioningRNN (CS231n's own loss values, gradients, greedy sampling, beam search)."""
from __future__ import annotations

from typing import Callable, Dict

import numpy as np
import pytest

import fastrnn
from fastrnn import reference as R
from fastrnn.layers import temporal_softmax_loss
from fastrnn.models import CaptioningRNN, CharRNN

from conftest import numeric_entries, rel_error

GRAD_TOL = 1e-6
WORST: Dict[str, float] = {}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny problems: one kernel thread keeps the timing stable on a busy machine."""
    previous = fastrnn.get_num_threads()
    fastrnn.set_num_threads(1)
    yield
    fastrnn.set_num_threads(previous)




def check_params(name: str, f: Callable[[], float], params: Dict[str, np.ndarray], grads, rng, k: int = 3):
    assert set(grads) == set(params)
    worst = 0.0
    for key, arr in params.items():
        idxs = [np.unravel_index(i, arr.shape) for i in rng.choice(arr.size, min(k, arr.size), replace=False)]
        num = numeric_entries(f, arr, idxs)
        err = rel_error([grads[key][i] for i in idxs], num)
        assert err < GRAD_TOL, f"{name} {key}: relative error {err:.3g}"
        worst = max(worst, err)
    WORST[name] = max(WORST.get(name, 0.0), worst)


def as_tuple(s):
    return s if isinstance(s, tuple) else (s,)


# --------------------------------------------------------------------------- CharRNN


TEXT = "hello world, hello fastrnn! "


def encode(text: str):
    chars = sorted(set(text))
    return np.array([chars.index(c) for c in text]), len(chars)


@pytest.mark.parametrize("optimizer,num_layers", [("adam", 2), ("sgd", 1)])
def test_charrnn_overfits_a_tiny_sequence(optimizer, num_layers):
    ids, V = encode(TEXT * 2)
    x, y = ids[None, :-1], ids[None, 1:]
    model = CharRNN(V, hidden_size=32, num_layers=num_layers, cell="lstm", seed=0, dtype=np.float32)
    m = {k: np.zeros_like(p) for k, p in model.params.items()}
    v = {k: np.zeros_like(p) for k, p in model.params.items()}
    losses = []
    for step in range(1, 151):
        loss, grads, _ = model.loss(x, y)
        losses.append(loss)
        for k, p in model.params.items():  # update in place: the layers see it
            g = grads[k]
            if optimizer == "adam":
                m[k] = 0.9 * m[k] + 0.1 * g
                v[k] = 0.999 * v[k] + 0.001 * g * g
                p -= 1e-2 * (m[k] / (1 - 0.9**step)) / (np.sqrt(v[k] / (1 - 0.999**step)) + 1e-8)
            else:
                p -= 2.0 * g
    assert abs(losses[0] - np.log(V)) < 0.1  # starts near uniform
    assert losses[-1] < (0.1 if optimizer == "adam" else 0.2), losses[::25]
    assert losses[-1] < losses[0] / 2


def test_charrnn_cs231n_solver_style_replacing_params():
    """A CS231n Solver replaces model.params[k] by a new array: the model follows."""
    ids, V = encode(TEXT)
    model = CharRNN(V, 16, 1, cell="gru", dtype=np.float64, seed=1)
    loss0, grads, _ = model.loss(ids[None, :-1], ids[None, 1:])
    for k in list(model.params):
        model.params[k] = model.params[k] - 0.5 * grads[k]
    loss1, _, _ = model.loss(ids[None, :-1], ids[None, 1:])
    assert model.rnn.params["Wx_l0"] is model.params["rnn.Wx_l0"]
    assert loss1 < loss0


def test_charrnn_loss_follows_replaced_grads_and_rejects_bad_params():
    """model.grads[k] replaced by a strided array: loss writes a C-contiguous one there with
    the same values; a replaced parameter of the wrong shape, or a lost entry, is named."""
    ids, V = encode(TEXT)
    x, y = ids[None, :-1], ids[None, 1:]
    model = CharRNN(V, 16, 1, cell="rnn", dtype=np.float64, seed=1)
    _, grads, _ = model.loss(x, y)
    expected = {k: g.copy() for k, g in grads.items()}
    strided = np.zeros((16, 2 * 16))[:, ::2]
    model.grads["rnn.Wh_l0"] = strided
    _, grads, _ = model.loss(x, y)
    assert grads["rnn.Wh_l0"] is not strided and grads["rnn.Wh_l0"].flags.c_contiguous
    assert grads["rnn.Wh_l0"] is model.rnn.grads["Wh_l0"]
    for k in expected:
        np.testing.assert_array_equal(grads[k], expected[k])
    model.params["rnn.b_l0"] = np.zeros(15)
    with pytest.raises(ValueError, match=r"params\['rnn.b_l0'\] must be a float64 array of shape \(16,\)"):
        model.loss(x, y)
    del model.params["rnn.b_l0"]
    with pytest.raises(KeyError, match="lost its entry 'rnn.b_l0'"):
        model.loss(x, y)


def test_charrnn_params_are_the_sublayers_arrays_and_config():
    model = CharRNN(7, 8, 2, cell="lstm", embedding_dim=5, seed=0)
    assert model.params["embed.W"] is model.embed.params["W"]
    assert model.params["rnn.Wh_l1"] is model.rnn.params["Wh_l1"]
    assert model.params["head.W"] is model.head.params["W"] and model.params["head.W"].shape == (8, 7)
    assert model.grads["rnn.b_l0"] is model.rnn.grads["b_l0"]
    assert set(model.grads) == set(model.params)
    assert "embed.W" not in CharRNN(7, 8, 2).params  # one-hot input by default
    cfg = model.config()
    assert cfg == {
        "vocab_size": 7, "hidden_size": 8, "num_layers": 2, "cell": "lstm", "dropout": 0.0,
        "embedding_dim": 5, "dtype": "float32", "init": "uniform", "seed": 0,
    }
    twin = CharRNN.from_config(cfg)
    for k in model.params:
        np.testing.assert_array_equal(twin.params[k], model.params[k])
    assert model.eval() is model and not model.rnn.training and not model.training
    assert model.train().rnn.training
    with pytest.raises(ValueError, match="cell"):
        CharRNN(7, cell="transformer")
    with pytest.raises(ValueError, match=r"inputs must lie in \[0, 7\)"):
        model.loss(np.array([[7]]), np.array([[0]]))


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_charrnn_carried_state_is_truncated_bptt(cell):
    """Two chunks with the carried state give the same scores as one long sequence."""
    rng = np.random.default_rng(0)
    N, T, V, H, L = 3, 8, 6, 5, 2
    model = CharRNN(V, H, L, cell=cell, dtype=np.float64, seed=2)
    ids = rng.integers(V, size=(N, 2 * T + 1))
    full, _ = model.forward(ids[:, :-1])
    loss1, _, state = model.loss(ids[:, :T], ids[:, 1 : T + 1])
    for s in as_tuple(state):
        assert s.shape == (L, N, H)
    assert isinstance(state, tuple) == (cell == "lstm")
    # the returned state is detached: later calls do not change it
    kept = [s.copy() for s in as_tuple(state)]
    second, _ = model.forward(ids[:, T:-1], state)
    for a, b in zip(kept, as_tuple(state)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(second, full[:, T:], rtol=0, atol=1e-12)
    init = model.initial_state(N)
    assert all(s.shape == (L, N, H) and not s.any() for s in as_tuple(init))


def test_charrnn_sample_checks_length_and_temperature():
    model = CharRNN(9, 6, seed=0)
    prime = np.array([1, 2])
    for bad in (float("nan"), float("inf"), -0.5):
        with pytest.raises(ValueError, match="temperature must be >= 0"):
            model.sample(prime, 5, temperature=bad, rng=0)
    with pytest.raises(TypeError, match="temperature must be a real number"):
        model.sample(prime, 5, temperature="1.0", rng=0)
    with pytest.raises(TypeError, match="length must be an int"):
        model.sample(prime, 2.5, rng=0)
    greedy, _ = model.sample(prime, 5, temperature=0)
    scores, _ = model.forward(np.array([[1, 2]]))
    assert greedy[0] == scores[0, -1].argmax()


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("embedding_dim", [None, 4])
def test_charrnn_step_matches_full_forward(cell, embedding_dim):
    rng = np.random.default_rng(1)
    N, T, V = 2, 5, 7
    model = CharRNN(V, 6, 2, cell=cell, embedding_dim=embedding_dim, dropout=0.3, dtype=np.float64, seed=3)
    model.eval()
    ids = rng.integers(V, size=(N, T))
    scores, final = model.forward(ids)
    state = None
    for t in range(T):
        logits, state = model.step(ids[:, t], state)
        assert logits.shape == (N, V)
        np.testing.assert_allclose(logits, scores[:, t], rtol=0, atol=1e-12)
    for a, b in zip(as_tuple(state), as_tuple(final)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    # sampling: greedy sampling is deterministic and follows step()
    out, _ = model.sample(ids[0, :3], 4, temperature=0)
    assert out.shape == (4,)
    _, st = model.forward(ids[:1, :2])
    prev, expect = ids[:1, 2], []
    for _ in range(4):
        logits, st = model.step(prev, st)
        prev = logits.argmax(1)
        expect.append(int(prev[0]))
    assert out.tolist() == expect
    drawn, _ = model.sample(ids, 10, temperature=1.0, rng=0)
    assert drawn.shape == (N, 10) and drawn.min() >= 0 and drawn.max() < V
    np.testing.assert_array_equal(drawn, model.sample(ids, 10, temperature=1.0, rng=0)[0])


@pytest.mark.parametrize(
    "cell,embedding_dim,dropout,N",
    [("rnn", None, 0.0, 2), ("lstm", None, 0.0, 2), ("gru", None, 0.0, 2), ("lstm", 3, 0.5, 2), ("gru", 3, 0.0, 2),
     # 16 rows, at least twice the 5 tokens: the compiled loss folds the embedding into E·Wx
     ("lstm", 3, 0.5, 4), ("rnn", 3, 0.0, 4)],
)
def test_charrnn_gradcheck(cell, embedding_dim, dropout, N):
    rng = np.random.default_rng(2)
    T, V, H = 4, 5, 4
    model = CharRNN(V, H, 2, cell=cell, embedding_dim=embedding_dim, dropout=dropout, dtype=np.float64, seed=4)
    x, y = rng.integers(V, size=(N, T)), rng.integers(V, size=(N, T))
    state0 = tuple(0.5 * rng.standard_normal(s.shape) for s in as_tuple(model.initial_state(N)))
    state0 = state0 if cell == "lstm" else state0[0]
    rng_state = model.rng_state()

    def f() -> float:
        model.set_rng_state(rng_state)  # the same dropout masks every time
        scores, _ = model.forward(x, state0)
        return temporal_softmax_loss(scores, y, reduction="mean")[0]

    model.set_rng_state(rng_state)
    loss, grads, _ = model.loss(x, y, state0)
    assert abs(loss - f()) < 1e-14
    grads = {k: g.copy() for k, g in grads.items()}  # model.grads is refilled by every loss()
    check_params("CharRNN gradcheck (float64 rel)", f, model.params, grads, rng)
    # gradient w.r.t. the initial state
    model.set_rng_state(rng_state)
    scores, _ = model.forward(x, state0)
    dstate0 = model.backward(temporal_softmax_loss(scores, y, reduction="mean")[1])
    for s, ds in zip(as_tuple(state0), as_tuple(dstate0)):
        idxs = [np.unravel_index(i, s.shape) for i in rng.choice(s.size, 3, replace=False)]
        assert rel_error([ds[i] for i in idxs], numeric_entries(f, s, idxs)) < GRAD_TOL


# --------------------------------------------------------------------------- CaptioningRNN


def test_captioning_cs231n_expected_losses():
    """The checks of CS231n's RNN_Captioning / LSTM_Captioning notebooks."""
    N, D, W, H, T = 10, 20, 30, 40, 13
    word_to_idx = {"<NULL>": 0, "cat": 2, "dog": 3}
    for cell_type, feature_range, expected in [("rnn", (-1.5, 0.3), 9.83235591003), ("lstm", (-0.5, 1.7), 9.82445935443)]:
        model = CaptioningRNN(word_to_idx, input_dim=D, wordvec_dim=W, hidden_dim=H, cell_type=cell_type, dtype=np.float64)
        for k, v in model.params.items():
            model.params[k] = np.linspace(-1.4, 1.3, num=v.size).reshape(*v.shape)
        features = np.linspace(*feature_range, num=N * D).reshape(N, D)
        captions = (np.arange(N * T) % len(word_to_idx)).reshape(N, T)
        loss, grads = model.loss(features, captions)
        assert abs(loss - expected) < 1e-10
        assert set(grads) == set(model.params)


@pytest.mark.parametrize("cell_type", ["rnn", "lstm", "gru"])
def test_captioning_gradcheck(cell_type):
    rng = np.random.default_rng(231)
    N, T, D, W, H = 2, 3, 4, 5, 6
    word_to_idx = {"<NULL>": 0, "<START>": 1, "<END>": 2, "cat": 3, "dog": 4}
    V = len(word_to_idx)
    model = CaptioningRNN(word_to_idx, input_dim=D, wordvec_dim=W, hidden_dim=H, cell_type=cell_type, dtype=np.float64)
    for k, v in model.params.items():  # CS231n inits biases to 0: randomise everything
        v[...] = 0.5 * rng.standard_normal(v.shape)
    features = rng.standard_normal((N, D))
    captions = rng.integers(V, size=(N, T + 1))
    captions[0, -1] = 0  # one masked position
    loss, grads = model.loss(features, captions)
    expected_keys = {"W_embed", "W_proj", "b_proj", "Wx", "Wh", "b", "W_vocab", "b_vocab"} | ({"bh"} if cell_type == "gru" else set())
    assert set(model.params) == expected_keys and set(grads) == expected_keys
    check_params("CaptioningRNN gradcheck (float64 rel)", lambda: model.loss(features, captions)[0], model.params, grads, rng, k=4)


def chain_model(cell_type: str) -> CaptioningRNN:
    """A model whose greedy path is <START> -> a -> b -> <END> (-> c if it did not stop)."""
    words = ["<NULL>", "<START>", "<END>", "a", "b", "c"]
    w2i = {w: i for i, w in enumerate(words)}
    V = len(words)
    model = CaptioningRNN(w2i, input_dim=3, wordvec_dim=V, hidden_dim=V, cell_type=cell_type, dtype=np.float64)
    p = model.params
    for v in p.values():
        v[...] = 0
    p["W_embed"][...] = 10 * np.eye(V)
    G = p["Wx"].shape[1] // V
    if cell_type == "lstm":  # i, o open, f closed: c = g = tanh(input), no memory
        p["b"][:V], p["b"][V : 2 * V], p["b"][2 * V : 3 * V] = 10, -10, 10
        p["Wx"][:, 3 * V :] = np.eye(V)
    elif cell_type == "gru":  # r, z = 0 -> h' = n = tanh(input)
        p["b"][V : 2 * V] = -10
        p["Wx"][:, 2 * V :] = np.eye(V)
    else:
        p["Wx"][...] = np.eye(V)
    assert G in (1, 3, 4)
    nxt = {"<START>": "a", "a": "b", "b": "<END>", "<END>": "c", "c": "a", "<NULL>": "a"}
    for src, dst in nxt.items():
        p["W_vocab"][w2i[src], w2i[dst]] = 20
    return model


@pytest.mark.parametrize("cell_type", ["rnn", "lstm", "gru"])
def test_captioning_sample_stops_at_end_and_fills_null(cell_type):
    model = chain_model(cell_type)
    feats = np.zeros((2, 3))
    caps = model.sample(feats, max_length=6)
    a, b, end, null = (model.word_to_idx[w] for w in ("a", "b", "<END>", "<NULL>"))
    assert caps.shape == (2, 6)
    assert caps.tolist() == [[a, b, end, null, null, null]] * 2
    assert model.decode(caps) == ["a b", "a b"]
    np.testing.assert_array_equal(model.beam_search(feats, beam_size=3, max_length=6), caps)
    assert model.sample(feats, max_length=2).tolist() == [[a, b]] * 2  # cut by max_length


def reference_step(model: CaptioningRNN, x: np.ndarray, h: np.ndarray, c: np.ndarray):
    """One step of the model's cell with fastrnn.reference: (h, c) -> (next_h, next_c)."""
    p = model.params
    if model.cell_type == "rnn":
        return R.rnn_step_forward(x, h, p["Wx"], p["Wh"], p["b"])[0], c
    if model.cell_type == "lstm":
        return R.lstm_step_forward(x, h, c, p["Wx"], p["Wh"], p["b"])[:2]
    return R.gru_step_forward(x, h, p["Wx"], p["Wh"], p["b"], p["bh"])[0], c


def naive_greedy(model: CaptioningRNN, feats: np.ndarray, T: int) -> np.ndarray:
    """Greedy decoding written with fastrnn.reference's step functions, without stopping."""
    p = model.params
    h = feats @ p["W_proj"] + p["b_proj"]
    c = np.zeros_like(h)
    word = np.full(len(feats), model.word_to_idx["<START>"])
    out = []
    for _ in range(T):
        x = p["W_embed"][word]
        h, c = reference_step(model, x, h, c)
        word = (h @ p["W_vocab"] + p["b_vocab"]).argmax(axis=1)
        out.append(word)
    return np.stack(out, axis=1)


@pytest.mark.parametrize("cell_type", ["rnn", "lstm", "gru"])
def test_captioning_random_model_sample_and_beam_search(cell_type):
    rng = np.random.default_rng(5)
    words = ["<NULL>", "<START>", "<END>"] + [f"w{i}" for i in range(9)]
    w2i = {w: i for i, w in enumerate(words)}
    model = CaptioningRNN(w2i, input_dim=6, wordvec_dim=5, hidden_dim=7, cell_type=cell_type, dtype=np.float64, seed=1)
    for v in model.params.values():
        v[...] = 1.5 * rng.standard_normal(v.shape)
    feats = rng.standard_normal((12, 6))
    end, null = w2i["<END>"], w2i["<NULL>"]
    # Raise the bias of <END> until some captions (not all) end before max_length.
    for _ in range(40):
        naive = naive_greedy(model, feats, 8)  # never stops
        if 3 <= (naive[:, :-1] == end).any(axis=1).sum() <= 9:
            break
        model.params["b_vocab"][end] += 0.25
    greedy = model.sample(feats, max_length=8)
    assert greedy.shape == (12, 8)
    ended = 0
    for row, ref in zip(greedy, naive):
        k = list(ref).index(end) + 1 if end in ref else 8
        np.testing.assert_array_equal(row[:k], ref[:k])
        assert (row[k:] == null).all()
        ended += k < 8
    assert 0 < ended < 12, ended
    np.testing.assert_array_equal(model.beam_search(feats, beam_size=1, max_length=8), greedy)


def naive_logprob(model: CaptioningRNN, feat: np.ndarray, words) -> float:
    """log p(words | image) with fastrnn.reference's step functions (words end at <END>)."""
    p = model.params
    h = feat[None] @ p["W_proj"] + p["b_proj"]
    c = np.zeros_like(h)
    prev, total = model.word_to_idx["<START>"], 0.0
    for w in words:
        x = p["W_embed"][[prev]]
        h, c = reference_step(model, x, h, c)
        s = (h @ p["W_vocab"] + p["b_vocab"])[0]
        total += s[w] - s.max() - np.log(np.exp(s - s.max()).sum())
        prev = w
    return float(total)


@pytest.mark.parametrize("cell_type", ["rnn", "lstm", "gru"])
def test_captioning_beam_search_wide_enough_is_exact(cell_type):
    """With beam_size = V**(L-1) the search keeps every prefix, so it must return the most
    probable caption of length <= L, found here by enumerating all of them."""
    rng = np.random.default_rng(6)
    words = ["<NULL>", "<START>", "<END>", "a", "b"]
    w2i = {w: i for i, w in enumerate(words)}
    V, L = len(words), 3
    model = CaptioningRNN(w2i, input_dim=3, wordvec_dim=4, hidden_dim=5, cell_type=cell_type, dtype=np.float64)
    for v in model.params.values():
        v[...] = rng.standard_normal(v.shape)
    model.params["b_vocab"][w2i["<END>"]] += 1.0
    feats = rng.standard_normal((4, 3))
    beam = model.beam_search(feats, beam_size=V ** (L - 1), max_length=L)
    end, null = w2i["<END>"], w2i["<NULL>"]
    for f, caption in zip(feats, beam):
        candidates = []
        for seq in np.ndindex(*(V,) * L):
            seq = list(seq)
            if end in seq:
                seq = seq[: seq.index(end) + 1]
            candidates.append((naive_logprob(model, f, seq), seq))
        best_lp, best = max(candidates, key=lambda t: t[0])
        got = list(caption[: list(caption).index(end) + 1]) if end in caption else list(caption)
        assert (caption[len(got):] == null).all()
        assert naive_logprob(model, f, got) >= best_lp - 1e-12, (got, best)


def test_captioning_errors_and_dtype():
    w2i = {"<NULL>": 0, "<START>": 1, "<END>": 2, "x": 3}
    model = CaptioningRNN(w2i, input_dim=4, wordvec_dim=3, hidden_dim=5, seed=0)
    assert all(v.dtype == np.float32 for v in model.params.values())
    loss, grads = model.loss(np.ones((2, 4)), np.array([[1, 3, 2], [1, 2, 0]]))  # float64 features are cast
    assert np.isfinite(loss) and all(g.dtype == np.float32 for g in grads.values())
    with pytest.raises(ValueError, match=r"features must have shape \(N, input_dim\) = \(N, 4\)"):
        model.loss(np.ones((2, 3)), np.array([[1, 3, 2], [1, 2, 0]]))
    with pytest.raises(ValueError, match="captions must have shape"):
        model.loss(np.ones((2, 4)), np.array([[1], [1]]))
    with pytest.raises(ValueError, match=r"captions must lie in \[0, 4\)"):
        model.loss(np.ones((2, 4)), np.array([[1, 4], [1, 2]]))
    with pytest.raises(ValueError, match="cell_type"):
        CaptioningRNN(w2i, cell_type="transformer")
    with pytest.raises(ValueError, match="<NULL>"):
        CaptioningRNN({"a": 0})
    with pytest.raises(ValueError, match="<START>"):
        CaptioningRNN({"<NULL>": 0, "a": 1}, input_dim=4).sample(np.ones((1, 4)))


def test_report_worst_errors():
    for kind, value in sorted(WORST.items()):
        print(f"worst {kind}: {value:.3g}")


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("embedding_dim", [None, 5])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_param_shapes_match_the_built_model(cell, embedding_dim, dtype):
    model = CharRNN(11, hidden_size=7, num_layers=3, cell=cell, embedding_dim=embedding_dim, dtype=dtype, seed=1)
    shapes = CharRNN.param_shapes(model.config())
    assert list(shapes) == list(model.params)
    assert shapes == {k: (v.shape, v.dtype) for k, v in model.params.items()}
    with pytest.raises(ValueError):
        CharRNN.param_shapes({**model.config(), "hidden_size": 0})
    with pytest.raises(TypeError):
        CharRNN.param_shapes({**model.config(), "bogus": 1})
