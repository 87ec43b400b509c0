"""Training never loses a checkpoint: divergence, refused directories, the run lock,
readers beside a writer, temporary files of killed writers, file modes, read-only
directories and the stop criteria of a resumed run. The command line runs in real
subprocesses, with real signals and concurrent processes."""
from __future__ import annotations

import json
import math
import os
import random
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fastrnn.checkpoint import (
    FORMAT_VERSION,
    Checkpoint,
    CheckpointError,
    checkpoint_checksum,
    load_checkpoint,
    load_model,
    open_checkpoint,
    save_checkpoint,
)
from fastrnn.data import Vocab
from fastrnn.models import CharRNN
from fastrnn import cli as fastrnn_cli
from fastrnn.train import Trainer, train

HERE = os.path.dirname(os.path.abspath(__file__))  # tests/: holds no fastrnn package
ENV = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", PYTHONUNBUFFERED="1")
TINY = ["--hidden", "8", "--layers", "1", "--batch", "2", "--seq", "8", "--threads", "1"]
TEXT = "the cat sat on the mat. the dog sat on the log. " * 40  # 1,960 chars, 14 distinct
# 18,000 chars: over 1,000 batches of 2 x 8 per epoch, so that neighbouring iterations
# share the epoch part of a checkpoint's name (epoch0.01).
LONG = "a quick brown fox jumps over the lazy dog; the cat sat on the mat. " * 270

pytestmark = pytest.mark.usefixtures("one_thread")


def cli(*args, timeout=60, **kw):
    """`python -m fastrnn ARGS` in a subprocess: (returncode, stdout, stderr)."""
    p = subprocess.run([sys.executable, "-m", "fastrnn", *map(str, args)], capture_output=True,
                       text=True, timeout=timeout, env=ENV, cwd=HERE, **kw)
    return p.returncode, p.stdout, p.stderr


def popen(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "fastrnn", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV, cwd=HERE, **kw)


def wait_for_line(p, prefix, timeout=60):
    """Reads p's stdout until a line starting with prefix (AssertionError after timeout)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = p.stdout.readline()
        if not line:
            break
        if line.startswith(prefix):
            return line
    raise AssertionError(f"no line starting with {prefix!r} (exit status {p.poll()})")


def stop(p, sig=signal.SIGINT, timeout=60):
    """Sends sig, then waits: (returncode, stdout rest, stderr)."""
    try:
        if p.poll() is None:
            p.send_signal(sig)
        so, se = p.communicate(timeout=timeout)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    return p.returncode, so, se


def files(d):
    """name -> bytes of every regular file lm_*.npz in d."""
    return {f: Path(d, f).read_bytes() for f in os.listdir(d)
            if f.startswith("lm_") and f.endswith(".npz") and Path(d, f).is_file()}


def temporaries(d):
    return sorted(f for f in os.listdir(d) if f.startswith(".tmp-"))


def last_json(stdout):
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "input.txt"
    path.write_text(TEXT, encoding="utf-8")
    return str(path)


@pytest.fixture
def long_corpus(tmp_path):
    path = tmp_path / "long.txt"
    path.write_text(LONG, encoding="utf-8")
    return str(path)


def trained(out, corpus, seed=0, iters=4):
    """A finished run in out (trained in this process, as `fastrnn train` would):
    name -> bytes of its checkpoints."""
    train(Path(corpus).read_text(encoding="utf-8"), cell="lstm", hidden_size=8, num_layers=1, seed=seed,
          batch_size=2, seq_length=8, max_iters=iters, eval_every=2, out_dir=str(out), progress="none",
          data_source=os.path.abspath(corpus))
    return files(out)


# ---------------------------------------------------------------- divergence


@pytest.mark.parametrize("lr", ["1e300", "1e6"])
@pytest.mark.parametrize("val", ["0", "0.05"])
def test_a_diverging_resume_saves_nothing_and_keeps_the_good_checkpoint(tmp_path, long_corpus, lr, val):
    out = tmp_path / "B"
    rc, _, se = cli("train", long_corpus, *TINY, "--max-iters", 10, "--eval-every", 5, "--out", out,
                    "--progress", "none", "--val-fraction", val)
    assert rc == 0, se
    good = files(out)
    rc, so, se = cli("train", "--resume", "--out", out, "--lr", lr, "--max-iters", 11, "--eval-every", 1,
                     "--progress", "none")
    assert rc == 1, so + se
    lines = se.strip().splitlines()
    assert len(lines) == 1 and "nothing was saved" in lines[0] and "Traceback" not in se
    after = files(out)
    assert {k: v for k, v in after.items() if k in good} == good  # the good files, byte for byte
    assert set(after) == set(good)  # and nothing else
    limit = 3 * math.log(len(Vocab.from_text(LONG)))
    for name in after:
        c = load_checkpoint(str(out / name))
        assert all(np.isfinite(p).all() for p in c.params.values())
        assert not c.val_loss > limit
    # what the message calls good is one of the good files
    if "last good checkpoint is " in lines[0]:
        named = lines[0].split("last good checkpoint is ")[1].split(";")[0]
        assert os.path.basename(named) in good


def test_a_worse_checkpoint_never_replaces_a_better_one_of_the_same_name(tmp_path, monkeypatch):
    """Two evaluations whose epoch and loss print alike (epoch0.00_1.0000)."""
    vocab = Vocab.from_text(LONG)
    model = CharRNN(len(vocab), hidden_size=8, num_layers=1, seed=0)
    t = Trainer(model, LONG, vocab, batch_size=2, seq_length=8, eval_every=1, max_iters=2,
                out_dir=str(tmp_path), progress="none")
    losses = iter([1.00001, 1.00004])
    monkeypatch.setattr(t, "evaluate", lambda split="val": next(losses))
    t.train()
    saved = {n: load_checkpoint(str(tmp_path / n)) for n in files(tmp_path)}
    assert sorted(c.iteration for c in saved.values()) == [1, 2]
    best = saved[t.best_checkpoint]
    assert best.iteration == 1 and best.val_loss == 1.00001
    assert open_checkpoint(str(tmp_path)).val_loss == 1.00001


@pytest.mark.parametrize("where", ["param", "optimizer", "carry"])
def test_nothing_non_finite_is_written(tmp_path, where):
    vocab = Vocab.from_text(TEXT)
    model = CharRNN(len(vocab), hidden_size=8, num_layers=1, seed=0)
    params = {k: v.copy() for k, v in model.params.items()}
    optimizer = {"type": "Adam", "lr": 1e-3, "m/head.b": np.zeros(len(vocab), np.float32)}
    carry = (np.zeros((1, 2, 8), np.float32),)
    bad = {"param": params["head.b"], "optimizer": optimizer["m/head.b"], "carry": carry[0]}[where]
    bad.flat[0] = np.nan
    ckpt = Checkpoint(params=params, config={"model": model.config()}, vocab=vocab, optimizer=optimizer,
                      carry=carry)
    with pytest.raises(ValueError, match="non-finite"):
        save_checkpoint(str(tmp_path / "x.npz"), ckpt)
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------- refusing a used directory


def _newer_version(path):
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["__version__"] = np.array(FORMAT_VERSION + 1)
    arrays["__checksum__"] = np.array(checkpoint_checksum(arrays))
    np.savez(path, **arrays)


def _truncated(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


UNREADABLE = {
    "newer-version": _newer_version,
    "truncated": _truncated,
    "empty": lambda p: open(p, "wb").close(),
    "foreign-npz": lambda p: np.savez(p, weights=np.zeros(3)),
    "text": lambda p: Path(p).write_text("not a checkpoint"),
}


@pytest.mark.parametrize("kind", sorted(UNREADABLE))
def test_a_new_run_refuses_a_directory_with_unreadable_checkpoints(tmp_path, corpus, kind, capsys):
    out = tmp_path / "run"
    (name, _), = trained(out, corpus, iters=2).items()
    UNREADABLE[kind](str(out / name))
    before = files(out)
    rc = fastrnn_cli.main(["train", corpus, *TINY, "--max-iters", "4", "--eval-every", "2", "--out", str(out),
                           "--progress", "none"])
    se = capsys.readouterr().err
    assert rc == 1 and "already holds" in se and "--overwrite" in se and len(se.strip().splitlines()) == 1, se
    assert files(out) == before


def test_a_new_run_refuses_unreadable_checkpoints_in_a_subprocess(tmp_path, corpus):
    out = tmp_path / "run"
    (name, data), = trained(out, corpus, iters=2).items()
    for kind, damage in UNREADABLE.items():
        Path(out, f"lm_{kind}.npz").write_bytes(data)
        damage(str(out / f"lm_{kind}.npz"))
    os.remove(out / name)
    before = files(out)
    rc, so, se = cli("train", corpus, *TINY, "--max-iters", 4, "--eval-every", 2, "--out", out,
                     "--progress", "none")
    assert rc == 1 and "already holds" in se, se
    assert files(out) == before


@pytest.mark.parametrize("kind", ["directory", "dangling-link"])
def test_a_new_run_refuses_anything_named_like_a_checkpoint(tmp_path, corpus, kind):
    out = tmp_path / "run"
    out.mkdir()
    entry = out / "lm_lstm_epoch1.00_1.2345.npz"
    if kind == "directory":
        entry.mkdir()
    else:
        entry.symlink_to(tmp_path / "nowhere.npz")
    rc, so, se = cli("train", corpus, *TINY, "--max-iters", 2, "--out", out, "--progress", "none")
    assert rc == 1 and "already holds" in se, se
    assert os.path.lexists(entry) and files(out) == {}


def test_overwrite_replaces_the_old_run_but_nothing_else(tmp_path, corpus):
    out = tmp_path / "run"
    trained(out, corpus, iters=2)
    (out / "notes.txt").write_text("mine")
    (out / "data.npz").write_bytes(b"PK not mine")
    rc, so, se = cli("train", corpus, *TINY, "--max-iters", 4, "--eval-every", 2, "--out", out,
                     "--progress", "none", "--overwrite", "--json")
    assert rc == 0, se
    assert [load_checkpoint(str(out / n)).iteration for n in files(out)] == [4]
    assert (out / "notes.txt").read_text() == "mine" and (out / "data.npz").exists()


def test_pruning_deletes_only_files_the_run_wrote(tmp_path, corpus):
    """A resumed run leaves alone a checkpoint it did not write (another run's file
    copied in), readable or not."""
    other = tmp_path / "other"
    (foreign_name, foreign), = trained(other, corpus, seed=5, iters=2).items()
    out = tmp_path / "run"
    trained(out, corpus, iters=4)
    Path(out, "lm_lstm_epoch0.00_9.9999.npz").write_bytes(foreign)
    Path(out, "lm_lstm_epoch0.00_broken.npz").write_bytes(foreign[:100])
    rc, so, se = cli("train", "--resume", "--out", out, "--max-iters", 10, "--eval-every", 2,
                     "--progress", "none", "--threads", "1")
    assert rc == 0, se
    after = files(out)
    assert after["lm_lstm_epoch0.00_9.9999.npz"] == foreign
    assert after["lm_lstm_epoch0.00_broken.npz"] == foreign[:100]
    assert max(load_checkpoint(str(out / n)).iteration for n in after if "9.9999" not in n
               and "broken" not in n) == 10


# ---------------------------------------------------------------- the lock


def test_a_second_run_is_refused_naming_the_holders_pid(tmp_path, corpus):
    out = tmp_path / "run"
    a = popen("train", corpus, *TINY, "--max-seconds", 60, "--eval-every", 20, "--print-every", 1,
              "--progress", "log", "--out", out, "--json")
    try:
        wait_for_line(a, "iter ")
        for extra in (["--overwrite"], ["--resume"]):
            args = ["train", *([corpus] if extra[0] == "--overwrite" else []), *TINY, "--max-iters", 3,
                    "--out", out, "--progress", "none", *extra]
            rc, so, se = cli(*args)
            assert rc == 1 and f"PID {a.pid}" in se and len(se.strip().splitlines()) == 1, se
            assert a.poll() is None  # the first run still trains
    finally:
        rc, so, se = stop(a)
    assert rc == 130, se
    s = last_json(so)
    assert load_checkpoint(s["checkpoint"]).iteration == s["iterations"]


def test_two_runs_started_together(tmp_path, corpus):
    out = tmp_path / "run"
    args = ["train", corpus, *TINY, "--max-iters", 40, "--eval-every", 2, "--out", out, "--progress",
            "none", "--json"]
    ps = [popen(*args), popen(*args)]
    results = [p.communicate(timeout=120) + (p.returncode,) for p in ps]
    ok = [r for r in results if r[2] == 0]
    assert len(ok) == 1, results
    (bad,) = [r for r in results if r[2] != 0]
    assert bad[2] == 1 and ("in use by another training run" in bad[1] or "already holds" in bad[1]), bad
    s = last_json(ok[0][0])
    assert os.path.exists(s["checkpoint"]) and load_checkpoint(s["checkpoint"]).iteration == 40


def test_a_stale_lock_file_does_not_block(tmp_path, corpus):
    out = tmp_path / "run"
    a = popen("train", corpus, *TINY, "--max-seconds", 60, "--eval-every", 5, "--print-every", 1,
              "--progress", "log", "--out", out)
    try:
        wait_for_line(a, "iter 6")  # a checkpoint exists
    finally:
        stop(a, signal.SIGKILL)
    assert Path(out, ".lock").read_text().strip() == str(a.pid)  # left behind, no live flock
    rc, so, se = cli("train", "--resume", "--out", out, "--max-iters", 12, "--progress", "none", "--json")
    assert rc == 0, se
    assert last_json(so)["iterations"] == 12
    # a lock file naming a live process that holds no lock does not block either
    Path(out, ".lock").write_text(f"{os.getpid()}\n")
    rc, so, se = cli("train", "--resume", "--out", out, "--max-iters", 14, "--progress", "none")
    assert rc == 0, se


# ---------------------------------------------------------------- readers beside a writer


def test_readers_never_fail_while_a_run_writes(tmp_path, corpus):
    out = tmp_path / "run"
    w = popen("train", corpus, *TINY, "--max-seconds", 60, "--eval-every", 1, "--val-fraction", "0.02",
              "--print-every", 1, "--progress", "log", "--out", out)
    failures = []
    try:
        wait_for_line(w, "iter 3")
        deadline, n = time.time() + 4, 0
        while time.time() < deadline and n < 300:
            n += 1
            try:
                load_model(str(out))
                open_checkpoint(str(out), "latest")
            except CheckpointError as e:
                failures.append(str(e))
        for argv in (["sample", out, "--length", 5, "--seed", 1], ["eval", out, corpus]):
            rc, so, se = cli(*argv)
            if rc != 0:
                failures.append(se)
        assert w.poll() is None, "the writer stopped early"
    finally:
        rc, _, se = stop(w)
    assert rc == 130, se
    assert failures == []


# ---------------------------------------------------------------- temporary files

SLOW_SAVE = """
import sys, time
import numpy as np
from fastrnn import checkpoint as ck
ckpt = ck.load_checkpoint(sys.argv[1])
def slow_savez(f, **arrays):
    f.write(b"PK\\x03\\x04 partial")
    f.flush()
    print("writing", flush=True)
    time.sleep(120)
ck.np.savez = slow_savez
ck.save_checkpoint(sys.argv[2], ckpt)
"""


def _slow_writer(source, target):
    p = subprocess.Popen([sys.executable, "-c", SLOW_SAVE, source, target], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=ENV, cwd=HERE)
    wait_for_line(p, "writing", timeout=60)
    return p


def test_a_killed_writers_temporary_file_is_removed_by_the_next_run(tmp_path, corpus):
    out = tmp_path / "run"
    (name, _), = trained(out, corpus, iters=2).items()
    p = _slow_writer(str(out / name), str(out / "lm_lstm_epoch9.00_1.0000.npz"))
    stop(p, signal.SIGKILL)
    assert len(temporaries(out)) == 1  # orphaned by SIGKILL during the save
    rc, so, se = cli("train", "--resume", "--out", out, "--max-iters", 4, "--progress", "none")
    assert rc == 0, se
    assert temporaries(out) == []


def test_a_live_writers_temporary_file_is_kept(tmp_path, corpus):
    out = tmp_path / "run"
    (name, _), = trained(out, corpus, iters=2).items()
    p = _slow_writer(str(out / name), str(out / "lm_lstm_epoch9.00_1.0000.npz"))
    try:
        (tmp,) = temporaries(out)
        rc, so, se = cli("train", "--resume", "--out", out, "--max-iters", 4, "--progress", "none")
        assert rc == 0, se
        assert temporaries(out) == [tmp]
    finally:
        stop(p, signal.SIGKILL)


def test_sigkill_at_random_moments_leaves_only_readable_checkpoints(tmp_path, corpus):
    out = tmp_path / "run"
    rng = random.Random(1)
    args = ["--max-seconds", 60, "--eval-every", 1, "--print-every", 1, "--progress", "log", "--out", out]
    for k in range(3):
        p = popen("train", *([corpus, *TINY] if k == 0 else ["--resume", "--threads", "1"]), *args)
        try:
            wait_for_line(p, "iter ")
            time.sleep(rng.uniform(0.05, 0.4))
        finally:
            stop(p, signal.SIGKILL)
        names = files(out)
        assert names, "no checkpoint survived"
        for n in names:
            load_checkpoint(str(out / n))  # every checkpoint is whole
    rc, so, se = cli("train", "--resume", "--out", out, "--max-iters", 10 ** 6, "--max-seconds", 0.5,
                     "--progress", "none")
    assert rc == 0, se
    assert temporaries(out) == []


# ---------------------------------------------------------------- modes, read-only directories


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_checkpoints_follow_the_umask(tmp_path, corpus, umask):
    out = tmp_path / f"run{umask:o}"
    rc, so, se = cli("train", corpus, *TINY, "--max-iters", 2, "--out", out, "--progress", "none",
                     preexec_fn=lambda: os.umask(umask))
    assert rc == 0, se
    (name,) = files(out)
    assert stat.S_IMODE(os.stat(out / name).st_mode) == 0o666 & ~umask


def _read_only_directory(tmp_path):
    if os.geteuid() != 0:
        d = tmp_path / "ro"
        d.mkdir()
        d.chmod(0o555)
        return d
    # root writes anywhere permissions allow nothing: use a file system that refuses it
    for d in ("/sys", "/proc/self"):
        try:
            fd = os.open(os.path.join(d, ".fastrnn-probe"), os.O_CREAT | os.O_WRONLY | os.O_EXCL)
        except OSError:
            return Path(d)
        os.close(fd)
        os.remove(os.path.join(d, ".fastrnn-probe"))
    pytest.skip("no read-only directory available")


def test_a_read_only_out_is_refused_before_training(tmp_path, corpus):
    out = _read_only_directory(tmp_path)
    rc, so, se = cli("train", corpus, *TINY, "--max-iters", 50, "--eval-every", 25, "--out", out,
                     "--progress", "log", "--print-every", 1)
    assert rc == 1, so + se
    assert "iter " not in so  # nothing was trained
    lines = se.strip().splitlines()
    assert len(lines) == 1 and str(out) in lines[0] and "Traceback" not in se


# ---------------------------------------------------------------- stop criteria on resume


def test_resume_keeps_the_runs_stop_criterion(tmp_path, tmp_path_factory):
    text = tmp_path / "big.txt"
    text.write_text(LONG * 2, encoding="utf-8")
    out = tmp_path / "run"
    p = popen("train", text, *TINY, "-max_epochs", 1, "--eval-every", 100000, "--print-every", 1,
              "--progress", "log", "--out", out, "--val-fraction", "0.01", "--json")
    try:
        wait_for_line(p, "iter ")
    finally:
        rc, so, se = stop(p)
    assert rc == 130, se
    first = last_json(so)
    assert first["stopped"] == "interrupted" and first["epoch"] < 1
    rc, so, se = cli("train", "--resume", "--out", out, "--progress", "none", "--json", "--threads", "1",
                     timeout=120)
    assert rc == 0, se
    s = last_json(so)
    assert s["stopped"] == "max_epochs" and s["epoch"] == 1.0
    # given again, a stop criterion replaces the saved ones
    rc, so, se = cli("train", "--resume", "--out", out, "--progress", "none", "--json", "--threads", "1",
                     "--max-iters", s["iterations"] + 3)
    assert rc == 0, se
    assert last_json(so)["iterations"] == s["iterations"] + 3
