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

Files are written atomically (a temporary file ``.tmp-<pid>-*.npz`` in the same
directory, locked with ``flock`` while it is written, flushed and fsync'ed, given the
mode the umask asks for, then renamed over the target with :func:`os.replace`), so a
crash or a full disk never leaves a half-written checkpoint behind, nor damages the
previous one. Nothing non-finite is ever written: :func:`save_checkpoint` refuses NaN or
infinite parameters, optimizer state or carried state.

Reading never unpickles, never opens anything but a regular file (a FIFO or device
named like a checkpoint is refused without blocking), and never allocates more than the
file's own size allows: every member's ``.npy`` header is read and checked against the
zip directory before any array is allocated, the declared sizes together may not exceed
:data:`MAX_EXPANSION` times the file's size, and the parameter shapes must be those the
checkpoint's model config implies, checked before a model is built. Any file that is not
a checkpoint of this format (truncated, corrupted, hostile, of another version, or a
foreign file) raises :class:`CheckpointError` naming the file, whatever went wrong inside.

Naming, as char-rnn: ``lm_<cell>_epoch<e.ee>_<val_loss:.4f>.npz`` (for instance
``lm_lstm_epoch3.25_1.2043.npz``). A checkpoint saved without a fresh validation loss (on
Ctrl-C, or with no validation split) ends in ``_interrupted`` or ``_noval`` instead. A
training run keeps two files in its directory: the best (lowest validation loss) and the
latest; there is no ``latest.npz`` alias, since both are found by
:func:`resolve_checkpoint`, which reads the small header arrays of every ``lm_*.npz`` in
a directory. :func:`open_checkpoint` resolves and loads in one step, choosing again when
a training run writing into the directory deletes the chosen file meanwhile.
"""
from __future__ import annotations

import ast
import contextlib
import glob
import hashlib
import json
import math
import os
import struct
import tempfile
import time
import zipfile
import zlib
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple

import numpy as np

from .data import Vocab
from .safeio import NotARegularFile, creation_mode, open_regular

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

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
    "open_checkpoint",
    "load_model",
    "nonfinite_entries",
    "copy_params",
    "checkpoint_checksum",
    "CHECKPOINT_PATTERN",
    "TEMP_PREFIX",
    "TEMP_SUFFIX",
    "MAX_EXPANSION",
]

#: Version of the file layout written by :func:`save_checkpoint`.
FORMAT_VERSION = 1
_FORMAT_TAG = "fastrnn.checkpoint"
#: File names of checkpoints in a training directory.
CHECKPOINT_PATTERN = "lm_*.npz"
_PATTERN = CHECKPOINT_PATTERN
#: Temporary files of :func:`save_checkpoint`: ``<TEMP_PREFIX><pid>-<random><TEMP_SUFFIX>``.
TEMP_PREFIX = ".tmp-"
TEMP_SUFFIX = ".npz"
#: The arrays of a file may declare at most this many times the file's size (plus 1 MiB)
#: in total: checkpoints are written uncompressed, and this bounds what a compressed
#: member may expand to.
MAX_EXPANSION = 16
_EXPANSION_SLACK = 1 << 20
_MAX_NPY_HEADER = 1 << 16  # bytes of one member's .npy header
_MAX_NDIM = 32
_READ_CHUNK = 1 << 20
# open_checkpoint: how long it makes its choice again while a writer deletes the chosen file
# (a run that saves every iteration can prune a reader's choice many times in a row)
_READ_RETRY_SECONDS = 30.0


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
        copy_params(model, self.params, self.path)
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
    mtime_ns: int = 0


# ---------------------------------------------------------------- helpers


def copy_params(model: Any, params: Mapping[str, np.ndarray], path: Optional[str]) -> None:
    """Copies ``params`` into ``model.params`` in place (so optimizers keep their views);
    CheckpointError (naming ``path``) if their names, shapes or dtypes differ."""
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


def checkpoint_checksum(arrays: Mapping[str, np.ndarray]) -> str:
    """The checksum a checkpoint stores in ``__checksum__``: SHA-256 over every other
    array's name, dtype, shape and bytes, in sorted key order."""
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
                    tag: Optional[str] = None, iteration: Optional[int] = None) -> str:
    """char-rnn's file name: ``lm_<cell>_epoch<epoch:.2f>_<val_loss:.4f>.npz``.

    Without a finite ``val_loss`` the last part is ``tag`` (default ``"noval"``). With
    ``iteration``, ``_it<iteration>`` follows: the name a checkpoint takes when the
    shorter one is taken by another file."""
    if val_loss is not None and math.isfinite(val_loss):
        last = f"{val_loss:.4f}"
    else:
        last = tag or "noval"
    it = "" if iteration is None else f"_it{int(iteration)}"
    return f"lm_{cell}_epoch{epoch:.2f}_{last}{it}.npz"


def nonfinite_entries(arrays: Mapping[str, Any]) -> List[str]:
    """The keys of ``arrays`` whose (floating-point) values hold a NaN or an infinity;
    other values (integers, strings) are skipped."""
    bad = []
    for k, v in arrays.items():
        a = np.asarray(v) if not isinstance(v, np.ndarray) else v
        if a.dtype.kind in "fc" and not np.isfinite(a).all():
            bad.append(k)
    return bad


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
    arrays["__checksum__"] = np.array(checkpoint_checksum(arrays))
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


def _check_finite(ckpt: Checkpoint, path: str) -> None:
    """ValueError naming the entries if the state to save holds a NaN or an infinity."""
    carry = {f"carry/{i}": a for i, a in enumerate(ckpt.carry or ())}
    bad = (["param/" + k for k in nonfinite_entries(ckpt.params)]
           + ["optim/" + k for k in nonfinite_entries(ckpt.optimizer)] + nonfinite_entries(carry))
    if bad:
        shown = ", ".join(bad[:4]) + (", ..." if len(bad) > 4 else "")
        raise ValueError(f"not writing checkpoint {path}: non-finite values (NaN or inf) in {shown}")


def save_checkpoint(path: str, ckpt: Checkpoint) -> str:
    """Writes ``ckpt`` to ``path`` atomically and returns ``path``.

    The file is first written to a temporary file ``.tmp-<pid>-*.npz`` in the same
    directory (locked with ``flock`` while it exists under that name, so that a cleanup
    can tell an orphan from a file being written), flushed and fsync'ed, given the mode
    ``0o666 & ~umask``, then renamed over ``path``; if anything fails (e.g. the disk is
    full) the temporary file is removed, any previous file at ``path`` is left as it was,
    and an ``OSError`` naming ``path`` is raised. ValueError, before anything is written,
    if the parameters, optimizer state or carried state hold a NaN or an infinity.
    """
    path = os.fspath(path)
    _check_finite(ckpt, path)
    arrays = _flatten(ckpt)
    directory = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-", suffix=TEMP_SUFFIX, dir=directory)
        with os.fdopen(fd, "wb") as f:
            if fcntl is not None:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.fchmod(f.fileno(), creation_mode())
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
            os.replace(tmp, path)  # still open (and locked) until renamed
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


@contextlib.contextmanager
def _reading(path: str) -> Iterator[None]:
    """Turns whatever goes wrong while reading ``path`` into a CheckpointError naming it
    (a hostile file can make zipfile, zlib or numpy raise almost anything)."""
    try:
        yield
    except CheckpointError:
        raise
    except NotARegularFile as e:
        raise CheckpointError(f"{e}: not a checkpoint") from None
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint file") from None
    except (zipfile.BadZipFile, EOFError, zlib.error) as e:
        raise CheckpointError(f"{path} is truncated or corrupted ({e}); it cannot be read") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read: {e.strerror or e}") from None
    except MemoryError:
        raise CheckpointError(f"{path} cannot be read: not enough memory") from None
    except Exception as e:  # noqa: BLE001 - any failure inside a damaged file is reported alike
        raise CheckpointError(f"{path} is corrupted or not a fastrnn checkpoint "
                              f"({type(e).__name__}: {e})") from None


@dataclass(frozen=True)
class _Member:
    """One array of an .npz file, as its headers describe it."""

    info: zipfile.ZipInfo
    dtype: np.dtype
    shape: Tuple[int, ...]
    fortran: bool
    offset: int  # bytes of the .npy header before the data

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


class _NpzFile:
    """An .npz file opened for reading within bounds: the file must be regular, and
    every member's .npy header is read and checked (against the zip directory's
    declared size, and all together against :data:`MAX_EXPANSION` times the file's size)
    before any array is allocated. Use inside :func:`_reading`."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.file: BinaryIO = open_regular(path)
        try:
            st = os.fstat(self.file.fileno())
            self.size, self.mtime_ns = st.st_size, st.st_mtime_ns
            if self.file.read(2) != b"PK":
                raise CheckpointError(f"{path} is not a fastrnn checkpoint (not an .npz file)")
            self.file.seek(0)
            self.zip = zipfile.ZipFile(self.file)
            infos = self.zip.infolist()
            total = sum(i.file_size for i in infos)
            bound = MAX_EXPANSION * self.size + _EXPANSION_SLACK
            if total > bound:
                raise CheckpointError(f"{path}: its arrays declare {total:,} bytes in a file of "
                                      f"{self.size:,} bytes (more than {MAX_EXPANSION}x): refused")
            self.members: Dict[str, _Member] = {}
            for info in infos:
                if not info.filename.endswith(".npy"):
                    raise CheckpointError(f"{path}: member {info.filename!r} is not an .npy array")
                self.members[info.filename[:-4]] = self._header(info)
        except BaseException:
            self.file.close()
            raise

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> "_NpzFile":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _header(self, info: zipfile.ZipInfo) -> _Member:
        where = f"{self.path}: member {info.filename!r}"
        if info.flag_bits & 0x1:
            raise CheckpointError(f"{where} is encrypted")
        if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
            raise CheckpointError(f"{where} is corrupted (stored sizes differ)")
        with self.zip.open(info) as f:
            magic = f.read(8)
            if len(magic) != 8 or magic[:6] != b"\x93NUMPY" or magic[6] not in (1, 2, 3):
                raise CheckpointError(f"{where} is not a .npy array")
            wide = magic[6] > 1
            raw = f.read(4 if wide else 2)
            (length,) = struct.unpack("<I" if wide else "<H", raw)
            if length > _MAX_NPY_HEADER:
                raise CheckpointError(f"{where} has a {length:,}-byte .npy header")
            text = f.read(length).decode("utf-8" if magic[6] == 3 else "latin1")
        d = ast.literal_eval(text)
        if not isinstance(d, dict) or set(d) != {"descr", "fortran_order", "shape"}:
            raise CheckpointError(f"{where} has a malformed .npy header")
        dtype = np.lib.format.descr_to_dtype(d["descr"])
        if dtype.hasobject:
            raise CheckpointError(f"{where} holds Python objects (these would need pickle)")
        shape = d["shape"]
        if not isinstance(shape, tuple) or len(shape) > _MAX_NDIM or not all(
                type(n) is int and n >= 0 for n in shape):
            raise CheckpointError(f"{where} has a malformed shape {shape!r}")
        member = _Member(info, dtype, shape, bool(d["fortran_order"]), 8 + len(raw) + length)
        if member.offset + member.nbytes != info.file_size:
            raise CheckpointError(f"{where} declares a {dtype} array of shape {shape} "
                                  f"({member.nbytes:,} bytes) but holds {info.file_size:,} bytes")
        return member

    def read(self, key: str) -> np.ndarray:
        """The array ``key``: exactly the bytes its header declared, CRC-checked."""
        m = self.members[key]
        n = m.nbytes
        if m.dtype.itemsize == 0:
            return np.empty(m.shape, m.dtype)
        raw = np.empty(n, np.uint8)
        with self.zip.open(m.info) as f:
            f.read(m.offset)
            got = 0
            while got < n:
                chunk = f.read(min(_READ_CHUNK, n - got))
                if not chunk:
                    raise CheckpointError(f"{self.path}: member {m.info.filename!r} is truncated")
                raw[got:got + len(chunk)] = np.frombuffer(chunk, np.uint8)
                got += len(chunk)
            if f.read(1):  # also reaches the end, where zipfile checks the CRC
                raise CheckpointError(f"{self.path}: member {m.info.filename!r} is longer than declared")
        return raw.view(m.dtype).reshape(m.shape, order="F" if m.fortran else "C")


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


def _check_header(npz: _NpzFile) -> Dict[str, np.ndarray]:
    """Format tag and version; returns the small header entries present."""
    path = npz.path
    if "__format__" not in npz.members:
        names = sorted(npz.members)
        shown = names[:6]
        raise CheckpointError(f"{path} is an .npz file but not a fastrnn checkpoint (no "
                              f"'__format__' entry; it holds {shown}{'...' if len(names) > 6 else ''})")
    small = {k: npz.read(k) for k in ("__format__", "__version__", "iteration", "epoch", "val_loss")
             if k in npz.members and npz.members[k].nbytes <= 4096}
    tag = _str(small, "__format__", path)
    if tag != _FORMAT_TAG:
        raise CheckpointError(f"{path} is not a fastrnn checkpoint (format tag {tag!r})")
    version = _scalar(small, "__version__", path, int)
    if version != FORMAT_VERSION:
        newer = " (written by a newer fastrnn: upgrade fastrnn)" if version > FORMAT_VERSION else ""
        raise CheckpointError(f"{path} has checkpoint format version {version}; this fastrnn "
                              f"reads version {FORMAT_VERSION}{newer}")
    return small


def _check_shapes(npz: _NpzFile, model_config: Any) -> None:
    """The parameters' headers against the shapes the model config implies (computed,
    not built), so that a config claiming a huge model costs nothing to refuse."""
    from .models import CharRNN

    path = npz.path
    params = {k[len("param/"):]: m for k, m in npz.members.items() if k.startswith("param/")}
    if not params:
        raise CheckpointError(f"{path}: the checkpoint holds no parameters")
    if not isinstance(model_config, dict):
        raise CheckpointError(f"{path}: the checkpoint's model config is not a mapping")
    layers = model_config.get("num_layers", 2)
    if isinstance(layers, int) and layers > len(params):  # more layers than arrays: no need to list them
        raise CheckpointError(f"{path}: its config claims {layers} layers but it holds "
                              f"{len(params)} parameter arrays")
    try:
        expected = CharRNN.param_shapes(model_config)
    except (TypeError, ValueError, KeyError) as e:
        raise CheckpointError(f"{path}: its model config describes no valid model ({e})") from None
    missing = sorted(set(expected) - set(params))
    extra = sorted(set(params) - set(expected))
    if missing or extra:
        raise CheckpointError(f"{path}: parameters do not match its model config: missing "
                              f"{missing}, unexpected {extra}")
    for k, (shape, dtype) in expected.items():
        m = params[k]
        if m.shape != shape or m.dtype != dtype:
            raise CheckpointError(f"{path}: parameter {k!r} is {m.dtype} {m.shape} but its model "
                                  f"config implies {dtype} {shape}")


def load_checkpoint(path: str) -> Checkpoint:
    """Reads and verifies a checkpoint file (never unpickles anything).

    Raises :class:`CheckpointError` (a ValueError) naming the file if it does not exist,
    is not a regular file, is not an .npz file, is truncated or corrupted in any way,
    declares more data than its size allows, fails its checksum, has another format
    version, lacks entries a checkpoint must have, holds parameters whose shapes differ
    from those its model config implies, or holds non-finite parameters. Sizes and shapes
    are checked from the headers before the arrays are read.
    """
    path = os.fspath(path)
    with _reading(path), _NpzFile(path) as npz:
        _check_header(npz)
        for key in ("config", "meta", "vocab", "__checksum__"):
            if key not in npz.members:
                raise CheckpointError(f"{path}: the checkpoint has no {key!r} entry")
        config = json.loads(_str({"config": npz.read("config")}, "config", path))
        if not isinstance(config, dict) or "model" not in config:
            raise CheckpointError(f"{path}: the checkpoint config has no 'model' section")
        _check_shapes(npz, config["model"])
        arrays = {k: npz.read(k) for k in npz.members}
        stored = _str(arrays, "__checksum__", path)
        if stored != checkpoint_checksum(arrays):
            raise CheckpointError(f"{path} is corrupted: its checksum does not match its contents")
        try:
            meta = json.loads(_str(arrays, "meta", path))
            vocab = Vocab.from_array(arrays["vocab"])
        except (ValueError, TypeError) as e:
            raise CheckpointError(f"{path}: unreadable meta or vocab ({e})") from None

        def section(prefix: str) -> Dict[str, Any]:
            return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}

        params = section("param/")
        bad = nonfinite_entries(params)
        if bad:
            raise CheckpointError(f"{path} holds non-finite parameters ({', '.join(bad[:4])}): "
                                  f"it is not a usable checkpoint")
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


def open_checkpoint(path: str, which: str = "best") -> Checkpoint:
    """The checkpoint meant by ``path`` (see :func:`resolve_checkpoint`), loaded.

    For a directory that a training run is writing into, the chosen file may be deleted
    (pruned) between choosing and reading it: the choice is then made again, so a reader
    never fails because of a concurrent writer (it reads an older or newer checkpoint)."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        return load_checkpoint(path)
    give_up = time.monotonic() + _READ_RETRY_SECONDS
    while True:
        choice = resolve_checkpoint(path, which)
        try:
            return load_checkpoint(choice)
        except CheckpointError:
            if os.path.lexists(choice) or time.monotonic() > give_up:
                raise
            # deleted meanwhile: choose again


def load_model(path: str) -> Tuple[Any, Vocab, Checkpoint]:
    """``(model, vocab, checkpoint)`` from a checkpoint file or a training directory
    (its best checkpoint, see :func:`open_checkpoint`); the model is in eval mode."""
    ckpt = open_checkpoint(path)
    try:
        model = ckpt.build_model()
    except CheckpointError:
        raise
    except (ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"{ckpt.path}: cannot rebuild the model from its config ({e})") from None
    return model, ckpt.vocab, ckpt


# ---------------------------------------------------------------- directories


def _info(path: str) -> CheckpointInfo:
    """Reads only the small header entries."""
    with _reading(path), _NpzFile(path) as npz:
        small = _check_header(npz)
        return CheckpointInfo(path=path, iteration=_scalar(small, "iteration", path, int),
                              epoch=_scalar(small, "epoch", path, float),
                              val_loss=_scalar(small, "val_loss", path, float),
                              mtime_ns=npz.mtime_ns)


def list_checkpoints(directory: str) -> List[CheckpointInfo]:
    """The readable checkpoints ``lm_*.npz`` of a directory, oldest (lowest iteration)
    first. Files that cannot be read (or that vanish while listed) are skipped."""
    infos = []
    for p in sorted(glob.glob(os.path.join(glob.escape(os.fspath(directory)), _PATTERN))):
        try:
            infos.append(_info(p))
        except CheckpointError:
            continue
    infos.sort(key=lambda i: (i.iteration, i.mtime_ns))
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


def prune_checkpoints(directory: str, keep: Iterable[str],
                      only: Optional[Iterable[str]] = None) -> List[str]:
    """Deletes the ``lm_*.npz`` files of ``directory`` but those in ``keep`` (paths or
    file names); with ``only``, just those named there (e.g. the files one training run
    wrote). Returns the deleted paths. Directories and files that cannot be deleted are
    left alone."""
    kept = {os.path.basename(os.fspath(k)) for k in keep}
    allowed = None if only is None else {os.path.basename(os.fspath(k)) for k in only}
    removed = []
    for p in glob.glob(os.path.join(glob.escape(os.fspath(directory)), _PATTERN)):
        name = os.path.basename(p)
        if name in kept or (allowed is not None and name not in allowed) or os.path.isdir(p):
            continue
        try:
            os.remove(p)
            removed.append(p)
        except OSError:
            pass
    return removed
