"""Memory does not grow over many calls of the compiled kernels.

Each test makes WARMUP calls, reads the resident set size (VmRSS in /proc/self/status),
makes CALLS more and reads it again: the growth must stay under GROWTH_LIMIT_MB. The
shapes are small (each call takes tens of microseconds) but every array is several KiB, so
a leak of even one array or cache per call (10,000 x >= 4 KiB = 40 MiB) would show.
Reference counts of the inputs are checked too: a leaked reference to an input that every
call reuses would not grow the RSS, but it does change sys.getrefcount.

The error paths are included: argument checks that raise after some arrays (or the cache)
have been made must release them.

Linux only (VmRSS). FASTRNN_MEMORY_CALLS overrides the number of calls (default 10,000).
"""
from __future__ import annotations

import gc
import os
import sys
import time

import numpy as np
import pytest

import fastrnn
from fastrnn import functional as F

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads VmRSS from /proc/self/status")

CALLS = int(os.environ.get("FASTRNN_MEMORY_CALLS", "10000"))
WARMUP = 500
GROWTH_LIMIT_MB = 20.0
N, T, D, H = 8, 8, 16, 16  # x and h are 8 KiB in float64, the LSTM workspace more
GATES = {"rnn": 1, "lstm": 4, "gru": 3}
RESULTS: dict = {}


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmRSS in /proc/self/status")


def inputs(cell, dtype, step=False, seed=0):
    rng = np.random.default_rng(seed)
    G = GATES[cell]
    x = rng.standard_normal((N, D) if step else (N, T, D)).astype(dtype)
    h0 = rng.standard_normal((N, H)).astype(dtype)
    c0 = rng.standard_normal((N, H)).astype(dtype)
    Wx = (rng.standard_normal((D, G * H)) * 0.1).astype(dtype)
    Wh = (rng.standard_normal((H, G * H)) * 0.1).astype(dtype)
    b = (rng.standard_normal(G * H) * 0.1).astype(dtype)
    bh = (rng.standard_normal(G * H) * 0.1).astype(dtype)
    dh = rng.standard_normal((N, H) if step else (N, T, H)).astype(dtype)
    return dict(x=x, h0=h0, c0=c0, Wx=Wx, Wh=Wh, b=b, bh=bh, dh=dh)


def check_no_growth(name, call, arrays):
    """Runs `call` WARMUP + CALLS times; asserts the RSS and the inputs' refcounts hold."""
    for _ in range(WARMUP):
        call()
    gc.collect()
    refs = {k: sys.getrefcount(a) for k, a in arrays.items()}
    before = rss_mb()
    start = time.perf_counter()
    for _ in range(CALLS):
        call()
    elapsed = time.perf_counter() - start
    gc.collect()
    after = rss_mb()
    growth = after - before
    RESULTS[name] = (before, after, elapsed)
    leaked = {k: sys.getrefcount(a) - refs[k] for k, a in arrays.items() if sys.getrefcount(a) != refs[k]}
    assert not leaked, f"{name}: references to inputs leaked over {CALLS} calls: {leaked}"
    assert growth < GROWTH_LIMIT_MB, (
        f"{name}: RSS grew {growth:.1f} MB over {CALLS} calls (from {before:.1f} to {after:.1f} MB; "
        f"limit {GROWTH_LIMIT_MB} MB)"
    )


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One kernel thread: tiny calls on a busy 2-core machine otherwise spend most of their
    time waiting at the team barrier. test_two_threads_do_not_grow_memory covers the team."""
    before = fastrnn.get_num_threads()
    fastrnn.set_num_threads(1)
    yield
    fastrnn.set_num_threads(before)


@pytest.fixture(scope="module", autouse=True)
def report(request):
    yield
    tr = request.config.pluginmanager.get_plugin("terminalreporter")
    cap = request.config.pluginmanager.get_plugin("capturemanager")
    if tr is None or cap is None or not RESULTS:
        return
    with cap.global_and_fixture_disabled():
        tr.write_line("")
        tr.write_sep("-", f"fastrnn memory: RSS over {CALLS} calls after {WARMUP} warm-up calls")
        for name, (before, after, elapsed) in RESULTS.items():
            tr.write_line(f"  {name:34s} {before:7.1f} -> {after:7.1f} MB ({after - before:+5.2f} MB), "
                          f"{elapsed / CALLS * 1e6:6.1f} us/call")


DTYPE_IDS = {np.float32: "float32", np.float64: "float64"}


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=DTYPE_IDS.get)
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_sequence_forward_backward_does_not_grow_memory(cell, dtype):
    a = inputs(cell, dtype)
    if cell == "rnn":
        def call():
            h, cache = F.rnn_forward(a["x"], a["h0"], a["Wx"], a["Wh"], a["b"])
            F.rnn_backward(a["dh"], cache)
    elif cell == "lstm":
        def call():
            h, cache = F.lstm_forward(a["x"], a["h0"], a["Wx"], a["Wh"], a["b"], a["c0"])
            F.lstm_backward(a["dh"], cache)
    else:
        def call():
            h, cache = F.gru_forward(a["x"], a["h0"], a["Wx"], a["Wh"], a["b"], a["bh"])
            F.gru_backward(a["dh"], cache)
    check_no_growth(f"{cell}_forward+backward {DTYPE_IDS[dtype]}", call, a)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_sequence_api_with_lengths_and_final_states_does_not_grow_memory(cell):
    a = inputs(cell, np.float64)
    params = (a["Wx"], a["Wh"], a["b"]) + ((a["bh"],) if cell == "gru" else ())
    state0 = (a["h0"], a["c0"]) if cell == "lstm" else (a["h0"],)
    dfinal = (a["h0"], a["c0"]) if cell == "lstm" else (a["h0"],)
    lengths = np.arange(N) % (T + 1)

    def call():
        h, final, cache = F.sequence_forward(cell, a["x"], params, state0, lengths=lengths)
        F.sequence_backward(a["dh"], cache, dfinal)

    check_no_growth(f"sequence_forward+backward {cell}", call, dict(a, lengths=lengths))


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_step_forward_backward_does_not_grow_memory(cell):
    a = inputs(cell, np.float64, step=True)
    if cell == "rnn":
        def call():
            h, cache = F.rnn_step_forward(a["x"], a["h0"], a["Wx"], a["Wh"], a["b"])
            F.rnn_step_backward(a["dh"], cache)
    elif cell == "lstm":
        def call():
            h, c, cache = F.lstm_step_forward(a["x"], a["h0"], a["c0"], a["Wx"], a["Wh"], a["b"])
            F.lstm_step_backward(a["dh"], a["c0"], cache)
    else:
        def call():
            h, cache = F.gru_step_forward(a["x"], a["h0"], a["Wx"], a["Wh"], a["b"], a["bh"])
            F.gru_step_backward(a["dh"], cache)
    check_no_growth(f"{cell}_step_forward+backward", call, a)


def test_matmul_does_not_grow_memory():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((32, 48))
    B = rng.standard_normal((48, 40))
    Bt = np.ascontiguousarray(B.T).T  # a strided view, read in place
    A32 = A.astype(">f4")  # byte-swapped: copied inside

    def call():
        F.matmul(A, B)
        F.matmul(A, Bt)
        F.matmul(A32, B.astype(np.float32))

    check_no_growth("matmul (plain, strided, byte-swapped)", call, {"A": A, "B": B, "Bt": Bt, "A32": A32})


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_language_model_loss_does_not_grow_memory(cell):
    """CharRNN.loss's one compiled call (embedding, two layers with dropout, head, softmax),
    and the same call rejected late (targets out of range)."""
    from fastrnn.models import CharRNN

    model = CharRNN(20, H, num_layers=2, cell=cell, dropout=0.2, embedding_dim=D, seed=0)
    rng = np.random.default_rng(0)
    ids = rng.integers(20, size=(N, T))
    bad_targets = np.full((N, T), 20)

    def call():
        model.loss(ids, ids)
        try:
            model.loss(ids, bad_targets)
        except ValueError:
            pass
        else:  # pragma: no cover
            raise AssertionError("a bad call was accepted")

    check_no_growth(f"{cell} CharRNN.loss (+ rejected)", call, {"ids": ids, "bad_targets": bad_targets})


def test_rejected_calls_do_not_grow_memory():
    """Errors raised late, after the inputs were converted and arrays made: the dtype of
    the last array, a bad lengths value, a gradient of the wrong shape, a foreign cache."""
    a = inputs("lstm", np.float64)
    bad_c0 = a["c0"].astype(np.float32)
    bad_lengths = np.full(N, T + 1)
    bad_dh = np.zeros((N, T + 1, H))
    _, cache = F.lstm_forward(a["x"], a["h0"], a["Wx"], a["Wh"], a["b"], a["c0"])
    _, gru_cache = F.gru_forward(a["x"], a["h0"], a["Wx"][:, : 3 * H], a["Wh"][:, : 3 * H], a["b"][: 3 * H],
                                 a["bh"][: 3 * H])
    params = (a["Wx"], a["Wh"], a["b"])
    x_list = a["x"].tolist()

    def call():
        for f in (
            lambda: F.lstm_forward(a["x"], a["h0"], a["Wx"], a["Wh"], a["b"], bad_c0),
            lambda: F.sequence_forward("lstm", a["x"], params, lengths=bad_lengths),
            lambda: F.sequence_forward("lstm", x_list, params, (a["h0"], bad_c0)),
            lambda: F.lstm_backward(bad_dh, cache),
            lambda: F.lstm_backward(a["dh"], gru_cache),
            lambda: F.matmul(a["Wx"], a["Wx"]),
        ):
            try:
                f()
            except (TypeError, ValueError):
                pass
            else:  # pragma: no cover
                raise AssertionError("a bad call was accepted")

    check_no_growth("rejected calls (6 kinds)", call, dict(a, bad_c0=bad_c0, bad_lengths=bad_lengths, bad_dh=bad_dh))


def test_two_threads_do_not_grow_memory():
    """The same with a team of two threads (per-thread buffers, the barrier)."""
    fastrnn.set_num_threads(2)
    try:
        a = inputs("lstm", np.float32)
        params = (a["Wx"], a["Wh"], a["b"])

        def call():
            h, final, cache = F.sequence_forward("lstm", a["x"], params, (a["h0"], a["c0"]))
            F.sequence_backward(a["dh"], cache)
            F.matmul(a["x"][0], a["Wx"])

        check_no_growth("lstm + matmul, 2 threads", call, a)
    finally:
        fastrnn.set_num_threads(1)
