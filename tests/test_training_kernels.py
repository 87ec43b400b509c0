"""The compiled training kernels against their NumPy references in fastrnn.reference.

* ``_core.optimizer_update`` (through fastrnn.optim's SGD, Adagrad, RMSprop, Adam and
  AdamW): bitwise equal to ``reference.sgd_update`` / ``adagrad_update`` /
  ``rmsprop_update`` / ``adam_update`` applied step by step, parameters and state buffers,
  float32 and float64, for 1 and 2 threads, and for a dict mixing the two dtypes;
  non-contiguous parameters take the NumPy fallback and give the same values, in place.
* ``clip_grad_norm`` / ``clip_grad_value`` (``_core.sum_of_squares``, ``scale_arrays``,
  ``clamp_arrays``): the norm against ``reference.grad_norm``, when scaling happens,
  NaN / inf handling, thread independence, the fallback for views and float16.
* ``functional.softmax_cross_entropy`` against ``reference.temporal_softmax_loss`` (mask,
  row_scale, huge scores, V = 1, threads, argument errors).
* ``functional.embedding_backward``: bitwise equal to ``np.add.at``, threads, errors.
* ``_core.optimizer_update``'s own argument errors, and the in-place bindings
  (``embedding_backward``'s dW, ``optimizer_update``, ``scale_arrays``, ``clamp_arrays``)
  given arrays in non-native byte order.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, List

import numpy as np
import pytest

from fastrnn import _core, reference
from fastrnn.functional import embedding_backward, softmax_cross_entropy
from fastrnn.optim import SGD, Adagrad, Adam, AdamW, RMSprop, clip_grad_norm, clip_grad_value

DTYPES = [np.float64, np.float32]
DTYPE_IDS = ["float64", "float32"]

# Assorted shapes: a 0-d array, a 1-element one, an empty one, odd sizes, and one large
# enough (77,100 elements) that two threads split it, across array boundaries.
PARAM_SHAPES = {"scalar": (), "one": (1,), "empty": (0, 3), "odd": (7, 13), "big": (300, 257), "vec": (5,)}
N_STEPS = 4


def random_arrays(shapes, dtype, seed: int, scale: float = 1.0) -> Dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: np.asarray(scale * rng.standard_normal(s)).astype(dtype) for k, s in shapes.items()}


def copies(d: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    return {k: v.copy() for k, v in d.items()}


def run_with_threads(threads, n: int, fn: Callable):
    threads(n)
    assert _core.get_num_threads() == n
    return fn()


# ---------------------------------------------------------------- optimizer rules


@dataclass(frozen=True)
class Rule:
    """An optimizer configuration and the reference update it must reproduce bitwise:
    ``ref(p, g, bufs, t)`` updates p and the buffers (dict name -> array) in place."""

    name: str
    make: Callable
    ref: Callable

    def __repr__(self) -> str:
        return self.name


RULES = [
    Rule("sgd", lambda p: SGD(p, lr=0.1),
         lambda p, g, b, t: reference.sgd_update(p, g, None, 0.1)),
    Rule("sgd-momentum", lambda p: SGD(p, lr=0.05, momentum=0.9),
         lambda p, g, b, t: reference.sgd_update(p, g, b["buf"], 0.05, 0.9)),
    Rule("sgd-nesterov", lambda p: SGD(p, lr=0.05, momentum=0.9, nesterov=True),
         lambda p, g, b, t: reference.sgd_update(p, g, b["buf"], 0.05, 0.9, True)),
    Rule("sgd-weight-decay", lambda p: SGD(p, lr=0.1, weight_decay=0.03),
         lambda p, g, b, t: reference.sgd_update(p, g, None, 0.1, 0.0, False, 0.03)),
    Rule("sgd-momentum-weight-decay", lambda p: SGD(p, lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.03),
         lambda p, g, b, t: reference.sgd_update(p, g, b["buf"], 0.05, 0.8, True, 0.03)),
    Rule("adagrad", lambda p: Adagrad(p, lr=0.1, eps=1e-8),
         lambda p, g, b, t: reference.adagrad_update(p, g, b["mem"], 0.1, 1e-8)),
    Rule("rmsprop", lambda p: RMSprop(p, lr=2e-3, alpha=0.95, eps=1e-8),
         lambda p, g, b, t: reference.rmsprop_update(p, g, b["m"], 2e-3, 0.95, 1e-8)),
    Rule("adam", lambda p: Adam(p, lr=1e-3, betas=(0.9, 0.999), eps=1e-8),
         lambda p, g, b, t: reference.adam_update(p, g, b["m"], b["v"], t, 1e-3, 0.9, 0.999, 1e-8)),
    Rule("adam-weight-decay", lambda p: Adam(p, lr=3e-3, betas=(0.8, 0.99), eps=1e-7, weight_decay=0.02),
         lambda p, g, b, t: reference.adam_update(p, g, b["m"], b["v"], t, 3e-3, 0.8, 0.99, 1e-7, 0.02, False)),
    Rule("adamw", lambda p: AdamW(p, lr=3e-3, betas=(0.8, 0.99), eps=1e-7, weight_decay=0.02),
         lambda p, g, b, t: reference.adam_update(p, g, b["m"], b["v"], t, 3e-3, 0.8, 0.99, 1e-7, 0.02, True)),
]
RULE_BUFFERS = {"sgd": (), "sgd-weight-decay": (), "sgd-momentum": ("buf",), "sgd-nesterov": ("buf",),
                "sgd-momentum-weight-decay": ("buf",), "adagrad": ("mem",), "rmsprop": ("m",),
                "adam": ("m", "v"), "adam-weight-decay": ("m", "v"), "adamw": ("m", "v")}


def make_grad_steps(shapes, dtype, n_steps: int = N_STEPS, seed: int = 100) -> List[Dict[str, np.ndarray]]:
    """Gradients of assorted magnitudes, with some exact zeros."""
    out = []
    for s in range(n_steps):
        g = random_arrays(shapes, dtype, seed + s, scale=[0.5, 2.0, 1e-3, 1.0][s % 4])
        if g["big"].size:
            g["big"].reshape(-1)[::11] = 0
        out.append(g)
    return out


def reference_run(rule: Rule, params0, grad_steps):
    """The reference functions applied one parameter at a time, step by step."""
    p = copies(params0)
    bufs = {b: {k: np.zeros_like(v) for k, v in p.items()} for b in RULE_BUFFERS[rule.name]}
    for t, g in enumerate(grad_steps, start=1):
        for k in p:
            rule.ref(p[k], g[k], {b: bufs[b][k] for b in bufs}, t)
    return p, bufs


def optimizer_run(rule: Rule, params0, grad_steps, expect_compiled: bool = True):
    p = copies(params0)
    opt = rule.make(p)
    assert (not opt._reference_names) is expect_compiled
    for g in grad_steps:
        opt.step(g)
    for k in p:  # updated in place: the optimizer holds the caller's arrays
        assert opt.params[k] is p[k]
    return p, opt.state


def assert_same(actual: Dict[str, np.ndarray], expected: Dict[str, np.ndarray], what: str) -> None:
    assert set(actual) == set(expected), what
    for k in expected:
        assert actual[k].dtype == expected[k].dtype and actual[k].shape == expected[k].shape, f"{what}[{k}]"
        np.testing.assert_array_equal(actual[k], expected[k], err_msg=f"{what}[{k}]")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("rule", RULES, ids=repr)
def test_optimizer_step_is_bitwise_equal_to_reference_for_1_and_2_threads(rule, dtype, threads):
    params0 = random_arrays(PARAM_SHAPES, dtype, seed=1)
    grad_steps = make_grad_steps(PARAM_SHAPES, dtype)
    ref_p, ref_bufs = reference_run(rule, params0, grad_steps)
    # The update actually moved every parameter (the comparison is not vacuous).
    for k in params0:
        assert params0[k].size == 0 or not np.array_equal(ref_p[k], params0[k]), k

    results = {}
    for n in (1, 2):
        p, state = run_with_threads(threads, n, lambda: optimizer_run(rule, params0, grad_steps))
        assert set(state) == set(RULE_BUFFERS[rule.name])
        assert_same(p, ref_p, f"{rule.name} {n} threads: params")
        for b in ref_bufs:
            assert_same(state[b], ref_bufs[b], f"{rule.name} {n} threads: {b}")
        results[n] = (p, state)
    assert_same(results[1][0], results[2][0], "params, 1 vs 2 threads")
    for b in ref_bufs:
        assert_same(results[1][1][b], results[2][1][b], f"{b}, 1 vs 2 threads")


@pytest.mark.parametrize("rule", RULES, ids=repr)
def test_optimizer_with_mixed_float32_and_float64_params_matches_reference(rule):
    """The constructor accepts any mix of float32 and float64 parameters; each is updated in
    its own dtype, as by the reference."""
    rng = np.random.default_rng(4)
    params0 = {"w32": rng.standard_normal((7, 13)).astype(np.float32), "w64": rng.standard_normal((300, 257)),
               "b32": rng.standard_normal(5).astype(np.float32), "s64": np.array(0.75)}
    grad_steps = [{k: np.random.default_rng(60 + s).standard_normal(v.shape).astype(v.dtype)
                   for k, v in params0.items()} for s in range(3)]
    ref_p, ref_bufs = reference_run(rule, params0, grad_steps)
    p = copies(params0)
    opt = rule.make(p)
    for g in grad_steps:
        opt.step(g)
    assert opt.t == len(grad_steps)
    assert_same(p, ref_p, "params")
    for b in ref_bufs:
        assert_same(opt.state[b], ref_bufs[b], b)


@pytest.mark.parametrize("rule", [r for r in RULES if r.name in ("sgd-momentum-weight-decay", "adamw")], ids=repr)
def test_optimizer_reads_noncontiguous_grads_like_copies(rule):
    params0 = random_arrays(PARAM_SHAPES, np.float64, seed=2)
    grad_steps = make_grad_steps(PARAM_SHAPES, np.float64)
    # Same values, other strides: Fortran order for 2-D gradients, stride 2 for 1-D ones.
    def restride(v):
        return v.T.copy().T if v.ndim == 2 else (np.repeat(v, 2)[::2] if v.ndim == 1 else v)

    fortran_steps = [{k: restride(v) for k, v in g.items()} for g in grad_steps]
    assert not fortran_steps[0]["big"].flags.c_contiguous and not fortran_steps[0]["vec"].flags.c_contiguous
    p_c, s_c = optimizer_run(rule, params0, grad_steps)
    p_f, s_f = optimizer_run(rule, params0, fortran_steps)
    assert_same(p_f, p_c, "params")
    for b in s_c:
        assert_same(s_f[b], s_c[b], b)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("rule", RULES, ids=repr)
def test_noncontiguous_params_use_fallback_in_place_with_same_values(rule, dtype):
    rng = np.random.default_rng(3)
    base2d = rng.standard_normal((9, 13)).astype(dtype)
    base1d = rng.standard_normal(31).astype(dtype)
    vec = rng.standard_normal(4).astype(dtype)
    # C-contiguous copies of the same starting values, for the compiled optimizer.
    contiguous0 = {"transposed": np.ascontiguousarray(base2d.T), "strided": base1d[::3].copy(),
                   "contiguous": vec.copy()}
    base1d_before = base1d.copy()
    views = {"transposed": base2d.T, "strided": base1d[::3], "contiguous": vec}
    assert not views["transposed"].flags.c_contiguous and not views["strided"].flags.c_contiguous
    grad_steps = [random_arrays({k: v.shape for k, v in views.items()}, dtype, seed=50 + s) for s in range(3)]

    opt = rule.make(views)
    assert sorted(opt._reference_names) == ["strided", "transposed"]  # only the views
    for g in grad_steps:
        opt.step(g)
    p_c, s_c = optimizer_run(rule, contiguous0, grad_steps)

    # The views were updated in place: the optimizer holds them and their bases changed.
    assert opt.params["transposed"] is views["transposed"] and np.shares_memory(views["transposed"], base2d)
    assert opt.params["strided"] is views["strided"] and np.shares_memory(views["strided"], base1d)
    np.testing.assert_array_equal(base2d.T, p_c["transposed"])
    np.testing.assert_array_equal(base1d[::3], p_c["strided"])
    assert not np.array_equal(base1d[::3], base1d_before[::3])
    # Elements of base1d outside the strided view are untouched.
    outside = np.ones(31, bool)
    outside[::3] = False
    np.testing.assert_array_equal(base1d[outside], base1d_before[outside])
    assert_same(views, p_c, "params")
    assert set(opt.state) == set(s_c)
    for b in s_c:
        assert_same(opt.state[b], s_c[b], b)


# ---------------------------------------------------------------- gradient clipping


GRAD_SHAPES = {"big": (300, 257), "odd": (7, 13), "one": (1,), "scalar": (), "empty": (0, 4), "vec": (4097,)}


def mixed_grads(seed: int = 7) -> Dict[str, np.ndarray]:
    """float64 and float32 arrays, compiled and fallback (views, float16) together."""
    rng = np.random.default_rng(seed)
    return {
        "big64": rng.standard_normal((300, 257)),
        "odd32": rng.standard_normal((7, 13)).astype(np.float32),
        "vec32": rng.standard_normal(5000).astype(np.float32),
        "transposed64": rng.standard_normal((11, 6)).T,
        "strided32": rng.standard_normal(40).astype(np.float32)[::4],
        "half": rng.standard_normal(17).astype(np.float16),
        "scalar64": np.array(2.5),
    }


def grads_of(kind: str, seed: int = 7) -> Dict[str, np.ndarray]:
    if kind == "mixed":
        return mixed_grads(seed)
    return random_arrays(GRAD_SHAPES, np.dtype(kind), seed)


@pytest.mark.parametrize("kind", ["float64", "float32", "mixed"])
def test_clip_grad_norm_returns_reference_norm_and_leaves_grads_below_max(kind):
    g = grads_of(kind)
    before = copies(g)
    expected = reference.grad_norm(list(before.values()))
    norm = clip_grad_norm(g, max_norm=1e30)
    assert isinstance(norm, float)
    assert abs(norm - expected) <= 1e-12 * expected, (norm, expected)
    assert_same(g, before, "grads")
    # A list is accepted as well, with the same norm.
    assert clip_grad_norm(list(g.values()), max_norm=1e30) == norm


@pytest.mark.parametrize("kind", ["float64", "float32", "mixed"])
def test_clip_grad_norm_scales_only_above_max_norm(kind):
    g = grads_of(kind)
    before = copies(g)
    norm = clip_grad_norm(copies(g), max_norm=1e30)
    # max_norm equal to the norm, or above it: nothing changes.
    for max_norm in (norm, norm * 1.001):
        assert clip_grad_norm(g, max_norm) == norm
        assert_same(g, before, f"grads at max_norm={max_norm}")
    # Below: every array times dtype(max_norm / (norm + 1e-6)), in its own dtype.
    max_norm = norm / 3
    assert clip_grad_norm(g, max_norm) == norm
    coef = max_norm / (norm + 1e-6)
    expected = {k: v * v.dtype.type(coef) for k, v in before.items()}
    assert_same(g, expected, "scaled grads")
    # The new norm is max_norm * norm / (norm + 1e-6), up to the products' rounding.
    rtol = 1e-7 if kind == "float64" else 1e-3
    assert abs(reference.grad_norm(list(g.values())) - max_norm) <= rtol * max_norm


@pytest.mark.parametrize("kind", ["float64", "float32", "mixed"])
def test_clip_grad_norm_and_value_identical_for_1_and_2_threads(kind, threads):
    results = {}
    for n in (1, 2):
        def run():
            g = grads_of(kind)
            norm = clip_grad_norm(g, max_norm=10.0)
            clip_grad_value(g, 0.01)
            return norm, g
        results[n] = run_with_threads(threads, n, run)
    assert results[1][0] == results[2][0]
    assert results[1][0] > 10.0  # the scaling branch was taken
    assert_same(results[1][1], results[2][1], "grads, 1 vs 2 threads")


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.parametrize("where", ["compiled", "fallback"])
@pytest.mark.parametrize("bad", ["nan", "inf", "-inf", "overflow"])
def test_clip_grad_norm_nonfinite_norm_leaves_grads_untouched(bad, where):
    g = random_arrays(GRAD_SHAPES, np.float64, seed=9)
    g["view"] = np.random.default_rng(1).standard_normal((5, 6)).T
    target = g["big"] if where == "compiled" else g["view"]
    target[1, 2] = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf, "overflow": 1e200}[bad]
    before = copies(g)
    norm = clip_grad_norm(g, max_norm=1.0)
    if bad == "nan":
        assert math.isnan(norm)
    else:
        assert norm == math.inf
    for k in g:
        np.testing.assert_array_equal(g[k], before[k], err_msg=k)  # NaN compares equal here


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_clip_grad_value_keeps_nan_and_clamps_infinities(dtype):
    special = np.array([np.nan, np.inf, -np.inf, 7.0, -7.0, 0.5, -0.0, 5.0, -5.0001], dtype=dtype)
    big = (10 * np.random.default_rng(4).standard_normal((300, 257))).astype(dtype)
    g = {"special": special.copy(), "big": big.copy()}
    clip_grad_value(g, 5.0)
    assert np.isnan(g["special"][0]) and not np.isnan(g["special"][1:]).any()
    np.testing.assert_array_equal(g["special"][1:], np.array([5, -5, 5, -5, 0.5, -0.0, 5, -5], dtype=dtype))
    np.testing.assert_array_equal(g["big"], np.clip(big, dtype(-5), dtype(5)))
    assert np.abs(big).max() > 5  # something was clamped


def test_clip_grad_value_clamps_views_and_float16_in_place():
    rng = np.random.default_rng(5)
    base2d = 10 * rng.standard_normal((8, 9))
    base1d = (10 * rng.standard_normal(30)).astype(np.float32)
    half = (10 * rng.standard_normal(21)).astype(np.float16)
    half[3] = np.nan
    before2d, before1d, before_half = base2d.copy(), base1d.copy(), half.copy()
    g = {"transposed": base2d.T, "strided": base1d[1::3], "half": half, "contiguous": 10 * rng.standard_normal(6)}
    contiguous_before = g["contiguous"].copy()
    clip_grad_value(g, 2.0)
    np.testing.assert_array_equal(base2d, np.clip(before2d, -2, 2))
    np.testing.assert_array_equal(base1d[1::3], np.clip(before1d[1::3], np.float32(-2), np.float32(2)))
    outside = np.ones(30, bool)
    outside[1::3] = False
    np.testing.assert_array_equal(base1d[outside], before1d[outside])
    assert half.dtype == np.float16 and np.isnan(half[3])
    np.testing.assert_array_equal(half, np.clip(before_half, np.float16(-2), np.float16(2)))
    np.testing.assert_array_equal(g["contiguous"], np.clip(contiguous_before, -2, 2))
    assert np.abs(before_half[~np.isnan(before_half)]).max() > 2


# ---------------------------------------------------------------- softmax cross-entropy


def make_scores(M: int, V: int, dtype, seed: int = 0, scale: float = 3.0, offset: float = 0.0):
    rng = np.random.default_rng(seed)
    scores = (offset + scale * rng.standard_normal((M, V))).astype(dtype)
    targets = rng.integers(0, V, M)
    return scores, targets


def assert_softmax_matches(loss, dscores, ref_loss, ref_d, dtype):
    assert isinstance(loss, float)
    assert dscores.dtype == dtype and dscores.shape == ref_d.shape
    assert np.isfinite(loss) and np.isfinite(dscores).all()
    if dtype == np.float64:
        assert abs(loss - ref_loss) <= 1e-12 * max(1.0, abs(ref_loss)), (loss, ref_loss)
        np.testing.assert_allclose(dscores, ref_d, rtol=1e-12, atol=1e-14)
    else:
        assert abs(loss - ref_loss) <= 1e-5 * max(1.0, abs(ref_loss)), (loss, ref_loss)
        np.testing.assert_allclose(dscores, ref_d, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("row_scale", [1.0, 0.37])
@pytest.mark.parametrize("masked", [False, True], ids=["no-mask", "mask"])
def test_softmax_cross_entropy_matches_reference(isa, dtype, row_scale, masked):
    M, V = 41, 67
    scores, targets = make_scores(M, V, dtype, seed=11)
    mask = None
    if masked:
        mask = np.random.default_rng(12).random(M) < 0.7
        mask[:2] = (True, False)
        # Rows outside the mask may hold anything, even out-of-range targets.
        out = np.flatnonzero(~mask)
        targets[out] = np.resize([-1, V, V + 100, -(2 ** 40)], out.size)
    scores_before = scores.copy()
    loss, dscores = softmax_cross_entropy(scores, targets, mask, row_scale)
    ref_loss, ref_d = reference.temporal_softmax_loss(scores, targets, mask, row_scale)
    assert_softmax_matches(loss, dscores, ref_loss, ref_d, dtype)
    np.testing.assert_array_equal(scores, scores_before)
    if masked:
        assert (dscores[~mask] == 0).all()
        assert (dscores[mask] != 0).any(axis=1).all()
    # Each kept row's gradient sums to zero (softmax minus one-hot).
    np.testing.assert_allclose(dscores.sum(axis=1), 0, atol=1e-12 if dtype == np.float64 else 1e-5)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_softmax_cross_entropy_minus_inf_scores_get_zero_probability(isa, dtype):
    """-inf scores (logits masked out of the vocabulary) give exactly zero probability and
    gradient, and no NaN, as in the reference."""
    scores, targets = make_scores(12, 19, dtype, seed=16)
    scores[:, 3] = -np.inf
    scores[5, 7:12] = -np.inf
    targets[targets == 3] = 4
    targets[5] = 2
    loss, dscores = softmax_cross_entropy(scores, targets, None, 1.0)
    ref_loss, ref_d = reference.temporal_softmax_loss(scores, targets, None, 1.0)
    assert_softmax_matches(loss, dscores, ref_loss, ref_d, dtype)
    assert not dscores[:, 3].any() and not dscores[5, 7:12].any()


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_softmax_cross_entropy_all_rows_masked_out_is_zero(dtype):
    scores, _ = make_scores(6, 9, dtype)
    loss, dscores = softmax_cross_entropy(scores, np.full(6, 99), np.zeros(6, bool), 1.0)
    assert loss == 0.0
    assert dscores.shape == (6, 9) and not dscores.any()


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("kind", ["scaled-1e4", "offset-1e4"])
def test_softmax_cross_entropy_huge_scores_do_not_overflow(isa, dtype, kind):
    M, V = 16, 33
    if kind == "scaled-1e4":
        scores, targets = make_scores(M, V, dtype, seed=13, scale=1e4)
    else:
        scores, targets = make_scores(M, V, dtype, seed=13, scale=1.0, offset=1e4)
    loss, dscores = softmax_cross_entropy(scores, targets, None, 1.0)
    ref_loss, ref_d = reference.temporal_softmax_loss(scores, targets, None, 1.0)
    assert_softmax_matches(loss, dscores, ref_loss, ref_d, dtype)
    if kind == "scaled-1e4":
        assert loss > 1e4  # the losses are of the scores' size, and finite


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_softmax_cross_entropy_single_class_has_zero_loss_and_gradient(dtype):
    scores, _ = make_scores(5, 1, dtype)
    loss, dscores = softmax_cross_entropy(scores, np.zeros(5, np.int64), None, 1.0)
    ref_loss, ref_d = reference.temporal_softmax_loss(scores, np.zeros(5, np.int64), None, 1.0)
    assert loss == 0.0 and ref_loss == 0.0
    assert dscores.shape == (5, 1) and dscores.dtype == dtype
    np.testing.assert_array_equal(dscores, ref_d)
    assert not dscores.any()


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_softmax_cross_entropy_identical_for_1_and_2_threads(dtype, threads):
    scores, targets = make_scores(300, 97, dtype, seed=14)
    mask = np.random.default_rng(15).random(300) < 0.8
    results = {n: run_with_threads(threads, n, lambda: softmax_cross_entropy(scores, targets, mask, 0.5))
               for n in (1, 2)}
    assert results[1][0] == results[2][0]
    np.testing.assert_array_equal(results[1][1], results[2][1])
    ref_loss, ref_d = reference.temporal_softmax_loss(scores, targets, mask, 0.5)
    assert_softmax_matches(*results[2], ref_loss, ref_d, dtype)


def test_softmax_cross_entropy_argument_errors():
    M, V = 6, 5
    scores, targets = make_scores(M, V, np.float64)
    mask = np.ones(M, bool)
    mask[0] = False
    bad = targets.copy()
    bad[3] = V  # row 3 is in the mask
    with pytest.raises(ValueError, match="targets"):
        softmax_cross_entropy(scores, bad, mask, 1.0)
    bad = targets.copy()
    bad[4] = -1
    with pytest.raises(ValueError, match="targets"):
        softmax_cross_entropy(scores, bad, None, 1.0)
    with pytest.raises(TypeError, match="mask"):
        softmax_cross_entropy(scores, targets, np.ones(M, np.int64), 1.0)
    with pytest.raises(ValueError, match="mask"):
        softmax_cross_entropy(scores, targets, np.ones(M + 1, bool), 1.0)
    with pytest.raises(TypeError, match="targets"):
        softmax_cross_entropy(scores, targets.astype(np.float64), None, 1.0)
    with pytest.raises(ValueError, match="targets"):
        softmax_cross_entropy(scores, targets[:-1], None, 1.0)
    with pytest.raises(ValueError, match="scores"):
        softmax_cross_entropy(scores.reshape(2, 3, V), targets, None, 1.0)
    # The same call with valid arguments works (the errors come from the bad argument).
    loss, _ = softmax_cross_entropy(scores, targets, mask, 1.0)
    assert np.isfinite(loss)


def test_softmax_cross_entropy_reads_views_like_copies():
    scores, targets = make_scores(9, 11, np.float64, seed=17)
    mask = np.ones(18, bool)
    mask[::4] = False
    loss, dscores = softmax_cross_entropy(scores, targets, mask[::2].copy(), 0.5)
    for s_, t_, m_ in ((np.asfortranarray(scores), targets, mask[::2]),
                       (scores[::-1][::-1], np.repeat(targets, 2)[::2].astype(np.int32), mask[::2])):
        loss_v, dscores_v = softmax_cross_entropy(s_, t_, m_, 0.5)
        assert loss_v == loss
        np.testing.assert_array_equal(dscores_v, dscores)
        assert dscores_v.flags.c_contiguous


# ---------------------------------------------------------------- embedding backward


def make_embedding_case(dtype, M=5000, V=50, D=130, seed=20):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, V - 3, M)  # many repeats; the last 3 rows never appear
    ids[:7] = 0  # a run of one id
    dout = rng.standard_normal((M, D)).astype(dtype)
    dW0 = rng.standard_normal((V, D)).astype(dtype)  # nonzero: the kernel accumulates
    return ids, dout, dW0


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("D", [130, 7])
def test_embedding_backward_bitwise_equals_add_at_for_1_and_2_threads(dtype, D, threads):
    ids, dout, dW0 = make_embedding_case(dtype, D=D)
    expected = dW0.copy()
    np.add.at(expected, ids, dout)
    via_reference = dW0.copy()
    reference.embedding_backward(ids, dout, via_reference)
    np.testing.assert_array_equal(via_reference, expected)
    results = {}
    for n in (1, 2):
        dW = dW0.copy()
        run_with_threads(threads, n, lambda: embedding_backward(ids, dout, dW))
        assert dW.dtype == dtype
        np.testing.assert_array_equal(dW, expected, err_msg=f"{n} threads")
        results[n] = dW
    np.testing.assert_array_equal(results[1], results[2])
    # Rows no id points at keep their values; the others changed.
    np.testing.assert_array_equal(results[2][-3:], dW0[-3:])
    assert not np.array_equal(results[2][:-3], dW0[:-3])


@pytest.mark.parametrize("id_dtype", [np.int32, np.uint16, np.int64])
def test_embedding_backward_accepts_any_integer_ids_and_noncontiguous_dout(id_dtype):
    ids, dout, dW0 = make_embedding_case(np.float64, M=300, D=70)
    expected = dW0.copy()
    np.add.at(expected, ids, dout)
    dW = dW0.copy()
    embedding_backward(ids.astype(id_dtype), np.asfortranarray(dout), dW)
    np.testing.assert_array_equal(dW, expected)


def test_embedding_backward_argument_errors_leave_dW_unchanged():
    ids, dout, dW0 = make_embedding_case(np.float64, M=40, V=10, D=8)
    dW = dW0.copy()

    def check(exc, match, ids_=ids, dout_=dout, dW_=dW):
        with pytest.raises(exc, match=match):
            embedding_backward(ids_, dout_, dW_)
        np.testing.assert_array_equal(dW, dW0)

    for bad_id in (10, -1):
        bad = ids.copy()
        bad[17] = bad_id
        check(ValueError, "ids", ids_=bad)
    check(TypeError, "dout", dout_=dout.astype(np.float32))
    check(TypeError, "dtype", dW_=dW.astype(np.float32))  # the reverse mismatch
    check(ValueError, "dW", dW_=np.zeros((10, 16))[:, ::2])
    check(ValueError, "dW", dW_=np.asfortranarray(np.zeros((10, 8))))
    read_only = dW0.copy()
    read_only.flags.writeable = False
    check(ValueError, "dW", dW_=read_only)
    np.testing.assert_array_equal(read_only, dW0)
    check(ValueError, "dout", dout_=np.zeros((40, 9)))
    check(ValueError, "dout", dout_=np.zeros(40))
    check(TypeError, "ids", ids_=ids.astype(np.float64))
    # The valid call works.
    embedding_backward(ids, dout, dW)
    assert not np.array_equal(dW, dW0)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_embedding_backward_non_native_byte_order_dW_is_rejected_or_updated_correctly(dtype):
    """A byte-swapped dW holds the same float64/float32 values in the other byte order: the
    kernel must either refuse it (leaving it untouched) or update it correctly, never write
    native-order bytes into it."""
    ids, dout, dW0 = make_embedding_case(dtype, M=60, V=6, D=5)
    expected = dW0.copy()
    np.add.at(expected, ids, dout)
    dW = dW0.astype(dW0.dtype.newbyteorder("S"))
    assert dW.flags.c_contiguous and dW.flags.writeable and dW.dtype.byteorder != "="
    try:
        embedding_backward(ids, dout, dW)
    except (TypeError, ValueError):
        np.testing.assert_array_equal(dW, dW0)
    else:
        np.testing.assert_array_equal(dW, expected)


# ---------------------------------------------------------------- _core.optimizer_update errors


def core_update_args():
    params = [np.ones((3, 4)), np.ones(5)]
    grads = [np.full((3, 4), 2.0), np.full(5, 2.0)]
    return params, grads


def test_core_optimizer_update_valid_call_updates_in_place():
    params, grads = core_update_args()
    _core.optimizer_update("sgd", params, grads, [], [], {"lr": 0.25})
    for p in params:
        np.testing.assert_array_equal(p, 0.5)


@pytest.mark.parametrize("case", [
    "unknown-rule", "grads-too-short", "grads-too-long", "grads-shape", "grads-dtype",
    "params-mixed-dtypes", "param-read-only", "param-noncontiguous", "empty", "missing-state",
    "state-shape", "state-dtype",
])
def test_core_optimizer_update_argument_errors(case):
    params, grads = core_update_args()
    rule, state0, state1, coef = "sgd", [], [], {"lr": 0.25}
    exc, match = ValueError, None
    if case == "unknown-rule":
        rule, match = "adamax", "rule"
    elif case == "grads-too-short":
        grads, match = grads[:1], "grads"
    elif case == "grads-too-long":
        grads, match = grads + [np.ones(2)], "grads"
    elif case == "grads-shape":
        grads[0], match = np.full((4, 3), 2.0), "shape"
    elif case == "grads-dtype":
        grads[1], exc, match = grads[1].astype(np.float32), TypeError, "dtype"
    elif case == "params-mixed-dtypes":
        params[1], exc, match = params[1].astype(np.float32), TypeError, "dtype"
        grads[1] = grads[1].astype(np.float32)
    elif case == "param-read-only":
        params[1].flags.writeable = False
        match = "params"
    elif case == "param-noncontiguous":
        params[0], match = np.ones((4, 3)).T, "params"
    elif case == "empty":
        params, grads, match = [], [], "empty"
    elif case == "missing-state":
        rule, coef, match = "rmsprop", {"lr": 0.1, "alpha": 0.9, "eps": 1e-8}, "state0"
    elif case == "state-shape":
        rule, coef, match = "adagrad", {"lr": 0.1, "eps": 1e-8}, "state0"
        state0 = [np.zeros((3, 4)), np.zeros(6)]
    elif case == "state-dtype":
        rule, coef = "adam", {"lr": 0.1, "beta1": 0.9, "beta2": 0.99, "eps": 1e-8, "step_size": 1.0}
        state0, state1 = [np.zeros((3, 4)), np.zeros(5)], [np.zeros((3, 4)), np.zeros(5, np.float32)]
        exc, match = TypeError, "state1"
    before = [p.copy() for p in params]
    with pytest.raises(exc, match=match):
        _core.optimizer_update(rule, params, grads, state0, state1, coef)
    for p, b in zip(params, before):  # nothing was updated
        np.testing.assert_array_equal(p, b)
    for s in state0 + state1:
        assert not s.any()


@pytest.mark.parametrize("kernel", ["optimizer_update", "scale_arrays", "clamp_arrays"])
def test_core_in_place_kernels_reject_or_handle_non_native_byte_order(kernel):
    """The in-place bindings check an array's dtype number, which ignores byte order: a
    byte-swapped float64 array must be refused (and left untouched) or updated correctly."""
    a = np.array([1.0, 7.0, -7.0, 2.0], dtype=np.dtype(np.float64).newbyteorder("S"))
    before = a.copy()
    if kernel == "optimizer_update":
        call = lambda: _core.optimizer_update("sgd", [a], [np.full(4, 2.0)], [], [], {"lr": 0.25})
        expected = before - 0.5
    elif kernel == "scale_arrays":
        call = lambda: _core.scale_arrays([a], 0.5)
        expected = before * 0.5
    else:
        call = lambda: _core.clamp_arrays([a], 5.0)
        expected = np.clip(before, -5.0, 5.0)
    try:
        call()
    except (TypeError, ValueError):
        np.testing.assert_array_equal(a, before)
    else:
        np.testing.assert_array_equal(a, expected)
