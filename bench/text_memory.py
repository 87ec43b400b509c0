"""Peak memory of `fastrnn train` and `fastrnn eval` on a large text, relative to its size.

Writes a text of SIZE MB (random words; ``--unicode`` adds U+2603, a character outside
Latin-1, to every line, which makes a Python ``str`` of it take 2 bytes per character),
trains a tiny model on it for two iterations, evaluates it, and prints for each command
the peak resident set size (``ru_maxrss`` of the child process) minus that of a child
that only imports fastrnn and builds (or loads) the same model, divided by the text's
size in bytes.

    python bench/text_memory.py --size 100             # about 100 MB of ASCII text
    python bench/text_memory.py --size 100 --unicode
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

TINY = ["--hidden", "8", "--layers", "1", "--batch", "64", "--seq", "64", "--threads", "1"]

BASELINE = """
import resource, sys
import fastrnn
from fastrnn.models import CharRNN
from fastrnn.checkpoint import load_model
if sys.argv[1] == "train":
    CharRNN(int(sys.argv[2]), hidden_size=8, num_layers=1)
else:
    load_model(sys.argv[2])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def write_text(path: str, size_mb: float, unicode: bool, seed: int = 0) -> int:
    """A text of about size_mb MB: lines of random lower-case words. Returns its size in bytes."""
    rng = np.random.default_rng(seed)
    alphabet = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz     ", np.uint8)
    target = int(size_mb * 1e6)
    with open(path, "wb") as f:
        written = 0
        while written < target:
            block = alphabet[rng.integers(0, alphabet.size, 1 << 20)]
            block[79::80] = ord("\n")
            data = block.tobytes()
            if unicode:
                data = data.replace(b"\n", "\u2603\n".encode())
            f.write(data)
            written += len(data)
    return os.path.getsize(path)


def measure(cmd: list) -> int:
    """Peak RSS in KiB of a fresh interpreter running cmd (measured by a wrapper process, so
    that each figure is that one child's)."""
    wrapper = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
               "stdout=subprocess.DEVNULL); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    p = subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{p.stderr}")
    return int(p.stdout.split()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=float, default=100.0, help="text size in MB (default 100)")
    ap.add_argument("--unicode", action="store_true", help="one non-Latin-1 character per line")
    ap.add_argument("--eval-seq", type=int, default=4096, help="--seq of fastrnn eval (default 4096)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        text = os.path.join(d, "input.txt")
        size = write_text(text, args.size, args.unicode)
        out = os.path.join(d, "run")
        fastrnn = [sys.executable, "-m", "fastrnn"]
        train_kb = measure(fastrnn + ["train", text, *TINY, "--max-iters", "2", "--eval-every", "1000000",
                                      "--val-fraction", "0.001", "--out", out, "--progress", "none",
                                      "--no-plot"])
        vocab = 28 if args.unicode else 27
        base_train_kb = measure([sys.executable, "-c", BASELINE, "train", str(vocab)])
        eval_kb = measure(fastrnn + ["eval", out, text, "--seq", str(args.eval_seq), "--threads", "1"])
        base_eval_kb = measure([sys.executable, "-c", BASELINE, "eval", out])
    print(f"text: {size / 1e6:.1f} MB{' (with a non-Latin-1 character per line)' if args.unicode else ''}")
    for name, peak, base in (("train", train_kb, base_train_kb), ("eval", eval_kb, base_eval_kb)):
        extra = (peak - base) * 1024
        print(f"{name}: peak RSS {peak / 1024:.0f} MiB, baseline {base / 1024:.0f} MiB, "
              f"(peak - baseline) / text = {extra / size:.2f}")


if __name__ == "__main__":
    main()
