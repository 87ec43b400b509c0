"""Character-level language-model data: a vocabulary, a default corpus and a batch loader.

The pieces of Karpathy's min-char-rnn / char-rnn data pipeline, in NumPy:

* :class:`Vocab` maps characters to integer ids and back (``char_to_ix`` / ``ix_to_char``).
  Encoding runs in the compiled module ``fastrnn._text`` (Cython), tens of times faster
  than ``[char_to_ix[ch] for ch in data]``.
* :func:`default_corpus` gives about 1 MB of training text with nothing to download: the
  source of a fixed list of Python standard-library modules.
* :class:`CharBatches` cuts an id stream into (x, y) minibatches of shape (B, T) the way
  char-rnn's ``CharSplitLMMinibatchLoader`` does, so that the hidden state can be carried
  from one batch to the next (truncated backpropagation through time).

Typical use::

    text = fastrnn.data.default_corpus()          # or open("input.txt").read()
    vocab = Vocab.from_text(text)
    loader = CharBatches(vocab.encode(text), batch_size=50, seq_length=50)
    for epoch in range(loader.epoch, max_epochs):
        h = np.zeros((50, H), np.float32)          # reset state at the start of an epoch
        for x, y in loader:                        # x, y: int32 (B, T); y[:, t] = x[:, t+1]
            ...                                    # forward from h, backward, update
            h = hT                                 # carry the state to the next batch

Everything a checkpoint needs is a flat dict of NumPy arrays and numbers
(:meth:`Vocab.to_array`, :meth:`CharBatches.state_dict`), so ``np.savez`` stores it and
``np.load(..., allow_pickle=False)`` reads it back.
"""
from __future__ import annotations

import functools
import os
import sysconfig
from types import MappingProxyType
from typing import Dict, Iterable, Iterator, List, Mapping, Tuple, Union

import numpy as np

from . import _text  # the compiled encoder; there is deliberately no pure-Python fallback

__all__ = ["Vocab", "CharBatches", "default_corpus", "STDLIB_CORPUS_FILES"]

_MAX_CODE_POINT = 0x10FFFF


# ---------------------------------------------------------------- vocabulary


class Vocab:
    """A character vocabulary: ``len(vocab)`` characters with ids ``0 .. len(vocab)-1``.

    Build it from the training text with :meth:`from_text` (characters sorted by code
    point, so the same text always gives the same ids), or from an explicit sequence of
    distinct characters in id order: ``Vocab("abc")``.

    Attributes:
        chars: the characters as one ``str`` in id order (``chars[i]`` is id ``i``).
        itos: the same string (nanoGPT's name; ``ix_to_char`` in min-char-rnn).
        stoi: read-only mapping character -> id (``char_to_ix``).
    """

    __slots__ = ("_chars", "_stoi", "_codepoints", "_table")

    def __init__(self, chars: Iterable[str]) -> None:
        chars_list = list(chars)
        stoi: Dict[str, int] = {}
        for i, ch in enumerate(chars_list):
            if not isinstance(ch, str) or len(ch) != 1:
                raise TypeError(f"Vocab: every entry must be a single character, got {ch!r} at index {i}")
            if ch in stoi:
                raise ValueError(f"Vocab: character {ch!r} appears twice (ids {stoi[ch]} and {i})")
            stoi[ch] = i
        if len(stoi) > np.iinfo(np.int32).max:  # pragma: no cover - cannot happen for Unicode
            raise ValueError("Vocab: too many characters")
        self._chars = "".join(chars_list)
        self._stoi = stoi
        self._codepoints = np.array([ord(c) for c in chars_list], dtype=np.uint32)
        # Dense lookup table code point -> id (-1: not in the vocabulary). At least 256
        # entries, so that 1-byte (Latin-1) strings need no bounds check in the encoder.
        size = max(256, int(self._codepoints.max()) + 1 if len(chars_list) else 0)
        table = np.full(size, -1, dtype=np.int32)
        table[self._codepoints] = np.arange(len(chars_list), dtype=np.int32)
        table.flags.writeable = False
        self._table = table

    # -- construction

    @classmethod
    def from_text(cls, text: str) -> "Vocab":
        """The vocabulary of every distinct character in ``text``, sorted by code point."""
        if not isinstance(text, str):
            raise TypeError(f"Vocab.from_text: text must be a str, got {type(text).__name__}")
        if not text:
            raise ValueError("Vocab.from_text: text is empty")
        return cls(sorted(set(text)))

    @classmethod
    def from_array(cls, a: np.ndarray) -> "Vocab":
        """Inverse of :meth:`to_array`: a 1-D integer array of code points in id order."""
        a = np.asarray(a)
        if a.ndim != 1 or not (a.dtype.kind in "ui" or a.size == 0):
            raise TypeError(f"Vocab.from_array: expected a 1-D integer array of code points, "
                            f"got dtype {a.dtype} and shape {a.shape}")
        if a.size and (int(a.min()) < 0 or int(a.max()) > _MAX_CODE_POINT):
            raise ValueError(f"Vocab.from_array: code points must lie in [0, 0x10FFFF], "
                             f"got values in [{int(a.min())}, {int(a.max())}]")
        return cls(chr(int(c)) for c in a)

    def to_array(self) -> np.ndarray:
        """The code points in id order, uint32 of shape (len(vocab),): storable in an .npz
        without pickle; :meth:`from_array` rebuilds the same vocabulary."""
        return self._codepoints.copy()

    # -- the mapping

    @property
    def chars(self) -> str:
        return self._chars

    @property
    def itos(self) -> str:
        return self._chars

    @property
    def stoi(self) -> Mapping[str, int]:
        return MappingProxyType(self._stoi)

    def __len__(self) -> int:
        return len(self._chars)

    def __contains__(self, ch: object) -> bool:
        return ch in self._stoi

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Vocab):
            return NotImplemented
        return self._chars == other._chars

    def __hash__(self) -> int:
        return hash(self._chars)

    def __repr__(self) -> str:
        shown = self._chars if len(self._chars) <= 40 else self._chars[:37] + "..."
        return f"Vocab({len(self)} chars: {shown!r})"

    def encode(self, text: str, errors: str = "strict") -> np.ndarray:
        """Character ids of ``text``: int32 array of shape (len(text),).

        ``errors="strict"`` raises ValueError naming the first character that is not in
        the vocabulary and its position; ``errors="skip"`` drops such characters (the
        result is then shorter than the text).
        """
        if not isinstance(text, str):
            raise TypeError(f"Vocab.encode: text must be a str, got {type(text).__name__}")
        if errors not in ("strict", "skip"):
            raise ValueError(f"Vocab.encode: errors must be 'strict' or 'skip', got {errors!r}")
        ids, bad = _text.encode(text, self._table, errors == "skip")
        if ids is None:
            ch = text[bad]
            raise ValueError(f"Vocab.encode: character {ch!r} (U+{ord(ch):04X}) at position {bad} "
                             f"is not in the vocabulary; use errors='skip' to drop unknown characters")
        return ids

    def decode(self, ids: Union[np.ndarray, Iterable[int], int]) -> str:
        """The text of a 1-D sequence of ids (any integer dtype, or a list, or one int).

        Raises ValueError naming the first id outside ``[0, len(vocab))`` and its position.
        """
        a = np.asarray(ids)
        if a.ndim > 1:
            raise ValueError(f"Vocab.decode: expected a 1-D sequence of ids, got shape {a.shape}; "
                             f"decode each row separately")
        a = a.reshape(-1)
        if a.size == 0:
            return ""
        if a.dtype.kind not in "ui":
            raise TypeError(f"Vocab.decode: ids must be integers, got dtype {a.dtype}")
        bad = np.flatnonzero((a < 0) | (a >= len(self)))
        if bad.size:
            pos = int(bad[0])
            raise ValueError(f"Vocab.decode: id {int(a[pos])} at position {pos} is out of range "
                             f"for a vocabulary of {len(self)} characters")
        cps = self._codepoints[a].astype("<u4", copy=False)
        return cps.tobytes().decode("utf-32-le", "surrogatepass")


# ---------------------------------------------------------------- default corpus

#: The standard-library sources that :func:`default_corpus` concatenates, in this order
#: (paths relative to ``sysconfig.get_paths()["stdlib"]``; sorted; missing ones skipped).
STDLIB_CORPUS_FILES: Tuple[str, ...] = tuple(sorted((
    "_pydecimal.py", "argparse.py", "ast.py", "base64.py", "bisect.py", "calendar.py",
    "collections/__init__.py", "configparser.py", "contextlib.py", "copy.py", "csv.py",
    "dataclasses.py", "difflib.py", "enum.py", "fractions.py", "functools.py", "gettext.py",
    "heapq.py", "inspect.py", "ipaddress.py", "json/decoder.py", "json/encoder.py",
    "logging/__init__.py", "os.py", "pickle.py", "pprint.py", "random.py", "shutil.py",
    "statistics.py", "string.py", "subprocess.py", "tarfile.py", "textwrap.py",
    "threading.py", "tokenize.py", "typing.py", "unittest/case.py",
)))


def _stdlib_dirs() -> List[str]:
    dirs = []
    for d in (sysconfig.get_paths().get("stdlib"), os.path.dirname(os.__file__)):
        if d and os.path.isdir(d) and os.path.realpath(d) not in map(os.path.realpath, dirs):
            dirs.append(d)
    return dirs


@functools.lru_cache(maxsize=4)
def default_corpus(max_chars: int = 1_000_000) -> str:
    """About 1 MB of training text that needs no download: Python source code.

    The files of :data:`STDLIB_CORPUS_FILES` are read from this interpreter's standard
    library (UTF-8, newlines normalised to ``\\n``) and concatenated in that order, each
    followed by a blank line, then cut to ``max_chars`` characters. The result is the
    same every time for a given Python version. Files that are missing or unreadable are
    skipped; RuntimeError if none is found (then pass your own text instead).
    """
    if max_chars <= 0:
        raise ValueError(f"default_corpus: max_chars must be positive, got {max_chars}")
    dirs = _stdlib_dirs()
    parts: List[str] = []
    total = 0
    for rel in STDLIB_CORPUS_FILES:
        if total >= max_chars:
            break
        for d in dirs:
            path = os.path.join(d, *rel.split("/"))
            try:
                with open(path, encoding="utf-8") as f:
                    src = f.read()
            except (OSError, UnicodeDecodeError):
                continue
            parts.append(src + "\n\n")
            total += len(src) + 2
            break
    if not parts:
        raise RuntimeError(f"default_corpus: none of the {len(STDLIB_CORPUS_FILES)} standard-library "
                           f"source files was found under {dirs or 'any standard-library directory'} "
                           f"(this Python may ship compiled modules only); pass your own text instead")
    return "".join(parts)[:max_chars]


# ---------------------------------------------------------------- minibatches

_SPLITS = ("train", "val", "test")


class CharBatches:
    """char-rnn's minibatch loader: (x, y) int32 batches of shape (batch_size, seq_length).

    ``ids`` (a 1-D integer array, e.g. ``vocab.encode(text)``) is cut into three
    contiguous parts in this order: train (the rest), val (the next
    ``floor(val_fraction * len(ids))`` ids) and test (the last
    ``floor(test_fraction * len(ids))`` ids). Each part is laid out as ``batch_size``
    contiguous streams, one per batch row, and the batches walk along them ``seq_length``
    ids at a time: row b of batch k+1 continues row b of batch k, so a final hidden state
    can be passed on as the next batch's initial state (truncated BPTT). ``y`` is ``x``
    shifted by one: ``y[b, t]`` is the id after ``x[b, t]`` (and ``y[b, -1]`` is
    ``x[b, 0]`` of the next batch). A part of n ids gives
    ``(n - 1) // (batch_size * seq_length)`` batches; the few ids left over at its end are
    unused. Nothing is random.

    Iterating over the loader yields the train batches of one epoch, from where the last
    iteration stopped (see :attr:`position`); after the last batch of an epoch,
    :attr:`epoch` goes up by one and :attr:`position` back to 0. Reset the hidden state
    at the start of each epoch: the last batch of an epoch is not continued by the first
    one of the next. :meth:`state_dict` / :meth:`load_state_dict` save and restore that
    position, for an exact resume. :meth:`batches` walks a whole split (e.g. ``"val"``
    for evaluation) without touching the position, and :meth:`next_batch` is char-rnn's
    endless ``loader:next_batch(split)``.

    Attributes:
        batch_size, seq_length: B and T.
        split_sizes: number of batches per split, ``{"train": ..., "val": ..., "test": ...}``.
        epoch: completed passes over the train split.
        position: index of the next train batch within the epoch.
    """

    def __init__(self, ids: Union[np.ndarray, Iterable[int]], batch_size: int, seq_length: int,
                 val_fraction: float = 0.05, test_fraction: float = 0.0) -> None:
        a = np.asarray(ids)
        if not (a.dtype.kind in "ui" or a.size == 0):
            raise TypeError(f"CharBatches: ids must be a 1-D integer array, got dtype {a.dtype}")
        if a.ndim != 1:
            raise ValueError(f"CharBatches: ids must be a 1-D integer array, got shape {a.shape}")
        for name, v in (("batch_size", batch_size), ("seq_length", seq_length)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"CharBatches: {name} must be a positive integer, got {v!r}")
        for name, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not (0.0 <= float(f) < 1.0):
                raise ValueError(f"CharBatches: {name} must lie in [0, 1), got {f!r}")
        if float(val_fraction) + float(test_fraction) >= 1.0:
            raise ValueError(f"CharBatches: val_fraction + test_fraction must be < 1, got "
                             f"{val_fraction} + {test_fraction}")
        if a.size and (int(a.min()) < 0 or int(a.max()) > np.iinfo(np.int32).max):
            raise ValueError("CharBatches: ids must lie in [0, 2**31 - 1]")
        a = a.astype(np.int32)  # a private copy: later changes to `ids` do not leak in

        self.batch_size = B = int(batch_size)
        self.seq_length = T = int(seq_length)
        self.val_fraction = float(val_fraction)
        self.test_fraction = float(test_fraction)
        n = a.size
        n_val = int(n * self.val_fraction)
        n_test = int(n * self.test_fraction)
        n_train = n - n_val - n_test
        bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val),
                  "test": (n_train + n_val, n)}
        wanted = {"train": True, "val": self.val_fraction > 0, "test": self.test_fraction > 0}

        self.num_ids = n
        self.split_sizes: Dict[str, int] = {}
        self._x: Dict[str, np.ndarray] = {}
        self._y: Dict[str, np.ndarray] = {}
        for split in _SPLITS:
            lo, hi = bounds[split]
            size = hi - lo
            nb = (size - 1) // (B * T) if size > 0 else 0
            if wanted[split] and nb < 1:
                raise ValueError(
                    f"CharBatches: text too short: the {split} split has {size} ids (of {n} in "
                    f"all, val_fraction={self.val_fraction}, test_fraction={self.test_fraction}) "
                    f"but batch_size={B} x seq_length={T} needs at least {B * T + 1}; use "
                    f"smaller batch_size/seq_length, more text, or a different split")
            L = nb * T  # length of each row's stream
            part = a[lo:hi]
            self._x[split] = part[:B * L].reshape(B, L)
            self._y[split] = part[1:B * L + 1].reshape(B, L)
            self.split_sizes[split] = nb
        self.epoch = 0
        self.position = 0
        self._next = {split: 0 for split in _SPLITS}  # next_batch() pointers

    # -- access

    def __len__(self) -> int:
        """Number of train batches per epoch."""
        return self.split_sizes["train"]

    @property
    def num_batches(self) -> int:
        """Number of train batches per epoch (= ``len(loader)``)."""
        return self.split_sizes["train"]

    @property
    def iteration(self) -> int:
        """Train batches produced since the start: ``epoch * len(loader) + position``."""
        return self.epoch * len(self) + self.position

    def _check_split(self, split: str) -> int:
        if split not in self.split_sizes:
            raise ValueError(f"CharBatches: split must be one of {_SPLITS}, got {split!r}")
        nb = self.split_sizes[split]
        if nb == 0:
            raise ValueError(f"CharBatches: the {split} split is empty ({split}_fraction=0)")
        return nb

    def batch(self, split: str, k: int) -> Tuple[np.ndarray, np.ndarray]:
        """Batch ``k`` of ``split``: x, y int32 (batch_size, seq_length), fresh arrays."""
        nb = self._check_split(split)
        if not 0 <= k < nb:
            raise IndexError(f"CharBatches: batch {k} out of range for the {split} split of {nb} batches")
        s = slice(k * self.seq_length, (k + 1) * self.seq_length)
        return np.ascontiguousarray(self._x[split][:, s]), np.ascontiguousarray(self._y[split][:, s])

    def batches(self, split: str = "val") -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        """All batches of ``split`` in order, from the first; the loader's state is untouched."""
        nb = self._check_split(split)
        for k in range(nb):
            yield self.batch(split, k)

    def __iter__(self) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        """The train batches of the current epoch, from :attr:`position` on.

        The state is advanced as each batch is handed out, so a :meth:`state_dict` taken
        inside the loop body resumes with the following batch.
        """
        nb = len(self)
        while self.position < nb:
            k = self.position
            if k + 1 == nb:
                self.position = 0
                self.epoch += 1
            else:
                self.position = k + 1
            yield self.batch("train", k)
            if self.position == 0:
                return

    def next_batch(self, split: str = "train") -> Tuple[np.ndarray, np.ndarray]:
        """char-rnn's ``next_batch(split)``: the next batch of ``split``, cycling forever.

        For "train" this is the same stream as iteration (it advances :attr:`position`
        and :attr:`epoch`); "val" and "test" keep their own pointers, which
        :meth:`reset_batch_pointer` resets.
        """
        nb = self._check_split(split)
        if split == "train":
            return next(iter(self))
        k = self._next[split]
        self._next[split] = (k + 1) % nb
        return self.batch(split, k)

    def next_batches(self, count: int) -> Tuple[np.ndarray, np.ndarray]:
        """The next ``count`` train batches at once, x, y int32 (K, batch_size, seq_length),
        for :meth:`CharRNN.train_steps`: the batches ``count`` calls of :meth:`next_batch`
        would give, except that they stop at the end of the epoch (K < ``count``; then
        :attr:`position` is 0, the point to reset a carried state)."""
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
            raise ValueError(f"CharBatches.next_batches: count must be an int >= 1, got {count!r}")
        nb = self._check_split("train")
        k0 = self.position
        k1 = min(nb, k0 + int(count))
        if k1 == nb:
            self.position = 0
            self.epoch += 1
        else:
            self.position = k1
        B, T = self.batch_size, self.seq_length
        s = slice(k0 * T, k1 * T)
        x = self._x["train"][:, s].reshape(B, k1 - k0, T).transpose(1, 0, 2)
        y = self._y["train"][:, s].reshape(B, k1 - k0, T).transpose(1, 0, 2)
        return np.ascontiguousarray(x), np.ascontiguousarray(y)

    def reset_batch_pointer(self, split: str) -> None:
        """Restart ``split`` at its first batch (for "train": the start of the current epoch)."""
        self._check_split(split)
        if split == "train":
            self.position = 0
        else:
            self._next[split] = 0

    # -- checkpointing

    def state_dict(self) -> Dict[str, int]:
        """The position counters plus the layout they refer to; flat, ints only."""
        return {
            "epoch": self.epoch,
            "position": self.position,
            "val_position": self._next["val"],
            "test_position": self._next["test"],
            "batch_size": self.batch_size,
            "seq_length": self.seq_length,
            "num_ids": self.num_ids,
            "num_train_batches": self.split_sizes["train"],
            "num_val_batches": self.split_sizes["val"],
            "num_test_batches": self.split_sizes["test"],
        }

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        """Restore :meth:`state_dict`'s counters. ValueError if a key is missing or the saved
        layout (batch_size, seq_length, text length, batches per split) differs from this
        loader's, since the positions would then mean other batches."""
        mine = self.state_dict()
        missing = [k for k in mine if k not in state]
        if missing:
            raise ValueError(f"CharBatches.load_state_dict: missing keys {missing}")
        got = {k: int(np.asarray(state[k])) for k in mine}
        layout = ("batch_size", "seq_length", "num_ids", "num_train_batches",
                  "num_val_batches", "num_test_batches")
        diff = [f"{k}: saved {got[k]}, here {mine[k]}" for k in layout if got[k] != mine[k]]
        if diff:
            raise ValueError("CharBatches.load_state_dict: the saved state is for another "
                             "layout (" + "; ".join(diff) + ")")
        for key, split in (("position", "train"), ("val_position", "val"), ("test_position", "test")):
            if not 0 <= got[key] < max(1, self.split_sizes[split]):
                raise ValueError(f"CharBatches.load_state_dict: {key}={got[key]} out of range "
                                 f"for {self.split_sizes[split]} {split} batches")
        if got["epoch"] < 0:
            raise ValueError(f"CharBatches.load_state_dict: epoch={got['epoch']} is negative")
        self.epoch = got["epoch"]
        self.position = got["position"]
        self._next["val"] = got["val_position"]
        self._next["test"] = got["test_position"]

    def __repr__(self) -> str:
        return (f"CharBatches(batch_size={self.batch_size}, seq_length={self.seq_length}, "
                f"batches={self.split_sizes}, epoch={self.epoch}, position={self.position})")
