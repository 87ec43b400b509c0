"""Peak memory of `fastrnn train` and `fastrnn eval` stays under 3 times the text's size.

Each command runs in a child process on a generated text of 8 to 24 MB; the child's
peak resident set size (VmHWM) minus that of a child that only imports fastrnn and
builds (or loads) the same tiny model must stay below 3 times the file's size. The
text is plain ASCII, or has a character outside Latin-1 on every line (a Python ``str``
of it takes 4 bytes per character), or more than 256 distinct characters (2-byte ids).
Linux (/proc/self/status).
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")

HERE = os.path.dirname(os.path.abspath(__file__))
TRAIN_SIZE = 24_000_000  # (16 MB for 300 distinct characters: 2-byte ids)
EVAL_SIZE = 8_000_000  # evaluation predicts every character: a smaller text keeps it short
LIMIT = 3.0
ENV = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
TRAIN = ["--model", "rnn", "--hidden", "8", "--layers", "1", "--batch", "4", "--seq", "64", "--threads", "1",
         "--max-iters", "2", "--eval-every", "1000000", "--val-fraction", "0.01", "--progress", "none",
         "--no-plot"]

# The child's peak RSS: VmHWM, the high-water mark of this process image. (ru_maxrss of a
# child also counts its parent's RSS at the fork, which the test process may exceed.)
PEAK = """
def peak_kb():
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("VmHWM:")).split()[1])
"""
# The command line in-process, then the peak RSS on stderr.
RUN_CLI = PEAK + """
import sys
from fastrnn.cli import main
rc = main(sys.argv[1:])
print("PEAK_KB", peak_kb(), file=sys.stderr)
sys.exit(rc)
"""
# The baseline: fastrnn imported and the model built (train) or loaded (eval).
BASELINE = PEAK + """
import sys
from fastrnn.checkpoint import load_model
from fastrnn.models import CharRNN
if sys.argv[1] == "train":
    CharRNN(int(sys.argv[2]), hidden_size=8, num_layers=1, cell="rnn")
else:
    load_model(sys.argv[2])
print("PEAK_KB", peak_kb(), file=sys.stderr)
"""


def peak_kb(code, *args, timeout=120):
    p = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                       timeout=timeout, env=ENV, cwd=HERE)
    assert p.returncode == 0, p.stderr
    (line,) = [ln for ln in p.stderr.splitlines() if ln.startswith("PEAK_KB ")]
    return int(line.split()[1])


def write_text(path, kind, size):
    """About ``size`` bytes of random words in lines of 80 characters; returns the number of
    distinct characters."""
    rng = np.random.default_rng(0)
    if kind == "wide":  # 300 distinct characters: 29 ASCII ones and 271 Greek and Cyrillic ones
        cps = np.array([*map(ord, "abcdefghijklmnopqrstuvwxyz   "), *range(0x391, 0x391 + 271)], np.uint32)
        pick = rng.integers(0, 29, size)
        rare = rng.random(size) < 0.1
        pick[rare] = rng.integers(29, cps.size, int(rare.sum()))
        text = cps[pick].astype("<u4").tobytes().decode("utf-32-le")
        data = text.encode("utf-8")[:size]
        path.write_bytes(data[:len(data.decode("utf-8", "ignore").encode("utf-8"))])
        return 27 + 271
    alphabet = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz     ", np.uint8)
    block = alphabet[rng.integers(0, alphabet.size, size)]
    block[79::80] = ord("\n")
    data = block.tobytes()
    if kind == "emoji":  # one character outside the BMP: a str of the text takes 4 bytes per character
        data = data.replace(b"\n", "\U0001F600\n".encode(), 1000)
    path.write_bytes(data)
    return 28 + (kind == "emoji")


@pytest.mark.parametrize("kind", ["ascii", "emoji", "wide"])
def test_train_peak_memory_is_under_3x_the_text(kind, tmp_path):
    text = tmp_path / "input.txt"
    vocab_size = write_text(text, kind, TRAIN_SIZE * 2 // 3 if kind == "wide" else TRAIN_SIZE)
    size = os.path.getsize(text)
    train = peak_kb(RUN_CLI, "train", text, *TRAIN, "--out", tmp_path / "run")
    base = peak_kb(BASELINE, "train", vocab_size)
    ratio = (train - base) * 1024 / size
    assert ratio < LIMIT, f"train: peak RSS {train} KiB - baseline {base} KiB = {ratio:.2f} x the text"


def test_eval_peak_memory_is_under_3x_the_text(tmp_path):
    small = tmp_path / "small.txt"
    write_text(small, "ascii", 1_000_000)
    out = tmp_path / "run"
    peak_kb(RUN_CLI, "train", small, *TRAIN, "--out", out)
    text = tmp_path / "input.txt"
    write_text(text, "ascii", EVAL_SIZE)
    size = os.path.getsize(text)
    evaluated = peak_kb(RUN_CLI, "eval", out, text, "--threads", "1")
    base = peak_kb(BASELINE, "eval", out)
    ratio = (evaluated - base) * 1024 / size
    assert ratio < LIMIT, f"eval: peak RSS {evaluated} KiB - baseline {base} KiB = {ratio:.2f} x the text"
