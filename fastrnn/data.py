"""Character-level language-model data: a vocabulary, a default corpus and a batch loader.

The pieces of Karpathy's min-char-rnn / char-rnn data pipeline, in NumPy:

* :class:`Vocab` maps characters to integer ids and back (``char_to_ix`` / ``ix_to_char``).
  Encoding runs in the compiled module ``fastrnn._text`` (Cython), tens of times faster
  than ``[char_to_ix[ch] for ch in data]``.
* :class:`EncodedText` is a text as compact ids (1 byte per character for up to 256
  distinct characters, 2 up to 65,536) with its vocabulary and checksum;
  :meth:`EncodedText.from_file` reads a UTF-8 file chunk by chunk, so that a long text
  is never held whole as a ``str`` (which takes up to 4 bytes per character).
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

import codecs
import functools
import hashlib
import os
import sysconfig
from types import MappingProxyType
from typing import IO, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple, Union

import numpy as np

from . import _text  # the compiled encoder; there is deliberately no pure-Python fallback
from .safeio import open_regular

__all__ = [
    "Vocab",
    "EncodedText",
    "CharBatches",
    "TextFileError",
    "TextTooShortError",
    "UnknownCharacterError",
    "read_text_chunks",
    "default_corpus",
    "STDLIB_CORPUS_FILES",
]

_MAX_CODE_POINT = 0x10FFFF
#: Bytes read from a text file at a time (its str takes at most 4 times as much).
_CHUNK_BYTES = 1 << 18
#: Characters per piece when hashing a str's UTF-8 bytes.
_HASH_CHARS = 1 << 20
#: The types ids are kept in, smallest first; each holds the ids of up to that many characters.
_ID_DTYPES = ((np.dtype(np.uint8), 1 << 8), (np.dtype(np.uint16), 1 << 16), (np.dtype(np.int32), 1 << 31))


def _id_dtype(count: int) -> np.dtype:
    """The smallest of uint8, uint16, int32 that holds the ids 0 .. count-1."""
    for dtype, limit in _ID_DTYPES:
        if count <= limit:
            return dtype
    raise ValueError(f"{count} ids do not fit in int32")  # pragma: no cover - Unicode is smaller


class UnknownCharacterError(ValueError):
    """A character of the text is not in the vocabulary.

    Attributes:
        char: the first such character.
        position: its index in the text, in characters.
    """

    def __init__(self, message: str, char: str, position: int) -> None:
        super().__init__(message)
        self.char = char
        self.position = position


class TextTooShortError(ValueError):
    """A split of the text holds too few ids for one batch. The attributes say what
    was asked, so that a caller (the command line) can word it in its own terms.

    Attributes:
        split: "train", "val" or "test".
        size: ids in that split; num_ids: ids in the whole text.
        batch_size, seq_length: B and T; needed: B * T + 1, the fewest ids a split needs.
        val_fraction, test_fraction: the shares of the validation and test splits.
    """

    def __init__(self, message: str, *, split: str, size: int, num_ids: int, batch_size: int,
                 seq_length: int, val_fraction: float, test_fraction: float) -> None:
        super().__init__(message)
        self.split = split
        self.size = size
        self.num_ids = num_ids
        self.batch_size = batch_size
        self.seq_length = seq_length
        self.needed = batch_size * seq_length + 1
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction


class TextFileError(ValueError):
    """A file that is not usable as a text: empty, binary (NUL bytes), not UTF-8, or one
    that changed while it was read. The message names the file."""


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

    @property
    def id_dtype(self) -> np.dtype:
        """The smallest integer type that holds this vocabulary's ids: uint8 for up to 256
        characters, uint16 for up to 65,536, else int32."""
        return _id_dtype(len(self))

    def _check_id_dtype(self, where: str, dtype: object) -> np.dtype:
        try:
            dt = np.dtype(dtype)  # type: ignore[call-overload]
        except TypeError:
            raise TypeError(f"{where}: dtype must be a NumPy integer type, got {dtype!r}") from None
        limits = dict(_ID_DTYPES)
        if dt not in limits:
            raise TypeError(f"{where}: dtype must be uint8, uint16 or int32, got {dt}")
        if len(self) > limits[dt]:
            raise ValueError(f"{where}: dtype {dt} cannot hold the ids of {len(self)} characters; "
                             f"use {self.id_dtype}")
        return dt

    def encode(self, text: str, errors: str = "strict", dtype: object = np.int32) -> np.ndarray:
        """Character ids of ``text``: an array of shape (len(text),) of ``dtype``: int32
        (default), or uint16 / uint8 when they hold every id (:attr:`id_dtype` is the
        smallest that does).

        ``errors="strict"`` raises :class:`UnknownCharacterError` (a ValueError) naming the
        first character that is not in the vocabulary and its position; ``errors="skip"``
        drops such characters (the result is then shorter than the text).
        """
        if not isinstance(text, str):
            raise TypeError(f"Vocab.encode: text must be a str, got {type(text).__name__}")
        if errors not in ("strict", "skip"):
            raise ValueError(f"Vocab.encode: errors must be 'strict' or 'skip', got {errors!r}")
        dt = self._check_id_dtype("Vocab.encode", dtype)
        ids, bad = _text.encode(text, self._table, errors == "skip", dt)
        if ids is None:
            raise self._unknown("Vocab.encode", text[bad], bad)
        return ids

    @staticmethod
    def _unknown(where: str, ch: str, position: int) -> UnknownCharacterError:
        return UnknownCharacterError(
            f"{where}: character {ch!r} (U+{ord(ch):04X}) at position {position} is not in the "
            f"vocabulary; use errors='skip' to drop unknown characters", ch, position)

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


# ---------------------------------------------------------------- text files and encoded texts


def _decoded_chunks(f: IO[bytes], name: str, chunk_size: int) -> Iterator[Tuple[bytes, str]]:
    """(raw bytes, their text) of a binary file, ``chunk_size`` bytes at a time (a UTF-8
    sequence cut by a chunk's end is completed from the next). TextFileError naming
    ``name`` if the file is empty, holds a NUL byte or is not UTF-8."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    offset = 0
    while True:
        raw = f.read(chunk_size)
        if b"\0" in raw:
            raise TextFileError(f"{name} looks like a binary file (it contains NUL bytes), not text")
        try:
            text = decoder.decode(raw, final=not raw)
        except UnicodeDecodeError as e:
            # e.object is the bytes held back from the previous chunk followed by raw
            at = offset - (len(e.object) - len(raw)) + e.start
            raise TextFileError(f"{name} is not UTF-8 text (invalid byte 0x{e.object[e.start]:02x} "
                                f"at offset {at})") from None
        if not raw:
            if offset == 0:
                raise TextFileError(f"{name} is empty")
            return
        offset += len(raw)
        yield raw, text


def read_text_chunks(path: Union[str, "os.PathLike[str]"], chunk_size: int = _CHUNK_BYTES) -> Iterator[str]:
    """The text of a UTF-8 file, in pieces of at most ``chunk_size`` bytes (joined, they
    are the whole text). Raises :class:`TextFileError` (naming the file) if it is empty,
    binary (NUL bytes) or not UTF-8 (with the offset of the first bad byte), OSError if it
    cannot be read."""
    name = os.fspath(path)
    with open_regular(name) as f:
        for _, text in _decoded_chunks(f, name, chunk_size):
            yield text


def _sha256_of_text(text: str) -> str:
    h = hashlib.sha256()
    for i in range(0, len(text), _HASH_CHARS):  # in pieces: no second copy of a long text
        h.update(text[i:i + _HASH_CHARS].encode("utf-8", "surrogatepass"))
    return h.hexdigest()


class EncodedText:
    """A text as character ids with its vocabulary: what training and evaluation need of
    it, without the text itself.

    The ids are kept in :attr:`Vocab.id_dtype` (1 byte per character for vocabularies of
    up to 256 characters, 2 up to 65,536), read-only. :meth:`from_file` reads a UTF-8 file
    chunk by chunk and never holds the whole text as a ``str``, so that a long text takes
    about the room of its ids; :meth:`from_text` encodes a ``str``.

    Attributes:
        ids: 1-D array (num_ids,) of ``vocab.id_dtype``, read-only.
        vocab: the :class:`Vocab` of the ids.
        num_chars: characters in the text: ``len(ids)`` plus those skipped as unknown.
        skipped: characters dropped as not in the vocabulary (``errors="skip"``).
        sha256: hex SHA-256 of the text's UTF-8 bytes (of the whole text, skipped
            characters included).
        source: the file it was read from, or None.
    """

    __slots__ = ("ids", "vocab", "num_chars", "sha256", "source")

    def __init__(self, ids: np.ndarray, vocab: Vocab, num_chars: int, sha256: str,
                 source: Optional[str] = None) -> None:
        if not isinstance(vocab, Vocab):
            raise TypeError(f"EncodedText: vocab must be a Vocab, got {type(vocab).__name__}")
        a = np.asarray(ids)
        if a.ndim != 1 or a.dtype != vocab.id_dtype:
            raise TypeError(f"EncodedText: ids must be a 1-D array of {vocab.id_dtype} (the vocabulary's "
                            f"id_dtype), got {a.dtype} of shape {a.shape}")
        if not a.size <= int(num_chars):
            raise ValueError(f"EncodedText: num_chars={num_chars} is less than the {a.size} ids")
        if a.flags.writeable:
            a = a.view()
            a.flags.writeable = False
        self.ids = a
        self.vocab = vocab
        self.num_chars = int(num_chars)
        self.sha256 = str(sha256)
        self.source = source

    @property
    def skipped(self) -> int:
        return self.num_chars - int(self.ids.size)

    def __len__(self) -> int:
        """Number of ids."""
        return int(self.ids.size)

    def __repr__(self) -> str:
        src = f", source={self.source!r}" if self.source else ""
        return (f"EncodedText({self.ids.size:,} ids of {self.ids.dtype}, {len(self.vocab)} distinct "
                f"characters, skipped={self.skipped}{src})")

    @classmethod
    def from_text(cls, text: str, vocab: Optional[Vocab] = None, errors: str = "strict") -> "EncodedText":
        """The ids of ``text`` with ``vocab`` (default: :meth:`Vocab.from_text`); ``errors``
        as for :meth:`Vocab.encode`."""
        if not isinstance(text, str):
            raise TypeError(f"EncodedText.from_text: text must be a str, got {type(text).__name__}")
        vocab = Vocab.from_text(text) if vocab is None else vocab
        ids = vocab.encode(text, errors, dtype=vocab.id_dtype)
        return cls(ids, vocab, len(text), _sha256_of_text(text))

    @classmethod
    def from_file(cls, path: Union[str, "os.PathLike[str]"], vocab: Optional[Vocab] = None,
                  errors: str = "strict", chunk_size: int = _CHUNK_BYTES) -> "EncodedText":
        """The ids of a UTF-8 text file, read ``chunk_size`` bytes at a time.

        Without ``vocab``, the vocabulary is every character of the file sorted by code
        point (as :meth:`Vocab.from_text`), found in a first pass; the ids are written in a
        second. ``errors`` as for :meth:`Vocab.encode`: "strict" raises
        :class:`UnknownCharacterError` with the character's position in the text, "skip"
        drops unknown characters. Raises :class:`TextFileError` if the file is empty,
        binary, not UTF-8 or changes between the passes, OSError if it cannot be read,
        :class:`fastrnn.safeio.NotARegularFile` at once for a FIFO, device or socket
        (which a read could block on).
        """
        if errors not in ("strict", "skip"):
            raise ValueError(f"EncodedText.from_file: errors must be 'strict' or 'skip', got {errors!r}")
        if vocab is not None and not isinstance(vocab, Vocab):
            raise TypeError(f"EncodedText.from_file: vocab must be a Vocab or None, got {type(vocab).__name__}")
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"EncodedText.from_file: chunk_size must be a positive int, got {chunk_size!r}")
        name = os.fspath(path)
        with open_regular(name) as f:
            # pass 1: check the bytes, count the characters, hash, find the vocabulary
            h = hashlib.sha256()
            n = 0
            seen = np.zeros(_MAX_CODE_POINT + 1, np.uint8) if vocab is None else None
            for raw, text in _decoded_chunks(f, name, chunk_size):
                h.update(raw)
                n += len(text)
                if seen is not None:
                    _text.mark(text, seen)
            found = seen is not None
            if seen is not None:
                vocab = Vocab.from_array(np.flatnonzero(seen))
                del seen
            assert vocab is not None
            # pass 2: the ids, straight into an array of the vocabulary's compact type
            changed = TextFileError(f"{name} changed while it was read; read it again")
            f.seek(0)
            ids = np.empty(n, vocab.id_dtype)
            k = pos = 0
            for _, text in _decoded_chunks(f, name, chunk_size):
                if pos + len(text) > n:
                    raise changed
                got, bad = _text.encode_into(text, vocab._table, errors == "skip", ids[k:])
                if got < 0:
                    if found:
                        raise changed
                    raise vocab._unknown(name, text[bad], pos + bad)
                k += got
                pos += len(text)
            if pos != n:
                raise changed
        return cls(ids[:k], vocab, n, h.hexdigest(), source=name)


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

    The ids are kept once, in the smallest of uint8, uint16 and int32 that holds them;
    the splits and their streams are views of them, and only a batch being handed out is
    converted to int32. By default the loader keeps its own copy of ``ids``; with
    ``copy=False`` it uses a C-contiguous uint8, uint16 or int32 array as it is (no copy:
    it must then not change while the loader is used; :class:`EncodedText` ids are
    read-only).

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
                 val_fraction: float = 0.05, test_fraction: float = 0.0, *, copy: bool = True) -> None:
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
        top = int(a.max()) if a.size else 0
        if a.size and (int(a.min()) < 0 or top > np.iinfo(np.int32).max):
            raise ValueError("CharBatches: ids must lie in [0, 2**31 - 1]")
        usable = a.dtype in (np.uint8, np.uint16, np.int32) and a.flags.c_contiguous
        if copy or not usable:  # a private copy: later changes to `ids` do not leak in
            a = a.astype(_id_dtype(top + 1))

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
                raise TextTooShortError(
                    f"CharBatches: text too short: the {split} split has {size} ids (of {n} in "
                    f"all, val_fraction={self.val_fraction}, test_fraction={self.test_fraction}) "
                    f"but batch_size={B} x seq_length={T} needs at least {B * T + 1}; use "
                    f"smaller batch_size/seq_length, more text, or a different split",
                    split=split, size=size, num_ids=n, batch_size=B, seq_length=T,
                    val_fraction=self.val_fraction, test_fraction=self.test_fraction)
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
        return (np.array(self._x[split][:, s], dtype=np.int32, order="C"),
                np.array(self._y[split][:, s], dtype=np.int32, order="C"))

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
        return np.array(x, dtype=np.int32, order="C"), np.array(y, dtype=np.int32, order="C")

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
