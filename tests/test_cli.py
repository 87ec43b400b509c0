"""The `fastrnn` command line: train -> sample -> eval round trip, resume, bad input, Ctrl-C."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest

import fastrnn
from fastrnn import cli
from fastrnn.checkpoint import load_checkpoint

HERE = os.path.dirname(os.path.abspath(__file__))  # tests/: holds no fastrnn package

TEXT = "the cat sat on the mat. the dog sat on the log. " * 40  # 1,960 chars
TINY = ["--hidden", "16", "--layers", "1", "--batch", "4", "--seq", "16", "--threads", "1"]


# Training tests use tiny models: one kernel thread each keeps them fast on a busy machine.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "input.txt"
    path.write_text(TEXT, encoding="utf-8")
    return str(path)


def run(*args, timeout=120):
    """`python -m fastrnn ARGS` in a subprocess: (returncode, stdout, stderr)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    # Run away from the source tree, so the installed package is the one imported.
    p = subprocess.run([sys.executable, "-m", "fastrnn", *map(str, args)], capture_output=True,
                       text=True, timeout=timeout, env=env, cwd=HERE)
    return p.returncode, p.stdout, p.stderr


def last_json(stdout):
    return json.loads(stdout.strip().splitlines()[-1])


def test_round_trip_train_sample_eval(tmp_path, corpus):
    out = tmp_path / "run"
    rc, so, se = run("train", corpus, *TINY, "--max-iters", 60, "--eval-every", 30, "--lr", 1e-2,
                     "--out", out, "--json")
    assert rc == 0, se
    s = last_json(so)
    assert s["iterations"] == 60 and s["chars_per_sec"] > 0
    assert s["val_bpc"] is not None and math.isclose(s["val_bpc"], s["val_loss"] / math.log(2))
    assert os.path.dirname(s["checkpoint"]) == str(out) and os.path.exists(s["checkpoint"])
    assert "Traceback" not in se

    rc, so, se = run("sample", out, "--length", 50, "--prime", "the ", "--seed", 7, "--json")
    assert rc == 0, se
    text = last_json(so)["text"]
    assert text.startswith("the ") and len(text) == 54
    rc2, so2, _ = run("sample", s["checkpoint"], "--length", 50, "--prime", "the ", "--seed", 7)
    assert rc2 == 0 and so2 == text + "\n"  # same seed, same text; a file works like the dir
    rc, so, se = run("sample", out, "--length", 20, "--argmax", "--top-k", 3)
    assert rc == 0 and len(so) == 21, se

    rc, so, se = run("eval", out, corpus, "--json")
    assert rc == 0, se
    e = last_json(so)
    assert math.isclose(e["bpc"], e["loss"] / math.log(2)) and e["chars"] == len(TEXT) - 1
    assert e["bpc"] < 3.0  # it learnt something (uniform over 14 characters is 3.8 bits)

    # the same through the in-process entry point
    assert cli.main(["eval", str(out), corpus]) == 0


def test_resume_from_the_command_line(tmp_path, corpus, capsys):
    out = str(tmp_path / "run")
    base = ["train", corpus, *TINY, "--eval-every", "10", "--out", out, "--json", "--progress", "none"]
    assert cli.main(base + ["--max-iters", "20"]) == 0
    # a new run may not silently replace it
    assert cli.main(base + ["--max-iters", "20"]) == 1
    assert "--resume" in capsys.readouterr().err
    # resume: the architecture comes from the checkpoint; conflicting options are refused
    assert cli.main(["train", "--resume", "--out", out, "--hidden", "32", "--max-iters", "30"]) == 1
    assert "--hidden 32 differs" in capsys.readouterr().err
    assert cli.main(["train", "--resume", "--out", out, "--max-iters", "30", "--json",
                     "--progress", "none", "--threads", "1"]) == 0
    s = last_json(capsys.readouterr().out)
    assert s["iterations"] == 30
    assert load_checkpoint(s["checkpoint"]).iteration == 30
    assert cli.main(base + ["--max-iters", "5", "--overwrite"]) == 0
    assert last_json(capsys.readouterr().out)["iterations"] == 5


BAD = [
    (["train", "{missing}"], "no such file"),
    (["train", "{empty}"], "is empty"),
    (["train", "{binary}"], "binary"),
    (["train", "{latin1}"], "not UTF-8"),
    (["train", "{corpus}", "--hidden", "0"], "--hidden"),
    (["train", "{corpus}", "--layers", "-1"], "--layers"),
    (["train", "{corpus}", "--dropout", "1"], "--dropout"),
    (["train", "{corpus}", "--dropout", "-0.1"], "--dropout"),
    (["train", "{corpus}", "--lr", "0"], "--lr"),
    (["train", "{corpus}", "--lr", "nan"], "--lr"),
    (["train", "{corpus}", "--batch", "x"], "--batch"),
    (["train", "{corpus}", "--model", "transformer"], "--model"),
    (["train", "{corpus}", "--optimizer", "lbfgs"], "--optimizer"),
    (["train", "{corpus}", "--max-seconds", "-1"], "--max-seconds"),
    (["train", "{corpus}", "--bogus"], "unrecognized"),
    (["train", "{corpus}", "--batch", "64", "--seq", "64", "--out", "{tmp}/o"], "too short"),
    (["train", "--resume", "--out", "{tmp}/nothing"], "nothing to resume"),
    (["sample", "{ckpt}", "--temperature", "0"], "--temperature"),
    (["sample", "{ckpt}", "--temperature", "-1"], "--temperature"),
    (["sample", "{ckpt}", "--top-p", "1.5"], "--top-p"),
    (["sample", "{ckpt}", "--top-p", "0"], "--top-p"),
    (["sample", "{ckpt}", "--top-k", "0"], "--top-k"),
    (["sample", "{ckpt}", "--length", "-5"], "--length"),
    (["sample", "{ckpt}", "--prime", "XYZ"], "'X'"),
    (["sample", "{missing}"], "no such"),
    (["sample", "{corpus}"], "not a fastrnn checkpoint"),
    (["sample", "{tmp}"], "no fastrnn checkpoint"),
    (["eval", "{ckpt}", "{missing}"], "no such file"),
    (["eval", "{ckpt}", "{binary}"], "binary"),
    (["eval", "{ckpt}", "{other}"], "'Q'"),
    (["eval", "{ckpt}"], "required"),
    (["frobnicate"], "invalid choice"),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    paths = {"tmp": str(d), "missing": str(d / "missing.txt")}
    for name, data in (("corpus", TEXT.encode()), ("empty", b""), ("binary", b"ab\x00cd" * 10),
                       ("latin1", "caf\xe9 ".encode("latin-1") * 10),
                       ("other", ("the cat. " * 20 + "Q").encode())):
        (d / f"{name}.txt").write_bytes(data)
        paths[name] = str(d / f"{name}.txt")
    before = fastrnn.get_num_threads()
    assert cli.main(["train", paths["corpus"], *TINY, "--max-iters", "2", "--out", str(d / "ck"),
                     "--progress", "none"]) == 0
    fastrnn.set_num_threads(before)
    paths["ckpt"] = str(d / "ck")
    return paths


@pytest.mark.parametrize("argv,needle", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_one_line(argv, needle, files, capsys):
    argv = [a.format(**files) for a in argv]
    try:
        rc = cli.main(argv)
    except SystemExit as e:  # argparse usage errors
        rc = e.code
    err = capsys.readouterr().err
    assert rc not in (0, None)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert needle in lines[0] and "Traceback" not in err


def test_bad_input_in_a_subprocess(files):
    for argv in (["train", files["binary"]], ["sample", files["ckpt"], "--top-p", "2"],
                 ["eval", files["ckpt"], files["other"]], ["train", "--hidden", "0"]):
        rc, so, se = run(*argv)
        assert rc != 0 and len(se.strip().splitlines()) == 1 and "Traceback" not in se, se


def test_eval_unknown_skip(files, capsys):
    assert cli.main(["eval", files["ckpt"], files["other"], "--unknown", "skip", "--json"]) == 0
    e = last_json(capsys.readouterr().out)
    assert e["skipped"] == 1 and e["chars"] == 20 * 9 - 1


def test_check_still_works(capsys):
    assert cli.main(["check", "--threads", "1"]) == 0
    assert "kernels match the reference" in capsys.readouterr().out


def test_sigint_saves_a_checkpoint(tmp_path, corpus):
    """Ctrl-C during `fastrnn train`: a checkpoint is saved, exit status 130, no traceback."""
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    p = subprocess.Popen([sys.executable, "-m", "fastrnn", "train", corpus, *TINY, "--max-seconds", "60",
                          "--eval-every", "100000", "--print-every", "1", "--out", str(out), "--json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=HERE)
    try:
        deadline = time.time() + 60
        line = ""
        while time.time() < deadline:  # wait until training runs
            line = p.stdout.readline()
            if line.startswith("iter ") or not line:
                break
        assert line.startswith("iter "), line
        p.send_signal(signal.SIGINT)
        so, se = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, se
    assert "Traceback" not in se
    s = last_json(so)
    assert s["stopped"] == "interrupted" and s["checkpoint"].endswith("_interrupted.npz")
    assert load_checkpoint(s["checkpoint"]).iteration == s["iterations"] > 0


def test_new_runs_learn_an_embedding_and_embedding_0_gives_char_rnns_one_hot_inputs(tmp_path, corpus):
    for flag, want in ((None, 64), (0, None), (16, 16)):
        out = tmp_path / f"run{flag}"
        extra = [] if flag is None else ["--embedding", flag]
        rc, so, se = run("train", corpus, *TINY, *extra, "--max-iters", 2, "--eval-every", 2, "--out", out,
                         "--json")
        assert rc == 0, se
        ckpt = load_checkpoint(last_json(so)["checkpoint"])
        assert ckpt.config["model"]["embedding_dim"] == want
    # A one-hot run resumes without the flag or with --embedding 0; another size is refused.
    one_hot = tmp_path / "run0"
    for extra, status in (([], 0), (["--embedding", 0], 0), (["--embedding", 64], 1)):
        rc, so, se = run("train", "--resume", "--out", one_hot, *extra, "--max-iters", 3, "--threads", 1)
        assert rc == status, se
        if status:
            assert "--embedding 64 differs from the checkpoint" in se
