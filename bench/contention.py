"""Busy-machine benchmark: fastrnn and PyTorch while other processes hold all cores but one.

Users' machines are rarely idle. A kernel that ends every time step in a barrier stalls
whenever another process deschedules one of its threads; fastrnn notices this and runs on
one thread while it lasts. This measures how well that works. It starts one busy-loop
process per core but one (``--quiet``: none, for the same table on an idle machine) and
times each workload four ways, the contenders alternating in blocks in one process
(compare.py's race): fastrnn with its default threads and with one, PyTorch with its
default threads and with one. Workloads (float32):

  S1, S2, S3   LSTM, GRU and RNN forward+backward via fastrnn.functional, as compare.py
  validation   an LSTM forward, batch 32 x 64 steps, D = H = 128 (PyTorch under no_grad)
  train        one training step of train_compare.py's configuration: CharRNN(65, 256, 2,
               "lstm", embedding 64), batch 50 x seq 50, model.loss and Adam 2e-3 with
               the gradient norm clipped at 5; nn.Embedding -> nn.LSTM -> nn.Linear in PyTorch
  sample       one sampling step of the same model, batch 1 (CharRNN.step)

Reported per workload: the median and the mean time per call (the mean carries the rare
long stalls a busy machine causes, which a median hides), fastrnn's time with its default
threads over its time on one, and PyTorch's time over fastrnn's (both of means). Under
the table, the goals as PASS / MISS lines: with the default threads every workload takes
at most 1.25x its one-thread time, and runs at least 1.25x as fast as PyTorch's default.

    python bench/contention.py [--quiet] [--workloads S2,train] [--repeats 7] [--rounds 3] [--json FILE]

fastrnn honours FASTRNN_ISA. To hold the peers to AVX2 too on an AVX-512 machine:

    FASTRNN_ISA=avx2 ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 OPENBLAS_CORETYPE=Haswell \\
        python bench/contention.py

PyTorch is optional: without it those columns are left out.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

import fastrnn
from fastrnn import functional
from fastrnn.models import CharRNN
from fastrnn.optim import Adam
from compare import SHAPES, check_same, contract_call, problem, race_samples, torch, torch_call  # torch: None if absent

Call = Callable[[], object]
Row = Tuple[str, Call, Optional[Call]]  # label, fastrnn's call, PyTorch's (or None)
GOAL = 1.25
V, HIDDEN, LAYERS, EMBED, BATCH, SEQ = 65, 256, 2, 64, 50, 50  # train_compare.py's configuration
# Calls per block, in units of --repeats: more for short calls, so that a block lasts long
# enough to meet the machine's stalls and fastrnn's rests on one thread (50 ms to 1.6 s).
SCALE = {"S1": 1, "S2": 4, "S3": 20, "validation": 10, "train": 1, "sample": 200}


# ---------------------------------------------------------------- workloads


def _same(label: str, cell: str, p: dict, torch_run: Optional[Call]) -> None:
    err = check_same(cell, p, torch_run)
    if err > 1e-3:
        raise SystemExit(f"{label}: results differ by {err:.2e}; not timing")


def cells(shape: str) -> Iterator[Row]:
    T, N, D, H = SHAPES[shape]
    for cell in ("lstm", "gru", "rnn"):
        p = problem(cell, T, N, D, H)
        torch_run = torch_call(cell, p) if torch is not None else None
        _same(f"{shape} {cell}", cell, p, torch_run)
        yield f"{shape} {cell} fwd+bwd", contract_call(functional, cell, p), torch_run


def validation() -> Iterator[Row]:
    p = problem("lstm", 64, 32, 128, 128)
    torch_run = torch_call("lstm", p, backward=False) if torch is not None else None
    _same("validation", "lstm", p, torch_run)
    yield "lstm fwd 32x64 128", lambda: functional.lstm_forward(p["x"], p["h0"], p["Wx"], p["Wh"], p["b"]), torch_run


def char_model() -> CharRNN:
    return CharRNN(V, hidden_size=HIDDEN, num_layers=LAYERS, cell="lstm", embedding_dim=EMBED)


def torch_char_model():
    """train_compare.py's PyTorch model."""
    nn = torch.nn

    class CharLSTM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(V, EMBED)
            self.lstm = nn.LSTM(EMBED, HIDDEN, LAYERS, batch_first=True)
            self.head = nn.Linear(HIDDEN, V)

        def forward(self, x, state=None):
            h, state = self.lstm(self.embed(x), state)
            return self.head(h), state

    torch.manual_seed(0)
    return CharLSTM()


def train() -> Iterator[Row]:
    """One iteration as fastrnn's Trainer and train_compare.py's PyTorch loop run it, the
    state carried from call to call."""
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, V, (2, BATCH, SEQ)).astype(np.int32)
    model = char_model()
    opt = Adam(model.params, lr=2e-3, global_clipnorm=5.0)
    carry: list = [None]

    def step() -> float:
        loss, grads, carry[0] = model.loss(x, y, carry[0])
        opt.step(grads)
        return loss

    torch_step = None
    if torch is not None:
        tmodel = torch_char_model()
        topt = torch.optim.Adam(tmodel.parameters(), lr=2e-3)
        tx, ty = torch.from_numpy(x.astype(np.int64)), torch.from_numpy(y.astype(np.int64)).reshape(-1)
        tcarry: list = [None]

        def torch_step():
            logits, state = tmodel(tx, tcarry[0])
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), ty)
            topt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(tmodel.parameters(), 5.0)
            topt.step()
            tcarry[0] = tuple(s.detach() for s in state)
            return loss

    yield f"train step {BATCH}x{SEQ}", step, torch_step


def sample() -> Iterator[Row]:
    """One step of sampling, batch 1, the state carried from call to call."""
    model = char_model().eval()
    ids = np.array([7], np.int64)
    carry = [model.initial_state(1)]

    def step():
        logits, carry[0] = model.step(ids, carry[0])
        return logits

    torch_step = None
    if torch is not None:
        tmodel = torch_char_model().eval()
        tids = torch.tensor([[7]])
        tcarry: list = [None]

        def torch_step():
            with torch.no_grad():
                logits, tcarry[0] = tmodel(tids, tcarry[0])
            return logits

    yield "sample step", step, torch_step


WORKLOADS: Dict[str, Callable[[], Iterator[Row]]] = {
    "S1": lambda: cells("S1"), "S2": lambda: cells("S2"), "S3": lambda: cells("S3"),
    "validation": validation, "train": train, "sample": sample,
}


# ---------------------------------------------------------------- timing and report


def four_ways(fr: Call, th: Optional[Call], repeats: int, rounds: int, torch_threads: int) -> Dict[str, List[float]]:
    """Per-call seconds of fastrnn and PyTorch, each with its default threads and with one."""
    contenders = {"fastrnn": fr, "fastrnn_1t": fr}
    setup = {"fastrnn": lambda: fastrnn.set_num_threads(0), "fastrnn_1t": lambda: fastrnn.set_num_threads(1)}
    if th is not None:
        contenders.update(torch=th, torch_1t=th)
        setup.update(torch=lambda: torch.set_num_threads(torch_threads), torch_1t=lambda: torch.set_num_threads(1))
    return race_samples(contenders, repeats, rounds, setup)


def summarise(label: str, samples: Dict[str, List[float]]) -> dict:
    row: dict = {"workload": label, "calls": len(samples["fastrnn"])}
    for name, times in samples.items():
        row[f"{name}_median_ms"] = statistics.median(times) * 1e3
        row[f"{name}_mean_ms"] = statistics.fmean(times) * 1e3
    row["default_over_one_thread"] = row["fastrnn_mean_ms"] / row["fastrnn_1t_mean_ms"]
    row["vs_torch"] = row["torch_mean_ms"] / row["fastrnn_mean_ms"] if "torch" in samples else None
    return row


def _ms(v: float) -> str:
    return f"{v:.3f}" if v < 1 else f"{v:.2f}" if v < 100 else f"{v:.1f}"


def row_text(r: dict) -> str:
    def pair(name: str) -> str:
        key = f"{name}_median_ms"
        return f"{_ms(r[key])} / {_ms(r[f'{name}_mean_ms'])}" if key in r else "-"

    vs_torch = f"{r['vs_torch']:.2f}x" if r["vs_torch"] is not None else "-"
    return (f"| {r['workload']:<20} | {pair('fastrnn'):>17} | {pair('fastrnn_1t'):>17} "
            f"| {r['default_over_one_thread']:5.2f}x | {pair('torch'):>17} | {pair('torch_1t'):>17} | {vs_torch:>7} |")


def goal_line(text: str, values: List[Tuple[str, Optional[float]]], ok: Callable[[float], bool]) -> str:
    measured = [(name, v) for name, v in values if v is not None]
    if not measured:
        return f"-     {text}: not measured"
    missed = [f"{name} {v:.3f}x" for name, v in measured if not ok(v)]
    if missed:
        return f"MISS  {text}: {', '.join(missed)}"
    low, high = min(v for _, v in measured), max(v for _, v in measured)
    return f"PASS  {text}: all {len(measured)}, {low:.2f}x to {high:.2f}x"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def start_busy(n: int) -> List[subprocess.Popen]:
    """n processes spinning in Python. They get their own session, so that Ctrl-C reaches
    this script alone, whose `finally` ends them."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True) for _ in range(n)]


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quiet", action="store_true", help="no busy processes: the same table on an idle machine")
    ap.add_argument("--workloads", default=",".join(WORKLOADS),
                    help=f"comma-separated subset of {','.join(WORKLOADS)}")
    ap.add_argument("--repeats", type=int, default=7, help="timed calls per block (times a per-workload factor)")
    ap.add_argument("--rounds", type=int, default=3, help="blocks per contender")
    ap.add_argument("--json", help="also write the rows to this file")
    args = ap.parse_args(argv)
    chosen = [w for w in args.workloads.split(",") if w]
    unknown = sorted(set(chosen) - set(WORKLOADS))
    if unknown or not chosen or args.repeats < 1 or args.rounds < 1:
        ap.error(f"--workloads from {','.join(WORKLOADS)} (unknown: {','.join(unknown)}); --repeats, --rounds >= 1")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))  # runs the `finally` below

    n_busy = 0 if args.quiet else max((os.cpu_count() or 1) - 1, 0)
    info = fastrnn.build_info()
    torch_threads = torch.get_num_threads() if torch is not None else 0
    peer = (f"torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()}), {torch_threads} threads"
            if torch is not None else "torch not installed")
    header = (f"{cpu_model()}; fastrnn {info['version']} ({info['isa']}), {info['threads']} threads; {peer}; "
              f"{n_busy} busy process{'' if n_busy == 1 else 'es'} on {os.cpu_count()} cores")
    print(header)
    print("\nfloat32; ms per call as median / mean; ratios of means: default / 1 thread is fastrnn's time "
          "with its default threads over its time on one, vs torch is torch's default over fastrnn's default")
    print("| workload | fastrnn ms | fastrnn 1 thread ms | default / 1 thread "
          "| torch ms | torch 1 thread ms | vs torch |")
    print("|---|---:|---:|---:|---:|---:|---:|", flush=True)

    rows: List[dict] = []
    busy = start_busy(n_busy)
    try:
        time.sleep(0.5)
        for name in chosen:
            for label, fr, th in WORKLOADS[name]():
                samples = four_ways(fr, th, args.repeats * SCALE[name], args.rounds, torch_threads)
                rows.append(summarise(label, samples))
                print(row_text(rows[-1]), flush=True)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        for p in busy:
            p.kill()
        for p in busy:
            p.wait()
        fastrnn.set_num_threads(0)
        if torch is not None:
            torch.set_num_threads(torch_threads)

    print()
    print(goal_line(f"default threads at most {GOAL}x one thread's time",
                    [(r["workload"], r["default_over_one_thread"]) for r in rows], lambda v: v <= GOAL))
    print(goal_line(f"at least {GOAL}x PyTorch's default", [(r["workload"], r["vs_torch"]) for r in rows],
                    lambda v: v >= GOAL))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"header": header, "busy_processes": n_busy, "isa": info["isa"], "rows": rows}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
