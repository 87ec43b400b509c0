"""Ctrl-C during a long compiled call: the call stops between time steps, its results are
discarded, and Python's SIGINT handler decides what follows (KeyboardInterrupt by default;
a handler that returns has the call run again, with the same results).

Each case runs in a child process, which the test interrupts with a real SIGINT once the
child says it is inside the call."""
import subprocess
import sys
import time

# The child: one uninterrupted call for reference, then the same call interrupted.
CHILD = r"""
import signal, sys, time
import numpy as np
import fastrnn
from fastrnn import functional as F
from fastrnn.models import CharRNN
from fastrnn.optim import Adam

mode = sys.argv[1]
rng = np.random.default_rng(0)

if mode == "model":
    # A language model large enough that one training step takes a while.
    model = CharRNN(64, hidden_size=768, num_layers=2, cell="lstm", seed=0)
    opt = Adam(model.params, lr=1e-3)
    ids = rng.integers(0, 64, size=(16, 200))
    tgt = rng.integers(0, 64, size=(16, 200))
    before = {k: v.copy() for k, v in model.params.items()}
    def call():
        return model.train_step(ids, tgt, opt, None)
else:
    N, T, D, H = 16, 400, 1024, 1024
    x = rng.standard_normal((N, T, D)).astype(np.float32)
    h0 = np.zeros((N, H), np.float32)
    Wx = (rng.standard_normal((D, 4 * H)) * 0.03).astype(np.float32)
    Wh = (rng.standard_normal((H, 4 * H)) * 0.03).astype(np.float32)
    b = np.zeros(4 * H, np.float32)
    def call():
        return F.lstm_forward(x, h0, Wx, Wh, b)[0]

if mode == "model":
    t0 = time.perf_counter()
    print("ready", flush=True)
    try:
        call()
        print("completed", flush=True)
    except KeyboardInterrupt:
        took = time.perf_counter() - t0
        same = all(np.array_equal(before[k], v) for k, v in model.params.items())
        print("interrupted", took, "params unchanged" if same and opt.state_dict()["t"] == 0 else "CHANGED",
              flush=True)
    loss, _ = call()  # the next call works
    print("next", np.isfinite(loss), flush=True)
    sys.exit(0)

t0 = time.perf_counter()
want = call()
full = time.perf_counter() - t0
print("full", full, flush=True)
if mode == "handler":  # a handler that returns: the call runs again, same bits
    seen = []
    signal.signal(signal.SIGINT, lambda signum, frame: seen.append(signum))
print("ready", flush=True)
t0 = time.perf_counter()
try:
    got = call()
except KeyboardInterrupt:
    print("interrupted", time.perf_counter() - t0, flush=True)
    got = call()  # the next call works, with the same results
    print("next", "same" if np.array_equal(got, want) else "DIFFERENT", flush=True)
else:
    print("completed", time.perf_counter() - t0, flush=True)
    print("same" if np.array_equal(got, want) else "DIFFERENT", "handler ran" if mode == "handler" and seen
          else "", flush=True)
"""


def run_and_interrupt(tmp_path, mode: str, delay: float = 0.2):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    child = subprocess.Popen([sys.executable, str(script), mode], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, cwd=tmp_path)
    lines = []
    try:
        for line in child.stdout:
            lines.append(line.split())
            if lines[-1][0] == "ready":
                time.sleep(delay)
                child.send_signal(subprocess.signal.SIGINT)
                break
        out, err = child.communicate(timeout=300)
    finally:
        child.kill()
    lines += [line.split() for line in out.splitlines()]
    assert child.returncode == 0, err
    return {words[0]: words[1:] for words in lines}


def test_ctrl_c_stops_a_long_sequence_call_and_the_next_call_works(tmp_path):
    seen = run_and_interrupt(tmp_path, "default")
    assert "interrupted" in seen, seen  # not "completed": the call was cut short
    full, stopped = float(seen["full"][0]), float(seen["interrupted"][0])
    assert stopped < 0.5 * full, (stopped, full)
    assert seen["next"] == ["same"]


def test_a_handler_that_returns_has_the_call_run_again_with_the_same_results(tmp_path):
    seen = run_and_interrupt(tmp_path, "handler")
    assert "completed" in seen and "interrupted" not in seen, seen
    assert seen["same"] == ["handler", "ran"]


def test_ctrl_c_during_a_training_step_leaves_the_parameters_untouched(tmp_path):
    seen = run_and_interrupt(tmp_path, "model", delay=0.1)
    assert "interrupted" in seen, seen
    assert seen["interrupted"][1:] == ["params", "unchanged"]
    assert seen["next"] == ["True"]
