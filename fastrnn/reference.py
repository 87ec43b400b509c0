"""Plain NumPy reference ("oracle") for the fastrnn recurrent kernels.

This module is the ground truth that the compiled fastrnn kernels are tested
against.  It is written for clarity, not speed: every cell is a step forward,
a step backward and a loop over time, in the style of the CS231n assignment 3
``rnn_layers.py``.

Conventions (batch-major)::

    x  : (N, T, D)      input sequence
    h  : (N, T, H)      hidden state at every step
    Wx : (D, G*H)       input-to-hidden weights
    Wh : (H, G*H)       hidden-to-hidden weights
    b  : (G*H,)         bias
    bh : (G*H,)         recurrent bias (GRU only)

with G = 1 for the vanilla RNN, 4 for the LSTM (gate order i, f, o, g) and
3 for the GRU (gate order r, z, n).  All arrays of a call share one floating
dtype (float32 or float64) and all arithmetic is done in that dtype.

Cells, with ``a = x @ Wx + h @ Wh + b``:

* RNN:  ``h' = tanh(a)`` or ``relu(a)``.
* LSTM: ``i, f, o = sigmoid(a_i, a_f, a_o)``, ``g = tanh(a_g)``,
  ``c' = f*c + i*g``, ``h' = o*tanh(c')``.
* GRU:  ``ax = x @ Wx + b``; reset-after form (default, as PyTorch/cuDNN):
  ``ah = h @ Wh + bh``, ``r = sigmoid(ax_r + ah_r)``,
  ``z = sigmoid(ax_z + ah_z)``, ``n = tanh(ax_n + r*ah_n)``,
  ``h' = (1-z)*n + z*h``.  Reset-before form (Cho et al.):
  ``n = tanh(ax_n + (r*h) @ Wh_n + bh_n)``.

``sequence_forward`` / ``sequence_backward`` are the general entry points
(final states, gradients into final states, initial cell state, variable
sequence lengths with PyTorch packed-sequence semantics).  The twelve
CS231n-style functions are thin wrappers around them or are the per-step
building blocks they use.

The training kernels around the cells have references here too: the masked
softmax cross-entropy and the embedding gradient of the temporal layers, and
the optimizers' in-place updates (one whole-array NumPy operation at a time,
in the parameter's dtype, which the compiled updates match bitwise).

Caches are opaque; passing a cache to the backward function of another cell
raises ``TypeError``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
from numpy.typing import NDArray

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
    "temporal_softmax_loss",
    "embedding_backward",
    "sgd_update",
    "adagrad_update",
    "rmsprop_update",
    "adam_update",
    "grad_norm",
]

Array = NDArray[Any]

_CELLS = ("rnn", "lstm", "gru")
_NONLINEARITIES = ("tanh", "relu")


# ----------------------------------------------------------------------------
# Elementwise helpers
# ----------------------------------------------------------------------------


def _sigmoid(x: Array) -> Array:
    """Numerically stable logistic sigmoid (never overflows, no warnings).

    Uses e = exp(-|x|) <= 1 and picks 1/(1+e) for x >= 0, e/(1+e) for x < 0,
    which keeps full relative precision in both tails.
    """
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _check_nonlinearity(nonlinearity: str) -> None:
    if nonlinearity not in _NONLINEARITIES:
        raise ValueError(
            f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}"
        )


def _check_cell(cell: str) -> None:
    if cell not in _CELLS:
        raise ValueError(f"cell must be 'rnn', 'lstm' or 'gru', got {cell!r}")


def _affine_backward(
    da: Array, x: Array, prev_h: Array, Wx: Array, Wh: Array
) -> tuple[Array, Array, Array, Array, Array]:
    """Backward of ``a = x @ Wx + prev_h @ Wh + b`` -> dx, dprev_h, dWx, dWh, db."""
    dx = da @ Wx.T
    dprev_h = da @ Wh.T
    dWx = x.T @ da
    dWh = prev_h.T @ da
    db = da.sum(axis=0)
    return dx, dprev_h, dWx, dWh, db


# ----------------------------------------------------------------------------
# Vanilla RNN step
# ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _RNNStepCache:
    x: Array
    prev_h: Array
    Wx: Array
    Wh: Array
    a: Array
    next_h: Array
    nonlinearity: str


def rnn_step_forward(
    x: Array,
    prev_h: Array,
    Wx: Array,
    Wh: Array,
    b: Array,
    nonlinearity: str = "tanh",
) -> tuple[Array, _RNNStepCache]:
    """One vanilla RNN step.

    x (N, D), prev_h (N, H), Wx (D, H), Wh (H, H), b (H,) -> next_h (N, H), cache.
    """
    _check_nonlinearity(nonlinearity)
    a = x @ Wx + prev_h @ Wh + b
    if nonlinearity == "tanh":
        next_h = np.tanh(a)
    else:
        next_h = np.maximum(a, 0)
    cache = _RNNStepCache(x, prev_h, Wx, Wh, a, next_h, nonlinearity)
    return next_h, cache


def rnn_step_backward(
    dnext_h: Array, cache: _RNNStepCache
) -> tuple[Array, Array, Array, Array, Array]:
    """Backward of one vanilla RNN step.

    dnext_h (N, H) -> dx (N, D), dprev_h (N, H), dWx (D, H), dWh (H, H), db (H,).
    """
    if not isinstance(cache, _RNNStepCache):
        raise TypeError(f"expected a cache from rnn_step_forward, got {type(cache).__name__}")
    if cache.nonlinearity == "tanh":
        da = dnext_h * (1 - cache.next_h * cache.next_h)
    else:
        da = np.where(cache.a > 0, dnext_h, 0)
    return _affine_backward(da, cache.x, cache.prev_h, cache.Wx, cache.Wh)


# ----------------------------------------------------------------------------
# LSTM step
# ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _LSTMStepCache:
    x: Array
    prev_h: Array
    prev_c: Array
    Wx: Array
    Wh: Array
    i: Array
    f: Array
    o: Array
    g: Array
    tanh_next_c: Array


def lstm_step_forward(
    x: Array, prev_h: Array, prev_c: Array, Wx: Array, Wh: Array, b: Array
) -> tuple[Array, Array, _LSTMStepCache]:
    """One LSTM step (gate order i, f, o, g).

    x (N, D), prev_h (N, H), prev_c (N, H), Wx (D, 4H), Wh (H, 4H), b (4H,)
    -> next_h (N, H), next_c (N, H), cache.
    """
    H = prev_h.shape[1]
    a = x @ Wx + prev_h @ Wh + b
    i = _sigmoid(a[:, 0:H])
    f = _sigmoid(a[:, H : 2 * H])
    o = _sigmoid(a[:, 2 * H : 3 * H])
    g = np.tanh(a[:, 3 * H : 4 * H])
    next_c = f * prev_c + i * g
    tanh_next_c = np.tanh(next_c)
    next_h = o * tanh_next_c
    cache = _LSTMStepCache(x, prev_h, prev_c, Wx, Wh, i, f, o, g, tanh_next_c)
    return next_h, next_c, cache


def lstm_step_backward(
    dnext_h: Array, dnext_c: Array, cache: _LSTMStepCache
) -> tuple[Array, Array, Array, Array, Array, Array]:
    """Backward of one LSTM step.

    dnext_h (N, H), dnext_c (N, H) -> dx (N, D), dprev_h (N, H), dprev_c (N, H),
    dWx (D, 4H), dWh (H, 4H), db (4H,).
    """
    if not isinstance(cache, _LSTMStepCache):
        raise TypeError(f"expected a cache from lstm_step_forward, got {type(cache).__name__}")
    i, f, o, g = cache.i, cache.f, cache.o, cache.g
    tanh_c = cache.tanh_next_c

    # h' = o * tanh(c')
    do = dnext_h * tanh_c
    dc = dnext_c + dnext_h * o * (1 - tanh_c * tanh_c)
    # c' = f * c + i * g
    df = dc * cache.prev_c
    dprev_c = dc * f
    di = dc * g
    dg = dc * i
    # back through the gate nonlinearities
    da_i = di * i * (1 - i)
    da_f = df * f * (1 - f)
    da_o = do * o * (1 - o)
    da_g = dg * (1 - g * g)
    da = np.concatenate([da_i, da_f, da_o, da_g], axis=1)

    dx, dprev_h, dWx, dWh, db = _affine_backward(da, cache.x, cache.prev_h, cache.Wx, cache.Wh)
    return dx, dprev_h, dprev_c, dWx, dWh, db


# ----------------------------------------------------------------------------
# GRU step
# ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _GRUStepCache:
    x: Array
    prev_h: Array
    Wx: Array
    Wh: Array
    r: Array
    z: Array
    n: Array
    ah_n: Optional[Array]  # reset-after: the recurrent n pre-activation h @ Wh_n + bh_n
    rh: Optional[Array]  # reset-before: r * prev_h
    reset_after: bool


def gru_step_forward(
    x: Array,
    prev_h: Array,
    Wx: Array,
    Wh: Array,
    b: Array,
    bh: Array,
    reset_after: bool = True,
) -> tuple[Array, _GRUStepCache]:
    """One GRU step (gate order r, z, n).

    x (N, D), prev_h (N, H), Wx (D, 3H), Wh (H, 3H), b (3H,), bh (3H,)
    -> next_h (N, H), cache.
    """
    H = prev_h.shape[1]
    R, Z, Nn = slice(0, H), slice(H, 2 * H), slice(2 * H, 3 * H)
    ax = x @ Wx + b
    if reset_after:
        ah = prev_h @ Wh + bh
        r = _sigmoid(ax[:, R] + ah[:, R])
        z = _sigmoid(ax[:, Z] + ah[:, Z])
        ah_n = ah[:, Nn]
        n = np.tanh(ax[:, Nn] + r * ah_n)
        rh = None
    else:
        ah_rz = prev_h @ Wh[:, 0 : 2 * H] + bh[0 : 2 * H]
        r = _sigmoid(ax[:, R] + ah_rz[:, R])
        z = _sigmoid(ax[:, Z] + ah_rz[:, Z])
        rh = r * prev_h
        n = np.tanh(ax[:, Nn] + rh @ Wh[:, Nn] + bh[Nn])
        ah_n = None
    next_h = (1 - z) * n + z * prev_h
    cache = _GRUStepCache(x, prev_h, Wx, Wh, r, z, n, ah_n, rh, bool(reset_after))
    return next_h, cache


def gru_step_backward(
    dnext_h: Array, cache: _GRUStepCache
) -> tuple[Array, Array, Array, Array, Array, Array]:
    """Backward of one GRU step.

    dnext_h (N, H) -> dx (N, D), dprev_h (N, H), dWx (D, 3H), dWh (H, 3H),
    db (3H,), dbh (3H,).
    """
    if not isinstance(cache, _GRUStepCache):
        raise TypeError(f"expected a cache from gru_step_forward, got {type(cache).__name__}")
    r, z, n, prev_h = cache.r, cache.z, cache.n, cache.prev_h
    H = prev_h.shape[1]
    Nn = slice(2 * H, 3 * H)

    # h' = (1 - z) * n + z * h
    dn = dnext_h * (1 - z)
    dz = dnext_h * (prev_h - n)
    dprev_h = dnext_h * z
    # back through the nonlinearities
    dan = dn * (1 - n * n)  # gradient of the n pre-activation
    daz = dz * z * (1 - z)

    if cache.reset_after:
        # n = tanh(ax_n + r * ah_n)
        dr = dan * cache.ah_n
        dar = dr * r * (1 - r)
        dax = np.concatenate([dar, daz, dan], axis=1)
        dah = np.concatenate([dar, daz, dan * r], axis=1)  # ah = h @ Wh + bh
        dprev_h = dprev_h + dah @ cache.Wh.T
        dWh = prev_h.T @ dah
        dbh = dah.sum(axis=0)
    else:
        # n = tanh(ax_n + (r * h) @ Wh_n + bh_n)
        drh = dan @ cache.Wh[:, Nn].T
        dr = drh * prev_h
        dprev_h = dprev_h + drh * r
        dar = dr * r * (1 - r)
        dax = np.concatenate([dar, daz, dan], axis=1)
        dah_rz = np.concatenate([dar, daz], axis=1)  # ah_rz = h @ Wh_rz + bh_rz
        dprev_h = dprev_h + dah_rz @ cache.Wh[:, 0 : 2 * H].T
        dWh = np.concatenate([prev_h.T @ dah_rz, cache.rh.T @ dan], axis=1)
        dbh = np.concatenate([dah_rz.sum(axis=0), dan.sum(axis=0)])

    # ax = x @ Wx + b
    dx = dax @ cache.Wx.T
    dWx = cache.x.T @ dax
    db = dax.sum(axis=0)
    return dx, dprev_h, dWx, dWh, db, dbh


# ----------------------------------------------------------------------------
# Per-cell dispatch used by the time loop
# ----------------------------------------------------------------------------


def _cell_step_forward(
    cell: str,
    x_t: Array,
    state: tuple[Array, ...],
    params: tuple[Array, ...],
    nonlinearity: str,
    reset_after: bool,
) -> tuple[tuple[Array, ...], Any]:
    """One step of `cell`: returns (new state tuple, step cache)."""
    if cell == "rnn":
        next_h, cache = rnn_step_forward(x_t, state[0], *params, nonlinearity=nonlinearity)
        return (next_h,), cache
    if cell == "lstm":
        next_h, next_c, cache = lstm_step_forward(x_t, state[0], state[1], *params)
        return (next_h, next_c), cache
    next_h, cache = gru_step_forward(x_t, state[0], *params, reset_after=reset_after)
    return (next_h,), cache


def _cell_step_backward(
    cell: str, dnext_state: tuple[Array, ...], cache: Any
) -> tuple[Array, tuple[Array, ...], tuple[Array, ...]]:
    """Backward of one step of `cell`: returns (dx, dprev_state, dparams)."""
    if cell == "rnn":
        dx, dprev_h, dWx, dWh, db = rnn_step_backward(dnext_state[0], cache)
        return dx, (dprev_h,), (dWx, dWh, db)
    if cell == "lstm":
        dx, dprev_h, dprev_c, dWx, dWh, db = lstm_step_backward(
            dnext_state[0], dnext_state[1], cache
        )
        return dx, (dprev_h, dprev_c), (dWx, dWh, db)
    dx, dprev_h, dWx, dWh, db, dbh = gru_step_backward(dnext_state[0], cache)
    return dx, (dprev_h,), (dWx, dWh, db, dbh)


# ----------------------------------------------------------------------------
# Sequence forward / backward (the general entry points)
# ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _SequenceCache:
    cell: str
    steps: list  # one step cache per time step
    active: Array  # (T, N, 1) bool: row n is processed at step t  <=>  t < L_n
    x_shape: tuple[int, int, int]
    H: int
    dtype: np.dtype
    params: tuple[Array, ...]


def sequence_forward(
    cell: str,
    x: Array,
    params: Sequence[Array],
    state0: Optional[Sequence[Optional[Array]]] = None,
    *,
    lengths: Optional[Array] = None,
    nonlinearity: str = "tanh",
    reset_after: bool = True,
) -> tuple[Array, tuple[Array, ...], _SequenceCache]:
    """Run `cell` ("rnn", "lstm" or "gru") over a whole sequence.

    x (N, T, D); params (Wx, Wh, b) for rnn/lstm, (Wx, Wh, b, bh) for gru;
    state0 None (zeros) or (h0,) for rnn/gru, (h0, c0) for lstm, each (N, H)
    or None (zeros; a short tuple is padded with None); lengths None or an
    int array (N,) with 0 <= L_n <= T.

    Returns h (N, T, H), final_state ((hT,) or (hT, cT), each (N, H)), cache.
    Row n is processed for t < L_n only: h[n, t] = 0 for t >= L_n and its
    final state is the state after step L_n - 1 (state0 if L_n == 0).
    `nonlinearity` is used by the rnn cell only, `reset_after` by gru only.
    """
    _check_cell(cell)
    _check_nonlinearity(nonlinearity)
    params = tuple(params)
    n_params = 4 if cell == "gru" else 3
    if len(params) != n_params:
        raise ValueError(f"cell {cell!r} takes {n_params} params, got {len(params)}")
    n_state = 2 if cell == "lstm" else 1

    N, T, _ = x.shape
    Wh = params[1]
    H = Wh.shape[0]
    dtype = x.dtype

    # Initial state: None means zeros; copy so no output aliases an input.
    # A short tuple, e.g. (h0,) for the lstm, is padded with None.
    state0 = () if state0 is None else tuple(state0)
    if len(state0) > n_state:
        raise ValueError(f"state0 for cell {cell!r} has at most {n_state} entries, got {len(state0)}")
    state0 += (None,) * (n_state - len(state0))
    state = tuple(
        np.zeros((N, H), dtype=dtype) if s is None else np.array(s, copy=True) for s in state0
    )

    # active[t, n] is True while row n is still inside its sequence.
    if lengths is None:
        active = np.ones((T, N, 1), dtype=bool)
    else:
        lengths = np.asarray(lengths)
        if lengths.shape != (N,) or not np.issubdtype(lengths.dtype, np.integer):
            raise ValueError(f"lengths must be an integer array of shape ({N},)")
        if np.any(lengths < 0) or np.any(lengths > T):
            raise ValueError(f"lengths must lie in [0, {T}]")
        active = (np.arange(T)[:, None] < lengths[None, :])[:, :, None]

    h = np.zeros((N, T, H), dtype=dtype)
    steps = []
    for t in range(T):
        keep = active[t]
        new_state, step_cache = _cell_step_forward(
            cell, x[:, t, :], state, params, nonlinearity, reset_after
        )
        steps.append(step_cache)
        h[:, t, :] = np.where(keep, new_state[0], 0)
        # Finished rows keep their state.
        state = tuple(np.where(keep, new, old) for new, old in zip(new_state, state))

    cache = _SequenceCache(cell, steps, active, (N, T, x.shape[2]), H, dtype, params)
    return h, state, cache


def sequence_backward(
    dh: Optional[Array],
    cache: _SequenceCache,
    dfinal_state: Optional[Sequence[Optional[Array]]] = None,
) -> tuple[Array, tuple[Array, ...], tuple[Array, ...]]:
    """Backward of `sequence_forward`.

    dh (N, T, H) or None (zeros); dfinal_state None or a tuple like
    final_state whose entries may be None (zeros; a short tuple is padded).

    Returns dx (N, T, D), dstate0 ((dh0,) or (dh0, dc0)) and dparams
    ((dWx, dWh, db) or (dWx, dWh, db, dbh)).  dh[n, t] for t >= L_n is ignored.
    """
    if not isinstance(cache, _SequenceCache):
        raise TypeError(f"expected a cache from sequence_forward, got {type(cache).__name__}")
    N, T, D = cache.x_shape
    H, dtype = cache.H, cache.dtype
    n_state = 2 if cache.cell == "lstm" else 1

    if dh is None:
        dh = np.zeros((N, T, H), dtype=dtype)
    dfinal_state = () if dfinal_state is None else tuple(dfinal_state)
    if len(dfinal_state) > n_state:
        raise ValueError(
            f"dfinal_state for cell {cache.cell!r} has at most {n_state} entries, "
            f"got {len(dfinal_state)}"
        )
    dfinal_state += (None,) * (n_state - len(dfinal_state))
    # Gradient w.r.t. the running state, flowing backwards in time.
    dstate = tuple(
        np.zeros((N, H), dtype=dtype) if d is None else np.array(d, copy=True)
        for d in dfinal_state
    )

    dx = np.zeros((N, T, D), dtype=dtype)
    dparams = tuple(np.zeros_like(p) for p in cache.params)
    for t in reversed(range(T)):
        keep = cache.active[t]
        # Gradient into this step's outputs; rows past their length get none.
        dnext_h = np.where(keep, dh[:, t, :] + dstate[0], 0)
        dnext_state = (dnext_h,) + tuple(np.where(keep, d, 0) for d in dstate[1:])
        dx_t, dprev_state, dparams_t = _cell_step_backward(
            cache.cell, dnext_state, cache.steps[t]
        )
        dx[:, t, :] = np.where(keep, dx_t, 0)
        # Rows that skipped this step pass their state gradient straight through.
        dstate = tuple(np.where(keep, dp, d) for dp, d in zip(dprev_state, dstate))
        dparams = tuple(acc + g for acc, g in zip(dparams, dparams_t))

    return dx, dstate, dparams


# ----------------------------------------------------------------------------
# CS231n-style sequence wrappers
# ----------------------------------------------------------------------------


def _check_sequence_cache(cache: Any, cell: str) -> None:
    if not isinstance(cache, _SequenceCache) or cache.cell != cell:
        got = cache.cell if isinstance(cache, _SequenceCache) else type(cache).__name__
        raise TypeError(f"expected a cache from {cell}_forward, got {got!r}")


def rnn_forward(
    x: Array, h0: Array, Wx: Array, Wh: Array, b: Array, nonlinearity: str = "tanh"
) -> tuple[Array, _SequenceCache]:
    """Vanilla RNN over a sequence.

    x (N, T, D), h0 (N, H), Wx (D, H), Wh (H, H), b (H,) -> h (N, T, H), cache.
    """
    h, _, cache = sequence_forward("rnn", x, (Wx, Wh, b), (h0,), nonlinearity=nonlinearity)
    return h, cache


def rnn_backward(
    dh: Array, cache: _SequenceCache
) -> tuple[Array, Array, Array, Array, Array]:
    """Backward of `rnn_forward`.

    dh (N, T, H) -> dx (N, T, D), dh0 (N, H), dWx (D, H), dWh (H, H), db (H,).
    """
    _check_sequence_cache(cache, "rnn")
    dx, (dh0,), (dWx, dWh, db) = sequence_backward(dh, cache)
    return dx, dh0, dWx, dWh, db


def lstm_forward(
    x: Array, h0: Array, Wx: Array, Wh: Array, b: Array, c0: Optional[Array] = None
) -> tuple[Array, _SequenceCache]:
    """LSTM over a sequence; c0=None means a zero initial cell state.

    x (N, T, D), h0 (N, H), Wx (D, 4H), Wh (H, 4H), b (4H,), c0 (N, H)
    -> h (N, T, H), cache.
    """
    h, _, cache = sequence_forward("lstm", x, (Wx, Wh, b), (h0, c0))
    return h, cache


def lstm_backward(
    dh: Array, cache: _SequenceCache
) -> tuple[Array, Array, Array, Array, Array]:
    """Backward of `lstm_forward` (the gradient w.r.t. c0 is dropped).

    dh (N, T, H) -> dx (N, T, D), dh0 (N, H), dWx (D, 4H), dWh (H, 4H), db (4H,).
    """
    _check_sequence_cache(cache, "lstm")
    dx, (dh0, _dc0), (dWx, dWh, db) = sequence_backward(dh, cache)
    return dx, dh0, dWx, dWh, db


def gru_forward(
    x: Array,
    h0: Array,
    Wx: Array,
    Wh: Array,
    b: Array,
    bh: Array,
    reset_after: bool = True,
) -> tuple[Array, _SequenceCache]:
    """GRU over a sequence.

    x (N, T, D), h0 (N, H), Wx (D, 3H), Wh (H, 3H), b (3H,), bh (3H,)
    -> h (N, T, H), cache.
    """
    h, _, cache = sequence_forward("gru", x, (Wx, Wh, b, bh), (h0,), reset_after=reset_after)
    return h, cache


def gru_backward(
    dh: Array, cache: _SequenceCache
) -> tuple[Array, Array, Array, Array, Array, Array]:
    """Backward of `gru_forward`.

    dh (N, T, H) -> dx (N, T, D), dh0 (N, H), dWx (D, 3H), dWh (H, 3H),
    db (3H,), dbh (3H,).
    """
    _check_sequence_cache(cache, "gru")
    dx, (dh0,), (dWx, dWh, db, dbh) = sequence_backward(dh, cache)
    return dx, dh0, dWx, dWh, db, dbh


# ----------------------------------------------------------------------------
# Training kernels: temporal layers
# ----------------------------------------------------------------------------


def temporal_softmax_loss(
    scores: Array, targets: Array, mask: Optional[Array], row_scale: float
) -> tuple[float, Array]:
    """Softmax cross-entropy of every row, log-sum-exp stabilised.

    scores (M, V) float; targets (M,) ints in [0, V) where mask is True; mask (M,)
    bool or None for all rows. Returns (sum of the masked rows' losses as a float64,
    dscores (M, V) = (softmax - onehot) * row_scale on masked rows, 0 elsewhere).
    """
    M, V = scores.shape
    m = np.ones(M, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    y = np.where(m, targets, 0)
    rows = np.arange(M)
    shifted = scores - scores.max(axis=1, keepdims=True)
    log_z = np.log(np.exp(shifted).sum(axis=1))
    nll = log_z - shifted[rows, y]
    total = float(np.sum(nll[m], dtype=np.float64))
    dscores = np.exp(shifted - log_z[:, None])
    dscores[rows, y] -= 1
    dscores *= (m * row_scale).astype(scores.dtype)[:, None]
    return total, dscores.astype(scores.dtype, copy=False)


def embedding_backward(ids: Array, dout: Array, dW: Array) -> None:
    """dW (V, D) += dout (M, D) at rows ids (M,), in place; repeated ids accumulate."""
    np.add.at(dW, ids, dout)


# ----------------------------------------------------------------------------
# Training kernels: optimizer updates (in place, in p's dtype)
# ----------------------------------------------------------------------------


def _as(p: Array, *values: float) -> list[Any]:
    return [p.dtype.type(v) for v in values]


def sgd_update(p: Array, g: Array, buf: Optional[Array], lr: float, momentum: float = 0.0,
               nesterov: bool = False, weight_decay: float = 0.0) -> None:
    """torch.optim.SGD: ``g += wd*p``; ``buf = mu*buf + g``; ``p -= lr*(g + mu*buf)``
    (Nesterov) or ``p -= lr*buf``; without momentum ``p -= lr*g``."""
    lr_, mu, wd = _as(p, lr, momentum, weight_decay)
    if weight_decay:
        g = g + wd * p
    if momentum > 0:
        assert buf is not None
        buf *= mu
        buf += g
        g = g + mu * buf if nesterov else buf
    p -= lr_ * g


def adagrad_update(p: Array, g: Array, mem: Array, lr: float, eps: float) -> None:
    """min-char-rnn's Adagrad: ``mem += g*g; p -= lr * g / sqrt(mem + eps)``."""
    lr_, eps_ = _as(p, lr, eps)
    mem += g * g
    p -= lr_ * (g / np.sqrt(mem + eps_))


def rmsprop_update(p: Array, g: Array, m: Array, lr: float, alpha: float, eps: float) -> None:
    """``m = alpha*m + (1-alpha)*g*g; p -= lr * g / (sqrt(m) + eps)``."""
    lr_, alpha_, one_m_alpha, eps_ = _as(p, lr, alpha, 1.0 - alpha, eps)
    m *= alpha_
    m += one_m_alpha * (g * g)
    p -= lr_ * (g / (np.sqrt(m) + eps_))


def adam_update(p: Array, g: Array, m: Array, v: Array, t: int, lr: float, beta1: float,
                beta2: float, eps: float, weight_decay: float = 0.0,
                decoupled: bool = False) -> None:
    """torch.optim.Adam (``decoupled=False``: ``g += wd*p``) or AdamW (``decoupled=True``:
    ``p *= 1 - lr*wd`` first), at step t >= 1."""
    bc1 = 1.0 - beta1 ** t
    b1, one_m_b1, b2, one_m_b2, eps_, step_size, bc2_sqrt = _as(
        p, beta1, 1.0 - beta1, beta2, 1.0 - beta2, eps, lr / bc1, math.sqrt(1.0 - beta2 ** t))
    if weight_decay:
        if decoupled:
            p *= p.dtype.type(1.0 - lr * weight_decay)
        else:
            g = g + p.dtype.type(weight_decay) * p
    m *= b1
    m += one_m_b1 * g
    v *= b2
    v += one_m_b2 * (g * g)
    denom = np.sqrt(v)
    denom /= bc2_sqrt
    denom += eps_
    p -= step_size * (m / denom)


def grad_norm(grads: Sequence[Array]) -> float:
    """The global L2 norm of all arrays together, summed in float64."""
    return math.sqrt(sum(float(np.sum(np.square(g, dtype=np.float64))) for g in grads))
