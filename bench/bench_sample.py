"""Benchmark: the compiled per-step draw (``fastrnn.sampling.draw``) against the same rule in
NumPy (``fastrnn.sampling.draw_reference``).

One call draws one id per row of logits (N, V): the work of one sampling step. Cases: a
char-rnn vocabulary (V = 65) and a word-sized one (V = 10000), one row (interactive
sampling) and a batch of 32, plain / top-k / top-p. Both must return the same ids.

    pytest bench/bench_sample.py                  # pytest-benchmark, groups "sample-V..."
    python bench/bench_sample.py                  # prints the times and the speed-ups
"""
from __future__ import annotations

import timeit
from typing import Any, Dict, List, Tuple

import numpy as np
import pytest

from fastrnn.sampling import draw, draw_reference

#: (name, options) of the draws measured.
MODES: List[Tuple[str, Dict[str, Any]]] = [
    ("plain", dict(temperature=0.8)),
    ("top_k=40", dict(temperature=0.8, top_k=40)),
    ("top_p=0.9", dict(temperature=0.8, top_p=0.9)),
    ("argmax", dict(argmax=True)),
]
SIZES = [(1, 65), (32, 65), (1, 10_000), (32, 10_000)]


def inputs(N: int, V: int, dtype=np.float32) -> Tuple[np.ndarray, np.ndarray]:
    """Logits shaped like a trained model's (a few likely ids, a long tail) and uniforms."""
    rng = np.random.default_rng(N * 100_003 + V)
    x = rng.standard_normal((N, V)) * 2.0
    x[:, rng.integers(0, V, 5)] += 6.0
    return x.astype(dtype), rng.random(N)


CASES = [pytest.param(N, V, mode, opts, id=f"N{N}-V{V}-{mode}")
         for (N, V) in SIZES for mode, opts in MODES]


@pytest.mark.parametrize("N,V,mode,opts", CASES)
def test_draw_cython(benchmark, N, V, mode, opts):
    benchmark.group = f"sample-V{V}-N{N}-{mode}"
    x, u = inputs(N, V)
    ids = benchmark(draw, x, u, **opts)
    np.testing.assert_array_equal(ids, draw_reference(x, u, **opts))


@pytest.mark.parametrize("N,V,mode,opts", CASES)
def test_draw_numpy(benchmark, N, V, mode, opts):
    benchmark.group = f"sample-V{V}-N{N}-{mode}"
    x, u = inputs(N, V)
    ids = benchmark(draw_reference, x, u, **opts)
    np.testing.assert_array_equal(ids, draw(x, u, **opts))


def main() -> None:
    def best(fn, number: int) -> float:
        return min(timeit.repeat(fn, number=number, repeat=5)) / number

    print(f"{'N':>3} {'V':>6}  {'mode':<10} {'Cython':>10} {'NumPy':>10}  speed-up")
    for N, V in SIZES:
        x, u = inputs(N, V)
        for mode, opts in MODES:
            a, b = draw(x, u, **opts), draw_reference(x, u, **opts)
            assert np.array_equal(a, b), (N, V, mode)
            reps = max(1, 20_000 // (N * V // 64 + 1))
            t_cy = best(lambda: draw(x, u, **opts), reps)
            t_np = best(lambda: draw_reference(x, u, **opts), max(1, reps // 10))
            print(f"{N:>3} {V:>6}  {mode:<10} {t_cy * 1e6:8.1f}us {t_np * 1e6:8.1f}us  {t_np / t_cy:6.1f}x")


if __name__ == "__main__":
    main()
