"""fastrnn.train: learning, exact resume, stops (NaN, explosion, Ctrl-C, time), progress."""
from __future__ import annotations

import io
import math
import os
import re
import signal
from pathlib import Path

import numpy as np
import pytest

import fastrnn
from fastrnn.checkpoint import load_checkpoint, resolve_checkpoint
from fastrnn.data import CharBatches, Vocab
from fastrnn.models import CharRNN
from fastrnn.train import (
    OPTIMIZERS,
    Trainer,
    TrainingDiverged,
    evaluate_loss,
    evaluate_text,
    make_optimizer,
    train,
)

TEXT = "hello world, the quick brown fox jumps over the lazy dog. " * 12  # 696 chars
VOCAB = Vocab.from_text(TEXT)


# Training tests use tiny models: one kernel thread each keeps them fast on a busy machine.
pytestmark = pytest.mark.usefixtures("one_thread")


def make_trainer(out=None, cell="lstm", dropout=0.25, **kw):
    model = CharRNN(len(VOCAB), hidden_size=12, num_layers=2, cell=cell, dropout=dropout, seed=3)
    opts = dict(batch_size=3, seq_length=10, eval_every=4, out_dir=None if out is None else str(out),
                progress="none", lr=5e-3)
    opts.update(kw)
    return Trainer(model, TEXT, VOCAB, **opts)


def params_equal(a, b):
    assert set(a.model.params) == set(b.model.params)
    return all(np.array_equal(a.model.params[k], b.model.params[k]) for k in a.model.params)


# ---------------------------------------------------------------- learning


def test_overfits_a_repetitive_corpus(tmp_path):
    text = "abcdefgh" * 200
    summary = train(text, hidden_size=24, num_layers=1, batch_size=4, seq_length=16, val_fraction=0.1,
                    lr=2e-2, max_iters=120, eval_every=60, out_dir=str(tmp_path), progress="none")
    assert summary["iterations"] == 120
    assert summary["stopped"] == "max_iters"
    # ln(8) = 2.08 nats at the start; a repeating cycle is learnt almost perfectly
    assert summary["train_loss"] < 0.1
    assert summary["val_loss"] < 0.1 and math.isclose(summary["val_bpc"], summary["val_loss"] / math.log(2))
    assert summary["chars_per_sec"] > 0
    assert os.path.exists(summary["checkpoint"])
    assert summary["checkpoint"] == summary["best_checkpoint"]


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_lowers_the_loss(name):
    lr = {"sgd": 1.0, "momentum": 0.1, "adagrad": 0.1}.get(name, 1e-2)
    t = make_trainer(dropout=0.0, optimizer=name, lr=lr, max_iters=40, eval_every=1000)
    summary = t.train()
    assert np.mean(t.train_losses[-5:]) < np.mean(t.train_losses[:5]) - 0.2
    assert summary["val_loss"] is not None  # the final evaluation


def test_make_optimizer():
    p = {"w": np.zeros(3, np.float32)}
    assert type(make_optimizer("momentum", p, 0.1)).__name__ == "SGD"
    assert make_optimizer("momentum", p, 0.1).momentum == 0.9
    assert type(make_optimizer("AdamW", p, 0.1)).__name__ == "AdamW"
    with pytest.raises(ValueError, match="unknown optimizer"):
        make_optimizer("lbfgs", p, 0.1)


# ---------------------------------------------------------------- exact resume


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_resume_is_bitwise_exact(tmp_path, cell):
    # 696 chars -> 21 train batches per epoch of 3 x 10: 50 iterations cross two epoch
    # boundaries (state reset, learning-rate decay); dropout exercises the model's RNG.
    full = make_trainer(tmp_path / "full", cell=cell, max_iters=50, lr_decay=0.9, lr_decay_after=1)
    full.train()
    first = make_trainer(tmp_path / "split", cell=cell, max_iters=23, lr_decay=0.9, lr_decay_after=1)
    first.train()
    assert first.carry is not None  # the resume point carries a hidden state
    second = Trainer.resume(str(tmp_path / "split"), TEXT, max_iters=50, progress="none")
    assert second.out_dir == str(tmp_path / "split")
    assert second.iteration == 23
    second.train()
    assert second.iteration == full.iteration == 50
    assert params_equal(full, second)
    assert full.optimizer.lr == second.optimizer.lr < 5e-3
    assert full.model.rng_state() == second.model.rng_state()
    assert full.loader.state_dict() == second.loader.state_dict()
    assert np.array_equal(np.asarray(full.train_losses), np.asarray(second.train_losses))


@pytest.mark.parametrize("dropout", [0.25, 0.0])
def test_interrupt_then_resume_is_exact(tmp_path, monkeypatch, dropout):
    """KeyboardInterrupt raised inside the forward/backward of iteration 10: the checkpoint
    holds the state after iteration 9, and resuming gives the uninterrupted result (without
    dropout the trainer keeps no copy of the dropout generator's state to rewind)."""
    full = make_trainer(tmp_path / "full", max_iters=30, dropout=dropout)
    full.train()

    t = make_trainer(tmp_path / "int", max_iters=30, dropout=dropout)
    real_loss = t.model.loss
    calls = {"n": 0}

    def loss(*a, **k):
        calls["n"] += 1
        if calls["n"] == 10:
            t.model.rnn.rng.random(5)  # as if dropout masks had been drawn already
            raise KeyboardInterrupt
        return real_loss(*a, **k)

    monkeypatch.setattr(t.model, "loss", loss)
    summary = t.train()
    assert summary["stopped"] == "interrupted" and summary["iterations"] == 9
    path = resolve_checkpoint(str(tmp_path / "int"), "latest")
    assert path.endswith("_interrupted.npz") and load_checkpoint(path).iteration == 9
    resumed = Trainer.resume(str(tmp_path / "int"), TEXT, max_iters=30, progress="none")
    resumed.train()
    assert params_equal(full, resumed)


def test_sigint_saves_and_stops(tmp_path, monkeypatch):
    t = make_trainer(tmp_path, max_iters=1000, eval_every=1000)
    real_loss = t.model.loss
    calls = {"n": 0}

    def loss(*a, **k):
        calls["n"] += 1
        if calls["n"] == 7:
            os.kill(os.getpid(), signal.SIGINT)  # handled: finish this iteration, then stop
        return real_loss(*a, **k)

    monkeypatch.setattr(t.model, "loss", loss)
    before = signal.getsignal(signal.SIGINT)
    summary = t.train()
    assert signal.getsignal(signal.SIGINT) is before  # handler restored
    assert summary["stopped"] == "interrupted" and summary["iterations"] == 7
    assert load_checkpoint(summary["checkpoint"]).iteration == 7


# ---------------------------------------------------------------- divergence


def _checkpoint_files(d):
    return {f: Path(d, f).read_bytes() for f in os.listdir(d) if f.endswith(".npz")}


@pytest.mark.parametrize("bad", ["nan", "inf", "explode", "nan-grad"])
def test_divergence_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch, bad):
    t = make_trainer(tmp_path, max_iters=100, eval_every=3)
    real_loss = t.model.loss
    calls = {"n": 0}

    def loss(*a, **k):
        calls["n"] += 1
        value, grads, state = real_loss(*a, **k)
        if calls["n"] == 8:
            if bad == "nan":
                value = float("nan")
            elif bad == "inf":
                value = float("inf")
            elif bad == "explode":
                value = 100.0
            else:
                grads["head.W"][0, 0] = np.nan
        return value, grads, state

    monkeypatch.setattr(t.model, "loss", loss)
    before = _checkpoint_files(tmp_path)
    with pytest.raises(TrainingDiverged) as info:
        t.train()
    err = info.value
    files = _checkpoint_files(tmp_path)
    assert len(files) >= 1
    assert err.checkpoint is not None and os.path.basename(err.checkpoint) in files
    assert err.checkpoint in str(err) and "iteration 8" in str(err)
    assert {"nan": "nan", "inf": "inf", "explode": "exploded", "nan-grad": "gradient"}[bad] in str(err)
    good = load_checkpoint(err.checkpoint)
    assert good.iteration == 6
    assert all(np.isfinite(p).all() for p in good.params.values())
    assert err.summary["stopped"] == "diverged" and err.summary["iterations"] == 7
    assert before == {} and set(files) == {os.path.basename(err.checkpoint)} | (
        {os.path.basename(resolve_checkpoint(str(tmp_path)))})
    assert t.iteration == 7  # the bad step was not applied


def test_divergence_before_any_checkpoint(monkeypatch):
    t = make_trainer(max_iters=10)
    monkeypatch.setattr(t.model, "loss", lambda *a, **k: (float("nan"), {}, None))
    with pytest.raises(TrainingDiverged, match="no checkpoint was written"):
        t.train()


# ---------------------------------------------------------------- stops and directories


def test_time_and_epoch_stops(tmp_path):
    s = make_trainer(max_seconds=0.3, eval_every=10_000).train()
    assert s["stopped"] == "max_seconds" and s["iterations"] > 0 and s["seconds"] < 5
    t = make_trainer(max_epochs=1.5, eval_every=10_000)
    s = t.train()
    assert s["stopped"] == "max_epochs" and t.epoch >= 1.5 and t.iteration == math.ceil(1.5 * len(t.loader))


def test_keeps_best_and_latest_only(tmp_path):
    t = make_trainer(tmp_path, max_iters=40, eval_every=4, lr=5e-2)
    t.train()
    names = sorted(os.listdir(tmp_path))
    assert 1 <= len([n for n in names if n.endswith(".npz")]) <= 2
    best = load_checkpoint(resolve_checkpoint(str(tmp_path)))
    latest = load_checkpoint(resolve_checkpoint(str(tmp_path), "latest"))
    assert latest.iteration == 40
    assert best.val_loss == min(v for _, v in t.val_history) == t.best_val_loss
    assert all(n.startswith("lm_lstm_epoch") for n in names if n.endswith(".npz"))


def test_new_run_refuses_an_old_run_directory(tmp_path):
    make_trainer(tmp_path, max_iters=4).train()
    with pytest.raises(FileExistsError, match="overwrite"):
        make_trainer(tmp_path, max_iters=4).train()
    s = make_trainer(tmp_path, max_iters=8, overwrite=True).train()
    assert s["iterations"] == 8
    assert [load_checkpoint(os.path.join(tmp_path, f)).iteration
            for f in os.listdir(tmp_path) if f.endswith(".npz")] == [8]


def test_resume_rejects_other_text_and_layout(tmp_path):
    make_trainer(tmp_path, max_iters=4).train()
    with pytest.raises(ValueError, match="another text"):
        Trainer.resume(str(tmp_path), TEXT[::-1], max_iters=8)
    with pytest.raises(ValueError, match="batch_size"):
        Trainer.resume(str(tmp_path), TEXT, batch_size=2)


def test_log_progress_lines(tmp_path):
    out = io.StringIO()
    make_trainer(tmp_path, max_iters=8, eval_every=4, progress="log", print_every=2, file=out).train()
    lines = out.getvalue().splitlines()
    assert sum(line.startswith("iter ") and "chars/s" in line for line in lines) == 4
    assert sum("val loss" in line and "bpc" in line and "saved" in line for line in lines) == 2


def test_evaluation_lines_without_a_validation_split_or_without_checkpoints(tmp_path):
    out = io.StringIO()
    make_trainer(tmp_path, max_iters=4, eval_every=4, progress="log", file=out, val_fraction=0.0).train()
    saved = [line for line in out.getvalue().splitlines() if "saved" in line]
    assert saved and all(re.match(r"iter \d+ \(epoch [\d.]+\): saved \S+\.npz$", line) for line in saved), saved
    # without out_dir nothing is saved, but the best validation loss is still kept
    summary = make_trainer(None, max_iters=8, eval_every=4).train()
    assert summary["val_loss"] is not None and summary["best_val_loss"] is not None
    assert summary["best_val_loss"] <= summary["val_loss"]


def test_loss_png_with_matplotlib(tmp_path):
    pytest.importorskip("matplotlib")
    make_trainer(tmp_path, max_iters=8).train()
    assert os.path.getsize(tmp_path / "loss.png") > 0


# ---------------------------------------------------------------- evaluation helpers


def test_evaluate_text_matches_the_model_loss():
    model = CharRNN(len(VOCAB), hidden_size=8, num_layers=1, seed=0, dtype=np.float64)
    ids = VOCAB.encode(TEXT[:200])
    loss, count = evaluate_text(model, ids, batch_size=1, seq_length=37)
    assert count == 199
    expected, _, _ = model.loss(ids[None, :-1], ids[None, 1:])
    assert math.isclose(loss, expected, rel_tol=1e-10)
    # several streams: every character is still predicted once
    loss4, count4 = evaluate_text(model, ids, batch_size=4, seq_length=16)
    assert count4 == 199 and abs(loss4 - loss) < 0.05
    # more streams than seq_length-long pieces: capped at one stream per piece (12 here)
    many = evaluate_text(model, ids, batch_size=100_000, seq_length=16)
    assert many == evaluate_text(model, ids, batch_size=12, seq_length=16) and many[1] == 199


def test_evaluate_loss_uses_eval_mode():
    model = CharRNN(len(VOCAB), hidden_size=8, num_layers=2, dropout=0.5, seed=0)
    loader = CharBatches(VOCAB.encode(TEXT), 3, 10)
    rng = model.rng_state()
    a = evaluate_loss(model, loader.batches("val"))
    b = evaluate_loss(model, loader.batches("val"))
    assert a == b and model.training and model.rng_state() == rng


def test_failed_checkpoint_write_stops_and_keeps_the_previous_one(tmp_path, monkeypatch):
    import importlib

    train_module = importlib.import_module("fastrnn.train")

    t = make_trainer(tmp_path, max_iters=12, eval_every=4)
    real_save = train_module.save_checkpoint
    calls = {"n": 0}

    def save(path, ckpt):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, f"could not write checkpoint {path}: No space left on device")
        return real_save(path, ckpt)

    monkeypatch.setattr(train_module, "save_checkpoint", save)
    with pytest.raises(OSError, match="No space left"):
        t.train()
    (only,) = [f for f in os.listdir(tmp_path) if f.endswith(".npz")]
    assert load_checkpoint(os.path.join(tmp_path, only)).iteration == 4
    assert t.best_checkpoint == only


def test_an_encoded_text_file_trains_as_its_text(tmp_path):
    from fastrnn.data import EncodedText

    f = tmp_path / "input.txt"
    f.write_text(TEXT, encoding="utf-8")
    enc = EncodedText.from_file(f)
    a = make_trainer(None, max_iters=6)
    model = CharRNN(len(VOCAB), hidden_size=12, num_layers=2, dropout=0.25, seed=3)
    b = Trainer(model, enc, batch_size=3, seq_length=10, eval_every=4, progress="none", lr=5e-3,
                max_iters=6)
    assert a.train()["train_loss"] == b.train()["train_loss"] and params_equal(a, b)
    assert b.data_sha256 == a.data_sha256 and b.vocab == VOCAB
    assert np.shares_memory(b.loader._x["train"], enc.ids)  # the loader's streams are views
    with pytest.raises(ValueError, match="vocabulary .* differs"):
        Trainer(model, enc, Vocab.from_text(TEXT + "Z"))


def test_resume_reads_the_saved_text_file(tmp_path):
    f = tmp_path / "input.txt"
    f.write_text(TEXT, encoding="utf-8")
    make_trainer(tmp_path / "o", max_iters=4, data_source=str(f)).train()
    t = Trainer.resume(str(tmp_path / "o"), max_iters=8, progress="none")
    assert t.iteration == 4 and t.train()["iterations"] == 8
