"""Optimizers, gradient clipping and learning-rate schedules for NumPy parameters.

Parameters are a dict ``name -> np.ndarray`` (float32 or float64), as in CS231n's
``model.params``, and are updated **in place**; gradients are a dict with the same keys,
as returned by a backward pass::

    params = {"Wx": Wx, "Wh": Wh, "b": b, "Wy": Wy, "by": by}
    opt = fastrnn.optim.RMSprop(params, lr=2e-3)        # char-rnn's defaults
    for x, y in loader:
        loss, grads = model.loss(x, y)                   # grads: dict, same keys and shapes
        fastrnn.optim.clip_grad_value(grads, 5.0)        # min-char-rnn / char-rnn: clip at 5
        opt.step(grads)

Clipping can also be the optimizer's own, as Keras's ``clipvalue`` and ``global_clipnorm``
arguments: ``Adagrad(params, lr=0.1, clipvalue=5.0)`` clips inside the compiled update, in
the same pass, and gives the bits of ``clip_grad_value`` followed by ``step`` without
changing ``grads``.

The update rules are those of ``torch.optim`` (SGD with momentum and Nesterov, RMSprop,
Adam, AdamW), except :class:`Adagrad`, which follows min-char-rnn (``eps`` inside the
square root). Every update is computed in the parameter's own dtype by one compiled pass
over all parameters (threaded for large models); it matches the NumPy formulas of
:mod:`fastrnn.reference` (``adam_update`` and so on) bitwise, and those formulas also serve
the parameters that are not C-contiguous. Optimizer state has the parameter's dtype.

Checkpoints: :meth:`Optimizer.state_dict` is a flat dict of NumPy arrays, numbers and
strings, with keys such as ``"lr"``, ``"t"``, ``"m/Wx"``, ``"v/Wx"``. It can be stored with
``np.savez`` and read back with ``np.load(path, allow_pickle=False)``;
:meth:`Optimizer.load_state_dict` restores it bitwise, so resumed training continues exactly
as if it had not stopped. Prefix the keys to keep several state dicts in one file::

    np.savez(path, **params, **{"optim/" + k: v for k, v in opt.state_dict().items()})
    z = np.load(path, allow_pickle=False)
    opt.load_state_dict({k[6:]: z[k] for k in z.files if k.startswith("optim/")})

Learning-rate decay: :class:`StepLR` and :class:`ExponentialLR` change ``optimizer.lr``
each time their ``step()`` is called, normally once per epoch, as in torch. char-rnn's
``-learning_rate_decay 0.97 -learning_rate_decay_after 10`` (multiply the rate by 0.97 at
the end of every epoch from the 10th on) is an :class:`ExponentialLR` stepped only from
then on::

    sched = ExponentialLR(opt, gamma=0.97)
    for epoch in range(1, max_epochs + 1):       # epoch = epochs completed after the body
        train_one_epoch()
        if epoch >= 10:
            sched.step()
"""
from __future__ import annotations

import math
import operator
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from . import _core
from . import reference as _ref

__all__ = [
    "Optimizer",
    "SGD",
    "Adagrad",
    "RMSprop",
    "Adam",
    "AdamW",
    "clip_grad_norm",
    "clip_grad_value",
    "LRScheduler",
    "StepLR",
    "ExponentialLR",
]

Array = np.ndarray
StateValue = Union[np.ndarray, float, int, str]
Grads = Union[Mapping[str, np.ndarray], Iterable[np.ndarray]]

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _number(name: str, value: Any, *, low: float = 0.0, high: float = math.inf,
            high_open: bool = False, owner: str) -> float:
    """``value`` as a finite float in [low, high] (or [low, high)); ValueError otherwise."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{owner}: {name} must be a number, got {value!r}") from None
    ok = math.isfinite(v) and v >= low and (v < high if high_open else v <= high)
    if not ok:
        interval = f"[{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"{owner}: {name} must lie in {interval}, got {value!r}")
    return v


def _positive(name: str, value: Any, owner: str) -> float:
    v = _number(name, value, owner=owner)
    if v <= 0:
        raise ValueError(f"{owner}: {name} must be > 0 (or None: no clipping), got {value!r}")
    return v


def _scalar(value: Any) -> Any:
    """A 0-d array (as read back from an .npz) or a NumPy scalar as a Python scalar."""
    a = np.asarray(value)
    if a.ndim != 0:
        raise ValueError(f"expected a scalar, got an array of shape {a.shape}")
    return a.item()


class Optimizer:
    """Base class: holds the parameters, the learning rate ``lr`` and the step count ``t``.

    Subclasses name their per-parameter buffers in ``_buffers`` (each buffer has its
    parameter's shape and dtype, zero at the start), their hyperparameters in ``_hyper``
    and their compiled update rule in ``_rule``, and implement ``_coef()`` (the rule's
    coefficients at the current step) and ``_reference(p, g, bufs)`` (the same update in
    NumPy, for parameters that are not C-contiguous).

    Args:
        params: dict name -> float32/float64 array, updated in place by :meth:`step`. The
            optimizer keeps references to these arrays (not to the dict).
        lr: learning rate; a plain attribute that may be changed at any time.
        clipvalue: if set, every gradient element is clipped to [-clipvalue, clipvalue]
            before the update (Keras's ``clipvalue``; as :func:`clip_grad_value`).
        global_clipnorm: if set, the gradients are scaled so that their global L2 norm is
            at most this (Keras's ``global_clipnorm``; as :func:`clip_grad_norm`, whose
            result :attr:`last_grad_norm` keeps). At most one of the two may be set; either
            way ``grads`` itself is left unchanged.
    """

    _buffers: Tuple[str, ...] = ()
    _hyper: Tuple[str, ...] = ()
    _rule = ""

    def __init__(self, params: Mapping[str, np.ndarray], lr: float, *, clipvalue: Optional[float] = None,
                 global_clipnorm: Optional[float] = None) -> None:
        name = type(self).__name__
        if clipvalue is not None and global_clipnorm is not None:
            raise ValueError(f"{name}: set at most one of clipvalue and global_clipnorm")
        self.clipvalue = None if clipvalue is None else _positive("clipvalue", clipvalue, name)
        self.global_clipnorm = None if global_clipnorm is None else _positive("global_clipnorm", global_clipnorm, name)
        self.last_grad_norm: Optional[float] = None
        if not isinstance(params, Mapping):
            raise TypeError(f"{name}: params must be a dict name -> np.ndarray, got {type(params).__name__}")
        if not params:
            raise ValueError(f"{name}: params is empty")
        for k, p in params.items():
            if not isinstance(k, str):
                raise TypeError(f"{name}: parameter names must be str, got {k!r}")
            if not isinstance(p, np.ndarray):
                raise TypeError(f"{name}: params[{k!r}] must be a np.ndarray, got {type(p).__name__}")
            if p.dtype not in _FLOAT_DTYPES:
                raise TypeError(f"{name}: params[{k!r}] has dtype {p.dtype}; expected float32 or float64")
            if not p.flags.writeable:
                raise ValueError(f"{name}: params[{k!r}] is read-only; it must be updated in place")
        self.params: Dict[str, np.ndarray] = dict(params)
        # One compiled call per dtype (a model may mix float32 and float64); parameters the
        # kernels cannot update in place take the NumPy formulas.
        self._compiled_names, self._reference_names = _compiled_groups(self.params)
        self.lr = lr
        self.t = 0
        self.state: Dict[str, Dict[str, np.ndarray]] = {
            b: {k: np.zeros_like(p) for k, p in self.params.items()} for b in self._buffers
        }

    # -- the learning rate

    @property
    def lr(self) -> float:
        """Learning rate (settable)."""
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        self._lr = _number("lr", value, owner=type(self).__name__)

    @property
    def learning_rate(self) -> float:
        """Alias of :attr:`lr` (Keras's name)."""
        return self.lr

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        self.lr = value

    # -- stepping

    def _check_grads(self, grads: Mapping[str, np.ndarray]) -> None:
        name = type(self).__name__
        if not isinstance(grads, Mapping):
            raise TypeError(f"{name}.step: grads must be a dict name -> np.ndarray, got {type(grads).__name__}")
        for k, p in self.params.items():
            if k not in grads:
                raise ValueError(f"{name}.step: no gradient for parameter {k!r} (grads has keys {sorted(grads)})")
            g = grads[k]
            if not isinstance(g, np.ndarray):
                raise TypeError(f"{name}.step: grads[{k!r}] must be a np.ndarray, got {type(g).__name__}")
            if g.shape != p.shape:
                raise ValueError(f"{name}.step: grads[{k!r}] has shape {g.shape} but params[{k!r}] "
                                 f"has shape {p.shape}")
            if g.dtype != p.dtype:
                raise TypeError(f"{name}.step: grads[{k!r}] has dtype {g.dtype} but params[{k!r}] "
                                f"has dtype {p.dtype}")
        extra = [k for k in grads if k not in self.params]
        if extra:
            raise ValueError(f"{name}.step: grads has keys that are not parameters: {sorted(map(str, extra))}")

    def step(self, grads: Mapping[str, np.ndarray]) -> None:
        """One update of every parameter, in place, from ``grads`` (same keys, shapes and
        dtypes as the parameters), clipped first if the optimizer clips. All gradients are
        checked before anything changes; ``grads`` itself is not modified."""
        # With one compiled call and nothing else, the binding's own checks (all before it
        # writes anything) stand in for _check_grads, which then only names the culprit.
        one_call = len(self._compiled_names) == 1 and not self._reference_names
        if not (one_call and isinstance(grads, Mapping) and grads.keys() == self.params.keys()):
            self._check_grads(grads)
        t = self.t
        self.t += 1
        try:
            coef = self._coef()
            coef.update(self._clipping(grads))
            for names in self._compiled_names:
                state0, state1 = self._state_lists(names)
                _core.optimizer_update(self._rule, [self.params[k] for k in names], [grads[k] for k in names],
                                       state0, state1, coef)
        except (TypeError, ValueError):
            self.t = t
            self._check_grads(grads)  # raises the error with the parameter's name
            raise
        for k in self._reference_names:
            g = grads[k]
            if "clip_value" in coef:
                g = np.clip(g, -g.dtype.type(coef["clip_value"]), g.dtype.type(coef["clip_value"]))
            elif "grad_scale" in coef:
                g = g * g.dtype.type(coef["grad_scale"])
            self._reference(self.params[k], g, {b: self.state[b][k] for b in self._buffers})

    def _fusable(self, names: Sequence[str], params: Sequence[np.ndarray]) -> bool:
        """Whether a kernel that forms the gradients of ``params`` (this optimizer's arrays
        ``names``, in that order) can run this step itself: not with other parameters,
        several compiled groups, or global_clipnorm, whose norm needs every gradient
        before any update."""
        if self.global_clipnorm is not None or self._reference_names or len(self._compiled_names) != 1:
            return False
        return len(names) == len(self.params) and all(map(operator.is_, map(self.params.get, names), params))

    def _fused_step(self, names: Sequence[str], steps: Optional[int] = None) -> Tuple[Any, ...]:
        """For such a kernel (see :meth:`_fusable`), the compiled update's arguments (rule,
        state0, state1, coef), with the step count advanced: coef is the next step's dict,
        or with ``steps`` a list of the next ``steps`` steps' dicts. Undo with ``t -= 1``
        (``t -= steps``) if the call fails."""

        def advance() -> Dict[str, Any]:
            self.t += 1
            coef = self._coef()
            coef.update(self._clipping({}))  # clip_value or nothing: global_clipnorm does not fuse
            return coef

        coef: Any = advance() if steps is None else [advance() for _ in range(steps)]
        return (self._rule, *self._state_lists(names), coef)

    def _state_lists(self, names: Sequence[str]) -> Tuple[List[np.ndarray], List[np.ndarray]]:
        """The compiled update's state0 and state1: the rule's buffers of ``names``, in
        order (empty lists for the buffers a rule does not have)."""
        lists = [[self.state[b][k] for k in names] for b in self._buffers] + [[], []]
        return lists[0], lists[1]

    def _clipping(self, grads: Mapping[str, np.ndarray]) -> Dict[str, float]:
        """The compiled update's gradient transform: ``clip_value`` or ``grad_scale``."""
        if self.clipvalue is not None:
            return {"clip_value": self.clipvalue}
        if self.global_clipnorm is None:
            return {}
        groups, rest = _grad_groups(grads, f"{type(self).__name__}.step", in_place=False)
        norm = self.last_grad_norm = _global_norm(groups, rest)
        factor = _clip_factor(norm, self.global_clipnorm)
        return {} if factor is None else {"grad_scale": factor}

    def _coef(self) -> Dict[str, Any]:  # pragma: no cover
        raise NotImplementedError

    def _reference(self, p: Array, g: Array, bufs: Dict[str, Array]) -> None:  # pragma: no cover
        raise NotImplementedError

    # -- checkpointing

    def state_dict(self) -> Dict[str, StateValue]:
        """Flat state: ``"type"`` (class name), ``"lr"``, ``"t"``, the hyperparameters, and
        ``"<buffer>/<param>"`` arrays (copies). Storable in an .npz without pickle."""
        d: Dict[str, StateValue] = {"type": type(self).__name__, "lr": self.lr, "t": self.t}
        for h in self._hyper:
            d[h] = getattr(self, h)
        for b in self._buffers:
            for k, a in self.state[b].items():
                d[f"{b}/{k}"] = a.copy()
        return d

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (values may be 0-d arrays, as ``np.load`` gives them).

        Restores ``lr``, ``t``, the hyperparameters and every buffer exactly. Everything is
        checked before anything changes: ValueError for a missing or unexpected key, another
        optimizer type or a shape mismatch, TypeError for a dtype mismatch (naming the key).
        """
        name = type(self).__name__
        if "type" in state:  # another optimizer's state: say so before its keys differ
            kind = str(_scalar(state["type"]))
            if kind != name:
                raise ValueError(f"{name}.load_state_dict: the state was saved by {kind}, not {name}")
        expected = ["type", "lr", "t", *self._hyper,
                    *(f"{b}/{k}" for b in self._buffers for k in self.params)]
        missing = [k for k in expected if k not in state]
        if missing:
            raise ValueError(f"{name}.load_state_dict: missing keys {missing}")
        extra = sorted(str(k) for k in state if k not in expected)
        if extra:
            raise ValueError(f"{name}.load_state_dict: unexpected keys {extra}")
        bufs: Dict[str, Dict[str, np.ndarray]] = {b: {} for b in self._buffers}
        for b in self._buffers:
            for k, p in self.params.items():
                key = f"{b}/{k}"
                a = np.asarray(state[key])
                if a.shape != p.shape:
                    raise ValueError(f"{name}.load_state_dict: {key!r} has shape {a.shape} but "
                                     f"params[{k!r}] has shape {p.shape}")
                if a.dtype != p.dtype:
                    raise TypeError(f"{name}.load_state_dict: {key!r} has dtype {a.dtype} but "
                                    f"params[{k!r}] has dtype {p.dtype}")
                bufs[b][k] = np.array(a, dtype=p.dtype, copy=True)
        t = int(_scalar(state["t"]))
        if t < 0:
            raise ValueError(f"{name}.load_state_dict: 't' must be >= 0, got {t}")
        # Validate the hyperparameters through a scratch instance's checks before applying.
        hyper = {h: _scalar(state[h]) for h in self._hyper}
        self._check_hyper(hyper)
        self.lr = _scalar(state["lr"])
        for h, v in hyper.items():
            setattr(self, h, type(getattr(self, h))(v))
        self.t = t
        self.state = bufs

    def _check_hyper(self, hyper: Dict[str, Any]) -> None:
        """Raise if ``hyper`` holds invalid hyperparameter values (subclasses override)."""

    def __repr__(self) -> str:
        clip = [f"{c}={getattr(self, c)!r}" for c in ("clipvalue", "global_clipnorm") if getattr(self, c) is not None]
        hp = ", ".join([f"{h}={getattr(self, h)!r}" for h in self._hyper] + clip)
        return f"{type(self).__name__}({len(self.params)} params, lr={self.lr!r}{', ' if hp else ''}{hp}, t={self.t})"


class SGD(Optimizer):
    """Stochastic gradient descent, optionally with momentum (``torch.optim.SGD``).

    ``g = grad + weight_decay * p``; without momentum ``p -= lr * g``; with momentum
    ``buf = momentum * buf + g`` then ``p -= lr * buf``, or for Nesterov
    ``p -= lr * (g + momentum * buf)``. State: ``"buf/<param>"`` when momentum > 0.
    """

    _hyper = ("momentum", "nesterov", "weight_decay")

    def __init__(self, params: Mapping[str, np.ndarray], lr: float, momentum: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0, **clipping: Optional[float]) -> None:
        hyper = {"momentum": momentum, "nesterov": nesterov, "weight_decay": weight_decay}
        self._check_hyper(hyper)
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self.weight_decay = float(weight_decay)
        self._buffers = ("buf",) if self.momentum > 0 else ()
        super().__init__(params, lr, **clipping)

    def _check_hyper(self, hyper: Dict[str, Any]) -> None:
        mu = _number("momentum", hyper["momentum"], owner="SGD")
        _number("weight_decay", hyper["weight_decay"], owner="SGD")
        if bool(hyper["nesterov"]) and mu <= 0:
            raise ValueError("SGD: nesterov=True needs momentum > 0")

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if "momentum" in state and str(_scalar(state.get("type", "SGD"))) == "SGD":
            saved = float(_scalar(state["momentum"]))
            if (saved > 0) != (self.momentum > 0):
                raise ValueError(f"SGD.load_state_dict: the state is of an SGD with momentum={saved}, "
                                 f"this one has momentum={self.momentum}: one has momentum buffers, "
                                 f"the other none")
        super().load_state_dict(state)

    load_state_dict.__doc__ = Optimizer.load_state_dict.__doc__

    _rule = "sgd"

    def _coef(self) -> Dict[str, Any]:
        return {"lr": self.lr, "momentum": self.momentum, "nesterov": self.nesterov,
                "weight_decay": self.weight_decay}

    def _reference(self, p: Array, g: Array, bufs: Dict[str, Array]) -> None:
        _ref.sgd_update(p, g, bufs.get("buf"), self.lr, self.momentum, self.nesterov, self.weight_decay)


class Adagrad(Optimizer):
    """Adagrad as in min-char-rnn: ``mem += g*g; p -= lr * g / sqrt(mem + eps)``.

    (``torch.optim.Adagrad`` adds ``eps`` after the square root instead; the two differ
    only where ``mem`` is of the order of ``eps``.) State: ``"mem/<param>"``.
    """

    _buffers = ("mem",)
    _hyper = ("eps",)

    def __init__(self, params: Mapping[str, np.ndarray], lr: float = 1e-2, eps: float = 1e-8,
                 **clipping: Optional[float]) -> None:
        self._check_hyper({"eps": eps})
        self.eps = float(eps)
        super().__init__(params, lr, **clipping)

    def _check_hyper(self, hyper: Dict[str, Any]) -> None:
        _number("eps", hyper["eps"], owner="Adagrad")

    _rule = "adagrad"

    def _coef(self) -> Dict[str, Any]:
        return {"lr": self.lr, "eps": self.eps}

    def _reference(self, p: Array, g: Array, bufs: Dict[str, Array]) -> None:
        _ref.adagrad_update(p, g, bufs["mem"], self.lr, self.eps)


class RMSprop(Optimizer):
    """RMSprop with char-rnn's defaults (torch7 ``optim.rmsprop``, = ``torch.optim.RMSprop``):
    ``m = alpha * m + (1 - alpha) * g*g; p -= lr * g / (sqrt(m) + eps)``. State: ``"m/<param>"``.
    """

    _buffers = ("m",)
    _hyper = ("alpha", "eps")

    def __init__(self, params: Mapping[str, np.ndarray], lr: float = 2e-3, alpha: float = 0.95,
                 eps: float = 1e-8, **clipping: Optional[float]) -> None:
        self._check_hyper({"alpha": alpha, "eps": eps})
        self.alpha = float(alpha)
        self.eps = float(eps)
        super().__init__(params, lr, **clipping)

    def _check_hyper(self, hyper: Dict[str, Any]) -> None:
        _number("alpha", hyper["alpha"], high=1.0, owner="RMSprop")
        _number("eps", hyper["eps"], owner="RMSprop")

    _rule = "rmsprop"

    def _coef(self) -> Dict[str, Any]:
        return {"lr": self.lr, "alpha": self.alpha, "eps": self.eps}

    def _reference(self, p: Array, g: Array, bufs: Dict[str, Array]) -> None:
        _ref.rmsprop_update(p, g, bufs["m"], self.lr, self.alpha, self.eps)


class Adam(Optimizer):
    """Adam (``torch.optim.Adam``) with L2 weight decay added to the gradient.

    ``g = grad + weight_decay * p; m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g*g;``
    ``p -= lr / (1 - b1**t) * m / (sqrt(v) / sqrt(1 - b2**t) + eps)``.
    State: ``"m/<param>"``, ``"v/<param>"``, ``"t"``; hyperparameters ``beta1``, ``beta2``.
    """

    _buffers = ("m", "v")
    _hyper = ("beta1", "beta2", "eps", "weight_decay")
    _decoupled = False

    def __init__(self, params: Mapping[str, np.ndarray], lr: float = 1e-3,
                 betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, **clipping: Optional[float]) -> None:
        name = type(self).__name__
        try:
            beta1, beta2 = betas
        except (TypeError, ValueError):
            raise ValueError(f"{name}: betas must be a pair (beta1, beta2), got {betas!r}") from None
        self._check_hyper({"beta1": beta1, "beta2": beta2, "eps": eps, "weight_decay": weight_decay})
        self.beta1 = float(beta1)
        self.beta2 = float(beta2)
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)
        super().__init__(params, lr, **clipping)

    @property
    def betas(self) -> Tuple[float, float]:
        return (self.beta1, self.beta2)

    def _check_hyper(self, hyper: Dict[str, Any]) -> None:
        name = type(self).__name__
        _number("beta1", hyper["beta1"], high=1.0, high_open=True, owner=name)
        _number("beta2", hyper["beta2"], high=1.0, high_open=True, owner=name)
        _number("eps", hyper["eps"], owner=name)
        _number("weight_decay", hyper["weight_decay"], owner=name)

    _rule = "adam"

    def _coef(self) -> Dict[str, Any]:
        t = self.t
        return {"lr": self.lr, "beta1": self.beta1, "beta2": self.beta2, "eps": self.eps,
                "weight_decay": self.weight_decay, "decoupled": self._decoupled,
                "step_size": self.lr / (1.0 - self.beta1 ** t),
                "bc2_sqrt": math.sqrt(1.0 - self.beta2 ** t)}

    def _reference(self, p: Array, g: Array, bufs: Dict[str, Array]) -> None:
        _ref.adam_update(p, g, bufs["m"], bufs["v"], self.t, self.lr, self.beta1, self.beta2,
                         self.eps, self.weight_decay, self._decoupled)


class AdamW(Adam):
    """Adam with decoupled weight decay (``torch.optim.AdamW``): before the Adam update,
    ``p *= 1 - lr * weight_decay``. Same state keys as :class:`Adam`."""

    _decoupled = True

    def __init__(self, params: Mapping[str, np.ndarray], lr: float = 1e-3,
                 betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, **clipping: Optional[float]) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, **clipping)


# ---------------------------------------------------------------- gradient clipping


def _in_place_ok(a: np.ndarray) -> bool:
    """Whether the compiled kernels can update ``a`` in place: float32 or float64 in native
    byte order, C-contiguous and aligned."""
    flags = a.flags
    return a.dtype in _FLOAT_DTYPES and flags.c_contiguous and flags.aligned


def _grad_groups(grads: Grads, fname: str, in_place: bool = True) -> Tuple[List[List[np.ndarray]], List[np.ndarray]]:
    """Checks the gradients to clip (a dict or an iterable of float arrays, writeable if
    clipped ``in_place``), all before any is changed, and splits them as
    :func:`_compiled_groups` does: same-dtype lists for the compiled kernels, and the rest
    for NumPy."""
    items = grads.items() if isinstance(grads, Mapping) else enumerate(grads)
    groups: Dict[np.dtype, List[np.ndarray]] = {}
    rest = []
    for k, g in items:
        if not isinstance(g, np.ndarray) or g.dtype.kind != "f":
            raise TypeError(f"{fname}: grads[{k!r}] must be a floating-point np.ndarray, got "
                            f"{type(g).__name__}{' of dtype ' + str(g.dtype) if isinstance(g, np.ndarray) else ''}")
        if in_place and not g.flags.writeable:
            raise ValueError(f"{fname}: grads[{k!r}] is read-only; it is clipped in place")
        if _in_place_ok(g):
            groups.setdefault(g.dtype, []).append(g)
        else:
            rest.append(g)
    return list(groups.values()), rest


def _compiled_groups(arrays: Mapping[Any, np.ndarray]) -> Tuple[List[List[Any]], List[Any]]:
    """Split the keys of ``arrays`` into same-dtype lists whose arrays the compiled kernels
    take in place (float32 or float64, C-contiguous, aligned), and the rest, for NumPy."""
    groups: Dict[np.dtype, List[Any]] = {}
    rest = []
    for k, a in arrays.items():
        if _in_place_ok(a):
            groups.setdefault(a.dtype, []).append(k)
        else:
            rest.append(k)
    return list(groups.values()), rest


def clip_grad_norm(grads: Grads, max_norm: float) -> float:
    """Scale all gradients in place so that their global L2 norm is at most ``max_norm``.

    ``grads`` is a dict of arrays (or any iterable of arrays, e.g. min-char-rnn's
    ``[dWxh, dWhh, dWhy, dbh, dby]``). As ``torch.nn.utils.clip_grad_norm_``: the norm of
    all gradients together is computed (in float64, in a fixed order), and when it exceeds ``max_norm``
    every gradient is multiplied by ``max_norm / (norm + 1e-6)``. Returns the norm before
    clipping. If that norm is NaN or infinite the gradients are left untouched and the
    norm is returned as is, so the caller can skip the step.
    """
    groups, rest = _grad_groups(grads, "clip_grad_norm")
    max_norm = _number("max_norm", max_norm, owner="clip_grad_norm")
    total = _global_norm(groups, rest)
    coef = _clip_factor(total, max_norm)
    if coef is not None:
        for group in groups:
            _core.scale_arrays(group, coef)
        for g in rest:
            g *= g.dtype.type(coef)
    return total


def _global_norm(groups: List[List[np.ndarray]], rest: List[np.ndarray]) -> float:
    """The L2 norm of all arrays together, summed in float64 in a fixed order."""
    sq = sum(_core.sum_of_squares(group) for group in groups)
    sq += sum(float(np.sum(np.square(g, dtype=np.float64))) for g in rest)
    return math.sqrt(sq)


def _clip_factor(norm: float, max_norm: float) -> Optional[float]:
    """torch's factor ``max_norm / (norm + 1e-6)`` when a finite norm exceeds max_norm;
    None (leave the gradients as they are) otherwise."""
    return max_norm / (norm + 1e-6) if math.isfinite(norm) and norm > max_norm else None


def clip_grad_value(grads: Grads, clip: float) -> None:
    """Clip every gradient in place to ``[-clip, clip]``, as min-char-rnn's
    ``np.clip(dparam, -5, 5, out=dparam)`` (``torch.nn.utils.clip_grad_value_``).
    ``grads`` is a dict of arrays or an iterable of arrays. NaNs stay NaN."""
    groups, rest = _grad_groups(grads, "clip_grad_value")
    clip = _number("clip", clip, owner="clip_grad_value")
    for group in groups:
        _core.clamp_arrays(group, clip)
    for g in rest:
        c = g.dtype.type(clip)
        np.clip(g, -c, c, out=g)


# ---------------------------------------------------------------- learning-rate schedules


class LRScheduler:
    """Base class of the learning-rate schedules: ``step()`` once per epoch sets
    ``optimizer.lr``. ``last_epoch`` counts the calls; ``base_lr`` is the optimizer's
    learning rate when the scheduler was made. Like torch's, a schedule multiplies the
    optimizer's current rate, so it composes with changes made to ``optimizer.lr`` by hand.
    """

    _hyper: Tuple[str, ...] = ()

    def __init__(self, optimizer: Optimizer) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(self).__name__}: expected a fastrnn.optim.Optimizer, "
                            f"got {type(optimizer).__name__}")
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.last_epoch = 0

    def _factor(self, epoch: int) -> float:  # pragma: no cover
        """The factor applied to the rate when ``last_epoch`` becomes ``epoch``."""
        raise NotImplementedError

    def step(self) -> None:
        """Advance one epoch and update ``optimizer.lr``."""
        self.last_epoch += 1
        f = self._factor(self.last_epoch)
        if f != 1.0:
            self.optimizer.lr = self.optimizer.lr * f

    def get_last_lr(self) -> float:
        """The optimizer's current learning rate (torch's name)."""
        return self.optimizer.lr

    def state_dict(self) -> Dict[str, StateValue]:
        """Flat state: ``"type"``, ``"last_epoch"``, ``"base_lr"`` and the hyperparameters.
        The learning rate itself is in the optimizer's state dict: save both."""
        d: Dict[str, StateValue] = {"type": type(self).__name__, "last_epoch": self.last_epoch,
                                    "base_lr": self.base_lr}
        for h in self._hyper:
            d[h] = getattr(self, h)
        return d

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (ValueError for missing keys or another type)."""
        name = type(self).__name__
        expected = ["type", "last_epoch", "base_lr", *self._hyper]
        missing = [k for k in expected if k not in state]
        if missing:
            raise ValueError(f"{name}.load_state_dict: missing keys {missing}")
        kind = str(_scalar(state["type"]))
        if kind != name:
            raise ValueError(f"{name}.load_state_dict: the state is of a {kind} scheduler")
        vals = {h: _scalar(state[h]) for h in self._hyper}
        self._check(vals)
        last = int(_scalar(state["last_epoch"]))
        if last < 0:
            raise ValueError(f"{name}.load_state_dict: last_epoch must be >= 0, got {last}")
        self.last_epoch = last
        self.base_lr = float(_scalar(state["base_lr"]))
        for h, v in vals.items():
            setattr(self, h, type(getattr(self, h))(v))

    def _check(self, hyper: Dict[str, Any]) -> None:
        """Raise if ``hyper`` holds invalid values (subclasses override)."""

    def __repr__(self) -> str:
        hp = ", ".join(f"{h}={getattr(self, h)!r}" for h in self._hyper)
        return f"{type(self).__name__}({hp}, last_epoch={self.last_epoch}, lr={self.optimizer.lr!r})"


class StepLR(LRScheduler):
    """Multiply the learning rate by ``gamma`` every ``step_size`` epochs
    (``torch.optim.lr_scheduler.StepLR``): after ``e`` calls of ``step()`` the rate is
    ``base_lr * gamma ** (e // step_size)``."""

    _hyper = ("step_size", "gamma")

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1) -> None:
        self._check({"step_size": step_size, "gamma": gamma})
        self.step_size = int(step_size)
        self.gamma = float(gamma)
        super().__init__(optimizer)

    def _check(self, hyper: Dict[str, Any]) -> None:
        s = hyper["step_size"]
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1:
            raise ValueError(f"StepLR: step_size must be a positive integer, got {s!r}")
        _number("gamma", hyper["gamma"], owner="StepLR")

    def _factor(self, epoch: int) -> float:
        return self.gamma if epoch % self.step_size == 0 else 1.0


class ExponentialLR(LRScheduler):
    """Multiply the learning rate by ``gamma`` at every ``step()``
    (``torch.optim.lr_scheduler.ExponentialLR``; char-rnn's ``learning_rate_decay``)."""

    _hyper = ("gamma",)

    def __init__(self, optimizer: Optimizer, gamma: float) -> None:
        self._check({"gamma": gamma})
        self.gamma = float(gamma)
        super().__init__(optimizer)

    def _check(self, hyper: Dict[str, Any]) -> None:
        _number("gamma", hyper["gamma"], owner="ExponentialLR")

    def _factor(self, epoch: int) -> float:
        return self.gamma
