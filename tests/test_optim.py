"""Tests of fastrnn.optim: update rules (against hand-written formulas and torch.optim),
bitwise state_dict round trips, gradient clipping, schedules and argument errors."""
from __future__ import annotations

import io
import math
from typing import Callable, Dict, List

import numpy as np
import pytest

from fastrnn import optim
from fastrnn.optim import (SGD, Adagrad, Adam, AdamW, ExponentialLR, RMSprop, StepLR,
                           clip_grad_norm, clip_grad_value)

SHAPES = {"Wx": (3, 8), "Wh": (2, 8), "b": (8,)}
DTYPES = [np.float64, np.float32]


def make_params(dtype, seed: int = 0) -> Dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(dtype) for k, s in SHAPES.items()}


def make_grads(dtype, n_steps: int, seed: int = 1) -> List[Dict[str, np.ndarray]]:
    """Gradients with |g| in [0.1, 2]: well away from the eps terms, so that formulas that
    put eps in slightly different places (Adagrad here and in torch) agree to 1e-6."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_steps):
        out.append({k: (rng.choice([-1.0, 1.0], s) * rng.uniform(0.1, 2.0, s)).astype(dtype)
                    for k, s in SHAPES.items()})
    return out


def copy(d: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    return {k: v.copy() for k, v in d.items()}


# ---------------------------------------------------------------- hand-written references
# Each takes float64 copies of the parameters and the list of gradients and returns the
# parameters after all steps, written straight from the formulas.


def ref_sgd(p, grads, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
    p = copy(p)
    buf = {k: np.zeros_like(v) for k, v in p.items()}
    for g in grads:
        for k in p:
            d = g[k] + weight_decay * p[k]
            if momentum:
                buf[k] = momentum * buf[k] + d
                d = d + momentum * buf[k] if nesterov else buf[k]
            p[k] = p[k] - lr * d
    return p


def ref_adagrad(p, grads, lr, eps=1e-8):
    p = copy(p)
    mem = {k: np.zeros_like(v) for k, v in p.items()}
    for g in grads:
        for k in p:
            mem[k] = mem[k] + g[k] * g[k]
            p[k] = p[k] - lr * g[k] / np.sqrt(mem[k] + eps)
    return p


def ref_rmsprop(p, grads, lr, alpha=0.95, eps=1e-8):
    p = copy(p)
    m = {k: np.zeros_like(v) for k, v in p.items()}
    for g in grads:
        for k in p:
            m[k] = alpha * m[k] + (1 - alpha) * g[k] ** 2
            p[k] = p[k] - lr * g[k] / (np.sqrt(m[k]) + eps)
    return p


def ref_adam(p, grads, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled=False):
    b1, b2 = betas
    p = copy(p)
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(x) for k, x in p.items()}
    for t, g in enumerate(grads, start=1):
        for k in p:
            d = g[k]
            if decoupled:
                p[k] = p[k] * (1 - lr * weight_decay)
            else:
                d = d + weight_decay * p[k]
            m[k] = b1 * m[k] + (1 - b1) * d
            v[k] = b2 * v[k] + (1 - b2) * d * d
            mhat = m[k] / (1 - b1 ** t)
            vhat = v[k] / (1 - b2 ** t)
            p[k] = p[k] - lr * mhat / (np.sqrt(vhat) + eps)
    return p


# (id, fastrnn factory, reference, torch factory name and kwargs)
CASES = [
    ("sgd", lambda P: SGD(P, lr=0.1), lambda P, G: ref_sgd(P, G, 0.1),
     ("SGD", dict(lr=0.1))),
    ("sgd_wd", lambda P: SGD(P, lr=0.1, weight_decay=0.01), lambda P, G: ref_sgd(P, G, 0.1, weight_decay=0.01),
     ("SGD", dict(lr=0.1, weight_decay=0.01))),
    ("momentum", lambda P: SGD(P, lr=0.05, momentum=0.9), lambda P, G: ref_sgd(P, G, 0.05, 0.9),
     ("SGD", dict(lr=0.05, momentum=0.9))),
    ("nesterov", lambda P: SGD(P, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
     lambda P, G: ref_sgd(P, G, 0.05, 0.9, True, 1e-3),
     ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3))),
    ("adagrad", lambda P: Adagrad(P, lr=0.1), lambda P, G: ref_adagrad(P, G, 0.1),
     ("Adagrad", dict(lr=0.1, eps=1e-8))),
    ("rmsprop", lambda P: RMSprop(P, lr=2e-3), lambda P, G: ref_rmsprop(P, G, 2e-3),
     ("RMSprop", dict(lr=2e-3, alpha=0.95, eps=1e-8))),
    ("adam", lambda P: Adam(P, lr=1e-2), lambda P, G: ref_adam(P, G, 1e-2),
     ("Adam", dict(lr=1e-2))),
    ("adam_wd", lambda P: Adam(P, lr=1e-2, betas=(0.8, 0.99), weight_decay=0.1),
     lambda P, G: ref_adam(P, G, 1e-2, (0.8, 0.99), weight_decay=0.1),
     ("Adam", dict(lr=1e-2, betas=(0.8, 0.99), weight_decay=0.1))),
    ("adamw", lambda P: AdamW(P, lr=1e-2), lambda P, G: ref_adam(P, G, 1e-2, weight_decay=1e-2, decoupled=True),
     ("AdamW", dict(lr=1e-2))),
    ("adamw_wd", lambda P: AdamW(P, lr=1e-2, weight_decay=0.3),
     lambda P, G: ref_adam(P, G, 1e-2, weight_decay=0.3, decoupled=True),
     ("AdamW", dict(lr=1e-2, weight_decay=0.3))),
]
IDS = [c[0] for c in CASES]


def run(factory: Callable, params, grads):
    opt = factory(params)
    for g in grads:
        opt.step(g)
    return opt


# ---------------------------------------------------------------- update rules


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_matches_formula(case, dtype):
    _, factory, ref, _ = case
    p0 = make_params(dtype)
    grads = make_grads(dtype, 6)
    params = copy(p0)
    ids_before = {k: id(v) for k, v in params.items()}
    opt = run(factory, params, grads)
    want = ref({k: v.astype(np.float64) for k, v in p0.items()},
               [{k: v.astype(np.float64) for k, v in g.items()} for g in grads])
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=2e-5, atol=2e-6)
    for k in p0:
        assert params[k].dtype == dtype                       # in place, dtype kept
        assert id(params[k]) == ids_before[k] and opt.params[k] is params[k]
        np.testing.assert_allclose(params[k], want[k], **tol, err_msg=k)
    for bufs in opt.state.values():
        for k, a in bufs.items():
            assert a.dtype == dtype and a.shape == p0[k].shape
    assert opt.t == 6


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_matches_torch(case, dtype):
    torch = pytest.importorskip("torch")
    _, factory, _, (tname, kwargs) = case
    p0 = make_params(dtype)
    grads = make_grads(dtype, 5)
    params = copy(p0)
    opt = factory(params)
    tparams = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in p0.items()}
    topt = getattr(torch.optim, tname)(list(tparams.values()), **kwargs)
    for g in grads:
        opt.step(g)
        for k, tp in tparams.items():
            tp.grad = torch.from_numpy(g[k].copy())
        topt.step()
    for k in p0:
        np.testing.assert_allclose(params[k], tparams[k].detach().numpy(), rtol=1e-6, atol=1e-6, err_msg=k)


def test_float32_computed_in_float32():
    """A float32 update is the float32 rounding of float32 operations, not a float64
    update rounded at the end (which would show up as a difference in the last bits)."""
    p = {"w": np.array([1.0, -2.0, 3.0], np.float32)}
    g = {"w": np.array([0.3, 0.7, -1.1], np.float32)}
    SGD(p, lr=0.1).step(g)
    np.testing.assert_array_equal(p["w"], np.array([1.0, -2.0, 3.0], np.float32)
                                  - np.float32(0.1) * g["w"])


def test_grads_not_modified_and_lr_settable():
    params = make_params(np.float64)
    grads = make_grads(np.float64, 2)
    saved = [copy(g) for g in grads]
    opt = SGD(params, lr=0.1, momentum=0.9, weight_decay=0.1)
    for g in grads:
        opt.step(g)
    for g, s in zip(grads, saved):
        for k in g:
            np.testing.assert_array_equal(g[k], s[k])
    opt.lr = 0.0
    before = copy(params)
    opt.step({k: np.zeros_like(v) for k, v in params.items()})  # lr 0: nothing moves
    for k in params:
        np.testing.assert_array_equal(params[k], before[k])
    opt.learning_rate = 0.25
    assert opt.lr == 0.25 and opt.learning_rate == 0.25


def test_defaults():
    p = make_params(np.float32)
    assert (Adagrad(p).lr, Adagrad(p).eps) == (1e-2, 1e-8)
    r = RMSprop(p)
    assert (r.lr, r.alpha, r.eps) == (2e-3, 0.95, 1e-8)
    a = Adam(p)
    assert (a.lr, a.betas, a.eps, a.weight_decay) == (1e-3, (0.9, 0.999), 1e-8, 0.0)
    w = AdamW(p)
    assert (w.lr, w.betas, w.eps, w.weight_decay) == (1e-3, (0.9, 0.999), 1e-8, 1e-2)
    s = SGD(p, lr=0.1)
    assert (s.momentum, s.nesterov, s.weight_decay) == (0.0, False, 0.0)


def test_noncontiguous_params_updated_in_place():
    base = np.arange(12, dtype=np.float64).reshape(3, 4)
    params = {"w": base[:, ::2]}           # a strided view of base
    Adam(params, lr=0.5).step({"w": np.ones((3, 2))})
    np.testing.assert_allclose(base[:, ::2], np.arange(12.0).reshape(3, 4)[:, ::2] - 0.5)
    np.testing.assert_array_equal(base[:, 1::2], np.arange(12.0).reshape(3, 4)[:, 1::2])


# ---------------------------------------------------------------- state dicts


def npz_round_trip(d):
    buf = io.BytesIO()
    np.savez(buf, **d)
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_state_dict_resume_is_bitwise(case, dtype):
    _, factory, _, _ = case
    grads = make_grads(dtype, 7)
    # Uninterrupted run.
    pa = make_params(dtype)
    a = factory(pa)
    a.lr = a.lr * 0.5                           # a changed lr must be restored too
    for g in grads:
        a.step(g)
    # Interrupted after 3 steps, saved through an .npz, resumed in a fresh optimizer.
    pb = make_params(dtype)
    b = factory(pb)
    b.lr = b.lr * 0.5
    for g in grads[:3]:
        b.step(g)
    saved_params = npz_round_trip(pb)
    saved_state = npz_round_trip(b.state_dict())
    assert all(isinstance(v, np.ndarray) for v in saved_state.values())
    pc = {k: v.copy() for k, v in saved_params.items()}
    c = factory(pc)
    c.load_state_dict(saved_state)
    assert c.t == 3 and c.lr == b.lr
    for g in grads[3:]:
        c.step(g)
    for k in pa:
        assert np.array_equal(pa[k], pc[k]), k              # bitwise
    sa, sc = a.state_dict(), c.state_dict()
    assert sa.keys() == sc.keys()
    for k in sa:
        if isinstance(sa[k], np.ndarray):
            assert sa[k].dtype == sc[k].dtype and np.array_equal(sa[k], sc[k]), k
        else:
            assert sa[k] == sc[k], k


def test_state_dict_contents():
    p = make_params(np.float32)
    opt = Adam(p, lr=3e-3, betas=(0.8, 0.9))
    opt.step(make_grads(np.float32, 1)[0])
    d = opt.state_dict()
    assert d["type"] == "Adam" and d["lr"] == 3e-3 and d["t"] == 1
    assert d["beta1"] == 0.8 and d["beta2"] == 0.9
    assert sorted(k for k in d if "/" in k) == sorted([f"m/{k}" for k in p] + [f"v/{k}" for k in p])
    assert all(isinstance(v, (np.ndarray, float, int, str)) for v in d.values())
    d["m/Wx"][...] = 123.0                                   # a copy, not the live buffer
    assert not np.any(opt.state["m"]["Wx"] == 123.0)
    assert SGD(p, lr=0.1).state_dict().keys() == {"type", "lr", "t", "momentum", "nesterov", "weight_decay"}
    assert "buf/Wx" in SGD(p, lr=0.1, momentum=0.9).state_dict()
    assert "mem/b" in Adagrad(p).state_dict() and "m/b" in RMSprop(p).state_dict()


def test_load_state_dict_errors():
    p = make_params(np.float64)
    d = Adam(p).state_dict()
    opt = Adam(make_params(np.float64))
    with pytest.raises(ValueError, match="missing keys.*'v/Wh'"):
        opt.load_state_dict({k: v for k, v in d.items() if k != "v/Wh"})
    with pytest.raises(ValueError, match="unexpected keys.*'m/other'"):
        opt.load_state_dict({**d, "m/other": np.zeros(3)})
    with pytest.raises(ValueError, match=r"'m/b' has shape \(9,\).*\(8,\)"):
        opt.load_state_dict({**d, "m/b": np.zeros(9)})
    with pytest.raises(TypeError, match="'m/b' has dtype float32"):
        opt.load_state_dict({**d, "m/b": np.zeros(8, np.float32)})
    with pytest.raises(ValueError, match="saved by RMSprop, not Adam"):
        opt.load_state_dict({**d, "type": "RMSprop"})
    with pytest.raises(ValueError, match="saved by Adam, not SGD"):  # not its missing keys
        SGD(make_params(np.float64), lr=0.1).load_state_dict(d)
    with pytest.raises(ValueError, match="beta1"):
        opt.load_state_dict({**d, "beta1": 1.5})
    with pytest.raises(ValueError, match="momentum"):
        SGD(make_params(np.float64), lr=0.1).load_state_dict(
            SGD(make_params(np.float64), lr=0.1, momentum=0.9).state_dict())
    # A failed load changes nothing.
    assert opt.t == 0 and np.all(opt.state["m"]["b"] == 0)


# ---------------------------------------------------------------- step errors


def test_step_errors_name_the_key():
    p = make_params(np.float32)
    opt = RMSprop(p)
    g = make_grads(np.float32, 1)[0]
    before = copy(p)
    with pytest.raises(ValueError, match="no gradient for parameter 'Wh'"):
        opt.step({k: v for k, v in g.items() if k != "Wh"})
    with pytest.raises(ValueError, match=r"grads\['b'\] has shape \(7,\).*params\['b'\] has shape \(8,\)"):
        opt.step({**g, "b": np.zeros(7, np.float32)})
    with pytest.raises(TypeError, match=r"grads\['Wx'\] has dtype float64"):
        opt.step({**g, "Wx": g["Wx"].astype(np.float64)})
    with pytest.raises(TypeError, match=r"grads\['Wx'\] must be a np.ndarray"):
        opt.step({**g, "Wx": g["Wx"].tolist()})
    with pytest.raises(ValueError, match="not parameters: \\['extra'\\]"):
        opt.step({**g, "extra": np.zeros(2, np.float32)})
    # Errors are raised before any parameter or state changes.
    assert opt.t == 0
    for k in p:
        np.testing.assert_array_equal(p[k], before[k])
        assert not opt.state["m"][k].any()


def test_constructor_errors():
    p = make_params(np.float64)
    with pytest.raises(TypeError, match=r"params\['i'\] has dtype int64"):
        SGD({"i": np.zeros(3, np.int64)}, lr=0.1)
    with pytest.raises(TypeError, match=r"params\['x'\] must be a np.ndarray"):
        Adam({"x": [1.0, 2.0]})
    ro = np.zeros(3)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match=r"params\['r'\] is read-only"):
        Adam({"r": ro})
    with pytest.raises(ValueError, match="params is empty"):
        Adam({})
    with pytest.raises(ValueError, match="lr"):
        SGD(p, lr=-1.0)
    with pytest.raises(ValueError, match="lr"):
        Adam(p).lr = float("nan")
    with pytest.raises(ValueError, match="nesterov"):
        SGD(p, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="beta2"):
        Adam(p, betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="betas"):
        Adam(p, betas=0.9)
    with pytest.raises(ValueError, match="alpha"):
        RMSprop(p, alpha=1.5)
    with pytest.raises(ValueError, match="eps"):
        Adagrad(p, eps=-1)


# ---------------------------------------------------------------- clipping


def test_clip_grad_norm_scales_like_torch():
    rng = np.random.default_rng(3)
    grads = {"a": rng.standard_normal((4, 5)), "b": rng.standard_normal(7).astype(np.float32) * 3}
    want_norm = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads.values()))
    orig = copy(grads)
    norm = clip_grad_norm(grads, 1.0)
    assert isinstance(norm, float) and norm == pytest.approx(want_norm, rel=1e-12)
    coef = 1.0 / (want_norm + 1e-6)
    for k in grads:
        assert grads[k].dtype == orig[k].dtype
        np.testing.assert_allclose(grads[k], orig[k] * coef, rtol=1e-6)
    after = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads.values()))
    assert after == pytest.approx(1.0, rel=1e-5)
    try:
        import torch
    except ImportError:
        return
    tg = [torch.tensor(orig[k].copy()) for k in orig]
    tps = [torch.zeros_like(t, requires_grad=True) for t in tg]
    for tp, t in zip(tps, tg):
        tp.grad = t
    tnorm = torch.nn.utils.clip_grad_norm_(tps, 1.0)
    assert float(tnorm) == pytest.approx(norm, rel=1e-6)
    for tp, k in zip(tps, orig):
        np.testing.assert_allclose(grads[k], tp.grad.numpy(), rtol=1e-6, atol=1e-7)


def test_clip_grad_norm_below_threshold_untouched_and_lists():
    g = [np.array([3.0, 4.0]), np.array([[0.0]], np.float32)]   # norm 5; a list, min-char-rnn style
    norm = clip_grad_norm(g, 5.0)
    assert norm == 5.0
    np.testing.assert_array_equal(g[0], [3.0, 4.0])
    assert clip_grad_norm({}, 1.0) == 0.0
    assert clip_grad_norm(g, 2.5) == 5.0
    np.testing.assert_allclose(g[0], [1.5, 2.0], rtol=1e-6)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_clip_grad_norm_nonfinite_leaves_grads(bad):
    grads = {"a": np.array([1.0, bad, 2.0]), "b": np.array([10.0, 20.0], np.float32)}
    orig = copy(grads)
    norm = clip_grad_norm(grads, 1.0)
    assert not math.isfinite(norm)
    assert math.isnan(norm) if np.isnan(bad) else norm == math.inf
    for k in grads:
        np.testing.assert_array_equal(grads[k], orig[k])


def test_clip_grad_norm_float32_no_overflow():
    g = {"a": np.full(4, 1e30, np.float32)}      # squares overflow float32, not float64
    norm = clip_grad_norm(g, 1.0)
    assert norm == pytest.approx(2e30, rel=1e-6)
    np.testing.assert_allclose(g["a"], np.full(4, 0.5), rtol=1e-5)


def test_clip_grad_value():
    grads = {"a": np.array([-7.0, -5.0, 0.5, 5.0, 9.0, np.nan]), "b": np.array([[6.0]], np.float32)}
    a_id = id(grads["a"])
    clip_grad_value(grads, 5)
    np.testing.assert_array_equal(grads["a"], [-5.0, -5.0, 0.5, 5.0, 5.0, np.nan])
    assert id(grads["a"]) == a_id and grads["b"].dtype == np.float32 and grads["b"][0, 0] == 5.0
    dW = np.array([10.0, -10.0])
    clip_grad_value([dW], 1.0)                    # min-char-rnn: for dparam in [dWxh, ...]
    np.testing.assert_array_equal(dW, [1.0, -1.0])


def test_clip_errors():
    with pytest.raises(TypeError, match=r"grads\['i'\]"):
        clip_grad_value({"i": np.zeros(2, np.int32)}, 1.0)
    with pytest.raises(ValueError, match="max_norm"):
        clip_grad_norm({"a": np.zeros(2)}, -1.0)
    with pytest.raises(ValueError, match="clip"):
        clip_grad_value({"a": np.zeros(2)}, float("nan"))


# ---------------------------------------------------------------- schedules


# ---------------------------------------------------------------- the optimizer's own clipping

CLIP_CASES = [c for c in CASES if c[0] in ("sgd", "nesterov", "adagrad", "rmsprop", "adam_wd", "adamw_wd")]


def large_grads(dtype, n_steps: int) -> List[Dict[str, np.ndarray]]:
    """Gradients with elements beyond 1 and a global norm beyond 2, so clipping acts."""
    return [{k: v * dtype(3) for k, v in g.items()} for g in make_grads(dtype, n_steps, seed=5)]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("case", CLIP_CASES, ids=[c[0] for c in CLIP_CASES])
@pytest.mark.parametrize("clip", [{"clipvalue": 1.0}, {"global_clipnorm": 2.0}], ids=["value", "norm"])
def test_optimizer_clipping_gives_the_bits_of_clipping_then_stepping(case, dtype, clip):
    _, factory, _, _ = case
    grads = large_grads(dtype, 4)
    fused_params, split_params = make_params(dtype), make_params(dtype)
    split = factory(split_params)
    fused = type(split)(fused_params, **_ctor_args(split), **clip)  # the same optimizer, clipping
    for g in grads:
        given = copy(g)
        fused.step(g)
        for k in g:  # grads are left as they were
            np.testing.assert_array_equal(g[k], given[k])
        if "clipvalue" in clip:
            clip_grad_value(given, clip["clipvalue"])
        else:
            norm = clip_grad_norm(given, clip["global_clipnorm"])
            assert fused.last_grad_norm == norm and norm > clip["global_clipnorm"]
        split.step(given)
    for k in fused_params:
        np.testing.assert_array_equal(fused_params[k], split_params[k])


def _ctor_args(opt) -> Dict[str, object]:
    """The constructor arguments that rebuild ``opt`` (its lr and hyperparameters)."""
    args: Dict[str, object] = {"lr": opt.lr}
    for h in opt._hyper:
        args[h] = getattr(opt, h)
    if "beta1" in args:
        args["betas"] = (args.pop("beta1"), args.pop("beta2"))
    return args


def test_optimizer_clipping_reaches_noncontiguous_params():
    base = np.zeros((3, 4))
    params = {"w": base[:, ::2], "v": np.zeros(5)}
    SGD(params, lr=1.0, clipvalue=0.5).step({"w": np.full((3, 2), 4.0), "v": np.full(5, -3.0)})
    np.testing.assert_array_equal(base[:, ::2], np.full((3, 2), -0.5))
    np.testing.assert_array_equal(params["v"], np.full(5, 0.5))


def test_optimizer_clipping_errors_and_repr():
    p = make_params(np.float32)
    with pytest.raises(ValueError, match="at most one of clipvalue and global_clipnorm"):
        Adam(p, clipvalue=1.0, global_clipnorm=1.0)
    with pytest.raises(ValueError, match="clipvalue must be > 0"):
        Adagrad(p, clipvalue=0)
    with pytest.raises(ValueError, match="global_clipnorm must lie in"):
        RMSprop(p, global_clipnorm=float("inf"))
    with pytest.raises(TypeError, match="clipnorm"):
        Adam(p, clipnorm=1.0)  # per-array norms are not offered
    assert "clipvalue=5.0" in repr(Adagrad(p, lr=0.1, clipvalue=5))
    assert repr(StepLR(Adam(p), 2)) == "StepLR(step_size=2, gamma=0.1, last_epoch=0, lr=0.001)"
    assert repr(ExponentialLR(Adam(p), 0.9)) == "ExponentialLR(gamma=0.9, last_epoch=0, lr=0.001)"
    opt = Adam(p, global_clipnorm=1.0)
    assert opt.last_grad_norm is None
    with pytest.raises(ValueError, match=r"grads\['b'\] has shape \(7,\)"):
        opt.step({**make_grads(np.float32, 1)[0], "b": np.zeros(7, np.float32)})
    assert opt.t == 0


def test_optimizer_global_clipnorm_leaves_a_nonfinite_norm_unscaled():
    p, q = make_params(np.float64), make_params(np.float64)
    g = make_grads(np.float64, 1)[0]
    g["b"][0] = np.inf
    SGD(p, lr=0.1, global_clipnorm=1.0).step(g)
    SGD(q, lr=0.1).step(g)
    for k in p:
        np.testing.assert_array_equal(p[k], q[k])


def test_step_lr():
    opt = SGD(make_params(np.float64), lr=1.0)
    s = StepLR(opt, step_size=3, gamma=0.5)
    lrs = []
    for _ in range(7):
        s.step()
        lrs.append(opt.lr)
    assert lrs == [1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25]
    assert s.get_last_lr() == 0.25 and s.last_epoch == 7


def test_exponential_lr_and_char_rnn_decay():
    opt = RMSprop(make_params(np.float32), lr=2e-3)
    s = ExponentialLR(opt, gamma=0.97)
    lrs = []
    for epoch in range(1, 14):            # char-rnn: decay 0.97 from epoch 10 on
        if epoch >= 10:
            s.step()
        lrs.append(opt.lr)
    assert lrs[:9] == [2e-3] * 9
    np.testing.assert_allclose(lrs[9:], [2e-3 * 0.97 ** k for k in range(1, 5)], rtol=1e-14)


@pytest.mark.parametrize("make", [lambda o: StepLR(o, 2, 0.3), lambda o: ExponentialLR(o, 0.9)],
                         ids=["step", "exp"])
def test_scheduler_matches_torch(make):
    torch = pytest.importorskip("torch")
    opt = Adam(make_params(np.float64), lr=0.1)
    s = make(opt)
    tp = torch.zeros(1, requires_grad=True)
    topt = torch.optim.Adam([tp], lr=0.1)
    ts = (torch.optim.lr_scheduler.StepLR(topt, 2, 0.3) if isinstance(s, StepLR)
          else torch.optim.lr_scheduler.ExponentialLR(topt, 0.9))
    for _ in range(6):
        topt.step()
        ts.step()
        s.step()
        assert opt.lr == pytest.approx(ts.get_last_lr()[0], rel=1e-15)


def test_scheduler_state_dict_round_trip():
    opt = SGD(make_params(np.float64), lr=1.0)
    s = StepLR(opt, 2, 0.5)
    for _ in range(3):
        s.step()
    saved_opt = npz_round_trip(opt.state_dict())
    saved = npz_round_trip(s.state_dict())
    opt2 = SGD(make_params(np.float64), lr=1.0)
    s2 = StepLR(opt2, 5, 0.9)                 # hyperparameters are restored too
    opt2.load_state_dict(saved_opt)
    s2.load_state_dict(saved)
    assert (s2.step_size, s2.gamma, s2.last_epoch, s2.base_lr) == (2, 0.5, 3, 1.0)
    for _ in range(4):
        s.step()
        s2.step()
        assert opt.lr == opt2.lr
    with pytest.raises(ValueError, match="ExponentialLR scheduler"):
        s2.load_state_dict({**saved, "type": "ExponentialLR"})
    with pytest.raises(ValueError, match="missing keys.*gamma"):
        s2.load_state_dict({k: v for k, v in saved.items() if k != "gamma"})
    with pytest.raises(ValueError, match="step_size"):
        StepLR(opt, 0)
    with pytest.raises(TypeError, match="Optimizer"):
        ExponentialLR(object(), 0.9)


def test_public_names():
    for name in optim.__all__:
        assert getattr(optim, name).__doc__, name
