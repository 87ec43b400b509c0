"""Shared helpers and fixtures for the tests of fastrnn's compiled kernels.

Helpers (import them with ``from conftest import ...``):

* ``make_inputs``: random, well-scaled inputs of one cell in a given dtype.
* ``VARIANTS``: every cell configuration the kernels implement.
* ``run_*``: call the compiled (``fastrnn.functional``) or reference
  (``fastrnn.reference``) functions on those inputs and return every result,
  outputs and gradients, in a dict keyed by name.
* ``assert_matches`` / ``assert_all_match``: the parity criterion, which also
  records the worst error seen per (variant, dtype); those are printed in the
  terminal summary at the end of the run.

Fixtures: ``isa`` (parametrized over every micro-kernel this CPU supports, and
restoring the previous one afterwards) and ``threads`` (a setter for the
kernels' thread count that restores the previous count afterwards).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Callable, Dict, Optional

import numpy as np
import pytest

from fastrnn import _core

GATES = {"rnn": 1, "lstm": 4, "gru": 3}

ALL_ISAS = ("generic", "avx2", "avx512")
# Every micro-kernel at or below the best one this CPU supports.
ISAS = ALL_ISAS[: ALL_ISAS.index(_core.best_isa()) + 1]

DTYPES = {"float64": np.float64, "float32": np.float32}

# Parity tolerances. float64: max |compiled - reference|. float32: the same divided
# by max(1, max |reference|), computed per array (a relative error for large arrays,
# an absolute one for arrays of small values).
F64_ABS_TOL = 1e-10
F32_REL_TOL = 1e-4


@dataclass(frozen=True)
class Variant:
    """One cell configuration: the cell, keyword arguments of ``sequence_forward``
    (``nonlinearity`` / ``reset_after``) and, for the LSTM, whether c0 is given."""

    name: str
    cell: str
    kw: Dict[str, Any] = field(default_factory=dict)
    c0_given: bool = True

    def __repr__(self) -> str:  # readable hypothesis reports
        return self.name


VARIANTS = {
    v.name: v
    for v in (
        Variant("rnn-tanh", "rnn", {"nonlinearity": "tanh"}),
        Variant("rnn-relu", "rnn", {"nonlinearity": "relu"}),
        Variant("lstm-c0-given", "lstm", {}, c0_given=True),
        Variant("lstm-c0-none", "lstm", {}, c0_given=False),
        Variant("gru-reset-after", "gru", {"reset_after": True}),
        Variant("gru-reset-before", "gru", {"reset_after": False}),
    )
}
# One variant per distinct kernel path of the step functions (their prev_c is required).
STEP_VARIANTS = {k: v for k, v in VARIANTS.items() if k != "lstm-c0-none"}

STATE_NAMES = {"rnn": ("hT",), "lstm": ("hT", "cT"), "gru": ("hT",)}
DSTATE_NAMES = {"rnn": ("dh0",), "lstm": ("dh0", "dc0"), "gru": ("dh0",)}
DPARAM_NAMES = {"rnn": ("dWx", "dWh", "db"), "lstm": ("dWx", "dWh", "db"), "gru": ("dWx", "dWh", "db", "dbh")}


# ---------------------------------------------------------------- inputs


def make_inputs(cell: str, N: int, T: int, D: int, H: int, dtype=np.float64, seed: int = 0, *, step: bool = False):
    """Random inputs of one cell, all of `dtype`.

    Weights and biases are uniform in ±1/sqrt(H) (PyTorch's initialisation); x, the
    initial states and the upstream gradients are standard normal.

    Returns a namespace with x ((N, T, D), or (N, D) when `step`), h0 and c0 (N, H),
    params ((Wx, Wh, b) or, for the GRU, (Wx, Wh, b, bh)) as fastrnn.functional
    expects them, dh ((N, T, H), or (N, H) when `step`: dnext_h), dhT and dcT (N, H).
    """
    rng = np.random.default_rng(seed)
    G = GATES[cell]
    bound = 1.0 / np.sqrt(H) if H > 0 else 1.0

    def uniform(*shape):
        return rng.uniform(-bound, bound, shape).astype(dtype)

    def normal(*shape):
        return rng.standard_normal(shape).astype(dtype)

    params = (uniform(D, G * H), uniform(H, G * H), uniform(G * H))
    if cell == "gru":
        params += (uniform(G * H),)
    return SimpleNamespace(
        cell=cell,
        dtype=np.dtype(dtype),
        shape=(N, T, D, H),
        x=normal(N, D) if step else normal(N, T, D),
        h0=normal(N, H),
        c0=normal(N, H),
        params=params,
        dh=normal(N, H) if step else normal(N, T, H),
        dhT=normal(N, H),
        dcT=normal(N, H),
    )


def state0_of(variant: Variant, inp) -> tuple:
    if variant.cell == "lstm":
        return (inp.h0, inp.c0 if variant.c0_given else None)
    return (inp.h0,)


def dfinal_of(variant: Variant, inp) -> tuple:
    return (inp.dhT, inp.dcT) if variant.cell == "lstm" else (inp.dhT,)


# ---------------------------------------------------------------- runners
# Each returns {name: array} with every output and every gradient of one call pair.
# `mod` is fastrnn.functional (compiled) or fastrnn.reference (oracle).


def run_sequence(mod, variant: Variant, x, params, state0=None, dh=None, dfinal=None, lengths=None) -> dict:
    """sequence_forward + sequence_backward: h, final states, dx, dstate0, dparams."""
    cell = variant.cell
    h, final, cache = mod.sequence_forward(cell, x, params, state0, lengths=lengths, **variant.kw)
    dx, dstate0, dparams = mod.sequence_backward(dh, cache, dfinal)
    out = {"h": h, "dx": dx}
    out.update(zip(STATE_NAMES[cell], final))
    out.update(zip(DSTATE_NAMES[cell], dstate0))
    out.update(zip(DPARAM_NAMES[cell], dparams))
    assert len(final) == len(STATE_NAMES[cell]) and len(dstate0) == len(DSTATE_NAMES[cell])
    assert len(dparams) == len(DPARAM_NAMES[cell])
    return out


def run_sequence_inputs(mod, variant: Variant, inp, lengths=None) -> dict:
    """run_sequence with every input and upstream gradient of `inp` given."""
    return run_sequence(
        mod, variant, inp.x, inp.params, state0_of(variant, inp), inp.dh, dfinal_of(variant, inp), lengths
    )


def run_contract_sequence(mod, variant: Variant, x, h0, params, dh, c0=None) -> dict:
    """rnn/lstm/gru_forward + _backward (the CS231n contract)."""
    cell = variant.cell
    if cell == "rnn":
        h, cache = mod.rnn_forward(x, h0, *params, nonlinearity=variant.kw["nonlinearity"])
        names, grads = ("dx", "dh0", "dWx", "dWh", "db"), mod.rnn_backward(dh, cache)
    elif cell == "lstm":
        h, cache = mod.lstm_forward(x, h0, *params, c0=c0 if variant.c0_given else None)
        names, grads = ("dx", "dh0", "dWx", "dWh", "db"), mod.lstm_backward(dh, cache)
    else:
        h, cache = mod.gru_forward(x, h0, *params, reset_after=variant.kw["reset_after"])
        names, grads = ("dx", "dh0", "dWx", "dWh", "db", "dbh"), mod.gru_backward(dh, cache)
    assert len(grads) == len(names)
    return {"h": h, **dict(zip(names, grads))}


def run_contract_step(mod, variant: Variant, x, prev_h, params, dnext_h, prev_c=None, dnext_c=None) -> dict:
    """rnn/lstm/gru_step_forward + _step_backward (the CS231n contract)."""
    cell = variant.cell
    if cell == "rnn":
        next_h, cache = mod.rnn_step_forward(x, prev_h, *params, nonlinearity=variant.kw["nonlinearity"])
        out = {"next_h": next_h}
        names, grads = ("dx", "dprev_h", "dWx", "dWh", "db"), mod.rnn_step_backward(dnext_h, cache)
    elif cell == "lstm":
        next_h, next_c, cache = mod.lstm_step_forward(x, prev_h, prev_c, *params)
        out = {"next_h": next_h, "next_c": next_c}
        names = ("dx", "dprev_h", "dprev_c", "dWx", "dWh", "db")
        grads = mod.lstm_step_backward(dnext_h, dnext_c, cache)
    else:
        next_h, cache = mod.gru_step_forward(x, prev_h, *params, reset_after=variant.kw["reset_after"])
        out = {"next_h": next_h}
        names, grads = ("dx", "dprev_h", "dWx", "dWh", "db", "dbh"), mod.gru_step_backward(dnext_h, cache)
    assert len(grads) == len(names)
    out.update(zip(names, grads))
    return out


def run_contract_sequence_inputs(mod, variant: Variant, inp) -> dict:
    return run_contract_sequence(mod, variant, inp.x, inp.h0, inp.params, inp.dh, inp.c0)


def run_contract_step_inputs(mod, variant: Variant, inp) -> dict:
    return run_contract_step(mod, variant, inp.x, inp.h0, inp.params, inp.dh, inp.c0, inp.dcT)


# ---------------------------------------------------------------- comparison

# (label, dtype) -> (worst error, name of the array it was seen in)
WORST_ERRORS: Dict[tuple, tuple] = {}


def parity_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """float64: max absolute error. float32: max absolute error / max(1, max |expected|)."""
    if expected.size == 0:
        return 0.0
    diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    if np.isnan(diff).any():
        return float("inf")
    err = float(diff.max())
    if expected.dtype == np.float32:
        err /= max(1.0, float(np.abs(expected).max()))
    return err


def assert_matches(actual, expected, name: str, label: Optional[str] = None) -> float:
    """Asserts `actual` (compiled) matches `expected` (reference) in type, dtype, shape
    and value (F64_ABS_TOL / F32_REL_TOL); returns the error and records it under
    (label, dtype) when a label is given."""
    expected = np.asarray(expected)
    assert isinstance(actual, np.ndarray), f"{name}: got {type(actual).__name__}, not an ndarray"
    assert actual.dtype == expected.dtype, f"{name}: dtype {actual.dtype}, expected {expected.dtype}"
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape}, expected {expected.shape}"
    err = parity_error(actual, expected)
    if label is not None:
        key = (label, str(expected.dtype))
        if err > WORST_ERRORS.get(key, (-1.0, ""))[0]:
            WORST_ERRORS[key] = (err, name)
    tol = F32_REL_TOL if expected.dtype == np.float32 else F64_ABS_TOL
    assert err <= tol, f"{name}: parity error {err:.3e} > {tol:.0e} ({expected.dtype})"
    return err


def assert_all_match(actual: dict, expected: dict, label: Optional[str] = None) -> None:
    """Every array of `expected` matches the one of the same name in `actual`."""
    assert set(actual) == set(expected), f"result names differ: {sorted(actual)} vs {sorted(expected)}"
    failures = []
    for name in expected:
        try:
            assert_matches(actual[name], expected[name], name, label)
        except AssertionError as e:
            failures.append(str(e))
    assert not failures, "; ".join(failures)


def assert_all_equal(a: dict, b: dict, context: str = "") -> None:
    """Bitwise equality (np.array_equal, same dtype and shape) of two result dicts."""
    assert set(a) == set(b)
    differ = [
        name
        for name in a
        if a[name].dtype != b[name].dtype or a[name].shape != b[name].shape or not np.array_equal(a[name], b[name])
    ]
    assert not differ, f"{context}: not bitwise identical: {differ}"


def pytest_terminal_summary(terminalreporter):
    if not WORST_ERRORS:
        return
    terminalreporter.section("fastrnn parity: worst error per variant and dtype")
    terminalreporter.write_line(
        f"(float64: max abs error, tol {F64_ABS_TOL:.0e}; float32: max abs error / max(1, max|ref|), tol {F32_REL_TOL:.0e})"
    )
    for (label, dtype), (err, name) in sorted(WORST_ERRORS.items()):
        terminalreporter.write_line(f"  {label:24s} {dtype:8s} {err:.3e}  (in {name})")


# ---------------------------------------------------------------- fixtures


@contextlib.contextmanager
def using_isa(name: str):
    """Selects micro-kernel `name` for the duration of the block."""
    before = _core.isa()
    _core.set_isa(name)
    try:
        assert _core.isa() == name
        yield name
    finally:
        _core.set_isa(before)


@pytest.fixture(params=ISAS)
def isa(request):
    """Runs the test once per micro-kernel this CPU supports (generic, avx2, avx512)."""
    with using_isa(request.param):
        yield request.param


@pytest.fixture
def threads():
    """A setter for the kernels' thread count; the previous count is restored afterwards."""
    before = _core.get_num_threads()
    yield _core.set_num_threads
    _core.set_num_threads(before)


@pytest.fixture
def one_thread():
    """Runs the test with one kernel thread, restoring the count afterwards."""
    before = _core.get_num_threads()
    _core.set_num_threads(1)
    yield
    _core.set_num_threads(before)


@pytest.fixture
def default_thread_teams():
    """The library's default team threshold, for a test that needs it (the others get full teams)."""
    before = _core.min_flops_per_thread()
    _core.set_min_flops_per_thread(1 << 15)
    yield
    _core.set_min_flops_per_thread(before)


@pytest.fixture
def head_beside():
    """A setter for where the head may run (_core.set_head_beside), restored afterwards."""
    before = _core.get_head_beside()
    yield _core.set_head_beside
    _core.set_head_beside(before)


@pytest.fixture(autouse=True, scope="session")
def full_thread_teams():
    """Kernels normally run small problems on one thread (a team would cost more than it
    saves); the tests use small problems, so they ask for the full team every time, to
    exercise the multi-threaded paths."""
    before = _core.min_flops_per_thread()
    _core.set_min_flops_per_thread(0)
    yield
    _core.set_min_flops_per_thread(before)


# ---------------------------------------------------------------- numerical gradients


def rel_error(a: np.ndarray, b: np.ndarray) -> float:
    """CS231n's elementwise relative error, max over entries."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b)))) if a.size else 0.0


def numeric_entries(f: Callable[[], float], arr: np.ndarray, idxs, h: float = 1e-4) -> np.ndarray:
    """Central differences, fourth-order stencil (8 (f(x+h) - f(x-h)) - (f(x+2h) - f(x-2h))) / 12h:
    its truncation error (~h^4) is negligible, so the step can be large enough to keep the
    rounding error small as well."""
    out = []
    for idx in idxs:
        old = arr[idx]
        values = []
        for step in (-2, -1, 1, 2):
            arr[idx] = old + step * h
            values.append(f())
        arr[idx] = old
        out.append((8 * (values[2] - values[1]) - (values[3] - values[0])) / (12 * h))
    return np.array(out)
