"""Bitwise reproducibility of the compiled kernels.

The kernels split work between threads without ever splitting a reduction, so every
output and every gradient must be bit-for-bit the same (np.array_equal) for 1, 2 and 3
threads (3 oversubscribes this 2-core machine) and across repeated calls.
"""
from __future__ import annotations

import numpy as np
import pytest

from conftest import (
    DTYPES,
    STEP_VARIANTS,
    VARIANTS,
    assert_all_equal,
    make_inputs,
    run_contract_sequence_inputs,
    run_contract_step_inputs,
    run_sequence_inputs,
)
from fastrnn import _core
from fastrnn import functional as F

THREAD_COUNTS = (1, 2, 3)
# (N, T, D, H): large enough that every thread gets columns of every product, and a
# narrow one (H=5: fewer column panels than threads) where threads split rows instead.
SHAPES = {"N20T9D70H100": (20, 9, 70, 100), "N33T5D17H5": (33, 5, 17, 5)}
LENGTHS = np.arange(20) % 10  # for N20T9: 0 (none) to 9 (full)


def results_per_thread_count(run, threads) -> dict:
    out = {}
    for n in THREAD_COUNTS:
        threads(n)
        assert _core.get_num_threads() == n
        out[n] = run()
    return out


def assert_same_for_all_thread_counts(run, threads) -> None:
    per = results_per_thread_count(run, threads)
    for n in THREAD_COUNTS[1:]:
        assert_all_equal(per[n], per[1], f"{n} threads vs 1 thread")
    # and again: a repeated call on 2 threads agrees
    threads(2)
    assert_all_equal(run(), per[2], "repeated call on 2 threads")


SEQUENCE_CASES = {"N20T9D70H100": ("N20T9D70H100", False), "N33T5D17H5": ("N33T5D17H5", False),
                  "N20T9D70H100-lengths": ("N20T9D70H100", True)}


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("case", SEQUENCE_CASES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_sequence_results_are_bitwise_identical_for_any_thread_count(variant, case, dtype, threads):
    """h, final states and every gradient (all upstream gradients given explicitly),
    without and with variable lengths."""
    v = VARIANTS[variant]
    shape, with_lengths = SEQUENCE_CASES[case]
    inp = make_inputs(v.cell, *SHAPES[shape], DTYPES[dtype], seed=11)
    lengths = LENGTHS if with_lengths else None
    assert_same_for_all_thread_counts(lambda: run_sequence_inputs(F, v, inp, lengths), threads)


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("variant", VARIANTS)
def test_contract_sequence_functions_are_bitwise_identical_for_any_thread_count(variant, dtype, threads):
    """rnn/lstm/gru_forward and _backward (which leave the final-state gradients out)."""
    v = VARIANTS[variant]
    inp = make_inputs(v.cell, *SHAPES["N20T9D70H100"], DTYPES[dtype], seed=12)
    assert_same_for_all_thread_counts(lambda: run_contract_sequence_inputs(F, v, inp), threads)


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("variant", STEP_VARIANTS)
def test_step_functions_are_bitwise_identical_for_any_thread_count(variant, dtype, threads):
    v = VARIANTS[variant]
    N, _, D, H = SHAPES["N20T9D70H100"]
    inp = make_inputs(v.cell, N, 1, D, H, DTYPES[dtype], seed=13, step=True)
    assert_same_for_all_thread_counts(lambda: run_contract_step_inputs(F, v, inp), threads)


@pytest.mark.parametrize("variant", ["lstm-c0-given", "gru-reset-before"])
def test_backward_called_twice_on_one_cache_gives_identical_gradients(variant):
    v = VARIANTS[variant]
    inp = make_inputs(v.cell, *SHAPES["N20T9D70H100"], np.float64, seed=14)
    cell = v.cell
    state0 = (inp.h0, inp.c0) if cell == "lstm" else (inp.h0,)
    _, _, cache = F.sequence_forward(cell, inp.x, inp.params, state0, **v.kw)
    first = F.sequence_backward(inp.dh, cache)
    second = F.sequence_backward(inp.dh, cache)
    flat = lambda r: [r[0], *r[1], *r[2]]  # noqa: E731
    for a, b in zip(flat(first), flat(second)):
        assert np.array_equal(a, b)
