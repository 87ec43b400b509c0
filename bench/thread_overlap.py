"""Python threads calling fastrnn's kernels at the same time.

The kernels release the GIL, so four Python threads calling them concurrently should
(1) get results bitwise equal to the same calls made one after another, and
(2) overlap: with ``fastrnn.set_num_threads(1)`` each call runs on its own core, so four
concurrent calls take about 4 / min(4, cores) of one call's time instead of 4.

    python bench/thread_overlap.py                # all scenarios, best of 7
    python bench/thread_overlap.py --repeats 15 --calls 3

Scenarios: four LSTM forward+backward calls; four of the cells mixed (rnn, lstm, gru and
the GRU's reset-before form); four matmul calls. For each, the wall time of the four
calls made serially and made from four threads (started together at a barrier, timed
from the barrier to the last join), best of --repeats each, alternating so that the
machine's load affects both alike. Printed: both times, concurrent / serial (1.0 means no
overlap, 1 / min(4, cores) is perfect) and the speed-up serial / concurrent.

The bitwise check runs first, for 1 kernel thread per call and for the default count
(threads from different Python threads then share the cores: the results must still be
identical). The script exits with status 1 if any result differs.
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time

import numpy as np

import fastrnn
from fastrnn import functional as F


def lstm_job(seed, shape, dtype, cell="lstm", reset_after=True):
    N, T, D, H = shape
    G = {"rnn": 1, "lstm": 4, "gru": 3}[cell]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, T, D)).astype(dtype)
    params = tuple((rng.standard_normal(s) * 0.1).astype(dtype)
                   for s in [(D, G * H), (H, G * H), (G * H,)] + ([(G * H,)] if cell == "gru" else []))
    h0 = rng.standard_normal((N, H)).astype(dtype)
    dh = rng.standard_normal((N, T, H)).astype(dtype)

    def job():
        h, final, cache = F.sequence_forward(cell, x, params, (h0,), reset_after=reset_after)
        dx, dstate0, dparams = F.sequence_backward(dh, cache)
        return (h, *final, dx, *dstate0, *dparams)

    return job


def matmul_job(seed, shape, dtype):
    M, K, N = shape
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((M, K)).astype(dtype)
    B = rng.standard_normal((K, N)).astype(dtype)
    Af = np.asfortranarray(A)  # a strided operand, read in place
    return lambda: (F.matmul(A, B), F.matmul(Af, B))


def scenarios(dtype):
    S = (32, 32, 128, 128)  # N, T, D, H
    return {
        "lstm x4": [lstm_job(s, S, dtype) for s in range(4)],
        "mixed cells": [lstm_job(10, S, dtype, "rnn"), lstm_job(11, S, dtype, "lstm"),
                        lstm_job(12, S, dtype, "gru"), lstm_job(13, S, dtype, "gru", reset_after=False)],
        "matmul x4": [matmul_job(s, (384, 384, 384), dtype) for s in range(4)],
    }


def run_serial(jobs, calls):
    start = time.perf_counter()
    results = [[job() for _ in range(calls)] for job in jobs]
    return time.perf_counter() - start, results


def run_concurrent(jobs, calls):
    results = [None] * len(jobs)
    errors = []
    barrier = threading.Barrier(len(jobs) + 1)

    def worker(i, job):
        try:
            barrier.wait()
            results[i] = [job() for _ in range(calls)]
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i, job)) for i, job in enumerate(jobs)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    return elapsed, results


def bitwise_equal(a, b):
    """Lists (jobs) of lists (calls) of result tuples: same dtype, shape and bits."""
    for job_a, job_b in zip(a, b):
        for call_a, call_b in zip(job_a, job_b):
            for x, y in zip(call_a, call_b):
                if x.dtype != y.dtype or x.shape != y.shape or x.tobytes() != y.tobytes():
                    return False
    return True


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=7, help="best of this many runs of each (default 7)")
    ap.add_argument("--calls", type=int, default=8, help="calls per thread in one run (default 8)")
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--only", help="run the scenarios whose name contains this")
    args = ap.parse_args(argv)
    dtype = np.dtype(args.dtype)
    cores = os.cpu_count() or 1
    default_threads = fastrnn.get_num_threads()
    print(f"fastrnn {fastrnn.build_info()}; {cores} CPUs; load average {os.getloadavg()[0]:.2f}")
    ok = True
    for name, jobs in scenarios(dtype).items():
        if args.only and args.only not in name:
            continue
        # 1. the same bits, serial or concurrent, with 1 kernel thread and with the default
        for n in sorted({1, default_threads}):
            fastrnn.set_num_threads(n)
            _, serial = run_serial(jobs, 1)
            for _ in range(3):
                _, concurrent = run_concurrent(jobs, 1)
                if not bitwise_equal(serial, concurrent):
                    print(f"{name}: MISMATCH: concurrent results differ from serial ones ({n} kernel threads)")
                    ok = False
                    break
        # 2. overlap, with 1 kernel thread per call
        fastrnn.set_num_threads(1)
        run_serial(jobs, 1)  # warm-up
        best_serial = best_concurrent = float("inf")
        for _ in range(args.repeats):
            best_serial = min(best_serial, run_serial(jobs, args.calls)[0])
            best_concurrent = min(best_concurrent, run_concurrent(jobs, args.calls)[0])
        ratio = best_concurrent / best_serial
        print(f"{name:12s}: 4 threads x {args.calls} calls, 1 kernel thread each: serial {best_serial * 1e3:8.1f} ms, "
              f"concurrent {best_concurrent * 1e3:8.1f} ms, concurrent/serial {ratio:.2f} "
              f"(perfect {1 / min(4, cores):.2f}), speed-up {1 / ratio:.2f}x; bitwise equal: "
              f"{'yes' if ok else 'NO'}")
    fastrnn.set_num_threads(default_threads)
    if not ok:
        print("FAILED: results of concurrent calls differ from serial ones")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
