"""`fastrnn check`: every compiled kernel against the NumPy reference, on random data.

Each cell variant runs forward and backward (all outputs, final states and every
gradient) in float32 and float64 over shapes that include 1s and sizes that fit no SIMD
width, and the worst error is compared with the tolerance: 1e-10 absolute for float64,
1e-4 relative to max(1, |reference|) for float32. One mid-size shape is also timed
against the reference.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np

from . import functional, reference

__all__ = ["VARIANTS", "CheckRow", "run_check", "format_table", "random_problem"]

# name -> (cell, keyword arguments of sequence_forward)
VARIANTS: Dict[str, Tuple[str, dict]] = {
    "rnn-tanh": ("rnn", {"nonlinearity": "tanh"}),
    "rnn-relu": ("rnn", {"nonlinearity": "relu"}),
    "lstm": ("lstm", {}),
    "gru": ("gru", {"reset_after": True}),
    "gru-reset-before": ("gru", {"reset_after": False}),
}
GATES = {"rnn": 1, "lstm": 4, "gru": 3}
TOLERANCE = {np.float64: 1e-10, np.float32: 1e-4}
CHECK_SHAPES = [(1, 1, 1, 1), (3, 5, 7, 13), (2, 4, 33, 129), (13, 7, 16, 8)]  # (N, T, D, H)
SPEED_SHAPE = (32, 32, 64, 128)


@dataclass
class CheckRow:
    variant: str
    dtype: str
    forward_error: float
    backward_error: float
    tolerance: float
    speedup: float

    @property
    def ok(self) -> bool:
        return self.forward_error <= self.tolerance and self.backward_error <= self.tolerance


def random_problem(cell: str, N: int, T: int, D: int, H: int, dtype, rng: np.random.Generator):
    """x (N,T,D), params with torch's uniform ±1/√H init, state0, upstream gradients."""
    G = GATES[cell]
    k = 1.0 / np.sqrt(max(H, 1))
    shapes = [(D, G * H), (H, G * H), (G * H,)] + ([(G * H,)] if cell == "gru" else [])
    params = tuple(rng.uniform(-k, k, s).astype(dtype) for s in shapes)
    x = rng.standard_normal((N, T, D)).astype(dtype)
    state0 = tuple(rng.standard_normal((N, H)).astype(dtype) for _ in range(2 if cell == "lstm" else 1))
    dh = rng.standard_normal((N, T, H)).astype(dtype)
    dfinal = tuple(rng.standard_normal((N, H)).astype(dtype) for _ in state0)
    return x, params, state0, dh, dfinal


def _run(module, cell, kwargs, problem, lengths=None):
    x, params, state0, dh, dfinal = problem
    h, final, cache = module.sequence_forward(cell, x, params, state0, lengths=lengths, **kwargs)
    dx, dstate0, dparams = module.sequence_backward(dh, cache, dfinal)
    return [h, *final], [dx, *dstate0, *dparams]


def _error(got: Sequence[np.ndarray], want: Sequence[np.ndarray], dtype) -> float:
    worst = 0.0
    for a, b in zip(got, want):
        if b.size == 0:
            continue
        diff = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))
        if dtype == np.float32:
            diff /= max(1.0, float(np.max(np.abs(b))))
        if not np.isfinite(diff):
            return float("inf")
        worst = max(worst, diff)
    return worst


def _best_time(fn: Callable[[], object], repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def run_check(seed: int = 0, repeats: int = 3) -> List[CheckRow]:
    rng = np.random.default_rng(seed)
    rows = []
    for name, (cell, kwargs) in VARIANTS.items():
        for dtype in (np.float32, np.float64):
            fwd = bwd = 0.0
            for N, T, D, H in CHECK_SHAPES:
                problem = random_problem(cell, N, T, D, H, dtype, rng)
                for lengths in (None, rng.integers(0, T + 1, N)):
                    got = _run(functional, cell, kwargs, problem, lengths)
                    want = _run(reference, cell, kwargs, problem, lengths)
                    fwd = max(fwd, _error(got[0], want[0], dtype))
                    bwd = max(bwd, _error(got[1], want[1], dtype))
            problem = random_problem(cell, *SPEED_SHAPE, dtype, rng)
            t_fast = _best_time(lambda: _run(functional, cell, kwargs, problem), repeats)
            t_ref = _best_time(lambda: _run(reference, cell, kwargs, problem), repeats)
            rows.append(CheckRow(name, np.dtype(dtype).name, fwd, bwd, TOLERANCE[dtype], t_ref / t_fast))
    return rows


def format_table(rows: Sequence[CheckRow]) -> str:
    N, T, D, H = SPEED_SHAPE
    head = f"{'cell':<17}{'dtype':<9}{'forward err':>12}{'backward err':>14}{'tolerance':>11}" \
           f"{'speed-up':>10}  result"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.variant:<17}{r.dtype:<9}{r.forward_error:>12.1e}{r.backward_error:>14.1e}"
            f"{r.tolerance:>11.0e}{r.speedup:>9.1f}x  {'ok' if r.ok else 'MISMATCH'}"
        )
    lines.append(f"speed-up: forward+backward against fastrnn.reference at N={N} T={T} D={D} H={H}")
    return "\n".join(lines)
