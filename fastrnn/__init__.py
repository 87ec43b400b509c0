"""fastrnn: fast, exact CPU kernels for recurrent neural networks.

The kernels (vanilla RNN with tanh or relu, LSTM, GRU; forward and backward; float32 and
float64) are hand-written C++ with OpenMP, reached through the CS231n-compatible functions
of :mod:`fastrnn.functional`, which are re-exported here. :mod:`fastrnn.reference` holds
the same functions in plain NumPy: the oracle every kernel is tested against.
"""
from __future__ import annotations

import numbers
from typing import Dict, Union

try:
    from . import _core, _sample, _text  # the compiled modules
except ImportError as e:
    raise ImportError(
        f"fastrnn's compiled modules are missing from {__path__[0]} ({e}). If that is the "
        "project's source directory, Python is importing it instead of the installed package "
        "(run from another directory), or build it in place: pip install -e ."
    ) from e
from . import checkpoint, data, functional, interop, layers, models, optim, reference, sampling, train
from ._core import get_num_threads
from .functional import *  # noqa: F401,F403  (the names listed in functional.__all__)
from .layers import GRU, LSTM, RNN, Embedding, Layer, TemporalAffine, temporal_softmax_loss
from .models import CaptioningRNN, CharRNN
from .checkpoint import CheckpointError, load_checkpoint, load_model, save_checkpoint
from .train import Trainer, TrainingDiverged

__version__ = "0.1.0"

__all__ = [
    *functional.__all__,
    "functional",
    "reference",
    "layers",
    "models",
    "optim",
    "data",
    "interop",
    "sampling",
    "train",
    "checkpoint",
    "Trainer",
    "TrainingDiverged",
    "CheckpointError",
    "load_checkpoint",
    "save_checkpoint",
    "load_model",
    "Layer",
    "RNN",
    "LSTM",
    "GRU",
    "Embedding",
    "TemporalAffine",
    "temporal_softmax_loss",
    "CharRNN",
    "CaptioningRNN",
    "get_num_threads",
    "set_num_threads",
    "build_info",
    "__version__",
]


def set_num_threads(n: int) -> None:
    """Sets the kernels' thread count (``torch.set_num_threads``); n <= 0 restores the
    default (``OMP_NUM_THREADS``, else all cores)."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"set_num_threads: n must be an int, got {type(n).__name__} {n!r}")
    _core.set_num_threads(int(n))


def build_info() -> Dict[str, Union[str, int, bool]]:
    """What the compiled extension runs on: the micro-kernel in use, the best one this CPU
    supports, whether OpenMP is present, and the thread count."""
    return {
        "version": __version__,
        "isa": _core.isa(),
        "best_isa": _core.best_isa(),
        "openmp": bool(_core.openmp),
        "threads": _core.get_num_threads(),
    }
