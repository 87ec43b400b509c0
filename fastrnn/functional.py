"""The CS231n assignment-3 recurrent-layer functions, computed by fastrnn's compiled kernels.

Names, argument order and return tuples are those of CS231n's ``rnn_layers.py``, so code
written for them runs unchanged. Shapes are batch-major::

    x (N, T, D)   h (N, T, H)   h0, c0 (N, H)   Wx (D, G*H)   Wh (H, G*H)   b, bh (G*H,)

with G = 1 (RNN), 4 (LSTM, gates i, f, o, g) or 3 (GRU, gates r, z, n). All arrays of one
call share a dtype, float32 or float64; results are new arrays of that dtype. A ``cache``
is opaque: pass it to the matching backward function.

The temporal layers' heavy parts are here too: :func:`softmax_cross_entropy` (loss and
gradient of a softmax over a vocabulary, in one pass) and :func:`embedding_backward`.

Every forward function also takes integer token ids in place of x ((N, T), or (N,) for a
step): the one-hot rows of an identity of size D = Wx.shape[0], as char-rnn feeds its
characters, read as rows of Wx; the matching backward returns None for dx.

Beyond the contract, :func:`sequence_forward` and :func:`sequence_backward` carry what the
tuples leave out: the final states, gradients flowing into them, the LSTM's ``dc0``, and
variable sequence lengths.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import numpy as np

from . import _core

__all__ = [
    "rnn_step_forward",
    "rnn_step_backward",
    "rnn_forward",
    "rnn_backward",
    "lstm_step_forward",
    "lstm_step_backward",
    "lstm_forward",
    "lstm_backward",
    "gru_step_forward",
    "gru_step_backward",
    "gru_forward",
    "gru_backward",
    "sequence_forward",
    "sequence_backward",
    "matmul",
    "softmax_cross_entropy",
    "embedding_backward",
]

Array = np.ndarray
Cache = Any

_PARAMS = {"rnn": ("Wx", "Wh", "b"), "lstm": ("Wx", "Wh", "b"), "gru": ("Wx", "Wh", "b", "bh")}
_STATES = {"rnn": ("h0",), "lstm": ("h0", "c0"), "gru": ("h0",)}


# ---------------------------------------------------------------- vanilla RNN


def rnn_step_forward(x, prev_h, Wx, Wh, b, nonlinearity: str = "tanh") -> Tuple[Array, Cache]:
    """One RNN step: next_h = act(x·Wx + prev_h·Wh + b).

    x (N, D), prev_h (N, H), Wx (D, H), Wh (H, H), b (H,) -> next_h (N, H), cache.
    ``nonlinearity`` is "tanh" (CS231n) or "relu".
    """
    _, next_h, _, cache = _core.step_forward("rnn", x, prev_h, None, Wx, Wh, b, None, nonlinearity, True)
    return next_h, cache


def rnn_step_backward(dnext_h, cache) -> Tuple[Array, Array, Array, Array, Array]:
    """dnext_h (N, H) -> dx (N, D), dprev_h (N, H), dWx, dWh, db."""
    dx, dh0, _, dWx, dWh, db, _ = _core.step_backward(cache, "rnn", dnext_h, None)
    return dx, dh0, dWx, dWh, db


def rnn_forward(x, h0, Wx, Wh, b, nonlinearity: str = "tanh") -> Tuple[Array, Cache]:
    """An RNN over a whole sequence: x (N, T, D), h0 (N, H) -> h (N, T, H), cache."""
    h, _, _, cache = _core.sequence_forward("rnn", x, h0, None, Wx, Wh, b, None, None, nonlinearity, True)
    return h, cache


def rnn_backward(dh, cache) -> Tuple[Array, Array, Array, Array, Array]:
    """dh (N, T, H) -> dx (N, T, D), dh0 (N, H), dWx, dWh, db."""
    dx, dh0, _, dWx, dWh, db, _ = _core.sequence_backward(cache, "rnn", dh, None, None)
    return dx, dh0, dWx, dWh, db


# ---------------------------------------------------------------- LSTM


def lstm_step_forward(x, prev_h, prev_c, Wx, Wh, b) -> Tuple[Array, Array, Cache]:
    """One LSTM step, gates i, f, o, g.

    x (N, D), prev_h, prev_c (N, H), Wx (D, 4H), Wh (H, 4H), b (4H,)
    -> next_h (N, H), next_c (N, H), cache.
    """
    _, next_h, next_c, cache = _core.step_forward("lstm", x, prev_h, prev_c, Wx, Wh, b, None, "tanh", True)
    return next_h, next_c, cache


def lstm_step_backward(dnext_h, dnext_c, cache) -> Tuple[Array, Array, Array, Array, Array, Array]:
    """dnext_h, dnext_c (N, H) -> dx (N, D), dprev_h, dprev_c (N, H), dWx, dWh, db."""
    dx, dh0, dc0, dWx, dWh, db, _ = _core.step_backward(cache, "lstm", dnext_h, dnext_c)
    return dx, dh0, dc0, dWx, dWh, db


def lstm_forward(x, h0, Wx, Wh, b, c0=None) -> Tuple[Array, Cache]:
    """An LSTM over a whole sequence: x (N, T, D), h0 (N, H), c0 (N, H) or None (zeros)
    -> h (N, T, H), cache."""
    h, _, _, cache = _core.sequence_forward("lstm", x, h0, c0, Wx, Wh, b, None, None, "tanh", True)
    return h, cache


def lstm_backward(dh, cache) -> Tuple[Array, Array, Array, Array, Array]:
    """dh (N, T, H) -> dx (N, T, D), dh0 (N, H), dWx, dWh, db. (dc0: see sequence_backward.)"""
    dx, dh0, _, dWx, dWh, db, _ = _core.sequence_backward(cache, "lstm", dh, None, None)
    return dx, dh0, dWx, dWh, db


# ---------------------------------------------------------------- GRU


def gru_step_forward(x, prev_h, Wx, Wh, b, bh, reset_after: bool = True) -> Tuple[Array, Cache]:
    """One GRU step, gates r, z, n, with input bias b and recurrent bias bh (3H,).

    x (N, D), prev_h (N, H), Wx (D, 3H), Wh (H, 3H) -> next_h (N, H), cache.
    ``reset_after=True`` is the cuDNN/PyTorch form n = tanh(ax_n + r∘(h·Wh_n + bh_n));
    False is Cho's n = tanh(ax_n + (r∘h)·Wh_n + bh_n).
    """
    _, next_h, _, cache = _core.step_forward("gru", x, prev_h, None, Wx, Wh, b, bh, "tanh", _flag(reset_after))
    return next_h, cache


def gru_step_backward(dnext_h, cache) -> Tuple[Array, Array, Array, Array, Array, Array]:
    """dnext_h (N, H) -> dx (N, D), dprev_h (N, H), dWx, dWh, db, dbh."""
    dx, dh0, _, dWx, dWh, db, dbh = _core.step_backward(cache, "gru", dnext_h, None)
    return dx, dh0, dWx, dWh, db, dbh


def gru_forward(x, h0, Wx, Wh, b, bh, reset_after: bool = True) -> Tuple[Array, Cache]:
    """A GRU over a whole sequence: x (N, T, D), h0 (N, H) -> h (N, T, H), cache."""
    h, _, _, cache = _core.sequence_forward("gru", x, h0, None, Wx, Wh, b, bh, None, "tanh", _flag(reset_after))
    return h, cache


def gru_backward(dh, cache) -> Tuple[Array, Array, Array, Array, Array, Array]:
    """dh (N, T, H) -> dx (N, T, D), dh0 (N, H), dWx, dWh, db, dbh."""
    dx, dh0, _, dWx, dWh, db, dbh = _core.sequence_backward(cache, "gru", dh, None, None)
    return dx, dh0, dWx, dWh, db, dbh


# ---------------------------------------------------------------- beyond the contract


def sequence_forward(
    cell: str,
    x,
    params: Sequence[Array],
    state0: Optional[Sequence[Optional[Array]]] = None,
    *,
    lengths=None,
    nonlinearity: str = "tanh",
    reset_after: bool = True,
) -> Tuple[Array, Tuple[Array, ...], Cache]:
    """Any cell over a sequence, returning its final state too.

    cell: "rnn", "lstm" or "gru".
    x (N, T, D); or integer token ids (N, T), meaning one-hot rows with D = Wx.shape[0]
    (char-rnn's inputs): x·Wx is then read as rows of Wx, exactly the one-hot product, and
    backward returns dx = None. params (Wx, Wh, b), plus bh for the GRU; state0 None
    (zeros), (h0,), or (h0, c0) for the LSTM, where c0 may be None.
    lengths: None, or integers (N,) in [0, T]. Row n then runs steps t < lengths[n] only:
    h[n, t] is 0 after that and its final state is the one after step lengths[n] - 1.

    Returns h (N, T, H), final_state ((hT,) or (hT, cT), each (N, H)), cache.
    """
    spec = _check_cell(cell)
    Wx, Wh, b, bh = _unpack("params", params, _PARAMS[spec]) + ((None,) if spec != "gru" else ())
    h0, c0 = _unpack("state0", state0, _STATES[spec], optional=True) + ((None,) if spec != "lstm" else ())
    h, hT, cT, cache = _core.sequence_forward(
        spec, x, h0, c0, Wx, Wh, b, bh, lengths, nonlinearity, _flag(reset_after)
    )
    return h, ((hT, cT) if spec == "lstm" else (hT,)), cache


def sequence_backward(
    dh, cache, dfinal_state: Optional[Sequence[Optional[Array]]] = None
) -> Tuple[Array, Tuple[Array, ...], Tuple[Array, ...]]:
    """Backward of :func:`sequence_forward`.

    dh (N, T, H) or None (zeros); dfinal_state None, (dhT,) or (dhT, dcT) for the LSTM,
    each (N, H) or None. Returns dx (N, T, D) (None for token ids), dstate0 ((dh0,) or (dh0, dc0)) and dparams
    ((dWx, dWh, db), plus dbh for the GRU).
    """
    cell = getattr(cache, "cell", None)
    if not isinstance(cell, str) or not isinstance(cache, _core.Cache):
        raise TypeError(f"cache must be the cache returned by sequence_forward, got {type(cache).__name__}")
    dhT, dcT = _unpack("dfinal_state", dfinal_state, _STATES[cell], optional=True) + (
        (None,) if cell != "lstm" else ()
    )
    dx, dh0, dc0, dWx, dWh, db, dbh = _core.sequence_backward(cache, cell, dh, dhT, dcT)
    dstate0 = (dh0, dc0) if cell == "lstm" else (dh0,)
    dparams = (dWx, dWh, db, dbh) if cell == "gru" else (dWx, dWh, db)
    return dx, dstate0, dparams


def matmul(a, b) -> Array:
    """a (M, K) · b (K, N) -> (M, N) with the kernels' own matrix multiply.

    Same dtype rules as the kernels (float32 or float64, no mixing). It runs on fastrnn's
    thread pool, so layers built on it do not start NumPy's BLAS threads alongside the
    kernels', and its result is bitwise the same for any thread count. Transposed and
    sliced views are read in place.
    """
    return _core.matmul(a, b)


def softmax_cross_entropy(scores, targets, mask=None, row_scale: float = 1.0) -> Tuple[float, Array]:
    """Softmax cross-entropy of every row, with its gradient, in one compiled pass.

    scores (M, V) float32/float64; targets (M,) integers in [0, V), checked only where
    ``mask`` (M,) bool is True (None: every row). Returns the sum of the masked rows'
    losses (a float, accumulated in float64) and dscores (M, V) =
    ``(softmax(scores) - onehot(targets)) * row_scale`` on masked rows, 0 on the others.
    Rows are shared among the threads, so the result does not depend on their number.
    """
    return _core.softmax_cross_entropy(scores, targets, mask, row_scale)


def embedding_backward(ids, dout, dW: Array) -> None:
    """``dW[ids[m]] += dout[m]`` for every m, in place, as ``np.add.at(dW, ids, dout)``
    (the same sums in the same order, so bitwise equal to it, but threaded and far faster).

    ids (M,) integers in [0, V); dout (M, D) and dW (V, D), the same float dtype; dW must be
    C-contiguous and writeable.
    """
    _core.embedding_backward(ids, dout, dW)


def _check_cell(cell: object) -> str:
    if not isinstance(cell, str) or cell not in _PARAMS:
        raise ValueError(f"cell must be 'rnn', 'lstm' or 'gru', got {cell!r}")
    return str(cell)


def _flag(value: object) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"reset_after must be True or False, got {value!r}")
    return bool(value)


def _unpack(name: str, values, names: Tuple[str, ...], optional: bool = False) -> tuple:
    """Checks a tuple argument's length and returns it, padding with None when optional."""
    if values is None and optional:
        return (None,) * len(names)
    if not isinstance(values, (tuple, list)):
        raise TypeError(f"{name} must be a tuple {tuple(names)}, got {type(values).__name__}")
    if len(values) != len(names) and not (optional and len(values) < len(names)):
        raise ValueError(f"{name} must be a tuple {tuple(names)} of {len(names)} arrays, got {len(values)}")
    return tuple(values) + (None,) * (len(names) - len(values))
