"""Tests of fastrnn.sampling: the compiled draw against its NumPy reference and against the
softmax distribution, and sample / stream / beam_search on CharRNN models."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from fastrnn import sampling as S
from fastrnn.data import Vocab
from fastrnn.models import CharRNN

DTYPES = [np.float32, np.float64]


def random_logits(rng, N, V, dtype, scale=3.0):
    """Random logits with some exact ties and a -inf (masked) entry per row."""
    x = rng.standard_normal((N, V)) * scale
    if V >= 4:
        x[:, 1] = x[:, 3]
        x[::2, 0] = -np.inf
    return x.astype(dtype)


def softmax(x, t=1.0):
    z = (np.asarray(x, np.float64) - np.max(x)) / t
    e = np.exp(z)
    return e / e.sum()


# ----------------------------------------------------------------------------- the draw


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("V", [1, 2, 5, 65, 300])
def test_draw_matches_reference(dtype, V):
    rng = np.random.default_rng(V)
    for top_k, top_p, t in itertools.product([None, 1, 3, V], [None, 1e-3, 0.5, 0.9, 1.0], [0.5, 1.0, 1.7]):
        x = random_logits(rng, 16, V, dtype)
        u = rng.random(16)
        u[0] = 0.0
        got = S.draw(x, u, temperature=t, top_k=top_k, top_p=top_p)
        want = S.draw_reference(x, u, temperature=t, top_k=top_k, top_p=top_p)
        assert got.dtype == np.int64 and got.shape == (16,)
        np.testing.assert_array_equal(got, want, err_msg=f"top_k={top_k} top_p={top_p} t={t}")
        assert np.all(np.isfinite(x[np.arange(16), got]))  # never a -inf (zero-probability) id


@pytest.mark.parametrize("dtype", DTYPES)
def test_draw_accepts_layouts_and_generator(dtype):
    rng = np.random.default_rng(1)
    x = random_logits(rng, 8, 20, dtype)
    u = rng.random(8)
    want = S.draw(x, u, top_k=5)
    np.testing.assert_array_equal(S.draw(np.asfortranarray(x), u, top_k=5), want)
    np.testing.assert_array_equal(S.draw(x[:, ::-1][:, ::-1], list(u), top_k=5), want)
    a = S.draw(x, np.random.default_rng(7), top_p=0.8)
    b = S.draw_reference(x, np.random.default_rng(7), top_p=0.8)
    np.testing.assert_array_equal(a, b)
    assert S.draw(np.zeros((0, 5), dtype), np.zeros(0)).shape == (0,)


@pytest.mark.parametrize("dtype", DTYPES)
def test_argmax_picks_the_max_lowest_id_on_ties(dtype):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((50, 40)).astype(dtype)
    np.testing.assert_array_equal(S.draw(x, None, argmax=True), x.argmax(axis=1))
    np.testing.assert_array_equal(S.draw(x, rng.random(50), argmax=True, temperature=5.0), x.argmax(axis=1))
    tie = np.array([[0.0, 2.0, 1.0, 2.0]], dtype)
    assert S.draw(tie, None, argmax=True)[0] == 1
    assert S.draw(tie, [0.999], top_k=1)[0] == 1


@pytest.mark.parametrize("dtype", DTYPES)
def test_low_temperature_and_top_k_1_and_tiny_top_p_give_argmax(dtype):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((200, 65)).astype(dtype)
    best = x.argmax(axis=1)
    u = rng.random(200)
    np.testing.assert_array_equal(S.draw(x, u, temperature=1e-4), best)
    np.testing.assert_array_equal(S.draw(x, u, top_k=1, temperature=3.0), best)
    np.testing.assert_array_equal(S.draw(x, u, top_p=1e-9, temperature=3.0), best)
    # and as the temperature falls, the draws agree with argmax more and more often
    agree = [np.mean(S.draw(x, u, temperature=t) == best) for t in (2.0, 0.5, 0.1, 0.01, 1e-4)]
    assert agree == sorted(agree) and agree[0] < 0.6 and agree[-1] == 1.0


def test_filters_restrict_the_support():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 30))
    p = softmax(x[0])
    order = np.argsort(-x[0], kind="stable")
    nucleus = order[: np.searchsorted(np.cumsum(p[order]), 0.7) + 1]
    draws_k = S.draw(np.repeat(x, 2000, axis=0), rng.random(2000), top_k=4)
    draws_p = S.draw(np.repeat(x, 2000, axis=0), rng.random(2000), top_p=0.7)
    assert set(draws_k) == set(order[:4])
    assert set(draws_p) == set(nucleus)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("t,top_k", [(1.0, None), (0.6, None), (1.5, 3)])
def test_empirical_frequencies_match_softmax(dtype, t, top_k):
    rng = np.random.default_rng(5)
    x = np.array([1.0, 0.2, -0.5, 2.0, 0.0, -1.0], dtype)
    n = 40_000
    ids = S.draw(np.tile(x, (n, 1)), rng.random(n), temperature=t, top_k=top_k)
    p = softmax(x, t)
    if top_k is not None:
        p[np.argsort(-x, kind="stable")[top_k:]] = 0
        p /= p.sum()
    counts = np.bincount(ids, minlength=x.size)
    assert np.all(counts[p == 0] == 0)
    seen = p > 0
    expected = n * p[seen]
    chi2 = float(((counts[seen] - expected) ** 2 / expected).sum())
    assert chi2 < 30.0, (counts, expected)  # 5 degrees of freedom: P(chi2 > 30) < 2e-5


def test_draw_rejects_bad_input():
    x = np.zeros((2, 3))
    u = np.array([0.1, 0.2])
    for bad in ([[0.0, np.nan, 1.0]], [[0.0, np.inf, 1.0]], [[-np.inf, -np.inf, -np.inf]]):
        with pytest.raises(ValueError, match="NaN|inf"):
            S.draw(np.array(bad), [0.5])
        with pytest.raises(ValueError, match="NaN|inf"):
            S.draw_reference(np.array(bad), [0.5])
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        S.draw(x, [0.1, 1.0])
    with pytest.raises(ValueError, match="shape"):
        S.draw(x, [0.1])
    with pytest.raises(ValueError, match="shape"):
        S.draw(np.zeros(3), [0.1])
    with pytest.raises(TypeError, match="dtype"):
        S.draw(np.array([["a", "b"]]), [0.1])
    with pytest.raises(TypeError, match="uniforms"):
        S.draw(x, None)
    with pytest.raises(ValueError, match="temperature"):
        S.draw(x, u, temperature=0.0)
    with pytest.raises(ValueError, match="top_k"):
        S.draw(x, u, top_k=0)
    with pytest.raises(ValueError, match="top_p"):
        S.draw(x, u, top_p=0.0)


# ----------------------------------------------------------------------------- models

VOCAB = Vocab("\n abcdefghij.")


@pytest.fixture(scope="module", params=["lstm", "gru"])
def model(request):
    return CharRNN(len(VOCAB), hidden_size=24, num_layers=2, cell=request.param, seed=3).eval()


class StepOnly:
    """The model seen through step/initial_state only: priming runs step by step."""

    def __init__(self, model):
        self._m = model
        self.vocab_size = model.vocab_size

    def step(self, ids, state):
        return self._m.step(ids, state)

    def initial_state(self, n):
        return self._m.initial_state(n)


def test_sample_same_seed_same_text(model):
    a = S.sample(model, VOCAB, 60, prime="ab c", seed=11, temperature=0.9, top_k=8)
    assert a == S.sample(model, VOCAB, 60, prime="ab c", seed=11, temperature=0.9, top_k=8)
    assert a != S.sample(model, VOCAB, 60, prime="ab c", seed=12, temperature=0.9, top_k=8)
    assert a.startswith("ab c") and len(a) == 64 and set(a) <= set(VOCAB.chars)
    g1 = S.sample(model, VOCAB, 30, seed=np.random.default_rng(4), top_p=0.9)
    assert g1 == S.sample(model, VOCAB, 30, seed=np.random.default_rng(4), top_p=0.9)
    assert S.sample(model, VOCAB, 0, prime="abc", seed=1) == "abc"
    assert S.sample(model, VOCAB, 0) == ""


def test_empty_prime_draws_first_char_uniformly(model):
    assert S.sample(model, VOCAB, 1, argmax=True) == VOCAB.chars[0]  # uniform: lowest id
    firsts = {S.sample(model, VOCAB, 1, seed=s) for s in range(60)}
    assert len(firsts) > len(VOCAB) // 2


def test_batch_shapes_and_rows(model):
    out = S.sample(model, VOCAB, 40, prime="ba", seed=5, batch=4)
    assert isinstance(out, list) and len(out) == 4
    assert all(len(s) == 42 and s.startswith("ba") for s in out)
    assert len(set(out)) > 1  # the rows have their own uniforms
    assert out == S.sample(model, VOCAB, 40, prime="ba", seed=5, batch=4)
    assert out[0] == S.sample(model, VOCAB, 40, prime="ba", seed=5)  # row 0 = the single sample
    greedy = S.sample(model, VOCAB, 20, prime="ba", argmax=True, batch=3)
    assert greedy == [S.sample(model, VOCAB, 20, prime="ba", argmax=True)] * 3


def test_stream_yields_the_sample(model):
    kw = dict(prime="hi", seed=8, temperature=1.3, top_p=0.95)
    chars = list(S.stream(model, VOCAB, 25, **kw))
    assert all(isinstance(c, str) and len(c) == 1 for c in chars)
    assert "".join(chars) == S.sample(model, VOCAB, 25, **kw)
    rows = list(S.stream(model, VOCAB, 25, batch=3, **kw))
    assert len(rows) == 27 and all(len(r) == 3 for r in rows)
    assert ["".join(col) for col in zip(*rows)] == S.sample(model, VOCAB, 25, batch=3, **kw)
    with pytest.raises(ValueError, match="temperature"):
        S.stream(model, VOCAB, 5, temperature=-1)  # checked at the call, not at next()


def test_priming_with_forward_equals_stepwise(model):
    a = S.sample(model, VOCAB, 30, prime="a cab. jig", argmax=True)
    b = S.sample(StepOnly(model), VOCAB, 30, prime="a cab. jig", argmax=True)
    assert a == b
    model.train()
    try:
        assert S.sample(model, VOCAB, 30, prime="a cab. jig", argmax=True) == a
        assert model.training  # the mode is restored
    finally:
        model.eval()


def test_beam_size_1_is_greedy(model):
    for prime in ("", "j", "face bad"):
        assert S.beam_search(model, VOCAB, 30, beam_size=1, prime=prime) == \
            S.sample(model, VOCAB, 30, argmax=True, prime=prime)
    assert S.beam_search(model, VOCAB, 0, prime="ab") == "ab"


def _log_prob(model, prime_ids, cont_ids):
    """log p(cont | prime) by plain stepping."""
    state = model.initial_state(1)
    logits = None
    for i in prime_ids:
        logits, state = model.step(np.array([i]), state)
    total = 0.0
    for i in cont_ids:
        z = logits[0].astype(np.float64)
        total += z[i] - z.max() - np.log(np.exp(z - z.max()).sum())
        logits, state = model.step(np.array([i]), state)
    return total


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_exhaustive_beam_finds_the_best_sequence(cell):
    vocab = Vocab("xyzw")
    m = CharRNN(4, hidden_size=8, num_layers=2, cell=cell, seed=9).eval()
    for w in m.params.values():  # sharpen the distribution so that the paths differ
        w *= 4
    seqs = list(itertools.product(range(4), repeat=3))
    scores = [_log_prob(m, vocab.encode("zy"), s) for s in seqs]
    best = vocab.decode(list(seqs[int(np.argmax(scores))]))
    assert S.beam_search(m, vocab, 3, beam_size=64, prime="zy") == "zy" + best
    assert S.beam_search(m, vocab, 3, beam_size=16, prime="zy") == "zy" + best  # keeps all 16 at step 2


@pytest.fixture(scope="module")
def abc_model():
    """A tiny LSTM trained on 'abcabc...' (Adam, a few hundred steps)."""
    from fastrnn.optim import Adam

    text = "abc" * 100
    vocab = Vocab.from_text(text + "xy")
    ids = vocab.encode(text)
    m = CharRNN(len(vocab), hidden_size=16, num_layers=1, cell="lstm", seed=0)
    opt = Adam(m.params, lr=1e-2)
    rng = np.random.default_rng(0)
    for _ in range(200):
        starts = rng.integers(0, len(ids) - 17, 8)
        x = np.stack([ids[s:s + 16] for s in starts])
        y = np.stack([ids[s + 1:s + 17] for s in starts])
        loss, grads, _ = m.loss(x, y)
        opt.step(grads)
    assert loss < 0.1
    return m.eval(), vocab


def test_trained_model_continues_the_pattern(abc_model):
    m, vocab = abc_model
    assert S.sample(m, vocab, 13, argmax=True, prime="ab") == "ab" + "cabcabcabcabc"
    assert S.sample(m, vocab, 12, temperature=0.5, prime="c", seed=3) == "c" + "abc" * 4
    assert S.beam_search(m, vocab, 10, beam_size=4, prime="bc") == "bc" + "abcabcabca"


def test_bad_arguments_raise(model):
    V = VOCAB
    cases = [
        (dict(temperature=0.0), ValueError, "temperature"),
        (dict(temperature=-1.0), ValueError, "temperature"),
        (dict(temperature=float("nan")), ValueError, "temperature"),
        (dict(temperature="1"), TypeError, "temperature"),
        (dict(top_k=0), ValueError, "top_k"),
        (dict(top_k=2.5), TypeError, "top_k"),
        (dict(top_k=True), TypeError, "top_k"),
        (dict(top_p=0.0), ValueError, "top_p"),
        (dict(top_p=1.5), ValueError, "top_p"),
        (dict(prime="abQ"), ValueError, "'Q'"),
        (dict(prime=5), TypeError, "prime"),
        (dict(batch=0), ValueError, "batch"),
        (dict(seed=-1), ValueError, "seed"),
        (dict(seed="x"), TypeError, "seed"),
        (dict(argmax=1), TypeError, "argmax"),
    ]
    for kw, exc, msg in cases:
        with pytest.raises(exc, match=msg):
            S.sample(model, V, 5, **kw)
    with pytest.raises(ValueError, match="length"):
        S.sample(model, V, -1)
    with pytest.raises(TypeError, match="length"):
        S.sample(model, V, 2.0)
    with pytest.raises(ValueError, match="vocab"):
        S.sample(model, Vocab("ab"), 5)
    with pytest.raises(ValueError, match="beam_size"):
        S.beam_search(model, V, 5, beam_size=0)
    with pytest.raises(ValueError, match="'Q'"):
        S.beam_search(model, V, 5, prime="Q")
    with pytest.raises(ValueError, match="length"):
        S.beam_search(model, V, -2)
    with pytest.raises(TypeError, match="step"):
        S.sample(object(), V, 5)
