"""Hostile checkpoint files: special files named like checkpoints, zip bombs, configs
that lie about the model, and damaged zip members. Every one is refused quickly, within
a small memory bound, with a CheckpointError naming the file (the command line: one
line, exit status 1), and nothing ever blocks."""
from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from fastrnn.checkpoint import CheckpointError, checkpoint_checksum, load_checkpoint, load_model, save_checkpoint
from fastrnn.train import train

HERE = os.path.dirname(os.path.abspath(__file__))  # tests/: holds no fastrnn package
ENV = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
TEXT = "the cat sat on the mat. the dog sat on the log. " * 40
BEST_NAME = "lm_lstm_epoch99.00_0.0001.npz"  # would be chosen as the best

pytestmark = pytest.mark.usefixtures("one_thread")


def cli(*args, timeout=30):
    p = subprocess.run([sys.executable, "-m", "fastrnn", *map(str, args)], capture_output=True,
                       text=True, timeout=timeout, env=ENV, cwd=HERE)
    return p.returncode, p.stdout, p.stderr


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished run: (directory, its one checkpoint's path, the text file)."""
    d = tmp_path_factory.mktemp("hostile")
    corpus = d / "input.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    s = train(TEXT, hidden_size=8, num_layers=1, batch_size=2, seq_length=8, max_iters=4, eval_every=4,
              out_dir=str(d / "run"), progress="none", data_source=str(corpus))
    return d / "run", s["checkpoint"], str(corpus)


def arrays_of(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def resealed(arrays):
    """The arrays with their checksum recomputed (a forgery that passes the checksum)."""
    arrays = dict(arrays)
    arrays["__checksum__"] = np.array(checkpoint_checksum(arrays))
    return arrays


# ---------------------------------------------------------------- special files

SPECIAL = ["fifo", "link-to-fifo", "link-to-dev-zero", "directory"]


def make_special(d, kind, name=BEST_NAME):
    path = Path(d, name)
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "link-to-fifo":
        os.mkfifo(Path(d, "pipe"))
        path.symlink_to(Path(d, "pipe"))
    elif kind == "link-to-dev-zero":
        path.symlink_to("/dev/zero")
    else:
        path.mkdir()
    return path


@pytest.mark.parametrize("kind", SPECIAL)
def test_special_files_never_block_sample_or_resume(tmp_path, run_dir, kind):
    src, ckpt, corpus = run_dir
    d = tmp_path / "run"
    d.mkdir()
    good = d / os.path.basename(ckpt)
    good.write_bytes(Path(ckpt).read_bytes())
    special = make_special(d, kind)
    rc, so, se = cli("sample", d, "--length", 5, "--seed", 1)
    assert rc == 0 and "Traceback" not in se, se  # the regular checkpoint is used
    rc, so, se = cli("sample", special)
    reason = "no fastrnn checkpoint" if kind == "directory" else "not a regular file"
    assert rc == 1 and len(se.strip().splitlines()) == 1 and reason in se, se
    rc, so, se = cli("eval", d, corpus)
    assert rc == 0, se
    rc, so, se = cli("train", "--resume", "--out", d, "--max-iters", 6, "--progress", "none", "--threads", 1)
    assert rc == 0, se
    assert os.path.lexists(special)  # not ours: left alone


LOAD = """
import sys
from fastrnn.checkpoint import CheckpointError, load_checkpoint
try:
    load_checkpoint(sys.argv[1])
except CheckpointError as e:
    print(e)
"""


@pytest.mark.parametrize("kind", SPECIAL)
def test_load_checkpoint_refuses_special_files_at_once(tmp_path, kind):
    special = make_special(tmp_path, kind)
    # in a child process, so that blocking would fail the test (timeout) instead of hanging it
    p = subprocess.run([sys.executable, "-c", LOAD, str(special)], capture_output=True, text=True,
                       timeout=30, env=ENV, cwd=HERE)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    assert str(special) in p.stdout and "not a regular file" in p.stdout, p.stdout


def test_a_fifo_as_text_file_never_blocks(tmp_path, run_dir):
    src, ckpt, corpus = run_dir
    fifo = tmp_path / "input.txt"
    os.mkfifo(fifo)
    for argv in (["eval", ckpt, fifo], ["train", fifo, "--out", tmp_path / "o", "--max-iters", 1]):
        rc, so, se = cli(*argv)
        assert rc == 1 and "FIFO" in se and len(se.strip().splitlines()) == 1, se


# ---------------------------------------------------------------- memory bounds

PEAK = """
import json, resource, sys
from fastrnn.checkpoint import CheckpointError, load_model
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    load_model(sys.argv[1])
    error = None
except CheckpointError as e:
    error = str(e)
except BaseException as e:
    error = type(e).__name__ + ": " + str(e)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"error": error, "grew_kib": peak - before}))
"""


def peak_growth(path):
    """(error message or None, growth of the peak RSS in MiB) of load_model(path) in a child."""
    p = subprocess.run([sys.executable, "-c", PEAK, str(path)], capture_output=True, text=True,
                       timeout=120, env=ENV, cwd=HERE)
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout.strip().splitlines()[-1])
    return r["error"], r["grew_kib"] / 1024


def write_member(zf, key, header, chunks, compress=zipfile.ZIP_DEFLATED):
    info = zipfile.ZipInfo(key + ".npy")
    info.compress_type = compress
    with zf.open(info, "w", force_zip64=True) as f:
        f.write(header)
        for c in chunks:
            f.write(c)


def npy_header(shape, descr="<f4"):
    bio = io.BytesIO()
    np.lib.format.write_array_header_1_0(bio, {"descr": descr, "fortran_order": False, "shape": shape})
    return bio.getvalue()


@pytest.mark.parametrize("key", ["param/head.b", "history/train_loss", "zz"])
def test_a_zip_bomb_is_refused_before_it_expands(tmp_path, run_dir, key):
    src, ckpt, corpus = run_dir
    arrays = arrays_of(ckpt)
    arrays.pop(key, None)
    path = tmp_path / "lm_bomb.npz"
    n = 256 << 20  # 256 MiB of zeros, compressed to about 256 KiB
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for k, a in arrays.items():
            bio = io.BytesIO()
            np.lib.format.write_array(bio, a)
            zf.writestr(k + ".npy", bio.getvalue())
        write_member(zf, key, npy_header((n // 4,)), (bytes(1 << 20) for _ in range(n >> 20)))
    assert os.path.getsize(path) < 2 << 20
    error, grew = peak_growth(path)
    assert error and str(path) in error
    assert grew < 48, f"peak RSS grew by {grew:.0f} MiB"


def test_a_config_claiming_a_huge_model_costs_nothing(tmp_path, run_dir):
    src, ckpt, corpus = run_dir
    arrays = arrays_of(ckpt)
    config = json.loads(str(arrays["config"]))
    config["model"]["hidden_size"] = 3000  # the file's parameters are for 8
    arrays["config"] = np.array(json.dumps(config, sort_keys=True))
    d = tmp_path / "run"
    d.mkdir()
    path = d / os.path.basename(ckpt)
    np.savez(path, **resealed(arrays))
    error, grew = peak_growth(path)
    assert error and str(path) in error and "config" in error
    assert grew < 48, f"peak RSS grew by {grew:.0f} MiB"
    rc, so, se = cli("train", "--resume", "--out", d, "--max-iters", 6, "--progress", "none")
    assert rc == 1 and "config" in se and len(se.strip().splitlines()) == 1, se


def test_a_header_claiming_a_huge_array_is_refused(tmp_path, run_dir):
    src, ckpt, corpus = run_dir
    arrays = arrays_of(ckpt)
    path = tmp_path / "lm_liar.npz"
    with zipfile.ZipFile(path, "w") as zf:
        for k, a in arrays.items():
            bio = io.BytesIO()
            np.lib.format.write_array(bio, a)
            data = bio.getvalue()
            if k == "param/head.W":  # a header claiming 4 TiB, over the real bytes
                data = npy_header((1 << 40,)) + data[len(npy_header(a.shape)):]
            zf.writestr(k + ".npy", data)
    error, grew = peak_growth(path)
    assert error and str(path) in error and grew < 48


# ---------------------------------------------------------------- exception types


def _member_offsets(data, name):
    """(local header offset, central directory entry offset) of a zip member."""
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as z:
        local = z.getinfo(name).header_offset
    central = bytes(data).rindex(b"PK\x01\x02", 0, bytes(data).rindex(name.encode()) + 1)
    return local, central


def patch_member(path, name, method=None, flags=None):
    data = bytearray(Path(path).read_bytes())
    local, central = _member_offsets(data, name)
    for pos, flag_at, method_at in ((local, 6, 8), (central, 8, 10)):
        if flags is not None:
            data[pos + flag_at:pos + flag_at + 2] = struct.pack("<H", flags)
        if method is not None:
            data[pos + method_at:pos + method_at + 2] = struct.pack("<H", method)
    Path(path).write_bytes(bytes(data))


def _unknown_method(p):
    patch_member(p, "param/head.W.npy", method=99)


def _encrypted(p):
    patch_member(p, "param/head.W.npy", flags=0x1)


def _bad_deflate(p):
    arrays = arrays_of(p)
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as zf:
        for k, a in arrays.items():
            bio = io.BytesIO()
            np.lib.format.write_array(bio, a)
            zf.writestr(k + ".npy", bio.getvalue())
    data = bytearray(Path(p).read_bytes())
    local, _ = _member_offsets(data, "param/head.W.npy")
    start = local + 30 + len("param/head.W.npy") + 40
    data[start:start + 16] = b"\xff" * 16
    Path(p).write_bytes(bytes(data))


def _forged(change):
    def damage(p):
        arrays = arrays_of(p)
        change(arrays)
        np.savez(p, **resealed(arrays))
    return damage


def _deep_config(a):
    a["config"] = np.array("[" * 100000 + "]" * 100000)


def _bad_config_types(a):
    config = json.loads(str(a["config"]))
    config["model"]["hidden_size"] = "eight"
    a["config"] = np.array(json.dumps(config))


def _nan_params(a):
    a["param/head.b"] = np.full_like(a["param/head.b"], np.nan)


def _not_npy(p):
    with zipfile.ZipFile(p, "a") as zf:
        zf.writestr("readme.txt", "hello")


def _bad_npy_header(p):
    arrays = arrays_of(p)
    with zipfile.ZipFile(p, "w") as zf:
        for k, a in arrays.items():
            bio = io.BytesIO()
            np.lib.format.write_array(bio, a)
            data = bio.getvalue()
            if k == "param/head.b":
                data = data[:10] + b"{'descr': <f4, 'shape': (((" + data[10 + 27:]
            zf.writestr(k + ".npy", data)


def _zero_size_zip_claims(p):
    data = bytearray(Path(p).read_bytes())
    _, central = _member_offsets(data, "param/head.W.npy")
    data[central + 24:central + 28] = struct.pack("<I", 0xFFFFFFF0)  # file_size: 4 GiB
    Path(p).write_bytes(bytes(data))


DAMAGE = {
    "unknown-compression": _unknown_method,
    "encrypted": _encrypted,
    "bad-deflate-stream": _bad_deflate,
    "config-nested-deeply": _forged(_deep_config),
    "config-wrong-types": _forged(_bad_config_types),
    "nan-parameters": _forged(_nan_params),
    "member-not-npy": _not_npy,
    "malformed-npy-header": _bad_npy_header,
    "zip-declares-4gib": _zero_size_zip_claims,
    "truncated-directory": lambda p: Path(p).write_bytes(Path(p).read_bytes()[:-10]),
}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_damaged_files_raise_checkpoint_error_naming_the_file(tmp_path, run_dir, kind):
    src, ckpt, corpus = run_dir
    path = tmp_path / "lm_damaged.npz"
    path.write_bytes(Path(ckpt).read_bytes())
    DAMAGE[kind](str(path))
    for load in (load_checkpoint, load_model):
        with pytest.raises(CheckpointError) as info:
            load(str(path))
        assert str(path) in str(info.value)
    rc, so, se = cli("sample", path)
    assert rc == 1 and len(se.strip().splitlines()) == 1 and "Traceback" not in se, se
