"""fastrnn.checkpoint: round trip, atomic writes, and clear errors for bad files."""
from __future__ import annotations

import errno
import math
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

import fastrnn
from fastrnn import checkpoint as ck
from fastrnn.checkpoint import (
    Checkpoint,
    CheckpointError,
    checkpoint_name,
    list_checkpoints,
    load_checkpoint,
    load_model,
    prune_checkpoints,
    resolve_checkpoint,
    save_checkpoint,
)
from fastrnn.data import CharBatches, Vocab
from fastrnn.models import CharRNN
from fastrnn.optim import Adam

TEXT = "the quick brown fox jumps over the lazy dog. " * 8


# Training tests use tiny models: one kernel thread each keeps them fast on a busy machine.
pytestmark = pytest.mark.usefixtures("one_thread")


def make_ckpt(seed: int = 0, val_loss: float = 1.5, iteration: int = 10, cell: str = "lstm") -> Checkpoint:
    vocab = Vocab.from_text(TEXT)
    model = CharRNN(len(vocab), hidden_size=8, num_layers=2, cell=cell, dropout=0.2, seed=seed)
    opt = Adam(model.params, lr=1e-2)
    loader = CharBatches(vocab.encode(TEXT), 2, 8)
    x, y = loader.next_batch()
    loss, grads, state = model.loss(x, y)
    opt.step(grads)
    carry = state if isinstance(state, tuple) else (state,)
    return Checkpoint(
        params={k: v.copy() for k, v in model.params.items()},
        config={"model": model.config(), "train": {"batch_size": 2}},
        vocab=vocab,
        optimizer=opt.state_dict(),
        model_rng=model.rng_state(),
        loader=loader.state_dict(),
        carry=carry,
        iteration=iteration,
        epoch=0.25,
        val_loss=val_loss,
        best_val_loss=val_loss,
        history={"train_loss": np.array([loss])},
        meta={"note": "test"},
    )


def test_round_trip(tmp_path):
    c = make_ckpt()
    path = save_checkpoint(str(tmp_path / "a.npz"), c)
    d = load_checkpoint(path)
    assert d.path == path
    assert d.vocab == c.vocab
    assert d.config == c.config and d.meta == c.meta
    assert d.iteration == 10 and d.epoch == 0.25 and d.val_loss == 1.5 and d.best_val_loss == 1.5
    assert math.isclose(d.val_bpc, 1.5 / math.log(2))
    assert set(d.params) == set(c.params)
    for k in c.params:
        assert d.params[k].dtype == c.params[k].dtype and np.array_equal(d.params[k], c.params[k])
    assert all(np.array_equal(a, b) for a, b in zip(d.carry, c.carry))
    assert np.array_equal(d.history["train_loss"], c.history["train_loss"])
    # the optimizer, loader and RNG states restore into fresh objects
    model = d.build_model()
    assert not model.training
    assert all(np.array_equal(model.params[k], c.params[k]) for k in c.params)
    opt = Adam(model.params, lr=1.0)
    opt.load_state_dict(d.optimizer)
    assert opt.t == 1 and opt.lr == 1e-2
    loader = CharBatches(d.vocab.encode(TEXT), 2, 8)
    loader.load_state_dict(d.loader)
    assert loader.position == 1
    assert model.rng_state() == c.model_rng
    # no entry needs pickle
    with np.load(path, allow_pickle=False) as z:
        assert all(not z[k].dtype.hasobject for k in z.files)


def test_load_model_from_directory(tmp_path):
    save_checkpoint(str(tmp_path / checkpoint_name("lstm", 0.25, 1.5)), make_ckpt())
    model, vocab, c = load_model(str(tmp_path))
    assert isinstance(model, CharRNN) and len(vocab) == model.vocab_size
    logits, _ = model.step(np.array([0, 1]), None)
    assert logits.shape == (2, len(vocab))


def test_names():
    assert checkpoint_name("lstm", 3.25, 1.20434) == "lm_lstm_epoch3.25_1.2043.npz"
    assert checkpoint_name("gru", 0.5, None) == "lm_gru_epoch0.50_noval.npz"
    assert checkpoint_name("rnn", 1, float("nan"), "interrupted") == "lm_rnn_epoch1.00_interrupted.npz"


# ---------------------------------------------------------------- atomic writes


def test_failed_write_keeps_previous_file(tmp_path, monkeypatch):
    path = str(tmp_path / "lm_lstm_epoch0.25_1.5000.npz")
    save_checkpoint(path, make_ckpt())
    before = Path(path).read_bytes()

    def full_disk(f, **arrays):
        f.write(b"PK\x03\x04 partial data")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ck.np, "savez", full_disk)
    with pytest.raises(OSError) as info:
        save_checkpoint(path, make_ckpt(seed=1))
    assert path in str(info.value) and "No space left" in str(info.value)
    assert Path(path).read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == [os.path.basename(path)]  # no temporary file left
    monkeypatch.undo()
    assert load_checkpoint(path).iteration == 10


def test_failed_rename_keeps_previous_file(tmp_path, monkeypatch):
    path = str(tmp_path / "c.npz")
    save_checkpoint(path, make_ckpt())
    before = Path(path).read_bytes()

    def bad_replace(src, dst):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(ck.os, "replace", bad_replace)
    with pytest.raises(OSError, match="could not write checkpoint"):
        save_checkpoint(path, make_ckpt(seed=1))
    assert Path(path).read_bytes() == before
    assert os.listdir(tmp_path) == ["c.npz"]


def test_write_goes_through_a_temporary_file(tmp_path, monkeypatch):
    seen = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append((os.path.dirname(src), os.path.basename(src), dst))
        return real_replace(src, dst)

    monkeypatch.setattr(ck.os, "replace", spy)
    path = str(tmp_path / "x.npz")
    save_checkpoint(path, make_ckpt())
    (d, name, dst), = seen
    assert d == str(tmp_path) and name.startswith(".tmp-") and dst == path


# ---------------------------------------------------------------- bad files


def assert_error_names(path, match=None):
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert str(path) in msg
    if match:
        assert match in msg, msg
    return msg


def test_truncated(tmp_path):
    path = str(tmp_path / "t.npz")
    save_checkpoint(path, make_ckpt())
    data = Path(path).read_bytes()
    for cut in (len(data) // 2, len(data) - 30, 10):
        with open(path, "wb") as f:
            f.write(data[:cut])
        assert_error_names(path)


def test_corrupted_bytes(tmp_path):
    path = str(tmp_path / "c.npz")
    save_checkpoint(path, make_ckpt())
    data = bytearray(Path(path).read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("param/head.W.npy")
    # flip a byte in the middle of that member's data
    pos = info.header_offset + 30 + len(info.filename) + len(info.extra) + info.file_size // 2
    data[pos] ^= 0xFF
    open(path, "wb").write(bytes(data))
    assert_error_names(path)


def test_checksum_mismatch(tmp_path):
    """A well-formed .npz whose contents changed after the checksum was computed."""
    path = str(tmp_path / "k.npz")
    save_checkpoint(path, make_ckpt())
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["param/head.b"] = arrays["param/head.b"] + 1
    np.savez(path, **arrays)
    assert_error_names(path, "checksum")


def test_wrong_version(tmp_path):
    path = str(tmp_path / "v.npz")
    save_checkpoint(path, make_ckpt())
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["__version__"] = np.array(99)
    np.savez(path, **arrays)
    assert_error_names(path, "version 99")


def test_foreign_files(tmp_path):
    npz = str(tmp_path / "other.npz")
    np.savez(npz, weights=np.zeros(3))
    assert_error_names(npz, "not a fastrnn checkpoint")
    npy = str(tmp_path / "arr.npy")
    np.save(npy, np.zeros(3))
    assert_error_names(npy, "not a fastrnn checkpoint")
    txt = str(tmp_path / "notes.npz")
    open(txt, "w").write("hello")
    assert_error_names(txt, "not a fastrnn checkpoint")
    empty = str(tmp_path / "empty.npz")
    open(empty, "wb").close()
    assert_error_names(empty)
    assert_error_names(str(tmp_path / "missing.npz"), "no such")
    with pytest.raises(CheckpointError, match="directory"):
        load_checkpoint(str(tmp_path))


def test_pickled_npz_is_refused(tmp_path):
    path = str(tmp_path / "p.npz")
    save_checkpoint(path, make_ckpt())
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["evil"] = np.array([{"a": 1}], dtype=object)
    np.savez(path, **arrays)
    assert_error_names(path)


# ---------------------------------------------------------------- directories


def test_a_directory_of_unreadable_checkpoints_says_why(tmp_path):
    path = save_checkpoint(str(tmp_path / checkpoint_name("lstm", 1, 1.2)), make_ckpt(val_loss=1.2))
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    with pytest.raises(CheckpointError, match=r"no readable checkpoint among 1 lm_\*\.npz.*cannot be read"):
        resolve_checkpoint(str(tmp_path))


def test_resolve_and_prune(tmp_path):
    d = str(tmp_path)
    with pytest.raises(CheckpointError, match="no fastrnn checkpoint"):
        resolve_checkpoint(d)
    with pytest.raises(CheckpointError, match="no such"):
        resolve_checkpoint(str(tmp_path / "nope"))
    a = save_checkpoint(os.path.join(d, checkpoint_name("lstm", 1, 1.2)), make_ckpt(val_loss=1.2, iteration=100))
    b = save_checkpoint(os.path.join(d, checkpoint_name("lstm", 2, 1.4)), make_ckpt(val_loss=1.4, iteration=200))
    c = save_checkpoint(os.path.join(d, checkpoint_name("lstm", 2.5, None, "interrupted")),
                        make_ckpt(val_loss=float("nan"), iteration=250))
    open(os.path.join(d, "lm_broken.npz"), "w").write("junk")  # skipped
    assert resolve_checkpoint(d) == a
    assert resolve_checkpoint(d, "latest") == c
    assert resolve_checkpoint(b) == b
    assert [i.iteration for i in list_checkpoints(d)] == [100, 200, 250]
    removed = prune_checkpoints(d, [a, os.path.basename(c)])
    assert sorted(map(os.path.basename, removed)) == sorted([os.path.basename(b), "lm_broken.npz"])
    assert sorted(os.listdir(d)) == sorted([os.path.basename(a), os.path.basename(c)])
    # without any validation loss, the best is the latest
    os.remove(a)
    assert resolve_checkpoint(d) == c
