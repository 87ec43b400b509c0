"""Training checkpoints: one ``.npz`` file per checkpoint, readable without pickle.

A checkpoint holds everything needed to sample from a model or to resume its training
exactly (bitwise) where it stopped:

* the parameters (``param/<name>``), the model's configuration and the vocabulary;
* the optimizer's and learning-rate scheduler's state dicts (``optim/...``, ``sched/...``);
* the random state of the model's dropout generator (``rng/model/...``), the data loader's
  position (``loader/...``) and the hidden state carried into the next batch
  (``carry/0``, ``carry/1`` for the LSTM's (h, c));
* the iteration, the (fractional) epoch, this checkpoint's validation loss and the best
  one so far, the loss history (``history/...``) and a JSON ``meta`` record;
* a format tag, a format version and a SHA-256 checksum of all the other arrays, checked
  on load.

Files are written atomically (a temporary file in the same directory, flushed and
fsync'ed, then renamed over the target with :func:`os.replace`), so a crash or a full
disk never leaves a half-written checkpoint behind, nor damages the previous one. Every
read uses ``np.load(path, allow_pickle=False)``; a file that is not a checkpoint of this
format (truncated, corrupted, of another version, or a foreign file) raises
:class:`CheckpointError` naming the file.

Naming, as char-rnn: ``lm_<cell>_epoch<e.ee>_<val_loss:.4f>.npz`` (for instance
``lm_lstm_epoch3.25_1.2043.npz``). A checkpoint saved without a fresh validation loss (on
Ctrl-C, or with no validation split) ends in ``_interrupted`` or ``_noval`` instead. A
training run keeps two files in its directory: the best (lowest validation loss) and the
latest; there is no ``latest.npz`` alias, since both are found by
:func:`resolve_checkpoint`, which reads the small header arrays of every ``lm_*.npz`` in
a directory.
"""
from __future__ import annotations

import glob
import hashlib
import json
import math
import os
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

import numpy as np

from .data import Vocab

__all__ = [
    "CheckpointError",
    "Checkpoint",
    "CheckpointInfo",
    "FORMAT_VERSION",
    "save_checkpoint",
    "load_checkpoint",
    "checkpoint_name",
    "list_checkpoints",
    "resolve_checkpoint",
    "prune_checkpoints",
    "load_model",
]

#: Version of the file layout written by :func:`save_checkpoint`.
FORMAT_VERSION = 1
_FORMAT_TAG = "fastrnn.checkpoint"
_PATTERN = "lm_*.npz"


class CheckpointError(ValueError):
    """A file is not a readable fastrnn checkpoint (the message names the file)."""


@dataclass
class Checkpoint:
    """The contents of one checkpoint file (see the module docstring).

    Attributes:
        params: parameter name -> array (the model's ``params``).
        config: JSON-able dict; ``config["model"]`` is ``CharRNN.config()``,
            ``config["train"]`` the training settings.
        vocab: the character vocabulary.
        optimizer: ``Optimizer.state_dict()`` (values as loaded: 0-d arrays for scalars).
        scheduler: ``LRScheduler.state_dict()`` or None.
        model_rng: the model's dropout generator state (``CharRNN.rng_state()``).
        loader: ``CharBatches.state_dict()``.
        carry: the hidden state to carry into the next training batch: a tuple of arrays
            (h,) or (h, c), or None (the next batch starts from zeros).
        iteration: optimizer steps taken.
        epoch: fractional epoch (``iteration / batches per epoch``).
        val_loss: validation loss (nats per character) of these parameters, NaN if not
            measured for them.
        best_val_loss: lowest validation loss seen so far in the run (inf if none).
        history: loss curves, name -> 1-D array.
        meta: any other JSON-able information (seed, elapsed time, ...).
        path: the file it was read from (None for a checkpoint built in memory).
    """

    params: Dict[str, np.ndarray]
    config: Dict[str, Any]
    vocab: Vocab
    optimizer: Dict[str, Any] = field(default_factory=dict)
    scheduler: Optional[Dict[str, Any]] = None
    model_rng: Dict[str, Any] = field(default_factory=dict)
    loader: Dict[str, Any] = field(default_factory=dict)
    carry: Optional[Tuple[np.ndarray, ...]] = None
    iteration: int = 0
    epoch: float = 0.0
    val_loss: float = math.nan
    best_val_loss: float = math.inf
    history: Dict[str, np.ndarray] = field(default_factory=dict)
    meta: Dict[str, Any] = field(default_factory=dict)
    path: Optional[str] = None

    @property
    def val_bpc(self) -> float:
        """Validation bits per character (``val_loss / ln 2``)."""
        return self.val_loss / math.log(2)

    def build_model(self) -> Any:
        """A :class:`fastrnn.models.CharRNN` with this checkpoint's configuration,
        parameters (copied in place) and dropout random state, in eval mode."""
        from .models import CharRNN

        model = CharRNN.from_config(self.config["model"])
        _copy_params(model, self.params, self.path)
        if self.model_rng:
            model.set_rng_state(self.model_rng)
        model.eval()
        return model


@dataclass(frozen=True)
class CheckpointInfo:
    """What :func:`list_checkpoints` reads of a checkpoint without loading it whole."""

    path: str
    iteration: int
    epoch: float
    val_loss: float


# ---------------------------------------------------------------- helpers


def _copy_params(model: Any, params: Mapping[str, np.ndarray], path: Optional[str]) -> None:
    """Copies ``params`` into ``model.params`` in place (so optimizers keep their views)."""
    where = f"{path}: " if path else ""
    mine = model.params
    missing = sorted(set(mine) - set(params))
    extra = sorted(set(params) - set(mine))
    if missing or extra:
        raise CheckpointError(f"{where}parameters do not match the model: missing {missing}, "
                              f"unexpected {extra}")
    for k, p in mine.items():
        a = np.asarray(params[k])
        if a.shape != p.shape or a.dtype != p.dtype:
            raise CheckpointError(f"{where}parameter {k!r} is {a.dtype} {a.shape}, the model "
                                  f"expects {p.dtype} {p.shape}")
        p[...] = a


def _as_array(key: str, value: Any) -> np.ndarray:
    """A value as an array np.savez can store without pickle."""
    if isinstance(value, np.ndarray):
        a = value
    elif isinstance(value, (bool, np.bool_)):
        a = np.array(bool(value))
    elif isinstance(value, (int, np.integer)):
        a = np.array(int(value), dtype=np.int64)
    elif isinstance(value, (float, np.floating)):
        a = np.array(float(value), dtype=np.float64)
    elif isinstance(value, str):
        a = np.array(value)
    else:
        raise TypeError(f"checkpoint entry {key!r}: cannot store a {type(value).__name__}")
    if a.dtype.hasobject:
        raise TypeError(f"checkpoint entry {key!r}: object arrays cannot be stored without pickle")
    return a if a.flags.c_contiguous else np.array(a, order="C")


def _checksum(arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over every array's name, dtype, shape and bytes, in sorted key order."""
    h = hashlib.sha256()
    for key in sorted(arrays):
        if key == "__checksum__":
            continue
        a = np.asarray(arrays[key])
        if not a.flags.c_contiguous:
            a = np.array(a, order="C")
        h.update(key.encode("utf-8") + b"\0")
        h.update(a.dtype.str.encode("ascii") + b"\0")
        h.update(repr(tuple(a.shape)).encode("ascii") + b"\0")
        h.update(a.tobytes())
    return h.hexdigest()


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, allow_nan=True)


def checkpoint_name(cell: str, epoch: float, val_loss: Optional[float] = None,
                    tag: Optional[str] = None) -> str:
    """char-rnn's file name: ``lm_<cell>_epoch<epoch:.2f>_<val_loss:.4f>.npz``.

    Without a finite ``val_loss`` the last part is ``tag`` (default ``"noval"``)."""
    if val_loss is not None and math.isfinite(val_loss):
        last = f"{val_loss:.4f}"
    else:
        last = tag or "noval"
    return f"lm_{cell}_epoch{epoch:.2f}_{last}.npz"


# ---------------------------------------------------------------- writing


def _flatten(ckpt: Checkpoint) -> Dict[str, np.ndarray]:
    arrays: Dict[str, np.ndarray] = {}

    def put(key: str, value: Any) -> None:
        arrays[key] = _as_array(key, value)

    put("__format__", _FORMAT_TAG)
    put("__version__", FORMAT_VERSION)
    put("config", _json(ckpt.config))
    put("meta", _json(ckpt.meta))
    put("vocab", ckpt.vocab.to_array())
    put("iteration", int(ckpt.iteration))
    put("epoch", float(ckpt.epoch))
    put("val_loss", float(ckpt.val_loss))
    put("best_val_loss", float(ckpt.best_val_loss))
    for prefix, d in (("param/", ckpt.params), ("optim/", ckpt.optimizer),
                      ("sched/", ckpt.scheduler or {}), ("rng/model/", ckpt.model_rng),
                      ("loader/", ckpt.loader), ("history/", ckpt.history)):
        for k, v in d.items():
            put(prefix + k, v)
    if ckpt.scheduler is not None:
        put("has_scheduler", True)
    if ckpt.carry is not None:
        put("carry/n", len(ckpt.carry))
        for i, a in enumerate(ckpt.carry):
            put(f"carry/{i}", np.asarray(a))
    arrays["__checksum__"] = np.array(_checksum(arrays))
    return arrays


def _fsync_dir(directory: str) -> None:
    """Makes a rename durable (POSIX); silently skipped where directories can't be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(path: str, ckpt: Checkpoint) -> str:
    """Writes ``ckpt`` to ``path`` atomically and returns ``path``.

    The file is first written to a temporary file in the same directory, flushed and
    fsync'ed, then renamed over ``path``; if anything fails (e.g. the disk is full) the
    temporary file is removed, any previous file at ``path`` is left as it was, and an
    ``OSError`` naming ``path`` is raised.
    """
    path = os.fspath(path)
    arrays = _flatten(ckpt)
    directory = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=directory)
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        reason = e.strerror or str(e)
        raise OSError(e.errno, f"could not write checkpoint {path}: {reason} "
                               f"(any previous file there is unchanged)") from e
    finally:
        if tmp is not None:
            try:
                os.remove(tmp)
            except OSError:
                pass
    _fsync_dir(directory)
    return path


# ---------------------------------------------------------------- reading


def _read_arrays(path: str) -> Dict[str, np.ndarray]:
    """Every array of the .npz file at ``path``, or CheckpointError naming it."""
    if os.path.isdir(path):
        raise CheckpointError(f"{path} is a directory, not a checkpoint file")
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read: {e.strerror or e}") from None
    if head[:2] != b"PK":
        raise CheckpointError(f"{path} is not a fastrnn checkpoint (not an .npz file)")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, EOFError, zlib.error) as e:
        raise CheckpointError(f"{path} is truncated or corrupted ({e}); it cannot be read") from None
    except (ValueError, OSError, KeyError) as e:
        raise CheckpointError(f"{path} is corrupted or not a fastrnn checkpoint ({e})") from None


def _str(arrays: Mapping[str, np.ndarray], key: str, path: str) -> str:
    a = arrays[key]
    if a.ndim != 0 or a.dtype.kind != "U":
        raise CheckpointError(f"{path}: entry {key!r} should be a string, got {a.dtype} {a.shape}")
    return str(a.item())


def _scalar(arrays: Mapping[str, np.ndarray], key: str, path: str, kind: type) -> Any:
    a = arrays.get(key)
    if a is None:
        raise CheckpointError(f"{path}: the checkpoint has no {key!r} entry")
    if a.ndim != 0 or a.dtype.kind not in "iuf":
        raise CheckpointError(f"{path}: entry {key!r} should be a number, got {a.dtype} {a.shape}")
    return kind(a.item())


def _check_header(arrays: Mapping[str, np.ndarray], path: str) -> None:
    if "__format__" not in arrays:
        shown = sorted(arrays)[:6]
        raise CheckpointError(f"{path} is an .npz file but not a fastrnn checkpoint (no "
                              f"'__format__' entry; it holds {shown}{'...' if len(arrays) > 6 else ''})")
    tag = _str(arrays, "__format__", path)
    if tag != _FORMAT_TAG:
        raise CheckpointError(f"{path} is not a fastrnn checkpoint (format tag {tag!r})")
    version = _scalar(arrays, "__version__", path, int)
    if version != FORMAT_VERSION:
        newer = " (written by a newer fastrnn: upgrade fastrnn)" if version > FORMAT_VERSION else ""
        raise CheckpointError(f"{path} has checkpoint format version {version}; this fastrnn "
                              f"reads version {FORMAT_VERSION}{newer}")


def load_checkpoint(path: str) -> Checkpoint:
    """Reads and verifies a checkpoint file (never unpickles anything).

    Raises :class:`CheckpointError` (a ValueError) naming the file if it does not exist,
    is not an .npz file, is truncated, fails its checksum, has another format version, or
    lacks entries a checkpoint must have.
    """
    path = os.fspath(path)
    arrays = _read_arrays(path)
    _check_header(arrays, path)
    if "__checksum__" not in arrays:
        raise CheckpointError(f"{path}: the checkpoint has no checksum")
    stored = _str(arrays, "__checksum__", path)
    if stored != _checksum(arrays):
        raise CheckpointError(f"{path} is corrupted: its checksum does not match its contents")
    for key in ("config", "meta", "vocab"):
        if key not in arrays:
            raise CheckpointError(f"{path}: the checkpoint has no {key!r} entry")
    try:
        config = json.loads(_str(arrays, "config", path))
        meta = json.loads(_str(arrays, "meta", path))
        vocab = Vocab.from_array(arrays["vocab"])
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: unreadable config, meta or vocab ({e})") from None
    if not isinstance(config, dict) or "model" not in config:
        raise CheckpointError(f"{path}: the checkpoint config has no 'model' section")

    def section(prefix: str) -> Dict[str, Any]:
        return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}

    params = section("param/")
    if not params:
        raise CheckpointError(f"{path}: the checkpoint holds no parameters")
    carry: Optional[Tuple[np.ndarray, ...]] = None
    if "carry/n" in arrays:
        n = _scalar(arrays, "carry/n", path, int)
        try:
            carry = tuple(arrays[f"carry/{i}"] for i in range(n))
        except KeyError as e:
            raise CheckpointError(f"{path}: missing carried state {e}") from None
    return Checkpoint(
        params=params,
        config=config,
        vocab=vocab,
        optimizer=section("optim/"),
        scheduler=section("sched/") if "has_scheduler" in arrays else None,
        model_rng=section("rng/model/"),
        loader=section("loader/"),
        carry=carry,
        iteration=_scalar(arrays, "iteration", path, int),
        epoch=_scalar(arrays, "epoch", path, float),
        val_loss=_scalar(arrays, "val_loss", path, float),
        best_val_loss=_scalar(arrays, "best_val_loss", path, float),
        history=section("history/"),
        meta=meta if isinstance(meta, dict) else {},
        path=path,
    )


def load_model(path: str) -> Tuple[Any, Vocab, Checkpoint]:
    """``(model, vocab, checkpoint)`` from a checkpoint file or a training directory
    (resolved with :func:`resolve_checkpoint`); the model is in eval mode."""
    ckpt = load_checkpoint(resolve_checkpoint(path))
    try:
        model = ckpt.build_model()
    except CheckpointError:
        raise
    except (ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"{ckpt.path}: cannot rebuild the model from its config ({e})") from None
    return model, ckpt.vocab, ckpt


# ---------------------------------------------------------------- directories


def _info(path: str) -> CheckpointInfo:
    """Reads only the small header entries (cheap: .npz members load lazily)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if "__format__" not in z.files:
                raise CheckpointError(f"{path} is not a fastrnn checkpoint")
            small = {k: z[k] for k in ("__format__", "__version__", "iteration", "epoch", "val_loss")
                     if k in z.files}
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - any unreadable file is reported the same way
        raise CheckpointError(f"{path} cannot be read ({e})") from None
    _check_header(small, path)
    return CheckpointInfo(path=path, iteration=_scalar(small, "iteration", path, int),
                          epoch=_scalar(small, "epoch", path, float),
                          val_loss=_scalar(small, "val_loss", path, float))


def list_checkpoints(directory: str) -> List[CheckpointInfo]:
    """The readable checkpoints ``lm_*.npz`` of a directory, oldest (lowest iteration)
    first. Files that cannot be read are skipped."""
    infos = []
    for p in sorted(glob.glob(os.path.join(glob.escape(os.fspath(directory)), _PATTERN))):
        try:
            infos.append(_info(p))
        except CheckpointError:
            continue
    infos.sort(key=lambda i: (i.iteration, os.path.getmtime(i.path)))
    return infos


def resolve_checkpoint(path: str, which: str = "best") -> str:
    """The checkpoint file meant by ``path``: the file itself, or, for a directory (a
    training run's ``--out``), its best checkpoint (lowest validation loss; the latest
    one if none has a validation loss), or with ``which="latest"`` the one with the most
    iterations. CheckpointError if there is none."""
    if which not in ("best", "latest"):
        raise ValueError(f"resolve_checkpoint: which must be 'best' or 'latest', got {which!r}")
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: no such checkpoint file or directory")
    if not os.path.isdir(path):
        return path
    infos = list_checkpoints(path)
    if not infos:
        files = sorted(glob.glob(os.path.join(glob.escape(path), _PATTERN)))
        if files:  # there are some, none readable: say why for one of them
            try:
                _info(files[-1])
            except CheckpointError as e:
                raise CheckpointError(f"{path}: no readable checkpoint among {len(files)} lm_*.npz file(s); "
                                      f"{e}") from None
        raise CheckpointError(f"{path}: no fastrnn checkpoint (lm_*.npz) in this directory")
    latest = infos[-1]
    if which == "latest":
        return latest.path
    scored = [i for i in infos if math.isfinite(i.val_loss)]
    if not scored:
        return latest.path
    return min(scored, key=lambda i: (i.val_loss, -i.iteration)).path


def prune_checkpoints(directory: str, keep: Iterable[str]) -> List[str]:
    """Deletes every ``lm_*.npz`` of ``directory`` but those in ``keep`` (paths or file
    names); returns the deleted paths. Files that cannot be deleted are left alone."""
    kept = {os.path.basename(os.fspath(k)) for k in keep}
    removed = []
    for p in glob.glob(os.path.join(glob.escape(os.fspath(directory)), _PATTERN)):
        if os.path.basename(p) in kept:
            continue
        try:
            os.remove(p)
            removed.append(p)
        except OSError:
            pass
    return removed
