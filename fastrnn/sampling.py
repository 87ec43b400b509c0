"""Sampling text from a character-level language model, as Karpathy's char-rnn ``sample.lua``.

:func:`sample` primes the model with a start text and then draws characters one at a time,
feeding each one back in. The options are char-rnn's and Hugging Face's:

=======================  ===========================================  =====================
char-rnn ``sample.lua``  here                                         effect
=======================  ===========================================  =====================
``-temperature 0.8``     ``temperature=0.8``                          divides the logits
``-primetext "The "``    ``prime="The "``                             start text (kept)
``-sample 0``            ``argmax=True``                              greedy: most likely
``-seed 123``            ``seed=123``                                 same seed, same text
``-length 2000``         ``length=2000``                              characters to draw
(HF ``top_k``)           ``top_k=40``                                 keep the 40 likeliest
(HF ``top_p``)           ``top_p=0.9``                                nucleus sampling
=======================  ===========================================  =====================

Each step is one call of ``model.step`` (the compiled one-step kernels) and one call of
:func:`draw`, the compiled draw of ``fastrnn._sample``; ``batch=B`` draws B samples at once
through both. :func:`stream` yields the characters as they come, :func:`beam_search` finds
a likely continuation by beam search. :func:`draw_reference` is the draw in plain NumPy,
the oracle the compiled one is tested against.

The model is duck-typed: it needs ``step(token_ids (N,), state) -> (logits (N, V), state)``
and ``initial_state(N)`` (as :class:`fastrnn.models.CharRNN`); a ``forward(ids (N, T),
state) -> (scores (N, T, V), state)`` method, if it has one, primes in one call. States are
arrays, or tuples of arrays such as an LSTM's ``(h, c)``, with the batch on axis 1 for 3-D
arrays ``(num_layers, N, H)`` and on axis 0 for 2-D arrays ``(N, H)``.

Reproducibility: row b of a batch draws its uniforms from its own generator,
``np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(b,)))``, so the same seed
gives the same text, and ``sample(..., seed=s)`` is row 0 of ``sample(..., seed=s,
batch=B)`` (up to the last bits of the batched kernels' arithmetic, which can in rare
cases tip a draw).
"""
from __future__ import annotations

import contextlib
import numbers
from typing import Any, Iterator, List, Optional, Tuple, Union

import numpy as np

from . import _sample

__all__ = ["sample", "stream", "beam_search", "draw", "draw_reference"]

Array = np.ndarray
Seed = Union[None, int, np.random.Generator]

_CHUNK = 1024  # uniforms are drawn this many steps at a time


# ----------------------------------------------------------------------------- validation


def _real(name: str, value: Any) -> float:
    if type(value) is float or type(value) is int:  # the common case, without the ABC checks
        return float(value)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    return float(value)


def _int(name: str, value: Any) -> int:
    if type(value) is int:
        return value
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    return int(value)


def _options(temperature: Any, top_k: Any, top_p: Any, argmax: Any) -> Tuple[float, int, float, bool]:
    """Validated (temperature, top_k as int (0 = off), top_p as float (1.0 = off), argmax)."""
    t = _real("temperature", temperature)
    if not (0.0 < t < float("inf")):
        raise ValueError(f"temperature must be > 0 and finite, got {temperature!r} (use argmax=True for greedy)")
    k = 0
    if top_k is not None:
        k = _int("top_k", top_k)
        if k < 1:
            raise ValueError(f"top_k must be an int >= 1 or None, got {top_k!r}")
    p = 1.0
    if top_p is not None:
        p = _real("top_p", top_p)
        if not (0.0 < p <= 1.0):
            raise ValueError(f"top_p must lie in (0, 1] or be None, got {top_p!r}")
    if argmax is not False and argmax is not True and not isinstance(argmax, np.bool_):
        raise TypeError(f"argmax must be a bool, got {type(argmax).__name__} {argmax!r}")
    return t, k, p, bool(argmax)


def _logits(name: str, logits: Any) -> Array:
    x = np.asarray(logits)
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape (N, V), got {x.shape}")
    if x.dtype != np.float32 and x.dtype != np.float64:
        if x.dtype.kind not in "fiu":
            raise TypeError(f"{name} must be a float array, got dtype {x.dtype}")
        x = x.astype(np.float64)
    return np.ascontiguousarray(x)


def _uniforms(u: Any, N: int) -> Array:
    if isinstance(u, np.random.Generator):
        return u.random(N)
    a = np.ascontiguousarray(u, dtype=np.float64)
    if a.shape != (N,):
        raise ValueError(f"uniforms must have shape (N,) = ({N},), got {a.shape}")
    return a  # the range [0, 1) is checked by the compiled draw


def _row_uniforms(u: Any, N: int, argmax: bool) -> Array:
    """The (N,) uniforms of a draw; with ``argmax`` they are unused and may be None."""
    if u is None:
        if argmax:
            return np.zeros(N)
        raise TypeError("uniforms must be an array (N,) of floats in [0, 1) or a np.random.Generator, got None")
    return _uniforms(u, N)


# ----------------------------------------------------------------------------- the draw


def draw(
    logits: Any,
    uniforms: Any,
    *,
    temperature: float = 1.0,
    top_k: Optional[int] = None,
    top_p: Optional[float] = None,
    argmax: bool = False,
) -> Array:
    """Draws one token id per row of ``logits`` (compiled, ``fastrnn._sample``).

    Args:
        logits: (N, V) unnormalised log-probabilities, float32 or float64 (other real
            dtypes are converted to float64).
        uniforms: (N,) floats in [0, 1), one per row, or a ``np.random.Generator`` to draw
            them from (None is allowed with ``argmax``). The draw is a deterministic function
            of logits and uniforms.
        temperature: > 0; the softmax is taken of ``logits / temperature``.
        top_k: keep only the ``top_k`` largest logits per row (ties: lower id first).
        top_p: nucleus: keep the smallest set of most likely ids whose probability mass
            (after top-k) reaches ``top_p``; at least one id is always kept.
        argmax: ignore the rest and return the largest logit's id (lowest id on ties).

    Returns:
        int64 array (N,) of ids in [0, V).

    The exact rule is in the docstring of ``fastrnn._sample``; :func:`draw_reference`
    implements it in NumPy. ValueError for NaN or +inf logits.
    """
    t, k, p, am = _options(temperature, top_k, top_p, argmax)
    x = _logits("logits", logits)
    u = _row_uniforms(uniforms, x.shape[0], am)
    return _sample.draw(x, u, t, k, p, am)


def draw_reference(
    logits: Any,
    uniforms: Any,
    *,
    temperature: float = 1.0,
    top_k: Optional[int] = None,
    top_p: Optional[float] = None,
    argmax: bool = False,
) -> Array:
    """:func:`draw` in plain NumPy, the same rule operation by operation (the test oracle).

    Shapes and arguments as :func:`draw`: logits (N, V), uniforms (N,) -> int64 ids (N,).
    """
    t, k, p, am = _options(temperature, top_k, top_p, argmax)
    x = _logits("logits", logits).astype(np.float64)
    N, V = x.shape
    u = _row_uniforms(uniforms, N, am)
    if N and not am and not (u.min() >= 0.0 and u.max() < 1.0):  # also catches NaN
        raise ValueError("uniforms must lie in [0, 1)")
    if N == 0:
        return np.empty(0, np.int64)
    if V == 0:
        raise ValueError("logits have V = 0 columns: nothing to draw from")
    m = x.max(axis=1, keepdims=True)
    if np.isnan(x).any() or not np.all(np.isfinite(m)):
        raise ValueError("logits contain NaN or +inf, or a row of only -inf")
    if am:
        return x.argmax(axis=1).astype(np.int64)
    prob = np.exp((x - m) / t)
    keep = np.ones((N, V), dtype=bool)
    use_k, use_p = 0 < k < V, p < 1.0
    if use_k or use_p:
        order = np.argsort(-x, axis=1, kind="stable")  # rank: larger logit, then lower id
        if use_k:
            keep[:] = False
            np.put_along_axis(keep, order[:, :k], True, axis=1)
        if use_p:
            pk = np.where(keep, prob, 0.0)
            total = np.cumsum(pk, axis=1)[:, -1]
            mass = np.cumsum(np.take_along_axis(pk, order, axis=1), axis=1)
            hit = mass >= p * total[:, None]
            n_cand = keep.sum(axis=1)
            cut = np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, n_cand)
            ranks = np.arange(V)[None, :]
            keep = np.zeros((N, V), dtype=bool)
            np.put_along_axis(keep, order, ranks < cut[:, None], axis=1)
    pk = np.where(keep, prob, 0.0)
    c = np.cumsum(pk, axis=1)
    ids = (c <= (u * c[:, -1])[:, None]).sum(axis=1)
    over = ids >= V  # rounding left no c > target: the last kept id with p > 0
    if over.any():
        last = V - 1 - np.argmax((pk > 0)[:, ::-1], axis=1)
        ids = np.where(over, last, ids)
    return ids.astype(np.int64)


# ----------------------------------------------------------------------------- model plumbing


def _take_rows(state: Any, index: Array) -> Any:
    """The state's batch rows ``index`` (a new state): tuples/lists are walked, 3-D arrays
    are indexed on axis 1 ((num_layers, N, H)), others on axis 0."""
    if state is None:
        return None
    if isinstance(state, (tuple, list)):
        return type(state)(_take_rows(s, index) for s in state)
    a = np.asarray(state)
    return a[:, index] if a.ndim == 3 else a[index]


@contextlib.contextmanager
def _eval_mode(model: Any) -> Iterator[None]:
    """Evaluation mode (no dropout) for the duration, restoring a training mode after."""
    training = bool(getattr(model, "training", False))
    if training:
        model.train(False)
    try:
        yield
    finally:
        if training:
            model.train(True)


def _check_model(model: Any, vocab: Any) -> int:
    if not callable(getattr(model, "step", None)):
        raise TypeError(f"model must have a step(token_ids, state) method, got {type(model).__name__}")
    V = len(vocab)
    mv = getattr(model, "vocab_size", None)
    if mv is not None and int(mv) != V:
        raise ValueError(f"model.vocab_size = {mv} does not match len(vocab) = {V}")
    if V == 0:
        raise ValueError("vocab is empty")
    return V


def _encode_prime(vocab: Any, prime: Any) -> Array:
    if not isinstance(prime, str):
        raise TypeError(f"prime must be a str, got {type(prime).__name__}")
    for i, ch in enumerate(prime):
        if ch not in vocab:
            raise ValueError(f"prime: character {ch!r} (U+{ord(ch):04X}) at position {i} is not in the vocabulary")
    return np.asarray(vocab.encode(prime), dtype=np.int64)


def _step_logits(model: Any, ids: Array, state: Any, N: int, V: int) -> Tuple[Array, Any]:
    logits, state = model.step(ids, state)
    x = _logits("model.step logits", logits)
    if x.shape != (N, V):
        raise ValueError(f"model.step returned logits of shape {x.shape}, expected (N, V) = ({N}, {V})")
    return x, state


def _prime(model: Any, ids: Array, V: int) -> Tuple[Array, Any]:
    """Runs the prime ids (P,) through the model for one row: logits (1, V) after the last
    prime character, and the state. With no prime, the logits are uniform (zeros), as
    char-rnn draws the first character uniformly."""
    init = getattr(model, "initial_state", None)
    state = init(1) if callable(init) else None
    if ids.size == 0:
        return np.zeros((1, V), getattr(model, "dtype", np.float64)), state
    forward = getattr(model, "forward", None)
    can_eval = not getattr(model, "training", False) or callable(getattr(model, "train", None))
    if callable(forward) and can_eval:
        with _eval_mode(model):
            scores, state = forward(ids[None, :], state)
        scores = np.asarray(scores)
        if scores.ndim != 3 or scores.shape[:2] != (1, ids.size) or scores.shape[2] != V:
            raise ValueError(f"model.forward returned scores of shape {scores.shape}, "
                             f"expected (N, T, V) = (1, {ids.size}, {V})")
        return _logits("model.forward scores", scores[:, -1]), state
    logits = None
    for i in ids:
        logits, state = _step_logits(model, np.array([i], np.int64), state, 1, V)
    return logits, state  # type: ignore[return-value]


class _Uniforms:
    """Uniforms for B rows, ``length`` steps, a chunk at a time: row b from its own
    generator (SeedSequence(seed, spawn_key=(b,))), or all rows from one given Generator."""

    def __init__(self, seed: Seed, B: int) -> None:
        if isinstance(seed, np.random.Generator):
            self._one: Optional[np.random.Generator] = seed
            self._rows: List[np.random.Generator] = []
        else:
            if seed is not None:
                seed = _int("seed", seed)
                if seed < 0:
                    raise ValueError(f"seed must be >= 0, got {seed}")
            entropy = np.random.SeedSequence(seed).entropy
            self._one = None
            self._rows = [np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=(b,)))
                          for b in range(B)]
        self._B = B

    def chunk(self, n: int) -> Array:
        """(n, B) float64 uniforms in [0, 1), C order: row t is step t."""
        if self._one is not None:
            return self._one.random((n, self._B))
        return np.ascontiguousarray(np.stack([g.random(n) for g in self._rows], axis=1))


def _check_seed(seed: Any) -> None:
    if seed is None or isinstance(seed, np.random.Generator):
        return
    s = _int("seed", seed)
    if s < 0:
        raise ValueError(f"seed must be None, an int >= 0 or a np.random.Generator, got {seed!r}")


def _generate(model: Any, V: int, length: int, prime_ids: Array, opts: Tuple[float, int, float, bool],
              seed: Seed, B: int) -> Iterator[Array]:
    """Yields the drawn ids, (B,) int64 per step, ``length`` times."""
    t, k, p, am = opts
    logits, state = _prime(model, prime_ids, V)
    if B != 1:
        rows = np.zeros(B, np.intp)
        logits, state = np.ascontiguousarray(logits[rows]), _take_rows(state, rows)
    source = None if am else _Uniforms(seed, B)
    zeros = np.zeros(B)
    U = None
    for step in range(length):
        j = step % _CHUNK
        if source is not None and j == 0:
            U = source.chunk(min(_CHUNK, length - step))
        ids = _sample.draw(logits, zeros if U is None else U[j], t, k, p, am)
        yield ids
        if step + 1 < length:
            logits, state = _step_logits(model, ids, state, B, V)


def _setup(model: Any, vocab: Any, length: Any, temperature: Any, top_k: Any, top_p: Any, argmax: Any,
           prime: Any, seed: Any, batch: Any) -> Tuple[int, int, Array, Tuple[float, int, float, bool], int]:
    V = _check_model(model, vocab)
    n = _int("length", length)
    if n < 0:
        raise ValueError(f"length must be >= 0, got {length!r}")
    opts = _options(temperature, top_k, top_p, argmax)
    ids = _encode_prime(vocab, prime)
    _check_seed(seed)
    B = 1
    if batch is not None:
        B = _int("batch", batch)
        if B < 1:
            raise ValueError(f"batch must be an int >= 1 or None, got {batch!r}")
    return V, n, ids, opts, B


# ----------------------------------------------------------------------------- public API


def sample(
    model: Any,
    vocab: Any,
    length: int,
    *,
    temperature: float = 1.0,
    top_k: Optional[int] = None,
    top_p: Optional[float] = None,
    argmax: bool = False,
    prime: str = "",
    seed: Seed = None,
    batch: Optional[int] = None,
) -> Union[str, List[str]]:
    """Samples text from a character-level language model, as char-rnn's ``sample.lua``.

    Args:
        model: e.g. :class:`fastrnn.models.CharRNN` (see the module docstring); its
            training/eval mode is left as it was (``step`` never applies dropout).
        vocab: :class:`fastrnn.data.Vocab` (``encode``/``decode``, ``len`` = model's V).
        length: characters to draw after the prime (>= 0).
        temperature: > 0; lower is more conservative (char-rnn ``-temperature``).
        top_k: None, or keep the ``top_k`` likeliest characters at each step.
        top_p: None, or nucleus sampling with mass ``top_p`` in (0, 1].
        argmax: greedy decoding, the likeliest character every step (char-rnn ``-sample 0``).
        prime: start text, fed through the model first and included in the output. Empty:
            the first character is drawn uniformly (argmax: id 0), as char-rnn does.
        seed: None (fresh entropy), an int >= 0 (reproducible), or a ``np.random.Generator``
            (its uniforms are consumed, (steps, batch) at a time).
        batch: None for one sample, or B to draw B samples at once.

    Returns:
        ``prime`` + ``length`` drawn characters (a str), or a list of B such strings.

    Raises ValueError for bad values (naming the argument, or the prime character not in the
    vocabulary) and TypeError for wrong types.
    """
    V, n, ids, opts, B = _setup(model, vocab, length, temperature, top_k, top_p, argmax, prime, seed, batch)
    out = np.empty((B, n), np.int64)
    for step, drawn in enumerate(_generate(model, V, n, ids, opts, seed, B)):
        out[:, step] = drawn
    texts = [prime + vocab.decode(row) for row in out]
    return texts[0] if batch is None else texts


def stream(
    model: Any,
    vocab: Any,
    length: int,
    *,
    temperature: float = 1.0,
    top_k: Optional[int] = None,
    top_p: Optional[float] = None,
    argmax: bool = False,
    prime: str = "",
    seed: Seed = None,
    batch: Optional[int] = None,
) -> Iterator[Union[str, List[str]]]:
    """:func:`sample` as a generator: yields the prime's characters, then each drawn character
    as soon as it is drawn (one-character strs; with ``batch=B``, lists of B of them).

    ``"".join(stream(...))`` equals ``sample(...)`` with the same arguments. The arguments are
    checked when ``stream`` is called, before the first character is asked for.
    """
    V, n, ids, opts, B = _setup(model, vocab, length, temperature, top_k, top_p, argmax, prime, seed, batch)

    def chars() -> Iterator[Union[str, List[str]]]:
        for ch in prime:
            yield ch if batch is None else [ch] * B
        for drawn in _generate(model, V, n, ids, opts, seed, B):
            text = vocab.decode(drawn)
            yield text if batch is None else list(text)

    return chars()


def _log_softmax(x: Array) -> Array:
    z = x - x.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def beam_search(model: Any, vocab: Any, length: int, beam_size: int = 5, prime: str = "") -> str:
    """The continuation of ``prime`` with the highest total log-probability found by beam search.

    At each of ``length`` steps, every live hypothesis (up to ``beam_size``) is extended by
    every character, and the ``beam_size`` best by summed log-probability survive (ties: the
    earlier beam, then the lower id). All beams run as one batch through ``model.step``; the
    state rows follow their beams by NumPy indexing. ``beam_size=1`` is greedy decoding, the
    same text as ``sample(..., argmax=True)``. Empty prime: the first character's
    distribution is uniform, as in :func:`sample`.

    Returns ``prime`` + ``length`` characters.
    """
    V = _check_model(model, vocab)
    n = _int("length", length)
    if n < 0:
        raise ValueError(f"length must be >= 0, got {length!r}")
    K = _int("beam_size", beam_size)
    if K < 1:
        raise ValueError(f"beam_size must be an int >= 1, got {beam_size!r}")
    ids = _encode_prime(vocab, prime)
    if n == 0:
        return prime
    logits, state = _prime(model, ids, V)
    score = np.zeros(1)
    parents: List[Array] = []
    tokens: List[Array] = []
    for step in range(n):
        logp = _log_softmax(logits.astype(np.float64))
        if np.isnan(logp).any():
            raise ValueError("beam_search: the model's logits contain NaN or inf")
        cand = (score[:, None] + logp).ravel()  # flat index = beam * V + id
        keep = min(K, cand.size)
        if cand.size > 4 * keep:  # preselect with a partition; ties stay in index order
            thr = np.partition(cand, cand.size - keep)[cand.size - keep]
            sel = np.flatnonzero(cand >= thr)
        else:
            sel = np.arange(cand.size)
        best = sel[np.argsort(-cand[sel], kind="stable")[:keep]]
        parent, tok = np.divmod(best, V)
        score = cand[best]
        parents.append(parent)
        tokens.append(tok)
        if step + 1 < n:
            logits, state = _step_logits(model, tok, _take_rows(state, parent), tok.size, V)
    # Backtrack from the best final hypothesis (beams are sorted: index 0).
    out = np.empty(n, np.int64)
    b = 0
    for step in range(n - 1, -1, -1):
        out[step] = tokens[step][b]
        b = int(parents[step][b])
    return prime + vocab.decode(out)
