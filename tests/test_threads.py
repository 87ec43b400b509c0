"""The kernels' thread pool: the explicit setter, OMP_NUM_THREADS and threadpoolctl."""
import os
import subprocess
import sys

import numpy as np
import pytest

import fastrnn


@pytest.fixture
def restore_threads():
    yield
    fastrnn.set_num_threads(0)


def test_set_num_threads_is_reported_by_get_num_threads(restore_threads):
    fastrnn.set_num_threads(1)
    assert fastrnn.get_num_threads() == 1
    fastrnn.set_num_threads(3)
    assert fastrnn.get_num_threads() == 3


def test_set_num_threads_takes_only_an_int(restore_threads):
    for bad in (1.5, "2", None, True):
        with pytest.raises(TypeError, match="set_num_threads: n must be an int"):
            fastrnn.set_num_threads(bad)
    fastrnn.set_num_threads(np.int64(1))
    assert fastrnn.get_num_threads() == 1


@pytest.mark.parametrize("bad", [100_000, 10**30])
def test_set_num_threads_rejects_absurd_counts(bad):
    # One matmul would otherwise start that many OS threads.
    before = fastrnn.get_num_threads()
    with pytest.raises(ValueError, match=r"set_num_threads: n must be at most \d+ \(4 per core"):
        fastrnn.set_num_threads(bad)
    assert fastrnn.get_num_threads() == before


def test_set_num_threads_zero_restores_the_default(restore_threads):
    default = fastrnn.get_num_threads()
    fastrnn.set_num_threads(1)
    fastrnn.set_num_threads(0)
    assert fastrnn.get_num_threads() == default


def test_omp_num_threads_sets_the_default(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # Run away from the source tree, so the installed package is the one imported.
    out = subprocess.run([sys.executable, "-c", "import fastrnn; print(fastrnn.get_num_threads())"],
                         env=env, capture_output=True, text=True, check=True, cwd=tmp_path)
    assert out.stdout.strip() == "1"


def test_threadpoolctl_sees_and_limits_the_kernels_pool(restore_threads):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    assert fastrnn.build_info()["openmp"], "this test needs the OpenMP build"
    apis = {d["user_api"] for d in threadpoolctl.threadpool_info()}
    assert "openmp" in apis
    with threadpoolctl.threadpool_limits(1, user_api="openmp"):
        assert fastrnn.get_num_threads() == 1
        rng = np.random.default_rng(0)
        x = rng.standard_normal((2, 3, 4))
        h, _ = fastrnn.rnn_forward(x, np.zeros((2, 5)), rng.standard_normal((4, 5)),
                                   rng.standard_normal((5, 5)), np.zeros(5))
        assert h.shape == (2, 3, 5)


FIRST_CALLS_AT_ONCE = """
import threading, numpy as np
from fastrnn import _core
a = np.ones((3, 4), np.float32)
start = threading.Barrier(16)
def first_calls():
    start.wait()
    for _ in range(20):
        _core.matmul(a, a.T)
threads = [threading.Thread(target=first_calls) for _ in range(16)]
for t in threads: t.start()
for t in threads: t.join()
print("done")
"""


def test_first_calls_from_many_threads_at_once_do_not_deadlock(tmp_path):
    # A fresh interpreter, so these are the module's very first calls: setup the kernels
    # did lazily on the first call (importing numpy.ma) once deadlocked them. Run away from
    # the source tree, so the installed package is the one imported.
    out = subprocess.run([sys.executable, "-c", FIRST_CALLS_AT_ONCE], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "done"


CALLS_IN_FORKED_CHILDREN = """
import multiprocessing as mp, numpy as np
import fastrnn
from fastrnn import _core
fastrnn.set_num_threads(2)
a = np.arange(300 * 400, dtype=np.float32).reshape(300, 400) % 7
def work(_):
    return _core.matmul(a, a.T), fastrnn.get_num_threads()
if __name__ == "__main__":
    parent, _ = work(0)  # a team of 2 threads has run here
    with mp.get_context("fork").Pool(2) as pool:
        for child, threads in pool.map(work, range(4)):
            assert threads == 1 and np.array_equal(child, parent)
    print("done")
"""


@pytest.mark.skipif("fork" not in __import__("multiprocessing").get_all_start_methods(), reason="no fork()")
def test_kernels_run_in_children_forked_after_a_team_ran(tmp_path):
    # OpenMP's pool does not survive fork(); the children run their kernels on one thread,
    # with the parent's results, instead of waiting forever for threads that are not there.
    script = tmp_path / "forked.py"
    script.write_text(CALLS_IN_FORKED_CHILDREN)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "done"


def test_gil_is_released_so_python_threads_run_kernels_concurrently():
    # Results from 4 Python threads equal the serial results bitwise.
    import threading

    rng = np.random.default_rng(1)
    args = [rng.standard_normal(s) for s in [(8, 20, 16), (8, 32), (16, 128), (32, 128), (128,)]]
    want, _ = fastrnn.lstm_forward(*args)
    got = [None] * 4

    def work(i):
        got[i], _ = fastrnn.lstm_forward(*args)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for g in got:
        np.testing.assert_array_equal(g, want)


def test_small_problems_run_on_fewer_threads_with_the_same_results(restore_threads):
    from fastrnn import _core

    rng = np.random.default_rng(2)
    args = [rng.standard_normal(s) for s in [(3, 4, 5), (3, 6), (5, 24), (6, 24), (24,)]]
    fastrnn.set_num_threads(2)
    before = _core.min_flops_per_thread()
    try:
        results = []
        for threshold in (0, 1e12):  # full team; then one thread for anything
            _core.set_min_flops_per_thread(threshold)
            h, cache = fastrnn.lstm_forward(*args)
            results.append((h, *fastrnn.lstm_backward(np.ones_like(h), cache)))
    finally:
        _core.set_min_flops_per_thread(before)
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_results_keep_their_bits_while_another_process_holds_a_core(restore_threads):
    # With a busy loop beside it, the team may rest on one thread for a while and come back:
    # every call still gives the bits of one thread.
    rng = np.random.default_rng(3)
    args = [rng.standard_normal(s).astype(np.float32) for s in [(16, 40, 64), (16, 96), (64, 384), (96, 384), (384,)]]
    fastrnn.set_num_threads(1)
    want_h, cache = fastrnn.lstm_forward(*args)
    want_grads = fastrnn.lstm_backward(np.ones_like(want_h), cache)
    fastrnn.set_num_threads(0)
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        for _ in range(60):
            h, cache = fastrnn.lstm_forward(*args)
            grads = fastrnn.lstm_backward(np.ones_like(h), cache)
            np.testing.assert_array_equal(h, want_h)
            for g, w in zip(grads, want_grads):
                np.testing.assert_array_equal(g, w)
    finally:
        busy.kill()
        busy.wait()
