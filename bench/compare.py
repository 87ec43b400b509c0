"""Side-by-side comparison of fastrnn with the NumPy reference and PyTorch's CPU RNNs.

Everything is measured in one process run, alternating the contenders call by call, and
reported as ratios and GFLOP/s (forward FLOPs = 2·T·N·(D+H)·G·H, forward+backward = 3×).
The GFLOP/s are also shown as a share of this machine's matrix-multiply ceiling,
numpy.matmul on 2048² float32, measured in the same run.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/compare.py

(The OpenBLAS variables, when set, hold NumPy's matmul to an older kernel.) PyTorch is
optional: without it those columns are left out.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

import fastrnn
from fastrnn import _core, functional, reference

try:
    import torch
except ImportError:  # PyTorch is an optional peer
    torch = None

GATES = {"rnn": 1, "lstm": 4, "gru": 3}
SHAPES = {"S1": (100, 64, 512, 512), "S2": (50, 50, 128, 256), "S3": (100, 1, 256, 256)}  # T, N, D, H


# ---------------------------------------------------------------- timing


def race(contenders: Dict[str, Callable[[], object]], repeats: int, rounds: int = 3) -> Dict[str, float]:
    """Best seconds per call of each contender (see race_samples)."""
    samples = race_samples(contenders, repeats, rounds)
    return {name: min(times, default=float("inf")) for name, times in samples.items()}


def race_samples(contenders: Dict[str, Callable[[], object]], repeats: int, rounds: int = 3,
                 setup: Optional[Dict[str, Callable[[], object]]] = None) -> Dict[str, List[float]]:
    """Seconds of every timed call of each contender.

    Contenders take turns in blocks of `repeats` calls, `rounds` times, so that machine
    noise falls on all of them alike. Between blocks the process sleeps briefly: thread
    pools (OpenBLAS's, PyTorch's, OpenMP's) keep spinning for a while after a call, and a
    contender timed right after another's would otherwise share its cores with them.
    `setup[name]()`, when given, runs before each of that contender's blocks (to set its
    thread count, say); the first call of a block is not timed.
    """
    times: Dict[str, List[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            if setup and name in setup:
                setup[name]()
            time.sleep(0.3)
            fn()
            for _ in range(repeats):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    return times


def flops(T: int, N: int, D: int, H: int, G: int) -> float:
    return 3.0 * 2 * T * N * (D + H) * G * H


def matmul_ceiling(repeats: int) -> Tuple[float, float]:
    """GFLOP/s of numpy.matmul and of fastrnn's own matmul on 2048² float32."""
    a = np.random.default_rng(0).standard_normal((2048, 2048)).astype(np.float32)
    t = race({"numpy": lambda: a @ a, "fastrnn": lambda: _core.matmul(a, a)}, repeats)
    f = 2.0 * 2048**3
    return f / t["numpy"] / 1e9, f / t["fastrnn"] / 1e9


# ---------------------------------------------------------------- problems


def problem(cell: str, T: int, N: int, D: int, H: int, scale: float = 1.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    G = GATES[cell]
    k = scale / np.sqrt(H)
    f32 = np.float32
    p = {
        "x": rng.standard_normal((N, T, D)).astype(f32),
        "h0": rng.standard_normal((N, H)).astype(f32) * 0.1,
        "Wx": rng.uniform(-k, k, (D, G * H)).astype(f32),
        "Wh": rng.uniform(-k, k, (H, G * H)).astype(f32),
        "b": rng.uniform(-k, k, G * H).astype(f32),
        "bh": rng.uniform(-k, k, G * H).astype(f32),
        "dh": rng.standard_normal((N, T, H)).astype(f32),
    }
    return p


def contract_call(module, cell: str, p) -> Callable[[], object]:
    """forward then backward through the CS231n functions of `module`."""
    if cell == "rnn":
        def run():
            h, cache = module.rnn_forward(p["x"], p["h0"], p["Wx"], p["Wh"], p["b"])
            return h, module.rnn_backward(p["dh"], cache)
    elif cell == "lstm":
        def run():
            h, cache = module.lstm_forward(p["x"], p["h0"], p["Wx"], p["Wh"], p["b"])
            return h, module.lstm_backward(p["dh"], cache)
    else:
        def run():
            h, cache = module.gru_forward(p["x"], p["h0"], p["Wx"], p["Wh"], p["b"], p["bh"])
            return h, module.gru_backward(p["dh"], cache)
    return run


def torch_call(cell: str, p, backward: bool = True) -> Callable[[], object]:
    """The same computation with torch.nn.RNN/LSTM/GRU (batch_first), weights copied in;
    with backward=False the forward only, under torch.no_grad()."""
    D = p["x"].shape[2]
    H = p["h0"].shape[1]
    module = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](D, H, batch_first=True)
    w_ih, w_hh = p["Wx"].T.copy(), p["Wh"].T.copy()
    if cell == "lstm":  # ours i,f,o,g -> torch i,f,g,o
        order = np.r_[0:2 * H, 3 * H:4 * H, 2 * H:3 * H]
        w_ih, w_hh, b = w_ih[order], w_hh[order], p["b"][order]
    else:
        b = p["b"]
    with torch.no_grad():
        module.weight_ih_l0.copy_(torch.from_numpy(w_ih))
        module.weight_hh_l0.copy_(torch.from_numpy(w_hh))
        module.bias_ih_l0.copy_(torch.from_numpy(b))
        module.bias_hh_l0.copy_(torch.from_numpy(p["bh"] if cell == "gru" else np.zeros_like(b)))
    x = torch.from_numpy(p["x"]).requires_grad_(backward)
    h0 = torch.from_numpy(p["h0"][None])
    state = (h0, torch.zeros_like(h0)) if cell == "lstm" else h0
    dh = torch.from_numpy(p["dh"])

    def forward():
        with torch.no_grad():
            return module(x, state)[0]

    def run():
        module.zero_grad(set_to_none=True)
        x.grad = None
        out, _ = module(x, state)
        out.backward(dh)
        return out

    return run if backward else forward


def check_same(cell: str, p, torch_run) -> float:
    """Max relative difference of h between fastrnn and the others (a benchmark that
    computes something else measures nothing)."""
    h, _ = contract_call(functional, cell, p)()
    T = min(p["x"].shape[1], 5)
    small = dict(p, x=p["x"][:, :T], dh=p["dh"][:, :T])
    h_ref, _ = contract_call(reference, cell, small)()
    err = float(np.max(np.abs(h[:, :T] - h_ref)))
    if torch_run is not None:
        err = max(err, float(np.max(np.abs(h - torch_run().detach().numpy()))))
    return err


# ---------------------------------------------------------------- sections


def main_table(ceiling: float, repeats: int, cells: Sequence[str]) -> List[dict]:
    """Every cell at S1, S2, S3: fastrnn, PyTorch and the reference."""
    rows = []
    for shape_name, (T, N, D, H) in SHAPES.items():
        for cell in cells:
            p = problem(cell, T, N, D, H)
            contenders = {"fastrnn": contract_call(functional, cell, p)}
            torch_run = torch_call(cell, p) if torch is not None else None
            if torch_run is not None:
                contenders["torch"] = torch_run
            err = check_same(cell, p, torch_run)
            if err > 1e-3:
                raise SystemExit(f"{cell} {shape_name}: results differ by {err:.2e}; not timing")
            t = race(contenders, repeats)
            t_ref = race({"reference": contract_call(reference, cell, p)}, 1, rounds=1 if shape_name == "S1" else 2)
            f = flops(T, N, D, H, GATES[cell])
            rows.append({
                "shape": shape_name, "cell": cell, "ms": t["fastrnn"] * 1e3,
                "gflops": f / t["fastrnn"] / 1e9,
                "ceiling_pct": 100 * f / t["fastrnn"] / 1e9 / ceiling,
                "vs_reference": t_ref["reference"] / t["fastrnn"],
                "vs_torch": (t["torch"] / t["fastrnn"]) if "torch" in t else None,
                "torch_gflops": (f / t["torch"] / 1e9) if "torch" in t else None,
            })
            print(_row_text(rows[-1]), flush=True)
    return rows


def _row_text(r: dict) -> str:
    vs_torch = f"{r['vs_torch']:8.2f}x" if r["vs_torch"] is not None else "       -"
    return (f"| {r['shape']:<3}| {r['cell']:<5}| {r['ms']:9.2f} | {r['gflops']:7.1f} | {r['ceiling_pct']:5.0f}% "
            f"| {r['vs_reference']:8.1f}x | {vs_torch} |")


def step_latency(repeats: int) -> Optional[dict]:
    """lstm_step_forward at N=1, D=H=512, Python call included, against torch.nn.LSTMCell."""
    H = D = 512
    p = problem("lstm", 1, 1, D, H)
    x, h = p["x"][:, 0], p["h0"]
    c = np.zeros_like(h)
    contenders = {"fastrnn": lambda: functional.lstm_step_forward(x, h, c, p["Wx"], p["Wh"], p["b"])}
    if torch is not None:
        cell = torch.nn.LSTMCell(D, H)
        xt, ht, ct = torch.from_numpy(x), torch.from_numpy(h), torch.from_numpy(c)

        def torch_step():
            with torch.no_grad():
                return cell(xt, (ht, ct))

        contenders["torch"] = torch_step
    t = race(contenders, repeats * 20)
    return {"fastrnn_us": t["fastrnn"] * 1e6, "torch_us": t.get("torch", float("nan")) * 1e6}


def thread_scaling(repeats: int) -> List[dict]:
    out = []
    for shape_name in ("S1", "S2"):
        T, N, D, H = SHAPES[shape_name]
        p = problem("lstm", T, N, D, H)
        run = contract_call(functional, "lstm", p)
        times = {}
        for n in (1, 2):
            fastrnn.set_num_threads(n)
            times[n] = race({"f": run}, repeats, rounds=2)["f"]
        fastrnn.set_num_threads(0)
        out.append({"shape": shape_name, "speedup": times[1] / times[2]})
    return out


def length_scaling(repeats: int) -> List[dict]:
    _, N, D, H = SHAPES["S2"]
    out = []
    for T in (25, 50, 100, 200, 400):
        p = problem("lstm", T, N, D, H)
        t = race({"f": contract_call(functional, "lstm", p)}, repeats, rounds=2)["f"]
        out.append({"T": T, "ms": t * 1e3, "us_per_step": t * 1e6 / T})
    return out


def denormal_ratio(repeats: int) -> float:
    """Time with weights so tiny that products are denormal, over time with normal ones."""
    T, N, D, H = SHAPES["S2"]
    normal = problem("lstm", T, N, D, H)
    tiny = problem("lstm", T, N, D, H, scale=1e-39)
    assert np.count_nonzero(np.abs(tiny["Wh"]) < np.finfo(np.float32).tiny) > 0
    t = race({"normal": contract_call(functional, "lstm", normal),
              "tiny": contract_call(functional, "lstm", tiny)}, repeats)
    return t["tiny"] / t["normal"]


_MEMORY_PROBE = r"""
import sys
sys.path.insert(0, {bench!r})
import compare


def peak_kib():
    # VmHWM is the peak RSS of this process image (ru_maxrss may carry the parent's).
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))


cell, who = sys.argv[1], sys.argv[2]
T, N, D, H = compare.SHAPES["S1"]
p = compare.problem(cell, T, N, D, H)
if who == "torch":
    import torch
    torch.set_num_threads(2)
    run = compare.torch_call(cell, p)
else:
    from fastrnn import functional
    run = compare.contract_call(functional, cell, p)
before = peak_kib()
run()
print(peak_kib() - before)
"""


def peak_memory(cell: str = "lstm") -> Optional[dict]:
    """Growth of peak RSS (MiB) over one forward+backward at S1, each in a fresh process."""
    out = {}
    for who in ("fastrnn", "torch") if torch is not None else ("fastrnn",):
        code = _MEMORY_PROBE.format(bench=os.path.dirname(os.path.abspath(__file__)))
        res = subprocess.run([sys.executable, "-c", code, cell, who], capture_output=True, text=True, check=True)
        out[who] = int(res.stdout.strip().splitlines()[-1]) / 1024
    return out


def gemm_shapes(repeats: int) -> List[dict]:
    """fastrnn's matrix multiply against numpy.matmul (OpenBLAS) at the whole-sequence
    products of an LSTM at S1 (the per-step products use weights packed once per call)."""
    T, N, D, H = SHAPES["S1"]
    rng = np.random.default_rng(1)
    shapes = {"X·Wx (projection)": (T * N, D, 4 * H), "Xᵀ·dA (dWx)": (D, T * N, 4 * H),
              "dA·Wxᵀ (dx)": (T * N, 4 * H, D)}
    out = []
    for name, (M, K, Ncol) in shapes.items():
        a = rng.standard_normal((M, K)).astype(np.float32)
        b = rng.standard_normal((K, Ncol)).astype(np.float32)
        t = race({"numpy": lambda: a @ b, "fastrnn": lambda: _core.matmul(a, b)}, repeats)
        f = 2.0 * M * K * Ncol
        out.append({"product": name, "shape": f"{M}x{K}x{Ncol}", "fastrnn_gflops": f / t["fastrnn"] / 1e9,
                    "numpy_gflops": f / t["numpy"] / 1e9})
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--cells", default="rnn,lstm,gru")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args(argv)
    threads = fastrnn.get_num_threads()
    if torch is not None:
        torch.set_num_threads(threads)
    info = fastrnn.build_info()
    print(f"fastrnn {info['version']} ({info['isa']}), {threads} threads; "
          f"torch {torch.__version__ if torch else 'not installed'}; numpy {np.__version__}")
    ceiling, own = matmul_ceiling(args.repeats)
    print(f"matmul ceiling (numpy.matmul, 2048² float32): {ceiling:.0f} GFLOP/s; fastrnn's matmul: {own:.0f} GFLOP/s\n")
    print("float32, forward+backward via the CS231n functions; speed-ups are other time / fastrnn time")
    print("| shape | cell | fastrnn ms | GFLOP/s | of ceiling | vs reference | vs torch |")
    print("|---|---|---:|---:|---:|---:|---:|")
    results = {"ceiling_gflops": ceiling, "fastrnn_matmul_gflops": own, "threads": threads}
    results["table"] = main_table(ceiling, args.repeats, args.cells.split(","))
    step = step_latency(args.repeats)
    results["step"] = step
    print(f"\nlstm_step_forward N=1 D=H=512: fastrnn {step['fastrnn_us']:.1f} µs, "
          f"torch.nn.LSTMCell {step['torch_us']:.1f} µs ({step['torch_us'] / step['fastrnn_us']:.2f}x)")
    results["threads_speedup"] = thread_scaling(args.repeats)
    print("1 -> 2 threads (LSTM): " + ", ".join(f"{r['shape']} {r['speedup']:.2f}x" for r in results["threads_speedup"]))
    results["length_scaling"] = length_scaling(args.repeats)
    print("time per step vs T (LSTM, N=50 D=128 H=256): " + ", ".join(
        f"T={r['T']}: {r['us_per_step']:.0f} µs" for r in results["length_scaling"]))
    results["denormal_ratio"] = denormal_ratio(args.repeats)
    print(f"denormal inputs (weights ~1e-39) / normal inputs, LSTM S2: {results['denormal_ratio']:.2f}x")
    mem = peak_memory()
    results["peak_memory_mib"] = mem
    print("peak RSS growth, LSTM S1 forward+backward: " + ", ".join(f"{k} {v:.0f} MiB" for k, v in mem.items()))
    results["gemm"] = gemm_shapes(args.repeats)
    print("\nmatrix multiply at LSTM S1's products (GFLOP/s):")
    for r in results["gemm"]:
        print(f"  {r['product']:<20} {r['shape']:>16}: fastrnn {r['fastrnn_gflops']:6.0f}   numpy/OpenBLAS {r['numpy_gflops']:6.0f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
