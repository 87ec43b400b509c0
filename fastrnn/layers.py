"""Layers: stacked, bidirectional RNN / LSTM / GRU modules and the CS231n temporal layers.

Every layer keeps its parameters in ``layer.params`` (a ``dict[str, np.ndarray]``) and
their gradients in ``layer.grads`` under the same keys. ``forward`` remembers what
``backward`` needs; ``backward`` *adds* into ``layer.grads`` (call ``zero_grad()`` between
steps, as with torch) and returns the gradient with respect to the inputs. An optimizer may
update ``params`` in place or replace its entries; a layer reads ``params`` at every call.

Recurrent layers (:class:`RNN`, :class:`LSTM`, :class:`GRU`) follow ``torch.nn``: the same
constructor arguments, the same state layout ``(num_layers * num_directions, N, H)``, the
same meaning of ``dropout`` and of packed sequences (``lengths``), but batch-major input
``x (N, T, D)`` by default (``batch_first=True``). Their parameters, per layer ``l`` and
direction (the reverse one adds the suffix ``_reverse``)::

    Wx_l{l}   (D_l, G*H)   input-to-hidden weights, D_0 = input_size, D_l = dirs*H after
    Wh_l{l}   (H, G*H)     hidden-to-hidden weights
    b_l{l}    (G*H,)       bias
    bh_l{l}   (G*H,)       recurrent bias (GRU only)

with gate blocks in the kernels' order: G = 1 (RNN), 4 (LSTM: i, f, o, g), 3 (GRU: r, z, n).
:mod:`fastrnn.interop` converts to and from PyTorch state dicts.

The whole sequence of each layer and direction runs in one call of the compiled kernels
(:func:`fastrnn.functional.sequence_forward` / ``sequence_backward``); Python only loops over
layers and directions.

Temporal layers, as in CS231n assignment 3: :class:`Embedding` (``word_embedding_*``),
:class:`TemporalAffine` (``temporal_affine_*``) and :func:`temporal_softmax_loss`.
"""
from __future__ import annotations

import math
import numbers
import warnings
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np

from . import functional as F

__all__ = [
    "Layer",
    "RNN",
    "LSTM",
    "GRU",
    "Embedding",
    "TemporalAffine",
    "temporal_softmax_loss",
]

Array = np.ndarray
#: A recurrent layer's state: ``h`` for the RNN/GRU, ``(h, c)`` for the LSTM, each
#: ``(num_layers * num_directions, N, H)``.
State = Union[Array, Tuple[Array, Array]]
Seed = Union[None, int, np.random.SeedSequence, np.random.Generator]

_INITS = ("uniform", "charrnn")
_REDUCTIONS = ("batchmean", "mean", "sum")


# ----------------------------------------------------------------------------- helpers


def _dtype(dtype: Any) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"dtype must be np.float32 or np.float64, got {dtype!r}") from exc
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"dtype must be np.float32 or np.float64, got {dt}")
    return dt


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive int, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {value}")
    return int(value)


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _rng(seed: Seed) -> np.random.Generator:
    if isinstance(seed, (bool, np.bool_)) or not (
        seed is None
        or isinstance(seed, (numbers.Integral, np.random.SeedSequence, np.random.Generator))
    ):
        raise TypeError(f"seed must be None, an int, a SeedSequence or a Generator, got {seed!r}")
    if isinstance(seed, numbers.Integral) and seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    return np.random.default_rng(seed)


def _init_scale(init: Any, fan: int) -> float:
    if init == "uniform":
        return 1.0 / math.sqrt(fan)
    if init == "charrnn":
        return 0.08
    raise ValueError(f"init must be one of {_INITS}, got {init!r}")


def _float_array(name: str, value: Any, dtype: np.dtype, ndim: int, shape_doc: str) -> Array:
    """value as an ndarray of exactly `dtype` (no silent casts) and `ndim` dimensions."""
    arr = np.asarray(value)
    if arr.dtype != dtype:
        raise TypeError(
            f"{name} has dtype {arr.dtype} but the layer is {dtype}; no silent casts "
            f"(convert with {name}.astype(np.{dtype.name}))"
        )
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D with shape {shape_doc}, got shape {arr.shape}")
    return arr


def _int_array(name: str, value: Any, shape: Optional[Tuple[int, ...]], shape_doc: str) -> Array:
    arr = np.asarray(value)
    if arr.dtype.kind not in "iu":  # signed or unsigned integers, not bool
        raise TypeError(f"{name} must be an integer array {shape_doc}, got dtype {arr.dtype}")
    if shape is not None and arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape_doc} = {shape}, got {arr.shape}")
    return arr


def _is_token_ids(x: Any) -> bool:
    """Whether x is an integer array: the ids of one-hot inputs."""
    dtype = getattr(x, "dtype", None)
    if not isinstance(dtype, np.dtype):
        dtype = np.asarray(x).dtype
    return dtype.kind in "iu"


def _check_ids(name: str, ids: Array, vocab_size: int, where: Optional[Array] = None) -> None:
    vals = ids if where is None else ids[where]
    if vals.size and (vals.min() < 0 or vals.max() >= vocab_size):
        bad = vals[(vals < 0) | (vals >= vocab_size)][0]
        raise ValueError(f"{name} must lie in [0, {vocab_size}), got a value {int(bad)}")


def _flatten_rng_state(state: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    """A bit generator's state as flat ``{key: str | int | ndarray}`` (128-bit ints as
    decimal strings) so that every value fits in an ``.npz`` file."""
    flat: Dict[str, Any] = {}
    for key, value in state.items():
        if isinstance(value, Mapping):
            flat.update(_flatten_rng_state(value, f"{prefix}{key}."))
        elif isinstance(value, (bool, np.bool_)):
            flat[prefix + key] = int(value)
        elif isinstance(value, numbers.Integral):
            value = int(value)
            flat[prefix + key] = value if -(2**63) <= value < 2**63 else str(value)
        elif isinstance(value, np.ndarray):
            flat[prefix + key] = value.copy()
        else:
            flat[prefix + key] = value
    return flat


def _unflatten_rng_state(flat: Mapping[str, Any]) -> Dict[str, Any]:
    nested: Dict[str, Any] = {}
    for key, value in flat.items():
        arr = np.asarray(value)
        if arr.ndim == 0:
            value = arr.item()
            if key != "bit_generator" and isinstance(value, str):
                value = int(value)
        else:
            value = arr
        node = nested
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return nested


# ----------------------------------------------------------------------------- base


class Layer:
    """Base of all layers: ``params``/``grads`` dicts, ``training`` flag, ``zero_grad``."""

    params: Dict[str, Array]
    grads: Dict[str, Array]
    training: bool

    def __init__(self) -> None:
        self.params = {}
        self.grads = {}
        self.training = True

    def _add_param(self, name: str, value: Array) -> None:
        self.params[name] = value
        self.grads[name] = np.zeros_like(value)

    def zero_grad(self) -> None:
        """Sets every gradient to zero (in place: the arrays stay the same objects)."""
        for name, p in self.params.items():
            g = self.grads.get(name)
            if g is None or g.shape != p.shape or g.dtype != p.dtype:
                self.grads[name] = np.zeros_like(p)
            else:
                g.fill(0)

    def train(self, mode: bool = True) -> "Layer":
        """Training mode (dropout active); ``train(False)`` is :meth:`eval`. Returns self."""
        self.training = _bool("mode", mode)
        return self

    def eval(self) -> "Layer":
        """Evaluation mode (no dropout). Returns self."""
        return self.train(False)

    def num_params(self) -> int:
        """Total number of scalar parameters."""
        return int(sum(p.size for p in self.params.values()))

    def load_params(self, params: Mapping[str, Any], strict: bool = True) -> None:
        """Copies ``params`` into ``self.params`` in place (arrays keep their identity and
        dtype). With ``strict``, the keys must be exactly this layer's keys."""
        if strict:
            missing = sorted(set(self.params) - set(params))
            unexpected = sorted(set(params) - set(self.params))
            if missing or unexpected:
                raise ValueError(f"load_params: missing keys {missing}, unexpected keys {unexpected}")
        for key, value in params.items():
            if key not in self.params:
                continue
            value = np.asarray(value)
            if value.shape != self.params[key].shape:
                raise ValueError(
                    f"load_params: {key} must have shape {self.params[key].shape}, got {value.shape}"
                )
            self.params[key][...] = value

    def _grad_slot(self, name: str) -> Array:
        """The gradient array of `name`, (re)created if it no longer matches its param."""
        p, g = self.params[name], self.grads.get(name)
        if g is None or g.shape != p.shape or g.dtype != p.dtype:
            g = self.grads[name] = np.zeros(p.shape, p.dtype)
        elif not (g.flags.c_contiguous and g.flags.writeable):  # the kernels add in place
            g = self.grads[name] = np.array(g, order="C")
        return g

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"

    def extra_repr(self) -> str:
        """The arguments shown by ``repr``."""
        return ""


# ----------------------------------------------------------------------------- recurrent


def _reverse_index(lengths: Optional[Array], T: int) -> Optional[Array]:
    """(N, T) time indices that reverse each row within its own length (positions past the
    length map to themselves); None for full-length rows (a plain [:, ::-1])."""
    if lengths is None:
        return None
    t = np.arange(T)
    L = lengths[:, None]
    return np.where(t < L, L - 1 - t, t)


def _reverse(a: Array, index: Optional[Array]) -> Array:
    """Reverses a (N, T, C) along time, per row within its length. Its own inverse."""
    if index is None:
        return a[:, ::-1]
    return a[np.arange(a.shape[0])[:, None], index]


class _Recurrent(Layer):
    """Shared implementation of :class:`RNN`, :class:`LSTM` and :class:`GRU`."""

    _cell: str = ""
    _gates: int = 1

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int,
        *,
        bidirectional: bool,
        dropout: float,
        dtype: Any,
        init: str,
        seed: Seed,
        batch_first: bool,
        nonlinearity: str = "tanh",
        reset_after: bool = True,
        forget_bias: float = 0.0,
    ) -> None:
        super().__init__()
        self.input_size = _positive_int("input_size", input_size)
        self.hidden_size = _positive_int("hidden_size", hidden_size)
        self.num_layers = _positive_int("num_layers", num_layers)
        self.bidirectional = _bool("bidirectional", bidirectional)
        if isinstance(dropout, (bool, np.bool_)) or not isinstance(dropout, numbers.Real):
            raise TypeError(f"dropout must be a float in [0, 1), got {dropout!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        self.dropout = float(dropout)
        if self.dropout > 0 and self.num_layers == 1:
            warnings.warn(
                f"dropout={self.dropout} has no effect with num_layers=1: it applies between "
                "layers (as in torch.nn)",
                UserWarning,
                stacklevel=3,
            )
        self.dtype = _dtype(dtype)
        if init not in _INITS:
            raise ValueError(f"init must be one of {_INITS}, got {init!r}")
        self.init = init
        self.batch_first = _bool("batch_first", batch_first)
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        self.reset_after = _bool("reset_after", reset_after)
        if isinstance(forget_bias, (bool, np.bool_)) or not isinstance(forget_bias, numbers.Real):
            raise TypeError(f"forget_bias must be a float, got {forget_bias!r}")
        if not math.isfinite(forget_bias):
            raise ValueError(f"forget_bias must be finite, got {forget_bias!r}")
        self.forget_bias = float(forget_bias)
        #: The layer's random generator: it draws the initial weights, then every dropout
        #: mask. Its state is part of the layer: see :meth:`rng_state`.
        self.rng = _rng(seed)
        self._cache: Optional[Dict[str, Any]] = None

        H = self.hidden_size
        scale = _init_scale(init, H)
        shapes = self.param_shapes(self.input_size, H, self.num_layers, bidirectional=self.bidirectional)
        for full, shape in shapes.items():
            value = self.rng.uniform(-scale, scale, shape).astype(self.dtype)
            if full.startswith("b_l") and self._cell == "lstm" and self.forget_bias != 0.0:
                value[H : 2 * H] = self.forget_bias
            self._add_param(full, value)

    # -- structure

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def _suffixes(self) -> Tuple[str, ...]:
        return ("", "_reverse") if self.bidirectional else ("",)

    @property
    def _names(self) -> Tuple[str, ...]:
        return self._param_names()

    @classmethod
    def _param_names(cls) -> Tuple[str, ...]:
        return ("Wx", "Wh", "b", "bh") if cls._cell == "gru" else ("Wx", "Wh", "b")

    @classmethod
    def param_shapes(cls, input_size: int, hidden_size: int, num_layers: int, *,
                     bidirectional: bool = False) -> Dict[str, Tuple[int, ...]]:
        """Name -> shape of every parameter such a layer has, in the order they are
        created, without building it (sizes as the constructor takes them)."""
        H = _positive_int("hidden_size", hidden_size)
        D0 = _positive_int("input_size", input_size)
        GH = cls._gates * H
        suffixes = ("", "_reverse") if _bool("bidirectional", bidirectional) else ("",)
        shapes: Dict[str, Tuple[int, ...]] = {}
        for l in range(_positive_int("num_layers", num_layers)):
            D = D0 if l == 0 else len(suffixes) * H
            per = {"Wx": (D, GH), "Wh": (H, GH), "b": (GH,), "bh": (GH,)}
            for sfx in suffixes:
                for n in cls._param_names():
                    shapes[f"{n}_l{l}{sfx}"] = per[n]
        return shapes

    def _layer_params(self, l: int, d: int) -> Tuple[Array, ...]:
        sfx = self._suffixes[d]
        return tuple(self.params[f"{n}_l{l}{sfx}"] for n in self._names)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}"
        if self._cell == "rnn" and self.nonlinearity != "tanh":
            s += f", nonlinearity={self.nonlinearity!r}"
        if self._cell == "gru" and not self.reset_after:
            s += ", reset_after=False"
        if self.bidirectional:
            s += ", bidirectional=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if not self.batch_first:
            s += ", batch_first=False"
        return s + f", dtype={self.dtype.name}"

    # -- state

    def initial_state(self, batch_size: int) -> State:
        """Zeros in the state's structure: h, or (h, c) for the LSTM, each
        (num_layers * num_directions, N, H)."""
        N = int(batch_size)
        if N < 0:
            raise ValueError(f"batch_size must be >= 0, got {batch_size}")
        shape = (self.num_layers * self.num_directions, N, self.hidden_size)
        h = np.zeros(shape, self.dtype)
        return (h, np.zeros(shape, self.dtype)) if self._cell == "lstm" else h

    def _split_state(self, name: str, state: Any, N: int) -> Tuple[Optional[Array], Optional[Array]]:
        """Validates a state (or state gradient) and returns (h, c), entries None = zeros."""
        if state is None:
            return None, None
        LD, H = self.num_layers * self.num_directions, self.hidden_size
        if self._cell != "lstm" and type(state) is np.ndarray and state.dtype == self.dtype and state.shape == (LD, N, H):
            return state, None  # the common case, checked without building the messages below
        doc = f"(num_layers * num_directions, N, H) = ({LD}, {N}, {H})"
        if self._cell == "lstm":
            if not isinstance(state, (tuple, list)) or len(state) != 2:
                raise TypeError(f"{name} of an LSTM must be a tuple (h, c), each {doc}, got {type(state).__name__}")
            parts = [(f"{name}[0] (h)", state[0]), (f"{name}[1] (c)", state[1])]
        else:
            if isinstance(state, (tuple, list)):
                raise TypeError(
                    f"{name} of a{'n' if self._cell == 'rnn' else ''} {self._cell.upper()} is one array h "
                    f"{doc}, got a {type(state).__name__}"
                )
            parts = [(name, state)]
        out: List[Optional[Array]] = []
        for pname, value in parts:
            if value is None:
                out.append(None)
                continue
            arr = _float_array(pname, value, self.dtype, 3, doc)
            if arr.shape != (LD, N, H):
                raise ValueError(f"{pname} must have shape {doc}, got {arr.shape}")
            out.append(arr)
        return out[0], (out[1] if len(out) > 1 else None)

    def _pack_state(self, h: Array, c: Optional[Array]) -> State:
        return (h, c) if self._cell == "lstm" else h  # type: ignore[return-value]

    # -- forward / backward

    def forward(
        self, x: Any, state: Optional[State] = None, lengths: Any = None
    ) -> Tuple[Array, State]:
        """Runs the stacked layers over a whole sequence.

        x: (N, T, D) (``(T, N, D)`` with ``batch_first=False``), the layer's dtype; or
            integer token ids (N, T) ((T, N)), the ids of one-hot inputs with
            D = input_size, as char-rnn feeds characters: the first layer reads row id
            of its Wx instead of multiplying by a one-hot matrix (the same result, exactly).
        state: None (zeros) or the initial state: h, or (h, c) for the LSTM, each
            (num_layers * num_directions, N, H); an LSTM entry may be None (zeros).
        lengths: None, or integers (N,) in [0, T] (packed-sequence semantics): row n runs
            its first lengths[n] steps only; its outputs after that are 0, its final state
            is the one at its last valid step, and the reverse direction starts at that
            step (it reads x[n, lengths[n]-1], ..., x[n, 0]).

        Returns out (N, T, num_directions * H) (forward direction first) and the final
        state in the structure of ``state``. In training mode with ``dropout > 0``, the
        output of every layer but the last is multiplied by an inverted-dropout mask drawn
        from :attr:`rng` (kept at probability 1 - dropout, scaled by 1 / (1 - dropout)).
        The layer keeps references to ``x`` and its own activations until :meth:`backward`:
        do not modify ``x`` in place in between.
        """
        return self._run(x, state, lengths, dropout=self.training and self.dropout > 0, keep=True)

    __call__ = forward

    def _run(self, x: Any, state: Any, lengths: Any, dropout: bool, keep: bool) -> Tuple[Array, State]:
        x_doc = "(N, T, D)" if self.batch_first else "(T, N, D)"
        if _is_token_ids(x):  # one-hot inputs given as their ids, D = input_size
            ids_doc = "(N, T)" if self.batch_first else "(T, N)"
            x = _int_array("x", x, None, ids_doc)
            if x.ndim != 2:
                raise ValueError(f"x of token ids must have shape {ids_doc}, got {x.shape}")
            if not self.batch_first:
                x = x.T
            N, T = x.shape
            D = self.input_size
        else:
            x = _float_array("x", x, self.dtype, 3, x_doc)
            if not self.batch_first:
                x = x.transpose(1, 0, 2)
            N, T, D = x.shape
        if D != self.input_size:
            raise ValueError(f"x must have shape {x_doc} with D = input_size = {self.input_size}, got D = {D}")
        if lengths is not None:
            lengths = _int_array("lengths", lengths, (N,), "(N,)").astype(np.int64)
            if lengths.size and (lengths.min() < 0 or lengths.max() > T):
                raise ValueError(f"lengths must lie in [0, T] = [0, {T}], got {lengths.tolist()}")
        h0, c0 = self._split_state("state", state, N)

        H, dirs, is_lstm = self.hidden_size, self.num_directions, self._cell == "lstm"
        rev = _reverse_index(lengths, T) if self.bidirectional else None
        hT = np.empty((self.num_layers * dirs, N, H), self.dtype)
        cT = np.empty_like(hT) if is_lstm else None
        caches: List[Any] = []
        masks: List[Optional[Array]] = []
        layer_in = x
        for l in range(self.num_layers):
            outs = []
            for d in range(dirs):
                k = l * dirs + d
                s0 = None if h0 is None else h0[k]
                state0 = (s0, None if c0 is None else c0[k]) if is_lstm else (s0,)
                xin = layer_in if d == 0 else _reverse(layer_in, rev)
                h, fin, cache = F.sequence_forward(
                    self._cell,
                    xin,
                    self._layer_params(l, d),
                    state0,
                    lengths=lengths,
                    nonlinearity=self.nonlinearity,
                    reset_after=self.reset_after,
                )
                outs.append(h if d == 0 else _reverse(h, rev))
                hT[k] = fin[0]
                if is_lstm:
                    cT[k] = fin[1]  # type: ignore[index]
                if keep:
                    caches.append(cache)
            out = outs[0] if dirs == 1 else np.concatenate(outs, axis=2)
            mask = None
            if dropout and l < self.num_layers - 1:
                mask = self._dropout_mask(out.shape)
                out = out * mask
            masks.append(mask)
            layer_in = out

        if keep:
            self._cache = {"caches": caches, "masks": masks, "rev": rev, "shape": (N, T, D)}
        out = layer_in if self.batch_first else layer_in.transpose(1, 0, 2)
        return out, self._pack_state(hT, cT)

    def _dropout_mask(self, shape: Tuple[int, ...]) -> Array:
        """An inverted-dropout mask drawn from :attr:`rng`: 1 / (1 - dropout) with
        probability 1 - dropout, else 0."""
        keep_prob = 1.0 - self.dropout
        draw = self.rng.random(shape, dtype=self.dtype)
        return np.where(draw < keep_prob, self.dtype.type(1.0 / keep_prob), self.dtype.type(0))

    def backward(self, dout: Any, dstate: Optional[State] = None) -> Tuple[Array, State]:
        """Backward of the last :meth:`forward`; adds the parameter gradients into
        ``self.grads``.

        dout: (N, T, num_directions * H) (time-major with ``batch_first=False``), or None
            for zeros. Entries past a row's length are ignored (those outputs are constant 0).
        dstate: gradient w.r.t. the final state, in its structure, or None (zeros).

        Returns dx (like x; None when x was token ids) and dstate0, the gradient w.r.t. the initial state, in the
        state's structure (also when the initial state was None, i.e. zeros).
        """
        if self._cache is None:
            raise RuntimeError("backward needs a forward call first (and runs once per forward)")
        cache, self._cache = self._cache, None
        N, T, D = cache["shape"]
        H, dirs, is_lstm = self.hidden_size, self.num_directions, self._cell == "lstm"
        LD = self.num_layers * dirs
        out_doc = f"{(N, T, dirs * H) if self.batch_first else (T, N, dirs * H)}"
        if dout is None:
            dout = np.zeros((N, T, dirs * H), self.dtype)
        else:
            dout = _float_array("dout", dout, self.dtype, 3, out_doc)
            if not self.batch_first:
                dout = dout.transpose(1, 0, 2)
            if dout.shape != (N, T, dirs * H):
                shown = dout.shape if self.batch_first else dout.transpose(1, 0, 2).shape
                raise ValueError(f"dout must have the output's shape {out_doc}, got {shown}")
        dhT, dcT = self._split_state("dstate", dstate, N)
        # Always pass explicit arrays to the kernels (None is zeros, but see the report).
        zeros = np.zeros((N, H), self.dtype)
        dh0 = np.empty((LD, N, H), self.dtype)
        dc0 = np.empty_like(dh0) if is_lstm else None

        dlayer = dout
        for l in reversed(range(self.num_layers)):
            mask = cache["masks"][l]
            if mask is not None:
                dlayer = dlayer * mask
            dx_sum: Optional[Array] = None
            for d in range(dirs):
                k = l * dirs + d
                dh = dlayer[:, :, d * H : (d + 1) * H] if dirs == 2 else dlayer
                if d == 1:
                    dh = _reverse(dh, cache["rev"])
                dfinal = (zeros if dhT is None else dhT[k],)
                if is_lstm:
                    dfinal += (zeros if dcT is None else dcT[k],)
                dx, ds0, dparams = F.sequence_backward(dh, cache["caches"][k], dfinal)
                if d == 1 and dx is not None:  # None: the input was token ids
                    dx = _reverse(dx, cache["rev"])
                sfx = self._suffixes[d]
                for name, g in zip(self._names, dparams):
                    self._grad_slot(f"{name}_l{l}{sfx}")[...] += g
                dh0[k] = ds0[0]
                if is_lstm:
                    dc0[k] = ds0[1]  # type: ignore[index]
                if dx_sum is None:
                    dx_sum = dx  # a fresh array from the kernel: ours to add into
                elif dx is not None:
                    dx_sum += dx
            dlayer = dx_sum  # type: ignore[assignment]
        if dlayer is None:  # token ids have no gradient
            return None, self._pack_state(dh0, dc0)
        dx_out = dlayer if self.batch_first else dlayer.transpose(1, 0, 2)
        return dx_out, self._pack_state(dh0, dc0)

    # -- random state

    def rng_state(self) -> Dict[str, Any]:
        """The state of :attr:`rng` (which draws the dropout masks) as a flat dict of plain
        values (str, int, ndarray) that ``np.savez`` can store, e.g.
        ``np.savez(f, **{"rng." + k: v for k, v in layer.rng_state().items()})``.
        Restore it with :meth:`set_rng_state` to reproduce the same masks."""
        return _flatten_rng_state(self.rng.bit_generator.state)

    def set_rng_state(self, state: Mapping[str, Any]) -> None:
        """Restores a state returned by :meth:`rng_state` (values may be 0-d arrays, as
        loaded back from an ``.npz`` file)."""
        nested = _unflatten_rng_state(state)
        name = nested.get("bit_generator")
        if name != type(self.rng.bit_generator).__name__:
            raise ValueError(
                f"state is for bit generator {name!r}, the layer uses {type(self.rng.bit_generator).__name__}"
            )
        self.rng.bit_generator.state = nested


class RNN(_Recurrent):
    """Multi-layer Elman RNN, ``h_t = act(x_t·Wx + h_{t-1}·Wh + b)`` with act tanh or relu.

    Arguments as ``torch.nn.RNN``: input_size D, hidden_size H, num_layers, nonlinearity
    ("tanh" | "relu"), then by keyword only (torch's next positional argument is ``bias``,
    which fastrnn's cells always have): bidirectional, dropout (between layers, training
    only; in [0, 1)).
    Also: dtype (float32 | float64), init ("uniform": U(-1/√H, 1/√H) for every parameter, as
    torch; "charrnn": U(-0.08, 0.08), as Karpathy's char-rnn), seed (for :attr:`rng`:
    initial weights, then dropout masks), batch_first (True: x is (N, T, D); False: (T, N, D)).

    Params per layer l and direction: ``Wx_l{l}`` (D_l, H), ``Wh_l{l}`` (H, H), ``b_l{l}``
    (H,), with suffix ``_reverse`` for the reverse direction. State h: (L*dirs, N, H).
    """

    _cell = "rnn"
    _gates = 1

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        *,
        bidirectional: bool = False,
        dropout: float = 0.0,
        dtype: Any = np.float32,
        init: str = "uniform",
        seed: Seed = None,
        batch_first: bool = True,
    ) -> None:
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            bidirectional=bidirectional,
            dropout=dropout,
            dtype=dtype,
            init=init,
            seed=seed,
            batch_first=batch_first,
            nonlinearity=nonlinearity,
        )


class LSTM(_Recurrent):
    """Multi-layer LSTM (gates i, f, o, g; one bias per layer and direction).

    Arguments as :class:`RNN` (without nonlinearity), plus ``forget_bias``: after the
    random init, the forget-gate slice ``b[H:2H]`` of every bias is set to this value when
    it is non-zero (1.0 is the usual choice).

    Params per layer l and direction: ``Wx_l{l}`` (D_l, 4H), ``Wh_l{l}`` (H, 4H),
    ``b_l{l}`` (4H,), suffix ``_reverse`` for the reverse direction. State: a tuple (h, c),
    each (L*dirs, N, H).
    """

    _cell = "lstm"
    _gates = 4

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        *,
        bidirectional: bool = False,
        dropout: float = 0.0,
        dtype: Any = np.float32,
        init: str = "uniform",
        seed: Seed = None,
        forget_bias: float = 0.0,
        batch_first: bool = True,
    ) -> None:
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            bidirectional=bidirectional,
            dropout=dropout,
            dtype=dtype,
            init=init,
            seed=seed,
            batch_first=batch_first,
            forget_bias=forget_bias,
        )


class GRU(_Recurrent):
    """Multi-layer GRU (gates r, z, n), with an input bias b and a recurrent bias bh.

    Arguments as :class:`RNN` (without nonlinearity), plus ``reset_after``: True (default)
    is the cuDNN/PyTorch form n = tanh(x·Wx_n + b_n + r∘(h·Wh_n + bh_n)); False is Cho's
    n = tanh(x·Wx_n + b_n + (r∘h)·Wh_n + bh_n).

    Params per layer l and direction: ``Wx_l{l}`` (D_l, 3H), ``Wh_l{l}`` (H, 3H), ``b_l{l}``
    and ``bh_l{l}`` (3H,), suffix ``_reverse`` for the reverse direction. State h:
    (L*dirs, N, H).
    """

    _cell = "gru"
    _gates = 3

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        *,
        bidirectional: bool = False,
        dropout: float = 0.0,
        dtype: Any = np.float32,
        init: str = "uniform",
        seed: Seed = None,
        reset_after: bool = True,
        batch_first: bool = True,
    ) -> None:
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            bidirectional=bidirectional,
            dropout=dropout,
            dtype=dtype,
            init=init,
            seed=seed,
            batch_first=batch_first,
            reset_after=reset_after,
        )


# ----------------------------------------------------------------------------- temporal


class Embedding(Layer):
    """Word embedding (CS231n ``word_embedding_forward/backward``): ids (N, T) -> (N, T, dim).

    Param ``W`` (vocab_size, dim), initialised N(0, scale²) (scale 1 as torch.nn.Embedding;
    CS231n uses 0.01).
    """

    def __init__(
        self, vocab_size: int, dim: int, dtype: Any = np.float32, seed: Seed = None, scale: float = 1.0
    ) -> None:
        super().__init__()
        self.vocab_size = _positive_int("vocab_size", vocab_size)
        self.dim = _positive_int("dim", dim)
        self.dtype = _dtype(dtype)
        rng = _rng(seed)
        if isinstance(scale, (bool, np.bool_)) or not isinstance(scale, numbers.Real):
            raise TypeError(f"scale must be a real number, got {scale!r}")
        if not 0.0 <= scale < math.inf:
            raise ValueError(f"scale must be >= 0 and finite, got {scale!r}")
        self._add_param("W", (rng.standard_normal((self.vocab_size, self.dim)) * float(scale)).astype(self.dtype))
        self._ids: Optional[Array] = None

    def extra_repr(self) -> str:
        return f"{self.vocab_size}, {self.dim}, dtype={self.dtype.name}"

    def forward(self, x: Any) -> Array:
        """x: integer ids of any shape, e.g. (N, T), in [0, vocab_size) -> x.shape + (dim,)."""
        ids = _int_array("x", x, None, "(N, T)")
        _check_ids("x", ids, self.vocab_size)
        self._ids = ids
        return self.params["W"][ids]

    __call__ = forward

    def backward(self, dout: Any) -> None:
        """dout: x.shape + (dim,). Adds into ``grads["W"]`` (repeated ids accumulate, as
        with np.add.at). The ids have no gradient: returns None."""
        if self._ids is None:
            raise RuntimeError("backward needs a forward call first")
        shape = self._ids.shape + (self.dim,)
        dout = _float_array("dout", dout, self.dtype, len(shape), str(shape))
        if dout.shape != shape:
            raise ValueError(f"dout must have shape {shape}, got {dout.shape}")
        F.embedding_backward(self._ids.reshape(-1), dout.reshape(-1, self.dim), self._grad_slot("W"))
        return None


class TemporalAffine(Layer):
    """Affine map at every timestep (CS231n ``temporal_affine_*``): (N, T, D) -> (N, T, M).

    Params ``W`` (D, M) and ``b`` (M,); init "uniform" = U(-1/√D, 1/√D) (torch.nn.Linear) or
    "charrnn" = U(-0.08, 0.08). Any leading shape works: (..., D) -> (..., M).
    """

    def __init__(
        self, input_dim: int, output_dim: int, dtype: Any = np.float32, init: str = "uniform", seed: Seed = None
    ) -> None:
        super().__init__()
        self.input_dim = _positive_int("input_dim", input_dim)
        self.output_dim = _positive_int("output_dim", output_dim)
        self.dtype = _dtype(dtype)
        scale = _init_scale(init, self.input_dim)
        rng = _rng(seed)
        self._add_param("W", rng.uniform(-scale, scale, (self.input_dim, self.output_dim)).astype(self.dtype))
        self._add_param("b", rng.uniform(-scale, scale, (self.output_dim,)).astype(self.dtype))
        self._x: Optional[Array] = None

    def extra_repr(self) -> str:
        return f"{self.input_dim}, {self.output_dim}, dtype={self.dtype.name}"

    def _check_x(self, x: Any) -> Array:
        arr = np.asarray(x)
        if arr.ndim < 1 or arr.shape[-1] != self.input_dim:
            raise ValueError(f"x must have shape (N, T, D) with D = {self.input_dim}, got {arr.shape}")
        return _float_array("x", arr, self.dtype, arr.ndim, "(N, T, D)")

    def forward(self, x: Any) -> Array:
        """x (N, T, D) -> x·W + b, (N, T, M)."""
        x = self._check_x(x)
        self._x = x
        out = F.matmul(x.reshape(-1, self.input_dim), self.params["W"])
        out += self.params["b"]
        return out.reshape(x.shape[:-1] + (self.output_dim,))

    __call__ = forward

    def backward(self, dout: Any) -> Array:
        """dout (N, T, M) -> dx (N, T, D); adds into ``grads["W"]``, ``grads["b"]``."""
        if self._x is None:
            raise RuntimeError("backward needs a forward call first")
        x = self._x
        shape = x.shape[:-1] + (self.output_dim,)
        dout = _float_array("dout", dout, self.dtype, len(shape), str(shape))
        if dout.shape != shape:
            raise ValueError(f"dout must have shape {shape}, got {dout.shape}")
        x2 = x.reshape(-1, self.input_dim)
        d2 = dout.reshape(-1, self.output_dim)
        self._grad_slot("W")[...] += F.matmul(x2.T, d2)
        self._grad_slot("b")[...] += d2.sum(axis=0)
        return F.matmul(d2, self.params["W"].T).reshape(x.shape)


def temporal_softmax_loss(
    scores: Any, targets: Any, mask: Any = None, reduction: str = "batchmean"
) -> Tuple[float, Array]:
    """Softmax cross-entropy at every timestep, numerically stable (log-sum-exp).

    scores (N, T, V) float; targets (N, T) ints in [0, V) (only checked where mask is True);
    mask (N, T) bool, or None for all True.

    reduction: "batchmean" (default, CS231n's ``temporal_softmax_loss``): the sum over masked
    positions divided by N; "mean": divided by the number of masked positions (the
    per-token loss in nats; bits per token = loss / ln 2; 0 if no position is masked);
    "sum": not divided.

    Returns loss (a Python float) and dscores (N, T, V) in the scores' dtype.
    """
    s = np.asarray(scores)
    if s.dtype not in (np.float32, np.float64):
        raise TypeError(f"scores must be float32 or float64, got dtype {s.dtype}")
    if s.ndim != 3:
        raise ValueError(f"scores must be 3-D (N, T, V), got shape {s.shape}")
    N, T, V = s.shape
    y = _int_array("targets", targets, (N, T), "(N, T)")
    m = None
    if mask is not None:
        m = np.asarray(mask)
        if m.shape != (N, T):
            raise ValueError(f"mask must have shape (N, T) = {(N, T)}, got {m.shape}")
        if m.dtype != np.bool_:
            if not np.issubdtype(m.dtype, np.integer) or not np.isin(m, (0, 1)).all():
                raise TypeError(f"mask must be a bool array (or 0/1 integers), got dtype {m.dtype}")
            m = m.astype(bool)
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if reduction == "batchmean":
        denom = float(N)
    elif reduction == "mean":
        denom = float(N * T if m is None else m.sum())
    else:
        denom = 1.0
    if denom == 0.0:
        return 0.0, np.zeros_like(s)
    # The kernel checks the targets where the mask is True.
    total, dscores = F.softmax_cross_entropy(s.reshape(N * T, V), y.reshape(N * T),
                                             None if m is None else m.reshape(N * T), 1.0 / denom)
    return total / denom, dscores.reshape(N, T, V)
