"""fastrnn.interop against PyTorch: torch's nn.RNN / nn.LSTM / nn.GRU weights loaded into
fastrnn layers give the same outputs, final states and gradients (torch autograd), packed
sequences included, and the way back (to_torch_state_dict) reproduces the layer."""
from __future__ import annotations

import subprocess
import sys
from typing import Dict

import numpy as np
import pytest

import fastrnn
from fastrnn.interop import from_torch_module, load_torch_state_dict, to_torch_grads, to_torch_state_dict
from fastrnn.layers import GRU, LSTM, RNN

torch = pytest.importorskip("torch")

TOL = {np.float32: 1e-5, np.float64: 1e-10}
TORCH_DTYPE = {np.float32: torch.float32, np.float64: torch.float64}
# name -> (torch class, torch kwargs, fastrnn class, fastrnn kwargs)
KINDS = {
    "rnn-tanh": (torch.nn.RNN, {"nonlinearity": "tanh"}, RNN, {"nonlinearity": "tanh"}),
    "rnn-relu": (torch.nn.RNN, {"nonlinearity": "relu"}, RNN, {"nonlinearity": "relu"}),
    "lstm": (torch.nn.LSTM, {}, LSTM, {}),
    "gru": (torch.nn.GRU, {}, GRU, {}),
}
WORST: Dict[str, float] = {}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    previous = fastrnn.get_num_threads()
    fastrnn.set_num_threads(1)
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    fastrnn.set_num_threads(previous)
    torch.set_num_threads(torch_threads)


def err(ours: np.ndarray, theirs) -> float:
    """max |ours - torch| / max(1, max |torch|)."""
    ref = theirs.detach().cpu().numpy() if hasattr(theirs, "detach") else np.asarray(theirs)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    return float(np.abs(ours.astype(np.float64) - ref).max() / max(1.0, np.abs(ref).max())) if ref.size else 0.0


def build(kind: str, bidirectional: bool, dtype, seed: int = 0):
    tcls, tkw, ocls, okw = KINDS[kind]
    torch.manual_seed(seed)
    module = tcls(5, 6, num_layers=2, bidirectional=bidirectional, batch_first=True, **tkw).to(TORCH_DTYPE[dtype])
    layer = ocls(5, 6, 2, bidirectional=bidirectional, dtype=dtype, seed=1, **okw)
    return module, layer


def as_tuple(s):
    return s if isinstance(s, tuple) else (s,)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_matches_torch_forward_and_gradients(kind, bidirectional, dtype, packed):
    module, layer = build(kind, bidirectional, dtype)
    load_torch_state_dict(layer, module.state_dict())  # torch tensors accepted directly
    is_lstm = kind == "lstm"
    N, T = 4, 7
    g = torch.Generator().manual_seed(2)
    tdt = TORCH_DTYPE[dtype]
    x = torch.randn(N, T, 5, generator=g, dtype=tdt, requires_grad=True)
    LD = 2 * (2 if bidirectional else 1)
    h0 = (0.5 * torch.randn(LD, N, 6, generator=g, dtype=tdt)).requires_grad_()
    c0 = (0.5 * torch.randn(LD, N, 6, generator=g, dtype=tdt)).requires_grad_()
    lengths = np.array([7, 3, 1, 5]) if packed else None

    tstate = (h0, c0) if is_lstm else h0
    if packed:
        seq = torch.nn.utils.rnn.pack_padded_sequence(x, torch.as_tensor(lengths), batch_first=True, enforce_sorted=False)
        tout, tfinal = module(seq, tstate)
        tout, _ = torch.nn.utils.rnn.pad_packed_sequence(tout, batch_first=True, total_length=T)
    else:
        tout, tfinal = module(x, tstate)
    state = (h0.detach().numpy(), c0.detach().numpy()) if is_lstm else h0.detach().numpy()
    out, final = layer.forward(x.detach().numpy(), state, lengths=lengths)
    errors = {"out": err(out, tout)}
    for i, (a, b) in enumerate(zip(as_tuple(final), as_tuple(tfinal))):
        errors[f"final[{i}]"] = err(a, b)

    # gradients: loss = <out, R> + <final, Rf>
    R = torch.randn(tout.shape, generator=g, dtype=tdt)
    Rf = [torch.randn(s.shape, generator=g, dtype=tdt) for s in as_tuple(tfinal)]
    loss = (tout * R).sum() + sum((s * r).sum() for s, r in zip(as_tuple(tfinal), Rf))
    loss.backward()
    dstate = tuple(r.numpy() for r in Rf)
    dx, dstate0 = layer.backward(R.numpy(), dstate if is_lstm else dstate[0])
    errors["dx"] = err(dx, x.grad)
    errors["dh0"] = err(as_tuple(dstate0)[0], h0.grad)
    if is_lstm:
        errors["dc0"] = err(dstate0[1], c0.grad)
    ours = to_torch_grads(layer)
    theirs = dict(module.named_parameters())
    assert list(ours) == list(theirs)  # same keys, same order
    for name, p in theirs.items():
        errors[name] = err(ours[name], p.grad)
    worst = max(errors.values())
    key = f"torch parity {np.dtype(dtype).name}"
    WORST[key] = max(WORST.get(key, 0.0), worst)
    assert worst < TOL[dtype], {k: f"{v:.2e}" for k, v in errors.items() if v >= TOL[dtype]}


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_round_trip_to_torch(kind, dtype):
    module, layer = build(kind, True, dtype, seed=3)
    for p in layer.params.values():  # non-zero everywhere, biases included
        p[...] = np.random.default_rng(4).uniform(-0.4, 0.4, p.shape)
    sd = to_torch_state_dict(layer)
    assert list(sd) == list(module.state_dict())
    assert all(isinstance(v, np.ndarray) and v.dtype == dtype for v in sd.values())
    module.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
    x = np.random.default_rng(5).standard_normal((3, 4, 5)).astype(dtype)
    out, final = layer.forward(x)
    tout, tfinal = module(torch.from_numpy(x))
    assert err(out, tout) < TOL[dtype]
    for a, b in zip(as_tuple(final), as_tuple(tfinal)):
        assert err(a, b) < TOL[dtype]
    # and back again: identical parameters
    twin = type(layer)(5, 6, 2, bidirectional=True, dtype=dtype, **KINDS[kind][3])
    load_torch_state_dict(twin, sd)
    for k in layer.params:
        np.testing.assert_allclose(twin.params[k], layer.params[k], rtol=0, atol=TOL[dtype] / 10)


def test_from_torch_module_and_prefix():
    torch.manual_seed(0)
    module = torch.nn.GRU(3, 4, num_layers=2, bidirectional=True, dropout=0.25, batch_first=False).double()
    layer = from_torch_module(module, dtype=np.float64)
    assert isinstance(layer, GRU) and layer.num_layers == 2 and layer.bidirectional
    assert layer.dropout == 0.25 and not layer.batch_first
    layer.eval()
    module.eval()
    x = torch.randn(5, 2, 3, dtype=torch.float64)  # time-major, like the module
    out, h = layer.forward(x.numpy())
    tout, th = module(x)
    assert err(out, tout) < 1e-10 and err(h, th) < 1e-10
    # prefix: the submodule entries of a larger model's state dict
    sd = {f"encoder.rnn.{k}": v for k, v in module.state_dict().items()}
    sd["decoder.weight"] = torch.zeros(3)
    other = GRU(3, 4, 2, bidirectional=True, dtype=np.float64)
    load_torch_state_dict(other, sd, prefix="encoder.rnn.")
    for k in layer.params:
        np.testing.assert_array_equal(other.params[k], layer.params[k])
    # bias=False modules load zero biases
    nb = torch.nn.LSTM(3, 4, bias=False)
    lstm = from_torch_module(nb)
    assert not lstm.params["b_l0"].any()


def test_load_errors_name_the_key():
    layer = LSTM(5, 6, 2, bidirectional=True)
    module = torch.nn.LSTM(5, 6, 2, bidirectional=True, batch_first=True)
    sd = dict(module.state_dict())
    before = {k: v.copy() for k, v in layer.params.items()}
    bad = dict(sd, weight_hh_l1_reverse=torch.zeros(24, 5))
    with pytest.raises(ValueError, match=r"weight_hh_l1_reverse.*\(24, 6\).*\(24, 5\)"):
        load_torch_state_dict(layer, bad)
    for k in before:  # nothing was written
        np.testing.assert_array_equal(layer.params[k], before[k])
    missing = {k: v for k, v in sd.items() if k != "weight_ih_l1"}
    with pytest.raises(ValueError, match="weight_ih_l1"):
        load_torch_state_dict(layer, missing)
    with pytest.raises(ValueError, match="weight_ih_l2"):
        load_torch_state_dict(layer, dict(sd, weight_ih_l2=torch.zeros(24, 12)))
    with pytest.raises(ValueError, match="weight_ih_l0"):  # a unidirectional layer does not fit
        load_torch_state_dict(LSTM(4, 6, 2, bidirectional=True), sd)
    with pytest.raises(ValueError, match="reset_after"):
        load_torch_state_dict(GRU(5, 6, reset_after=False), torch.nn.GRU(5, 6).state_dict())
    with pytest.raises(TypeError, match="layer"):
        load_torch_state_dict(object(), sd)
    with pytest.raises(TypeError, match="module"):
        from_torch_module(torch.nn.Linear(2, 3))


def test_interop_does_not_import_torch(tmp_path):
    code = "import sys, fastrnn.interop, fastrnn.layers, fastrnn.models; assert 'torch' not in sys.modules"
    # Run away from the source tree, so the installed package is the one imported.
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)


def test_report_worst_errors():
    for kind, value in sorted(WORST.items()):
        print(f"worst {kind}: {value:.3g}")
