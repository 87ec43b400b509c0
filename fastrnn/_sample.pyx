# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""Compiled per-step draw for :mod:`fastrnn.sampling` (the extension module ``fastrnn._sample``).

One call draws one token id per row of a (N, V) array of logits, with the uniforms supplied
by the caller (so that a seeded ``np.random.Generator`` reproduces a draw exactly). The rule,
per row ``x`` (all arithmetic in float64, whatever the logits' dtype):

1. ``argmax``: return the index of the largest logit (the lowest such index on ties).
2. ``p[i] = exp((x[i] - max(x)) / temperature)`` (unnormalised softmax).
3. top-k (``0 < top_k < V``): rank the ids by logit, largest first, ties by lower id, and keep
   the first ``top_k``.
4. top-p (``top_p < 1``): ``total`` = the sum of the kept ``p`` in id order; walk the kept ids
   in rank order adding up their ``p``, and keep them up to and including the first one at
   which the sum reaches ``top_p * total`` (all of them if rounding never lets it reach;
   always at least one).
5. inverse CDF: ``c`` = the running sum, in id order, of ``p`` over the kept ids (0 for the
   others); return the first id with ``c[i] > u * c[V-1]``, or, if rounding leaves none, the
   last kept id with ``p > 0``.

Every sum is a plain left-to-right sum, so that ``fastrnn.sampling.draw_reference`` (NumPy,
``np.cumsum``) follows the same rule operation by operation. The loop over rows runs
without the GIL and touches no Python object.

This module is an implementation detail: use :func:`fastrnn.sampling.draw`.
"""
from libc.math cimport exp, INFINITY
from libc.stdint cimport int64_t, uint8_t
from libc.stdlib cimport malloc, free, qsort
from libc.string cimport memcpy, memset
from cython cimport floating

import numpy as np

__all__ = ["draw"]


ctypedef struct Item:
    double x          # the logit, the ranking key
    Py_ssize_t id     # the token id, the tie-breaker (lower ranks first)


cdef inline bint _ahead(const Item* a, const Item* b) noexcept nogil:
    """True if a ranks before b: larger logit, or equal logit and lower id."""
    return a.x > b.x or (a.x == b.x and a.id < b.id)


cdef void _sift_down(Item* h, Py_ssize_t n, Py_ssize_t i, bint worst) noexcept nogil:
    """Restores the heap property below h[i]: the best-ranked item on top (worst = False,
    to pop in rank order), or the worst-ranked one (worst = True, to keep the top k)."""
    cdef Item it = h[i]
    cdef Py_ssize_t c
    while True:
        c = 2 * i + 1
        if c >= n:
            break
        if c + 1 < n and (_ahead(&h[c], &h[c + 1]) if worst else _ahead(&h[c + 1], &h[c])):
            c += 1
        if (_ahead(&it, &h[c]) if worst else _ahead(&h[c], &it)):
            h[i] = h[c]
            i = c
        else:
            break
    h[i] = it


cdef void _heapify(Item* h, Py_ssize_t n, bint worst) noexcept nogil:
    cdef Py_ssize_t i = n // 2 - 1
    while i >= 0:
        _sift_down(h, n, i, worst)
        i -= 1


cdef Py_ssize_t _pop(Item* h, Py_ssize_t* n, bint worst) noexcept nogil:
    """Removes the top of the heap h[0:n[0]] and returns its id."""
    cdef Py_ssize_t top = h[0].id
    n[0] -= 1
    if n[0] > 0:
        h[0] = h[n[0]]
        _sift_down(h, n[0], 0, worst)
    return top


cdef int _cmp_ids(const void* a, const void* b) noexcept nogil:
    cdef Py_ssize_t x = (<const Py_ssize_t*>a)[0], y = (<const Py_ssize_t*>b)[0]
    return (x > y) - (x < y)


cdef void _ascending(const Py_ssize_t* ids, Py_ssize_t cnt, Py_ssize_t V, uint8_t* mark,
                     Py_ssize_t* out) noexcept nogil:
    """out[0:cnt] = ids[0:cnt] (distinct ids < V) in ascending order: a sort for few ids, a
    scan of a V-entry mark table for many."""
    cdef Py_ssize_t i, j = 0
    if cnt * 16 <= V or cnt <= 32:
        memcpy(out, ids, <size_t>cnt * sizeof(Py_ssize_t))
        qsort(out, <size_t>cnt, sizeof(Py_ssize_t), _cmp_ids)
    else:
        memset(mark, 0, <size_t>V)
        for i in range(cnt):
            mark[ids[i]] = 1
        for i in range(V):
            if mark[i]:
                out[j] = i
                j += 1


cdef inline double _sum(const double* p, const Py_ssize_t* ids, Py_ssize_t cnt) noexcept nogil:
    cdef Py_ssize_t j
    cdef double s = 0.0
    for j in range(cnt):
        s += p[ids[j]]
    return s


cdef Py_ssize_t _invert(const double* p, const Py_ssize_t* ids, Py_ssize_t cnt, double total,
                        double u) noexcept nogil:
    """Inverse-CDF draw over ids[0:cnt] (ascending; NULL: all ids 0 .. cnt-1) whose p add
    up to total: the first id at which the running sum exceeds u * total, else the last id
    with p > 0."""
    cdef Py_ssize_t j, i, last = -1
    cdef double target = u * total, cum = 0.0
    for j in range(cnt):
        i = j if ids == NULL else ids[j]
        cum += p[i]
        if p[i] > 0.0:
            last = i
        if cum > target:
            return i
    return last


cdef Py_ssize_t _draw_row(const floating* x, Py_ssize_t V, double temperature, Py_ssize_t top_k,
                          double top_p, bint argmax, double u, double* p, Item* heap,
                          Py_ssize_t* order, Py_ssize_t* kept, uint8_t* mark) noexcept nogil:
    """One row's draw; -1 if the row holds NaN or +inf or only -inf."""
    cdef Py_ssize_t i, r, n, best = 0, cnt
    cdef double m = x[0], v, s, thr, total = 0.0
    cdef bint bad = m != m
    cdef Item it
    for i in range(1, V):
        v = x[i]
        bad |= v != v
        if v > m:
            m = v
            best = i
    if bad or not (-INFINITY < m < INFINITY):
        return -1
    if argmax:
        return best

    if 0 < top_k < V:
        # The k best-ranked items, kept in a heap with the worst of them on top.
        for i in range(top_k):
            heap[i].x = x[i]
            heap[i].id = i
        _heapify(heap, top_k, True)
        for i in range(top_k, V):
            it.x = x[i]
            it.id = i
            if _ahead(&it, &heap[0]):
                heap[0] = it
                _sift_down(heap, top_k, 0, True)
        n = top_k
        while n > 0:  # rank order, best first: order[0 .. k-1]
            r = n - 1
            order[r] = _pop(heap, &n, True)
        cnt = top_k
        for r in range(cnt):  # only the kept ids need a probability
            i = order[r]
            p[i] = exp((<double>x[i] - m) / temperature)
        _ascending(order, cnt, V, mark, kept)
        total = _sum(p, kept, cnt)
        if top_p < 1.0:
            thr = top_p * total
            s = 0.0
            for r in range(cnt):
                s += p[order[r]]
                if s >= thr:
                    break
            if r + 1 < cnt:
                cnt = r + 1
                _ascending(order, cnt, V, mark, kept)
                total = _sum(p, kept, cnt)
        return _invert(p, kept, cnt, total, u)

    for i in range(V):  # three simple loops: the first vectorises, the exp calls pipeline
        p[i] = (<double>x[i] - m) / temperature
    for i in range(V):
        p[i] = exp(p[i])
    for i in range(V):
        total += p[i]
    if not top_p < 1.0:
        return _invert(p, NULL, V, total, u)

    # Nucleus: pop the ids in rank order until their mass reaches top_p * total.
    for i in range(V):
        heap[i].x = x[i]
        heap[i].id = i
    n = V
    _heapify(heap, n, False)
    thr = top_p * total
    s = 0.0
    cnt = 0
    while n > 0:
        i = _pop(heap, &n, False)
        order[cnt] = i
        cnt += 1
        s += p[i]
        if s >= thr:
            break
    _ascending(order, cnt, V, mark, kept)
    return _invert(p, kept, cnt, _sum(p, kept, cnt), u)


cdef Py_ssize_t _draw_rows(const floating[:, ::1] x, const double[::1] u, double temperature,
                           Py_ssize_t top_k, double top_p, bint argmax, int64_t[::1] out) except -3:
    """Fills out; returns -1 on success, or the first bad row (out of memory: MemoryError)."""
    cdef Py_ssize_t N = x.shape[0], V = x.shape[1], row, k
    cdef bint filter = (not argmax) and ((0 < top_k < V) or top_p < 1.0)
    cdef double* p = NULL
    cdef Item* heap = NULL
    cdef Py_ssize_t* order = NULL
    cdef Py_ssize_t* kept = NULL
    cdef uint8_t* mark = NULL
    cdef Py_ssize_t failed = -1
    if N == 0:
        return -1
    with nogil:
        if not argmax:
            p = <double*>malloc(<size_t>V * sizeof(double))
        if filter:
            heap = <Item*>malloc(<size_t>V * sizeof(Item))
            order = <Py_ssize_t*>malloc(<size_t>V * sizeof(Py_ssize_t))
            kept = <Py_ssize_t*>malloc(<size_t>V * sizeof(Py_ssize_t))
            mark = <uint8_t*>malloc(<size_t>V)
        if (not argmax and p == NULL) or (filter and (heap == NULL or order == NULL or kept == NULL
                                                      or mark == NULL)):
            failed = -2
        else:
            for row in range(N):
                k = _draw_row(&x[row, 0], V, temperature, top_k, top_p, argmax, u[row],
                              p, heap, order, kept, mark)
                if k < 0:
                    failed = row
                    break
                out[row] = k
        free(p)
        free(heap)
        free(order)
        free(kept)
        free(mark)
    if failed == -2:
        raise MemoryError(f"draw: cannot allocate work space for V = {V}")
    return failed


def draw(logits, u, double temperature, Py_ssize_t top_k, double top_p, bint argmax):
    """Draws one id per row: logits (N, V) C-contiguous float32 or float64, u (N,) float64
    uniforms in [0, 1) (unused with ``argmax``). ``top_k <= 0`` or ``>= V`` and ``top_p >= 1``
    disable those filters; ``temperature`` must be > 0 unless ``argmax``.

    Returns an int64 array (N,). ValueError for a row whose logits hold NaN or +inf or are all
    -inf, and for a uniform outside [0, 1). Arguments are assumed validated by the caller
    (:func:`fastrnn.sampling.draw`); only what would make the loop unsafe is checked here.
    """
    if logits.ndim != 2:
        raise ValueError(f"draw: logits must have shape (N, V), got {logits.shape}")
    cdef Py_ssize_t N = logits.shape[0], V = logits.shape[1]
    cdef const double[::1] uu = u
    if uu.shape[0] != N:
        raise ValueError(f"draw: u must have shape (N,) = ({N},), got ({uu.shape[0]},)")
    if V == 0 and N > 0:
        raise ValueError("draw: logits have V = 0 columns: nothing to draw from")
    if not argmax:
        if not temperature > 0.0:
            raise ValueError(f"draw: temperature must be > 0, got {temperature}")
        for i in range(N):
            if not (0.0 <= uu[i] < 1.0):
                raise ValueError(f"draw: u[{i}] = {uu[i]} is not in [0, 1)")
    out = np.empty(N, dtype=np.int64)
    cdef int64_t[::1] o = out
    cdef Py_ssize_t bad
    if logits.dtype == np.float32:
        bad = _draw_rows[float](logits, uu, temperature, top_k, top_p, argmax, o)
    elif logits.dtype == np.float64:
        bad = _draw_rows[double](logits, uu, temperature, top_k, top_p, argmax, o)
    else:
        raise TypeError(f"draw: logits must be float32 or float64, got {logits.dtype}")
    if bad >= 0:
        raise ValueError(f"draw: logits row {bad} contains NaN or +inf, or only -inf")
    return out
