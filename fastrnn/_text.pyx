# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Compiled text encoding for :mod:`fastrnn.data` (the extension module ``fastrnn._text``).

A ``str`` is stored by CPython as an array of 1-, 2- or 4-byte code points (PEP 393). The
encoder reads that array directly, with one loop per storage width, and maps every code
point through a dense lookup table ``table[code point] -> id`` (``-1`` for characters not in
the vocabulary), into an id array of 1, 2 or 4 bytes per id (uint8, uint16, int32), so that
a long text's ids take no more room than its vocabulary needs. :func:`mark` records which
code points a text holds (to build a vocabulary chunk by chunk). The loops run without the
GIL; the string is immutable and referenced by the caller for the whole call.

This module is an implementation detail: use :class:`fastrnn.data.Vocab`.
"""
from libc.stdint cimport int32_t, uint8_t, uint16_t, uint32_t

import numpy as np

__all__ = ["encode", "encode_into", "mark"]

cdef extern from *:
    """
    #if PY_VERSION_HEX < 0x030C0000
    #define FASTRNN_UNICODE_READY(o) PyUnicode_READY(o)
    #else
    #define FASTRNN_UNICODE_READY(o) 0
    #endif
    """
    int FASTRNN_UNICODE_READY(object o) except -1

cdef extern from "Python.h":
    enum:
        PyUnicode_1BYTE_KIND
        PyUnicode_2BYTE_KIND
        PyUnicode_4BYTE_KIND
    int PyUnicode_KIND(object o)
    void* PyUnicode_DATA(object o)
    Py_ssize_t PyUnicode_GET_LENGTH(object o)


ctypedef fused char_t:
    uint8_t
    uint16_t
    uint32_t

ctypedef fused id_t:  # the id arrays' element types: compact ones for small vocabularies
    uint8_t
    uint16_t
    int32_t


cdef Py_ssize_t _lookup(const char_t* s, Py_ssize_t n, const int32_t* table, Py_ssize_t size,
                        id_t* out, bint skip, Py_ssize_t* bad) noexcept nogil:
    """Map s[0:n] through table into out. Returns the number of ids written, or -1 with
    *bad set to the position of the first unknown character (strict mode only)."""
    cdef Py_ssize_t i, k = 0
    cdef uint32_t c
    cdef int32_t v
    # A table of 256 or more entries covers every 1-byte code point: no bounds check.
    cdef bint checked = not (char_t is uint8_t and size >= 256)
    for i in range(n):
        c = s[i]
        if checked and c >= <uint32_t>size:
            v = -1
        else:
            v = table[c]
        if v >= 0:
            out[k] = <id_t>v
            k += 1
        elif not skip:
            bad[0] = i
            return -1
    return k


def encode_into(str text not None, const int32_t[::1] table not None, bint skip, id_t[::1] out not None):
    """Encode ``text`` with the lookup ``table`` (int32, indexed by code point, -1 =
    unknown) into ``out`` (uint8, uint16 or int32, at least ``len(text)`` long; every id in
    the table must fit its type).

    Returns ``(k, bad)``: ``k`` ids written to ``out[:k]`` (fewer than ``len(text)`` when
    ``skip`` drops unknown characters) and ``bad`` -1; or in strict mode (``skip`` false)
    ``k`` = -1 and ``bad`` the position of the first unknown character.
    """
    FASTRNN_UNICODE_READY(text)
    cdef Py_ssize_t n = PyUnicode_GET_LENGTH(text)
    cdef Py_ssize_t size = table.shape[0]
    if out.shape[0] < n:
        raise ValueError(f"encode_into: out has {out.shape[0]} entries, the text {n} characters")
    if n == 0:
        return 0, -1
    if size == 0:
        return (0, -1) if skip else (-1, 0)
    cdef int kind = PyUnicode_KIND(text)
    cdef void* data = PyUnicode_DATA(text)
    cdef const int32_t* t = &table[0]
    cdef id_t* po = &out[0]
    cdef Py_ssize_t bad = -1
    cdef Py_ssize_t k
    with nogil:
        if kind == PyUnicode_1BYTE_KIND:
            k = _lookup(<const uint8_t*>data, n, t, size, po, skip, &bad)
        elif kind == PyUnicode_2BYTE_KIND:
            k = _lookup(<const uint16_t*>data, n, t, size, po, skip, &bad)
        else:
            k = _lookup(<const uint32_t*>data, n, t, size, po, skip, &bad)
    return k, bad


def encode(str text not None, const int32_t[::1] table not None, bint skip, dtype=np.int32):
    """Encode ``text`` with the lookup ``table`` (int32, indexed by code point, -1 = unknown).

    Returns ``(ids, bad)``: ``ids`` an array of ``dtype`` (int32, uint16 or uint8) of shape
    (len(text),), or shorter when ``skip`` drops unknown characters; ``bad`` is -1, or in
    strict mode (``skip`` false) the position of the first unknown character, in which
    case ``ids`` is None.
    """
    out = np.empty(len(text), dtype=dtype)
    k, bad = encode_into(text, table, skip, out)
    if k < 0:
        return None, bad
    if k < out.shape[0]:
        out = out[:k].copy()
    return out, -1


cdef void _mark(const char_t* s, Py_ssize_t n, uint8_t* seen) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        seen[s[i]] = 1


def mark(str text not None, uint8_t[::1] seen not None):
    """Set ``seen[c] = 1`` for the code point c of every character of ``text``; ``seen``
    has 0x110000 entries (one per code point)."""
    FASTRNN_UNICODE_READY(text)
    if seen.shape[0] < 0x110000:
        raise ValueError(f"mark: seen needs 0x110000 entries, got {seen.shape[0]}")
    cdef Py_ssize_t n = PyUnicode_GET_LENGTH(text)
    if n == 0:
        return
    cdef int kind = PyUnicode_KIND(text)
    cdef void* data = PyUnicode_DATA(text)
    cdef uint8_t* p = &seen[0]
    with nogil:
        if kind == PyUnicode_1BYTE_KIND:
            _mark(<const uint8_t*>data, n, p)
        elif kind == PyUnicode_2BYTE_KIND:
            _mark(<const uint16_t*>data, n, p)
        else:
            _mark(<const uint32_t*>data, n, p)
