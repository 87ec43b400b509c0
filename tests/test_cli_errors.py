"""The command line's errors name its own flags (--batch, --seq, --val-fraction), not the
library's argument names (batch_size, seq_length, val_fraction), which its messages carry."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
TEXT = "the cat sat on the mat. " * 20  # 480 characters
LIBRARY_NAMES = ("batch_size", "seq_length", "val_fraction", "CharBatches", " split ", " ids ")

pytestmark = pytest.mark.usefixtures("one_thread")


def run(*args, timeout=120):
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    p = subprocess.run([sys.executable, "-m", "fastrnn", *map(str, args)], capture_output=True,
                       text=True, timeout=timeout, env=env, cwd=HERE)
    return p.returncode, p.stdout, p.stderr


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "input.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


CASES = {  # options -> what the message must say
    "validation part": (["--batch", "8", "--seq", "8"], ["validation part", "--batch 8 x --seq 8", "65"]),
    "training part": (["--batch", "30", "--seq", "16", "--val-fraction", "0"],
                      ["training part", "--batch 30 x --seq 16", "481"]),
    "large val fraction": (["--batch", "4", "--seq", "16", "--val-fraction", "0.9"],
                           ["training part", "--val-fraction 0.9", "--batch 4 x --seq 16"]),
    "char-rnn spellings": (["-batch_size", "50", "-seq_length", "50"], ["--batch 50 x --seq 50", "2,501"]),
    "defaults": ([], ["--batch 32 x --seq 64"]),
}


@pytest.mark.parametrize("case", CASES)
def test_too_short_text_names_the_flags(case, corpus, tmp_path):
    options, needles = CASES[case]
    rc, _, err = run("train", corpus, "--hidden", "8", "--layers", "1", "--threads", "1", *options,
                     "--max-iters", "1", "--out", tmp_path / "run")
    assert rc == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    line = lines[0]
    assert "too short" in line and str(corpus) in line
    for needle in needles:
        assert needle in line, (needle, line)
    assert "--batch" in line and "--seq" in line
    for name in LIBRARY_NAMES:
        assert name not in line, (name, line)


def test_resuming_on_a_shorter_text_names_no_library_argument(corpus, tmp_path):
    out = tmp_path / "run"
    rc, _, err = run("train", corpus, "--hidden", "8", "--layers", "1", "--batch", "2", "--seq", "8",
                     "--threads", "1", "--max-iters", "2", "--out", out, "--progress", "none")
    assert rc == 0, err
    short = tmp_path / "short.txt"
    short.write_text(TEXT[:100], encoding="utf-8")
    rc, _, err = run("train", "--resume", "--out", out, short, "--max-iters", "4", "--threads", "1")
    assert rc == 1
    (line,) = err.strip().splitlines()
    assert "too short" in line and "--batch 2 x --seq 8" in line and "resume with the text" in line
    for name in LIBRARY_NAMES:
        assert name not in line, (name, line)
