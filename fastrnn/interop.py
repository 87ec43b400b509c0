"""Conversion between fastrnn's recurrent layers and PyTorch's ``nn.RNN`` / ``nn.LSTM`` /
``nn.GRU`` state dicts. torch is never imported here: tensors are recognised by their
``detach``/``cpu`` methods and converted with ``np.asarray(t.detach().cpu())``.

Mapping, per layer k and direction (suffix ``_reverse``)::

    torch weight_ih_l{k}  (G*H, D)  <->  Wx_l{k}.T   (rows reordered for the LSTM)
    torch weight_hh_l{k}  (G*H, H)  <->  Wh_l{k}.T
    RNN/LSTM: bias_ih_l{k} + bias_hh_l{k}  ->  b_l{k};  b_l{k} -> bias_ih_l{k}, bias_hh_l{k} = 0
    GRU:      bias_ih_l{k} <-> b_l{k},  bias_hh_l{k} <-> bh_l{k}

Gate blocks: torch's LSTM is (i, f, g, o), fastrnn's (i, f, o, g); the GRU is (r, z, n) in
both, and torch's GRU is the reset-after form (``GRU(reset_after=True)``, the default).
torch's state layout (num_layers * num_directions, N, H) is fastrnn's too.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping

import numpy as np

from .layers import GRU, LSTM, RNN, _Recurrent

__all__ = ["load_torch_state_dict", "to_torch_state_dict", "to_torch_grads", "from_torch_module"]

Array = np.ndarray


def _to_numpy(value: Any) -> Array:
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch.Tensor
        value = value.detach().cpu()
    return np.asarray(value)


def _check_layer(layer: Any) -> _Recurrent:
    if not isinstance(layer, (RNN, LSTM, GRU)):
        raise TypeError(f"layer must be a fastrnn.layers RNN, LSTM or GRU, got {type(layer).__name__}")
    if isinstance(layer, GRU) and not layer.reset_after:
        raise ValueError("torch's GRU is the reset-after form; this GRU has reset_after=False")
    return layer


def _gate_perm(layer: _Recurrent) -> Array:
    """Row permutation between torch's and fastrnn's gate blocks (its own inverse)."""
    H = layer.hidden_size
    if isinstance(layer, LSTM):  # torch (i, f, g, o) <-> ours (i, f, o, g): swap blocks 2, 3
        return np.concatenate([np.arange(0, 2 * H), np.arange(3 * H, 4 * H), np.arange(2 * H, 3 * H)])
    return np.arange(layer._gates * H)


def _slots(layer: _Recurrent):
    """(layer index, direction suffix) pairs, in torch's parameter order."""
    for l in range(layer.num_layers):
        for sfx in layer._suffixes:
            yield l, sfx


def load_torch_state_dict(layer: Any, state_dict: Mapping[str, Any], prefix: str = "") -> None:
    """Loads a ``torch.nn.RNN/LSTM/GRU`` state dict into a fastrnn layer of the same
    architecture, in place (cast to the layer's dtype).

    state_dict: key -> numpy array or torch tensor; keys ``{prefix}weight_ih_l{k}[_reverse]``
    (G*H, D_k), ``weight_hh_l{k}`` (G*H, H), ``bias_ih_l{k}``, ``bias_hh_l{k}`` (G*H,); a
    module built with ``bias=False`` has no bias keys (zeros are loaded). ``prefix`` selects
    a submodule's entries of a larger state dict, e.g. "rnn.". Other keys with the prefix
    (e.g. an LSTM's ``weight_hr`` from ``proj_size``) raise ValueError, as do wrong shapes.
    The RNN's nonlinearity is not in a state dict: build the layer with the right one.
    """
    layer = _check_layer(layer)
    sd = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    H, GH = layer.hidden_size, layer._gates * layer.hidden_size
    perm = _gate_perm(layer)
    is_gru = isinstance(layer, GRU)
    expected = set()
    new: Dict[str, Array] = {}
    for l, sfx in _slots(layer):
        D = layer.params[f"Wx_l{l}{sfx}"].shape[0]
        shapes = {
            f"weight_ih_l{l}{sfx}": (GH, D),
            f"weight_hh_l{l}{sfx}": (GH, H),
            f"bias_ih_l{l}{sfx}": (GH,),
            f"bias_hh_l{l}{sfx}": (GH,),
        }
        expected.update(shapes)
        arrays: Dict[str, Array] = {}
        for key, shape in shapes.items():
            if key not in sd:
                if key.startswith("bias"):
                    arrays[key] = np.zeros(shape)
                    continue
                raise ValueError(f"state_dict has no key {prefix + key!r} (expected shape {shape})")
            value = _to_numpy(sd[key])
            if value.shape != shape:
                raise ValueError(f"state_dict[{prefix + key!r}] must have shape {shape}, got {value.shape}")
            arrays[key] = value
        w_ih, w_hh = arrays[f"weight_ih_l{l}{sfx}"], arrays[f"weight_hh_l{l}{sfx}"]
        b_ih, b_hh = arrays[f"bias_ih_l{l}{sfx}"], arrays[f"bias_hh_l{l}{sfx}"]
        new[f"Wx_l{l}{sfx}"] = w_ih[perm].T
        new[f"Wh_l{l}{sfx}"] = w_hh[perm].T
        if is_gru:
            new[f"b_l{l}{sfx}"] = b_ih[perm]
            new[f"bh_l{l}{sfx}"] = b_hh[perm]
        else:
            # Summed in float64, then cast once to the layer's dtype.
            new[f"b_l{l}{sfx}"] = b_ih[perm].astype(np.float64) + b_hh[perm].astype(np.float64)
    unexpected = sorted(set(sd) - expected)
    if unexpected:
        raise ValueError(
            f"state_dict has keys this {type(layer).__name__} (num_layers={layer.num_layers}, "
            f"bidirectional={layer.bidirectional}) does not: {[prefix + k for k in unexpected]}"
        )
    for key, value in new.items():  # all checked: now write in place
        layer.params[key][...] = value


def _export(layer: _Recurrent, source: Mapping[str, Array], grads: bool) -> Dict[str, Array]:
    perm = _gate_perm(layer)
    out: Dict[str, Array] = {}
    for l, sfx in _slots(layer):
        out[f"weight_ih_l{l}{sfx}"] = np.ascontiguousarray(source[f"Wx_l{l}{sfx}"].T[perm])
        out[f"weight_hh_l{l}{sfx}"] = np.ascontiguousarray(source[f"Wh_l{l}{sfx}"].T[perm])
        b = source[f"b_l{l}{sfx}"][perm]
        out[f"bias_ih_l{l}{sfx}"] = b.copy()
        if isinstance(layer, GRU):
            out[f"bias_hh_l{l}{sfx}"] = source[f"bh_l{l}{sfx}"][perm].copy()
        else:
            # b = bias_ih + bias_hh: the gradient of each is db; the value goes to bias_ih.
            out[f"bias_hh_l{l}{sfx}"] = b.copy() if grads else np.zeros_like(b)
    return out


def to_torch_state_dict(layer: Any) -> Dict[str, Array]:
    """The layer's parameters as a torch state dict of numpy arrays (layer dtype), in
    torch's key order. For RNN/LSTM the single bias goes to ``bias_ih`` and ``bias_hh`` is
    zeros. Load it with
    ``module.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})``."""
    layer = _check_layer(layer)
    return _export(layer, layer.params, grads=False)


def to_torch_grads(layer: Any) -> Dict[str, Array]:
    """The layer's gradients (``layer.grads``) in torch's layout and keys, comparable with
    ``{name: p.grad for name, p in module.named_parameters()}``. For RNN/LSTM both
    ``bias_ih`` and ``bias_hh`` get the gradient of the single bias."""
    layer = _check_layer(layer)
    return _export(layer, layer.grads, grads=True)


def from_torch_module(module: Any, dtype: Any = np.float32, seed: Any = None) -> _Recurrent:
    """A fastrnn layer with the architecture and weights of a ``torch.nn.RNN/LSTM/GRU``
    (num_layers, bidirectional, dropout, nonlinearity, batch_first are copied; ``proj_size``
    is not supported)."""
    kind = type(module).__name__
    if kind not in ("RNN", "LSTM", "GRU") or not hasattr(module, "state_dict"):
        raise TypeError(f"module must be a torch.nn.RNN, LSTM or GRU, got {kind}")
    if getattr(module, "proj_size", 0):
        raise ValueError("LSTM proj_size is not supported")
    kw = dict(
        num_layers=int(module.num_layers),
        bidirectional=bool(module.bidirectional),
        dropout=float(module.dropout),
        dtype=dtype,
        seed=seed,
        batch_first=bool(module.batch_first),
    )
    if kind == "RNN":
        layer: _Recurrent = RNN(module.input_size, module.hidden_size, nonlinearity=module.nonlinearity, **kw)
    elif kind == "LSTM":
        layer = LSTM(module.input_size, module.hidden_size, **kw)
    else:
        layer = GRU(module.input_size, module.hidden_size, **kw)
    load_torch_state_dict(layer, module.state_dict())
    return layer
