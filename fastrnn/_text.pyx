# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Compiled text encoding for :mod:`fastrnn.data` (the extension module ``fastrnn._text``).

A ``str`` is stored by CPython as an array of 1-, 2- or 4-byte code points (PEP 393). The
encoder reads that array directly, with one loop per storage width, and maps every code
point through a dense lookup table ``table[code point] -> id`` (``-1`` for characters not in
the vocabulary). The loop runs without the GIL; the string is immutable and referenced by
the caller for the whole call.

This module is an implementation detail: use :class:`fastrnn.data.Vocab`.
"""
from libc.stdint cimport int32_t, uint8_t, uint16_t, uint32_t

import numpy as np

__all__ = ["encode"]

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


cdef Py_ssize_t _lookup(const char_t* s, Py_ssize_t n, const int32_t* table, Py_ssize_t size,
                        int32_t* out, bint skip, Py_ssize_t* bad) noexcept nogil:
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
            out[k] = v
            k += 1
        elif not skip:
            bad[0] = i
            return -1
    return k


def encode(str text not None, const int32_t[::1] table not None, bint skip):
    """Encode ``text`` with the lookup ``table`` (int32, indexed by code point, -1 = unknown).

    Returns ``(ids, bad)``: ``ids`` an int32 array of shape (len(text),), or shorter when
    ``skip`` drops unknown characters; ``bad`` is -1, or in strict mode (``skip`` false) the
    position of the first unknown character, in which case ``ids`` is None.
    """
    FASTRNN_UNICODE_READY(text)
    cdef Py_ssize_t n = PyUnicode_GET_LENGTH(text)
    cdef Py_ssize_t size = table.shape[0]
    if n == 0 or size == 0:
        if n == 0:
            return np.empty(0, dtype=np.int32), -1
        if skip:
            return np.empty(0, dtype=np.int32), -1
        return None, 0
    out = np.empty(n, dtype=np.int32)
    cdef int32_t[::1] o = out
    cdef int kind = PyUnicode_KIND(text)
    cdef void* data = PyUnicode_DATA(text)
    cdef const int32_t* t = &table[0]
    cdef int32_t* po = &o[0]
    cdef Py_ssize_t bad = -1
    cdef Py_ssize_t k
    with nogil:
        if kind == PyUnicode_1BYTE_KIND:
            k = _lookup(<const uint8_t*>data, n, t, size, po, skip, &bad)
        elif kind == PyUnicode_2BYTE_KIND:
            k = _lookup(<const uint16_t*>data, n, t, size, po, skip, &bad)
        else:
            k = _lookup(<const uint32_t*>data, n, t, size, po, skip, &bad)
    if k < 0:
        return None, bad
    if k < n:
        out = out[:k].copy()
    return out, -1
