"""Models: a character-level language model (Karpathy's char-rnn) and the CS231n image
captioning RNN, built on :mod:`fastrnn.layers` and the compiled kernels.

Both keep their parameters in a flat ``model.params`` dict, and ``model.loss`` returns the
gradients under the same keys, so a CS231n-style ``Solver`` or a hand-written optimizer
works: update the arrays in place, or replace ``model.params[key]`` by a new array.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from . import _core
from . import functional as F
from .sampling import _int, _real
from .layers import (
    GRU,
    LSTM,
    RNN,
    Embedding,
    TemporalAffine,
    State,
    _dtype,
    _int_array,
    _check_ids,
    _positive_int,
    _rng,
    _bool,
    _REDUCTIONS,
    temporal_softmax_loss,
)

__all__ = ["CharRNN", "CaptioningRNN"]

Array = np.ndarray

_CELLS = {"rnn": RNN, "lstm": LSTM, "gru": GRU}


def _log_softmax(logits: Array) -> Array:
    z = logits - logits.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


# ----------------------------------------------------------------------------- CharRNN


def _check_optimizer(optimizer: Any) -> None:
    if not hasattr(optimizer, "_fused_step"):
        raise TypeError(f"optimizer must be a fastrnn.optim optimizer, got {type(optimizer).__name__}")


class CharRNN:
    """Character-level language model: input encoding -> stacked RNN/LSTM/GRU -> affine to
    the vocabulary -> softmax, trained with the mean cross-entropy per character.

    Args:
        vocab_size: V, the number of distinct tokens (characters).
        hidden_size: H of every recurrent layer.
        num_layers: stacked recurrent layers.
        cell: "lstm", "gru" or "rnn" (tanh).
        dropout: between recurrent layers, in training mode only (as torch / char-rnn).
        embedding_dim: None (default) feeds one-hot vectors (V,) to the first layer, as
            Karpathy's char-rnn and min-char-rnn do (no embedding parameters); an int E adds
            a learned :class:`~fastrnn.layers.Embedding` (V, E), as ``nn.Embedding`` models do.
        dtype: np.float32 or np.float64.
        init: "uniform" (torch's U(-1/√fan, 1/√fan)) or "charrnn" (U(-0.08, 0.08)).
        seed: seeds every sublayer (weights and dropout masks); None draws fresh entropy.

    Parameters, flat in ``params`` (the same array objects as the sublayers'): ``embed.W``
    (with an embedding), ``rnn.Wx_l0``, ``rnn.Wh_l0``, ``rnn.b_l0`` (and ``rnn.bh_l0`` for
    the GRU), ... per layer, ``head.W`` (H, V), ``head.b`` (V,). ``grads`` has the same keys.
    The sublayers are ``embed`` (or None), ``rnn`` and ``head``.
    """

    def __init__(
        self,
        vocab_size: int,
        hidden_size: int = 128,
        num_layers: int = 2,
        cell: str = "lstm",
        dropout: float = 0.0,
        embedding_dim: Optional[int] = None,
        dtype: Any = np.float32,
        init: str = "uniform",
        seed: Optional[int] = 0,
    ) -> None:
        self.vocab_size = _positive_int("vocab_size", vocab_size)
        if cell not in _CELLS:
            raise ValueError(f"cell must be one of {tuple(_CELLS)}, got {cell!r}")
        self.cell = cell
        if embedding_dim is not None:
            embedding_dim = _positive_int("embedding_dim", embedding_dim)
        self.embedding_dim = embedding_dim
        self.dtype = _dtype(dtype)
        self.seed = seed
        if seed is not None and (isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0):
            raise TypeError(f"seed must be None or a non-negative int, got {seed!r}")
        seeds = np.random.SeedSequence(seed).spawn(3)  # embedding, recurrent layers, head
        V, H = self.vocab_size, _positive_int("hidden_size", hidden_size)
        self.embed: Optional[Embedding] = (
            None if embedding_dim is None else Embedding(V, embedding_dim, self.dtype, seed=seeds[0])
        )
        self.rnn = _CELLS[cell](
            embedding_dim or V, H, num_layers, dropout=dropout, dtype=self.dtype, init=init, seed=seeds[1]
        )
        self.head = TemporalAffine(H, V, self.dtype, init=init, seed=seeds[2])
        self.training = True
        # (full name, layer, key) of every parameter, in the compiled loss's order:
        # [embed.W] + per layer [Wx, Wh, b(, bh)] + [head.W, head.b].
        self._slots = [(f"{prefix}.{key}", layer, key) for prefix, layer in self._layers() for key in layer.params]
        self._names = [full for full, _, _ in self._slots]
        self.params: Dict[str, Array] = {full: layer.params[key] for full, layer, key in self._slots}
        self.grads: Dict[str, Array] = {full: layer.grads[key] for full, layer, key in self._slots}

    # -- structure

    @property
    def hidden_size(self) -> int:
        return self.rnn.hidden_size

    @property
    def num_layers(self) -> int:
        return self.rnn.num_layers

    @property
    def dropout(self) -> float:
        return self.rnn.dropout

    @property
    def init(self) -> str:
        return self.rnn.init

    def _layers(self) -> List[Tuple[str, Any]]:
        layers: List[Tuple[str, Any]] = [("embed", self.embed)] if self.embed is not None else []
        return layers + [("rnn", self.rnn), ("head", self.head)]

    def _sync(self) -> Tuple[List[Array], List[Array]]:
        """Points the sublayers at ``self.params`` / ``self.grads`` entries that an optimizer
        replaced (``model.params[k] = new``), so both views stay the same objects. Returns
        the parameters and their gradient arrays in the compiled loss's order."""
        params, grads = [], []
        for full, layer, key in self._slots:
            current = layer.params[key]
            new = self.params.get(full)
            if new is not current:
                if full not in self.params:
                    raise KeyError(f"model.params lost its entry {full!r}")
                if not isinstance(new, np.ndarray) or new.shape != current.shape or new.dtype != current.dtype:
                    raise ValueError(
                        f"params[{full!r}] must be a {current.dtype} array of shape {current.shape}, "
                        f"got {getattr(new, 'dtype', type(new).__name__)} {getattr(new, 'shape', '')}"
                    )
                layer.params[key] = new
            g = self.grads.get(full)
            if g is None or g is not layer.grads.get(key):  # replaced: adopt it if the kernels can write it
                if isinstance(g, np.ndarray) and g.shape == new.shape and g.dtype == new.dtype:
                    layer.grads[key] = g
                g = self.grads[full] = layer._grad_slot(key)
            params.append(new)
            grads.append(g)
        return params, grads

    def config(self) -> Dict[str, Any]:
        """The constructor arguments as plain values (for JSON / npz); ``CharRNN(**config)``
        rebuilds the model (then load the parameters)."""
        return {
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "cell": self.cell,
            "dropout": self.dropout,
            "embedding_dim": self.embedding_dim,
            "dtype": self.dtype.name,
            "init": self.init,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "CharRNN":
        """Inverse of :meth:`config`."""
        return cls(**dict(config))

    @classmethod
    def param_shapes(cls, config: Mapping[str, Any]) -> Dict[str, Tuple[Tuple[int, ...], np.dtype]]:
        """Name -> (shape, dtype) of every parameter of ``CharRNN.from_config(config)``,
        computed without building the model (nothing is allocated). TypeError/ValueError
        for a config the constructor would refuse in its sizes, cell or dtype."""
        allowed = {"vocab_size", "hidden_size", "num_layers", "cell", "dropout", "embedding_dim",
                   "dtype", "init", "seed"}
        unknown = sorted(set(config) - allowed)
        if unknown:
            raise TypeError(f"CharRNN config: unexpected keys {unknown}")
        V = _positive_int("vocab_size", config.get("vocab_size"))
        H = _positive_int("hidden_size", config.get("hidden_size", 128))
        cell = config.get("cell", "lstm")
        if not isinstance(cell, str) or cell not in _CELLS:
            raise ValueError(f"cell must be one of {tuple(_CELLS)}, got {cell!r}")
        E = config.get("embedding_dim")
        dtype = _dtype(config.get("dtype", np.float32))
        shapes: Dict[str, Tuple[int, ...]] = {}
        if E is not None:
            shapes["embed.W"] = (V, _positive_int("embedding_dim", E))
        rnn = _CELLS[cell].param_shapes(E or V, H, config.get("num_layers", 2))
        shapes.update({f"rnn.{k}": v for k, v in rnn.items()})
        shapes.update({"head.W": (H, V), "head.b": (V,)})
        return {k: (v, dtype) for k, v in shapes.items()}

    def train(self, mode: bool = True) -> "CharRNN":
        """Training mode (dropout active); returns self."""
        self.training = _bool("mode", mode)
        for _, layer in self._layers():
            layer.train(self.training)
        return self

    def eval(self) -> "CharRNN":
        """Evaluation mode (no dropout); returns self."""
        return self.train(False)

    def zero_grad(self) -> None:
        """Zeros every gradient in place."""
        self._sync()
        for _, layer in self._layers():
            layer.zero_grad()

    def initial_state(self, batch_size: int) -> State:
        """Zero state for a batch: h, or (h, c) for the LSTM, each (num_layers, N, H)."""
        return self.rnn.initial_state(batch_size)

    def rng_state(self) -> Dict[str, Any]:
        """State of the dropout generator (see :meth:`fastrnn.layers.RNN.rng_state`)."""
        return self.rnn.rng_state()

    def set_rng_state(self, state: Mapping[str, Any]) -> None:
        """Restores :meth:`rng_state`."""
        self.rnn.set_rng_state(state)

    def num_params(self) -> int:
        """Total number of scalar parameters."""
        return int(sum(p.size for p in self.params.values()))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"CharRNN({args})"

    # -- computation

    def _ids(self, name: str, ids: Any, ndim: int) -> Array:
        doc = "(N, T)" if ndim == 2 else "(N,)"
        arr = _int_array(name, ids, None, doc)
        if arr.ndim != ndim:
            raise ValueError(f"{name} must have shape {doc}, got {arr.shape}")
        _check_ids(name, arr, self.vocab_size)
        return arr

    def _encode(self, ids: Array, cache: bool) -> Array:
        if self.embed is not None:
            return self.embed.forward(ids) if cache else self.embed.params["W"][ids]
        return ids  # one-hot inputs, given to the kernels as their ids

    def forward(self, inputs: Any, state: Optional[State] = None) -> Tuple[Array, State]:
        """inputs (N, T) token ids -> scores (N, T, V) (unnormalised logits) and the final
        state; remembers what :meth:`backward` needs."""
        self._sync()
        ids = self._ids("inputs", inputs, 2)
        h, final = self.rnn.forward(self._encode(ids, cache=True), state)
        return self.head.forward(h), final

    def backward(self, dscores: Any, dstate: Optional[State] = None) -> State:
        """Backward of :meth:`forward`: adds into ``grads``; returns the gradient w.r.t.
        the initial state."""
        dh = self.head.backward(dscores)
        dx, dstate0 = self.rnn.backward(dh, dstate)
        if self.embed is not None:
            self.embed.backward(dx)
        return dstate0

    def loss(
        self, inputs: Any, targets: Any, state: Optional[State] = None, reduction: str = "mean"
    ) -> Tuple[float, Dict[str, Array], State]:
        """Cross-entropy of the next-character predictions, and its gradients.

        inputs, targets: (N, T) token ids; state: None (zeros) or the state carried from the
        previous chunk (truncated BPTT). reduction: "mean" (default), the loss per
        character in nats (bits per character = loss / ln 2); "sum", summed over all N*T
        characters, as min-char-rnn's loss (torch's ``reduction="sum"``); "batchmean",
        summed and divided by N (CS231n's). Returns (loss, grads, final_state): ``grads`` is
        ``self.grads``, overwritten by this call (the same arrays every call);
        ``final_state`` is a new array (or (h, c)) to pass as the next chunk's ``state``.

        One compiled call gives the bits of :meth:`forward`, ``temporal_softmax_loss`` and
        :meth:`backward`, but for one shortcut: with an embedding and N*T at least twice V,
        the first layer's input side runs on the table E·Wx (V, G*H), a third of that
        layer's products on V rows instead of N*T. The loss, the state and every other
        gradient keep their bits; those of ``embed.W`` and ``rnn.Wx_l0`` are summed in
        another order (equal to rounding).
        """
        total, denom, state = self._compiled_loss(inputs, targets, state, reduction)  # type: ignore[misc]
        return total / denom, self.grads, state

    def train_step(
        self, inputs: Any, targets: Any, optimizer: Any, state: Optional[State] = None, reduction: str = "mean"
    ) -> Tuple[float, State]:
        """One training step: :meth:`loss`, then ``optimizer.step(self.grads)``, with the
        same results bit for bit, as one compiled call when it can be.

        Arguments as for :meth:`loss`; ``optimizer`` is a ``fastrnn.optim`` optimizer. The
        call is single when the optimizer updates exactly this model's ``params`` and
        clips by value or not at all (``global_clipnorm`` needs every gradient before any
        update, and takes the two calls), which saves a small model's step a fair share of
        its time. Returns (loss, final_state); ``grads`` holds the gradients (unclipped).
        """
        _check_optimizer(optimizer)
        done = self._compiled_loss(inputs, targets, state, reduction, optimizer, chunks=False)
        if done is None:
            loss, grads, state = self.loss(inputs, targets, state, reduction)
            optimizer.step(grads)
            return loss, state
        total, denom, state = done
        return total / denom, state

    def train_steps(
        self, inputs: Any, targets: Any, optimizer: Any, state: Optional[State] = None, reduction: str = "mean"
    ) -> Tuple[Array, State]:
        """K training steps in one call: :meth:`train_step` on ``inputs[k], targets[k]``
        for k = 0 ... K-1, each starting from the final state of the one before (truncated
        BPTT over K consecutive chunks of the same N streams), with the same bits.

        inputs, targets: (K, N, T) token ids. This is Keras's ``steps_per_execution``: the
        interpreter runs once per K steps instead of once per step, which for a small
        model (min-char-rnn's, say) is a large part of a step's time. Returns (losses (K,)
        float64, final_state); ``grads`` holds the last step's gradients. The call runs all
        K steps before returning (Ctrl-C takes effect then), and does not stop at a NaN
        loss, as K calls would not: check ``losses``.
        """
        _check_optimizer(optimizer)
        done = self._compiled_loss(inputs, targets, state, reduction, optimizer, chunks=True)
        if done is None:  # no single call can run this optimizer's steps: K pairs of calls
            ids = _int_array("inputs", inputs, None, "(K, N, T)")
            if ids.ndim != 3:
                raise ValueError(f"inputs must have shape (K, N, T), got {ids.shape}")
            y = _int_array("targets", targets, ids.shape, "(K, N, T)")
            losses = np.empty(ids.shape[0])
            for k in range(ids.shape[0]):
                losses[k], state = self.train_step(ids[k], y[k], optimizer, state, reduction)
            return losses, state
        total, denom, state = done
        return total / denom, state

    def _compiled_loss(
        self, inputs: Any, targets: Any, state: Optional[State], reduction: str, optimizer: Any = None,
        chunks: bool = False,
    ) -> Optional[Tuple[Any, int, State]]:
        """The compiled loss call behind :meth:`loss`, :meth:`train_step` (with
        ``optimizer``) and :meth:`train_steps` (``chunks``: inputs (K, N, T)). Returns
        (summed loss, or the K chunks' sums, the reduction's divisor, final state); None,
        with nothing run, when an optimizer is given whose step the call cannot run."""
        # One compiled call runs forward, loss and backward (the kernels forward() and
        # backward() run, in the same order), so a small model's step is not spent in
        # Python. The layers keep no cache from it: call forward() to backpropagate by hand.
        params, grads = self._sync()
        if optimizer is not None and not optimizer._fusable(self._names, params):
            return None
        doc = "(K, N, T)" if chunks else "(N, T)"
        ids = _int_array("inputs", inputs, None, doc)  # the kernel checks the ids' range
        if ids.ndim != (3 if chunks else 2):
            raise ValueError(f"inputs must have shape {doc}, got {ids.shape}")
        K = ids.shape[0] if chunks else 1
        N, T = ids.shape[-2:]
        y = _int_array("targets", targets, ids.shape, doc)
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        denom = max({"mean": N * T, "batchmean": N, "sum": 1}[reduction], 1)  # 1 when N*T is 0
        h0, c0 = self.rnn._split_state("state", state, N)
        rnn = self.rnn
        masks = (
            [rnn._dropout_mask((N, T, self.hidden_size)) for _ in range(K * (self.num_layers - 1))]
            if rnn.training and rnn.dropout > 0
            else []
        )
        update = None if optimizer is None else optimizer._fused_step(self._names, K if chunks else None)
        try:
            total, hT, cT = _core.language_model_loss(
                self.cell, ids, y, params, grads, self.embed is not None,
                h0, c0, masks, rnn.nonlinearity, rnn.reset_after, 1.0 / denom, update,
            )
        except (TypeError, ValueError, KeyboardInterrupt):
            # Nothing was updated: the call checks everything first, and a Ctrl-C stops it
            # only before its first update.
            if update is not None:
                optimizer.t -= K
            raise
        return total, denom, (hT, cT) if self.cell == "lstm" else hT

    def step(self, token_ids: Any, state: Optional[State] = None) -> Tuple[Array, State]:
        """One timestep for sampling, without dropout and without touching the cache of
        :meth:`forward`: token_ids (N,) -> logits (N, V) and the next state."""
        self._sync()
        ids = self._ids("token_ids", token_ids, 1)
        x = self._encode(ids[:, None], cache=False)
        h, state = self.rnn._run(x, state, None, dropout=False, keep=False)
        return F.matmul(h[:, 0], self.head.params["W"]) + self.head.params["b"], state

    def sample(
        self,
        prime: Any,
        length: int,
        temperature: float = 1.0,
        rng: Any = None,
        state: Optional[State] = None,
    ) -> Tuple[Array, State]:
        """Samples ``length`` tokens after a priming sequence, batched.

        prime: token ids (P,) or (N, P), P >= 1 (e.g. the encoded start text); length: how
        many tokens to draw; temperature: divides the logits (0 = greedy argmax); rng: a
        Generator or seed. Returns ids (N, length) (or (length,) for a 1-D prime) and the
        state after the last drawn token's predecessor (ready to continue with it).
        """
        ids = _int_array("prime", prime, None, "(P,) or (N, P)")
        one_d = ids.ndim == 1
        ids = ids[None] if one_d else ids
        if ids.ndim != 2 or ids.shape[1] < 1:
            raise ValueError(f"prime must have shape (P,) or (N, P) with P >= 1, got {np.shape(prime)}")
        _check_ids("prime", ids, self.vocab_size)
        length = _int("length", length)
        if length < 0:
            raise ValueError(f"length must be >= 0, got {length}")
        temperature = _real("temperature", temperature)
        if not 0.0 <= temperature < math.inf:
            raise ValueError(f"temperature must be >= 0 (0: greedy argmax) and finite, got {temperature!r}")
        gen = _rng(rng) if not isinstance(rng, np.random.Generator) else rng
        N = ids.shape[0]
        if ids.shape[1] > 1:  # warm up on all but the last prime token, in one kernel call
            self._sync()
            _, state = self.rnn._run(self._encode(ids[:, :-1], cache=False), state, None, dropout=False, keep=False)
        prev = ids[:, -1]
        out = np.empty((N, length), np.int64)
        for t in range(length):
            logits, state = self.step(prev, state)
            if temperature == 0:
                prev = logits.argmax(axis=1)
            else:
                p = np.exp(_log_softmax(logits.astype(np.float64) / temperature))
                u = gen.random((N, 1))
                prev = np.minimum((np.cumsum(p, axis=1) < u).sum(axis=1), self.vocab_size - 1)
            out[:, t] = prev
        return (out[0] if one_d else out), state  # type: ignore[return-value]


# ----------------------------------------------------------------------------- captioning


class CaptioningRNN:
    """The CS231n assignment-3 image captioning model, on fastrnn's kernels.

    image features (N, input_dim) -> affine -> h0; word vectors (embedding) -> one RNN, LSTM
    or GRU layer -> affine to the vocabulary. ``word_to_idx`` must contain "<NULL>"; "<START>"
    is needed for sampling, "<END>" stops a sampled caption.

    Params (CS231n's keys; replace or update them freely, they are read at every call):
    ``W_proj`` (input_dim, H), ``b_proj`` (H,), ``W_embed`` (V, wordvec_dim), ``Wx``
    (wordvec_dim, G*H), ``Wh`` (H, G*H), ``b`` (G*H,), ``bh`` (G*H,) (GRU only), ``W_vocab``
    (H, V), ``b_vocab`` (V,), initialised as in CS231n (weights N(0, 1/fan_in), W_embed
    N(0, 0.01²), biases 0). Gate order: LSTM i, f, o, g (CS231n's); GRU r, z, n (reset-after).
    """

    def __init__(
        self,
        word_to_idx: Mapping[str, int],
        input_dim: int = 512,
        wordvec_dim: int = 128,
        hidden_dim: int = 128,
        cell_type: str = "rnn",
        dtype: Any = np.float32,
        seed: Optional[int] = 0,
    ) -> None:
        if cell_type not in _CELLS:
            raise ValueError(f"cell_type must be one of {tuple(_CELLS)}, got {cell_type!r}")
        if not isinstance(word_to_idx, Mapping) or "<NULL>" not in word_to_idx:
            raise ValueError("word_to_idx must be a dict from words to ids containing '<NULL>'")
        self.cell_type = cell_type
        self.dtype = _dtype(dtype)
        self.word_to_idx = dict(word_to_idx)
        self.idx_to_word = {int(i): w for w, i in self.word_to_idx.items()}
        V = self.vocab_size = len(self.word_to_idx)  # as CS231n: ids used must be < V
        self._null = int(self.word_to_idx["<NULL>"])
        self._start: Optional[int] = self.word_to_idx.get("<START>")
        self._end: Optional[int] = self.word_to_idx.get("<END>")
        D = self.input_dim = _positive_int("input_dim", input_dim)
        W = self.wordvec_dim = _positive_int("wordvec_dim", wordvec_dim)
        H = self.hidden_dim = _positive_int("hidden_dim", hidden_dim)
        G = {"rnn": 1, "lstm": 4, "gru": 3}[cell_type]
        rng = _rng(seed)
        p = {
            "W_embed": rng.standard_normal((V, W)) / 100,
            "W_proj": rng.standard_normal((D, H)) / math.sqrt(D),
            "b_proj": np.zeros(H),
            "Wx": rng.standard_normal((W, G * H)) / math.sqrt(W),
            "Wh": rng.standard_normal((H, G * H)) / math.sqrt(H),
            "b": np.zeros(G * H),
        }
        if cell_type == "gru":
            p["bh"] = np.zeros(G * H)
        p["W_vocab"] = rng.standard_normal((H, V)) / math.sqrt(H)
        p["b_vocab"] = np.zeros(V)
        self.params: Dict[str, Array] = {k: v.astype(self.dtype) for k, v in p.items()}

    def __repr__(self) -> str:
        return (
            f"CaptioningRNN(vocab_size={self.vocab_size}, input_dim={self.input_dim}, "
            f"wordvec_dim={self.wordvec_dim}, hidden_dim={self.hidden_dim}, "
            f"cell_type={self.cell_type!r}, dtype={self.dtype.name})"
        )

    # -- helpers

    def _features(self, features: Any) -> Array:
        f = np.asarray(features)
        if f.ndim != 2 or f.shape[1] != self.input_dim:
            raise ValueError(f"features must have shape (N, input_dim) = (N, {self.input_dim}), got {f.shape}")
        if not np.issubdtype(f.dtype, np.floating):
            raise TypeError(f"features must be a float array, got dtype {f.dtype}")
        return f.astype(self.dtype, copy=False)  # CS231n habit: features are cast to the model dtype

    def _cell_params(self) -> Tuple[Array, ...]:
        p = self.params
        return (p["Wx"], p["Wh"], p["b"], p["bh"]) if self.cell_type == "gru" else (p["Wx"], p["Wh"], p["b"])

    def _step(self, words: Array, state: Tuple[Array, ...]) -> Tuple[Array, Tuple[Array, ...]]:
        """One timestep (a T = 1 kernel call): words (M,) -> scores (M, V), next state."""
        x = self.params["W_embed"][words][:, None, :]
        _, state, _ = F.sequence_forward(self.cell_type, x, self._cell_params(), state)
        return F.matmul(state[0], self.params["W_vocab"]) + self.params["b_vocab"], state

    def _initial_state(self, features: Array) -> Tuple[Array, ...]:
        h0 = F.matmul(features, self.params["W_proj"]) + self.params["b_proj"]
        return (h0, np.zeros_like(h0)) if self.cell_type == "lstm" else (h0,)

    def _require_start(self) -> int:
        if self._start is None:
            raise ValueError("sampling needs '<START>' in word_to_idx")
        return int(self._start)

    # -- training

    def loss(self, features: Any, captions: Any) -> Tuple[float, Dict[str, Array]]:
        """Training loss and gradients, as CS231n's ``CaptioningRNN.loss``.

        features (N, input_dim); captions (N, T + 1) ids, T >= 1. The model reads
        ``captions[:, :-1]`` and predicts ``captions[:, 1:]``; positions whose target is
        <NULL> are masked out. loss = sum of the masked cross-entropies / N. Returns
        (loss, grads) with grads a new dict with the keys of ``params``.
        """
        feats = self._features(features)
        N = feats.shape[0]
        caps = _int_array("captions", captions, None, "(N, T + 1)")
        if caps.ndim != 2 or caps.shape[0] != N or caps.shape[1] < 2:
            raise ValueError(f"captions must have shape (N, T + 1) with N = {N} and T >= 1, got {caps.shape}")
        _check_ids("captions", caps, self.vocab_size)
        captions_in, captions_out = caps[:, :-1], caps[:, 1:]
        mask = captions_out != self._null
        p = self.params

        state0 = self._initial_state(feats)
        x = p["W_embed"][captions_in]
        h, _, cache = F.sequence_forward(self.cell_type, x, self._cell_params(), state0)
        scores = (F.matmul(h.reshape(-1, self.hidden_dim), p["W_vocab"]) + p["b_vocab"]).reshape(h.shape[:2] + (-1,))
        loss, dscores = temporal_softmax_loss(scores, captions_out, mask)

        H = self.hidden_dim
        grads: Dict[str, Array] = {}
        h2, ds2 = h.reshape(-1, H), dscores.reshape(-1, self.vocab_size)
        grads["W_vocab"] = F.matmul(h2.T, ds2)
        grads["b_vocab"] = ds2.sum(axis=0)
        dh = F.matmul(ds2, p["W_vocab"].T).reshape(h.shape)
        zeros = tuple(np.zeros_like(s) for s in state0)  # explicit zeros: see the kernels note
        dx, dstate0, dparams = F.sequence_backward(dh, cache, zeros)
        for name, g in zip(("Wx", "Wh", "b", "bh"), dparams):
            grads[name] = g
        dW_embed = np.zeros_like(p["W_embed"])
        F.embedding_backward(captions_in.reshape(-1), dx.reshape(-1, dx.shape[-1]), dW_embed)
        grads["W_embed"] = dW_embed
        grads["W_proj"] = F.matmul(feats.T, dstate0[0])
        grads["b_proj"] = dstate0[0].sum(axis=0)
        return loss, {k: grads[k] for k in p}

    # -- inference

    def sample(self, features: Any, max_length: int = 30) -> Array:
        """Greedy captions (N, max_length): the first input is <START>, every next input is
        the argmax word; after a row emits <END> (which is kept) the rest is <NULL>."""
        feats = self._features(features)
        max_length = _positive_int("max_length", max_length)
        N = feats.shape[0]
        captions = np.full((N, max_length), self._null, dtype=np.int64)
        state = self._initial_state(feats)
        prev = np.full(N, self._require_start(), dtype=np.int64)
        done = np.zeros(N, dtype=bool)
        for t in range(max_length):
            scores, state = self._step(prev, state)
            word = np.where(done, self._null, scores.argmax(axis=1))
            captions[:, t] = word
            if self._end is not None:
                done |= word == self._end
            if done.all():
                break
            prev = word
        return captions

    def beam_search(self, features: Any, beam_size: int = 3, max_length: int = 30) -> Array:
        """Beam search: the caption with the highest total log-probability per image,
        (N, max_length) in the format of :meth:`sample` (``beam_size=1`` is greedy).
        A hypothesis ends at <END>; the search stops when every beam has ended or at
        max_length. All beams of all images run as one batch per timestep."""
        feats = self._features(features)
        B = _positive_int("beam_size", beam_size)
        max_length = _positive_int("max_length", max_length)
        N, V = feats.shape[0], self.vocab_size
        state = tuple(np.repeat(s, B, axis=0) for s in self._initial_state(feats))  # (N*B, H)
        score = np.full((N, B), -np.inf)
        score[:, 0] = 0.0  # one live hypothesis at first: the others would duplicate it
        tokens = np.full((N, B, max_length), self._null, dtype=np.int64)
        finished = np.zeros((N, B), dtype=bool)
        prev = np.full(N * B, self._require_start(), dtype=np.int64)
        ended_row = np.full(V, -np.inf)
        ended_row[self._null] = 0.0  # an ended hypothesis continues with <NULL> at no cost
        rows = np.arange(N)[:, None]
        for t in range(max_length):
            scores, state = self._step(prev, state)
            logp = _log_softmax(scores.astype(np.float64)).reshape(N, B, V)
            logp = np.where(finished[..., None], ended_row, logp)
            cand = (score[..., None] + logp).reshape(N, B * V)
            order = np.argsort(-cand, axis=1, kind="stable")[:, :B]
            parent, word = order // V, order % V
            score = np.take_along_axis(cand, order, axis=1)
            finished = finished[rows, parent]
            if self._end is not None:
                finished |= word == self._end
            finished |= np.isneginf(score)  # padding hypotheses (vocabulary smaller than B)
            tokens = tokens[rows, parent]
            tokens[:, :, t] = word
            state = tuple(s[(rows * B + parent).ravel()] for s in state)
            prev = word.ravel()
            if finished.all():
                break
        best = score.argmax(axis=1)
        return tokens[np.arange(N), best]

    def decode(self, captions: Any) -> List[str]:
        """Captions (N, T) ids -> N strings, skipping <NULL>/<START> and stopping at <END>."""
        caps = np.atleast_2d(_int_array("captions", captions, None, "(N, T)"))
        out = []
        for row in caps:
            words = []
            for i in row:
                w = self.idx_to_word.get(int(i), "<UNK>")
                if w == "<END>":
                    break
                if w not in ("<NULL>", "<START>"):
                    words.append(w)
            out.append(" ".join(words))
        return out
