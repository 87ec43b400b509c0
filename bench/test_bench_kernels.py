"""pytest-benchmark suites: each cell and shape, fastrnn against the NumPy reference and,
when it is installed, PyTorch. Every benchmark first checks its result against the
reference, so a fast wrong kernel cannot pass.

    pytest bench/test_bench_kernels.py --benchmark-group-by=group

Groups are "<cell> <shape>"; compare the rows within a group. The shapes are the
standard ones (T, N, D, H): S1 (100, 64, 512, 512), S2 (50, 50, 128, 256),
S3 (100, 1, 256, 256), and min-char-rnn's (25, 1, 65, 100).
"""
from __future__ import annotations

import numpy as np
import pytest

from fastrnn import functional, reference

import compare

try:
    import torch
except ImportError:
    torch = None

SHAPES = dict(compare.SHAPES, minchar=(25, 1, 65, 100))
CASES = [(cell, shape) for shape in SHAPES for cell in ("rnn", "lstm", "gru")]


def _ids(case):
    return f"{case[0]}-{case[1]}"


@pytest.fixture(scope="module", params=CASES, ids=_ids)
def case(request):
    cell, shape = request.param
    p = compare.problem(cell, *SHAPES[shape])
    return cell, shape, p


def _check_against_reference(cell, p, run) -> None:
    """The first 5 steps of the benchmarked call equal the reference's."""
    T = min(p["x"].shape[1], 5)
    small = dict(p, x=p["x"][:, :T], dh=p["dh"][:, :T])
    h_ref, grads_ref = compare.contract_call(reference, cell, small)()
    h = run()[0]
    h = h.detach().numpy() if hasattr(h, "detach") else h
    np.testing.assert_allclose(h[:, :T], h_ref, rtol=1e-4, atol=1e-5)


def test_fastrnn(benchmark, case):
    cell, shape, p = case
    benchmark.group = f"{cell} {shape}"
    run = compare.contract_call(functional, cell, p)
    _check_against_reference(cell, p, run)
    h, grads = benchmark(run)
    assert all(np.all(np.isfinite(g)) for g in grads)


def test_reference(benchmark, case):
    cell, shape, p = case
    if shape == "S1":
        pytest.skip("the reference takes seconds per call at S1; compare.py times it once")
    benchmark.group = f"{cell} {shape}"
    run = compare.contract_call(reference, cell, p)
    benchmark.pedantic(run, rounds=3, iterations=1)


@pytest.mark.skipif(torch is None, reason="PyTorch is an optional peer")
def test_torch(benchmark, case):
    cell, shape, p = case
    benchmark.group = f"{cell} {shape}"
    run = compare.torch_call(cell, p)
    _check_against_reference(cell, p, run)
    benchmark(run)
