"""Tests of fastrnn.data: the vocabulary and its compiled encoder, the default corpus and
the char-rnn style minibatch loader."""
from __future__ import annotations

import io
import random

import numpy as np
import pytest

import fastrnn._text
from fastrnn import data
from fastrnn.data import CharBatches, Vocab, default_corpus

MIXED = "héllo → wörld 😀 naïve 日本語 \n\t end😀"


# ---------------------------------------------------------------- vocabulary


def test_from_text_sorted_and_deterministic():
    v = Vocab.from_text("banana band")
    assert v.chars == " abdn" and len(v) == 5
    assert v.stoi["a"] == 1 and v.itos[4] == "n"
    assert Vocab.from_text("band banana") == v          # order of appearance is irrelevant
    assert "d" in v and "z" not in v


@pytest.mark.parametrize("text", ["hello world", MIXED, "é", "😀😀", "\x00\x7f\x80\xff", "a\ud800b"])
def test_round_trip(text):
    v = Vocab.from_text(text)
    ids = v.encode(text)
    assert ids.dtype == np.int32 and ids.shape == (len(text),)
    assert v.decode(ids) == text
    assert v.decode(ids.astype(np.int64)) == text
    assert v.decode(ids.tolist()) == text


def test_non_ascii_ids():
    v = Vocab.from_text(MIXED)
    assert v.chars == "".join(sorted(set(MIXED)))
    assert list(v.encode("é→😀")) == [v.stoi["é"], v.stoi["→"], v.stoi["😀"]]
    assert v.stoi["😀"] == len(v) - 1                   # the highest code point sorts last
    assert v.decode(v.stoi["→"]) == "→"                 # a single id
    assert v.decode([]) == "" and v.encode("").shape == (0,)


@pytest.mark.parametrize("width_text", ["abc", "ab\u0101", "ab\U0001F600"],
                         ids=["1byte", "2byte", "4byte"])
def test_strict_error_names_char_and_position(width_text):
    v = Vocab.from_text(width_text)
    text = width_text + "xyz"            # 'x' is unknown, at position len(width_text)
    with pytest.raises(ValueError, match=rf"'x' \(U\+0078\) at position {len(width_text)}"):
        v.encode(text)
    with pytest.raises(ValueError, match=r"'é' \(U\+00E9\) at position 2"):
        Vocab.from_text("abc").encode("abé")
    with pytest.raises(ValueError, match=r"'😀' \(U\+1F600\) at position 1"):
        Vocab.from_text("ab").encode("a😀b")


def test_skip_mode_drops_unknown():
    v = Vocab.from_text("abc")
    ids = v.encode("xaéb😀c→", errors="skip")
    assert ids.dtype == np.int32 and v.decode(ids) == "abc"
    assert v.encode("xyz", errors="skip").shape == (0,)
    assert v.encode("abc", errors="skip").tolist() == [0, 1, 2]
    # code points far above the table, and in a 2-byte string
    v2 = Vocab.from_text("a\u0101")
    assert v2.decode(v2.encode("\u0102a\U0010FFFF\u0101", errors="skip")) == "a\u0101"


def test_encode_decode_argument_errors():
    v = Vocab.from_text("abc")
    with pytest.raises(ValueError, match="errors must be"):
        v.encode("abc", errors="ignore")
    with pytest.raises(TypeError, match="must be a str"):
        v.encode(b"abc")
    with pytest.raises(ValueError, match="id 3 at position 1 is out of range"):
        v.decode([0, 3])
    with pytest.raises(ValueError, match="id -1 at position 0"):
        v.decode(np.array([-1, 0]))
    with pytest.raises(TypeError, match="integers"):
        v.decode(np.array([0.0]))
    with pytest.raises(ValueError, match="1-D"):
        v.decode(np.zeros((2, 2), np.int32))
    with pytest.raises(ValueError, match="empty"):
        Vocab.from_text("")
    with pytest.raises(ValueError, match="'a' appears twice"):
        Vocab("aba")
    with pytest.raises(TypeError, match="single character"):
        Vocab(["ab"])


def test_to_array_from_array_round_trip():
    v = Vocab.from_text(MIXED + "a\ud800")
    a = v.to_array()
    assert a.dtype == np.uint32 and a.shape == (len(v),)
    assert a.tolist() == [ord(c) for c in v.chars]
    buf = io.BytesIO()
    np.savez(buf, vocab=a)
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as z:
        v2 = Vocab.from_array(z["vocab"])
    assert v2 == v and v2.chars == v.chars
    np.testing.assert_array_equal(v2.encode(MIXED), v.encode(MIXED))
    a[0] = 0                                         # to_array returns a copy
    assert v.to_array()[0] == ord(v.chars[0])
    with pytest.raises(ValueError, match="code points"):
        Vocab.from_array(np.array([0x110000]))
    with pytest.raises(TypeError, match="1-D integer"):
        Vocab.from_array(np.array([1.5]))


def test_cython_matches_python_on_random_text():
    rng = random.Random(0)
    alphabet = [chr(c) for c in range(32, 127)] + list("éüßøñ→←∑日本語😀🙂\U0010FFFF\u0100")
    for trial in range(20):
        chars = rng.sample(alphabet, rng.randint(1, len(alphabet)))
        text = "".join(rng.choice(chars) for _ in range(rng.randint(0, 3000)))
        if not text:
            text = chars[0]
        v = Vocab.from_text(text)
        stoi = dict(v.stoi)
        want = np.array([stoi[c] for c in text], dtype=np.int32)
        np.testing.assert_array_equal(v.encode(text), want)
        # skip mode with a vocabulary that lacks some characters
        sub = Vocab(sorted(set(text))[::2])
        s = dict(sub.stoi)
        want_skip = np.array([s[c] for c in text if c in s], dtype=np.int32)
        np.testing.assert_array_equal(sub.encode(text, errors="skip"), want_skip)


def test_compiled_module_is_used():
    assert data._text is fastrnn._text
    assert fastrnn._text.__file__.endswith((".so", ".pyd"))


# ---------------------------------------------------------------- default corpus


def test_default_corpus():
    text = default_corpus()
    assert isinstance(text, str) and len(text) >= 100_000
    assert len(text) <= 1_000_000
    data.default_corpus.cache_clear()
    assert default_corpus() == text                 # deterministic, also when re-read
    assert default_corpus(5000) == text[:5000]
    assert "def " in text and "import " in text
    v = Vocab.from_text(text)
    assert v.decode(v.encode(text)) == text


def test_default_corpus_skips_missing_files_and_errors(monkeypatch, tmp_path):
    (tmp_path / "argparse.py").write_text("# only this one\n", encoding="utf-8")
    monkeypatch.setattr(data, "_stdlib_dirs", lambda: [str(tmp_path)])
    data.default_corpus.cache_clear()
    try:
        assert default_corpus() == "# only this one\n\n\n"
        data.default_corpus.cache_clear()
        monkeypatch.setattr(data, "_stdlib_dirs", lambda: [str(tmp_path / "nowhere")])
        with pytest.raises(RuntimeError, match="pass your own text"):
            default_corpus()
    finally:
        data.default_corpus.cache_clear()


# ---------------------------------------------------------------- batches


def make_loader(n=10_000, B=4, T=7, **kw):
    ids = np.arange(n, dtype=np.int32)         # id == position: makes continuity visible
    return ids, CharBatches(ids, B, T, **kw)


def test_batch_shapes_and_shift():
    ids, ld = make_loader()
    n_val = int(10_000 * 0.05)
    assert ld.split_sizes == {"train": (10_000 - n_val - 1) // 28, "val": (n_val - 1) // 28, "test": 0}
    assert len(ld) == ld.num_batches == ld.split_sizes["train"]
    count = 0
    for x, y in ld:
        assert x.shape == y.shape == (4, 7) and x.dtype == y.dtype == np.int32
        assert x.flags.c_contiguous
        np.testing.assert_array_equal(y, x + 1)      # y is x shifted by one
        count += 1
    assert count == len(ld)


def test_rows_continue_across_batches():
    ids, ld = make_loader()
    for split in ("train", "val"):
        batches = list(ld.batches(split))
        for (x0, y0), (x1, _) in zip(batches, batches[1:]):
            np.testing.assert_array_equal(x1[:, 0], x0[:, -1] + 1)
            np.testing.assert_array_equal(y0[:, -1], x1[:, 0])
        # each row is one contiguous stream
        rows = np.concatenate([x for x, _ in batches], axis=1)
        np.testing.assert_array_equal(np.diff(rows, axis=1), 1)


def test_splits_disjoint_and_ordered():
    ids, ld = make_loader(n=20_000, B=3, T=11, val_fraction=0.1, test_fraction=0.05)
    seen = {}
    for split in ("train", "val", "test"):
        xs = [np.concatenate([x.ravel(), y.ravel()]) for x, y in ld.batches(split)]
        seen[split] = set(np.concatenate(xs).tolist())
    assert not seen["train"] & seen["val"] and not seen["val"] & seen["test"]
    assert not seen["train"] & seen["test"]
    assert max(seen["train"]) < 17_000 <= min(seen["val"])      # train 85%, val 10%, test 5%
    assert max(seen["val"]) < 19_000 <= min(seen["test"])


def test_deterministic():
    ids = np.random.default_rng(0).integers(0, 50, 5000).astype(np.int32)
    a = CharBatches(ids, 5, 9)
    b = CharBatches(ids.copy(), 5, 9)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    ids[:] = 0                                      # the loader keeps its own copy
    x, _ = a.batch("train", 0)
    assert x.any()


def test_epochs_and_resume_from_state_dict():
    ids, ld = make_loader(n=3000, B=2, T=5)
    nb = len(ld)
    it = iter(ld)
    for _ in range(nb - 1):
        next(it)
    assert (ld.epoch, ld.position) == (0, nb - 1)
    next(it)                                        # the last batch of the epoch
    assert (ld.epoch, ld.position) == (1, 0)
    with pytest.raises(StopIteration):
        next(it)
    # Take 5 batches of epoch 1, save, and resume in a fresh loader via an .npz.
    got = []
    for x, y in ld:
        got.append(x)
        if len(got) == 5:
            break
    buf = io.BytesIO()
    np.savez(buf, **ld.state_dict())
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as z:
        state = {k: z[k] for k in z.files}
    rest_a = [x for x, _ in ld]                      # the uninterrupted continuation
    ld2 = CharBatches(ids, 2, 5)
    ld2.load_state_dict(state)
    assert (ld2.epoch, ld2.position, ld2.iteration) == (1, 5, nb + 5)
    rest_b = [x for x, _ in ld2]
    assert len(rest_a) == len(rest_b) == nb - 5
    for xa, xb in zip(rest_a, rest_b):
        np.testing.assert_array_equal(xa, xb)
    assert ld2.epoch == 2 and ld2.position == 0
    np.testing.assert_array_equal(rest_b[0], ld.batch("train", 5)[0])


def test_next_batch_cycles_like_char_rnn():
    ids, ld = make_loader(n=3000, B=2, T=5)
    nv = ld.split_sizes["val"]
    vals = [ld.next_batch("val")[0] for _ in range(nv + 1)]
    np.testing.assert_array_equal(vals[0], vals[nv])   # wrapped around
    assert ld.position == 0                             # train untouched
    x, _ = ld.next_batch()
    np.testing.assert_array_equal(x, ld.batch("train", 0)[0])
    assert ld.position == 1
    ld.reset_batch_pointer("val")
    np.testing.assert_array_equal(ld.next_batch("val")[0], vals[0])


def test_too_short_errors_say_the_sizes():
    with pytest.raises(ValueError, match=r"train split has 50 ids.*batch_size=10 x seq_length=5 needs at least 51"):
        CharBatches(np.zeros(50, np.int32), 10, 5, val_fraction=0.0)
    with pytest.raises(ValueError, match=r"val split has 20 ids.*batch_size=4 x seq_length=10 needs at least 41"):
        CharBatches(np.zeros(400, np.int32), 4, 10, val_fraction=0.05)
    ld = CharBatches(np.zeros(51, np.int32), 10, 5, val_fraction=0.0)
    assert len(ld) == 1
    with pytest.raises(ValueError, match="val split is empty"):
        list(ld.batches("val"))


def test_loader_argument_errors():
    ids = np.zeros(1000, np.int32)
    with pytest.raises(ValueError, match="batch_size"):
        CharBatches(ids, 0, 5)
    with pytest.raises(ValueError, match="seq_length"):
        CharBatches(ids, 2, 2.5)
    with pytest.raises(ValueError, match="val_fraction"):
        CharBatches(ids, 2, 5, val_fraction=1.0)
    with pytest.raises(ValueError, match="< 1"):
        CharBatches(ids, 2, 5, val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(TypeError, match="1-D integer array, got dtype float64"):
        CharBatches(np.zeros(100), 2, 5)
    with pytest.raises(ValueError, match=r"1-D integer array, got shape \(10, 100\)"):
        CharBatches(ids.reshape(10, 100), 2, 5)
    with pytest.raises(ValueError, match="split must be one of"):
        list(CharBatches(ids, 2, 5).batches("dev"))
    ld = CharBatches(ids, 2, 5)
    state = ld.state_dict()
    with pytest.raises(ValueError, match="batch_size: saved 2, here 3"):
        CharBatches(ids, 3, 5).load_state_dict(state)
    with pytest.raises(ValueError, match="missing keys"):
        ld.load_state_dict({"epoch": 0})
    with pytest.raises(ValueError, match="position=999 out of range"):
        ld.load_state_dict({**state, "position": 999})


def test_end_to_end_text():
    text = default_corpus(200_000)
    v = Vocab.from_text(text)
    ld = CharBatches(v.encode(text), 16, 32)
    x, y = next(iter(ld))
    assert v.decode(x[0]) + v.decode(y[0][-1:]) == text[: 33]
    assert v.decode(y[0]) == text[1:33]


# ---------------------------------------------------------------- compact ids, text files


def test_id_dtype_and_compact_encode():
    assert Vocab.from_text("ab").id_dtype == np.uint8
    assert Vocab(chr(i) for i in range(256)).id_dtype == np.uint8
    wide = Vocab(chr(0x100 + i) for i in range(300))
    assert wide.id_dtype == np.uint16
    v = Vocab.from_text(MIXED)
    for dt in (np.uint8, np.uint16, np.int32):
        ids = v.encode(MIXED, dtype=dt)
        assert ids.dtype == dt and v.decode(ids) == MIXED
    assert v.encode("x" + MIXED + "y", errors="skip", dtype=np.uint8).tolist() == v.encode(MIXED).tolist()
    with pytest.raises(ValueError, match="uint8 cannot hold the ids of 300 characters; use uint16"):
        wide.encode("\u0100", dtype=np.uint8)
    with pytest.raises(TypeError, match="uint8, uint16 or int32, got int64"):
        v.encode("a", dtype=np.int64)
    with pytest.raises(data.UnknownCharacterError, match="'Q' .* at position 2") as e:
        v.encode("héQx")
    assert (e.value.char, e.value.position) == ("Q", 2)


def write(tmp_path, content, name="t.txt"):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 1 << 18])
def test_encoded_file_equals_encoded_text(tmp_path, chunk):
    text = MIXED * 7 + "Ωmega" + "\U0010FFFF"
    path = write(tmp_path, text)
    f = data.EncodedText.from_file(path, chunk_size=chunk)
    t = data.EncodedText.from_text(text)
    assert f.vocab == t.vocab == Vocab.from_text(text)
    assert f.ids.dtype == t.ids.dtype == np.uint8 and np.array_equal(f.ids, t.ids)
    assert f.vocab.decode(f.ids) == text and f.num_chars == len(text) and f.skipped == 0
    import hashlib

    assert f.sha256 == t.sha256 == hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert not f.ids.flags.writeable and f.source == str(path) and len(f) == len(text)
    assert "".join(data.read_text_chunks(path, chunk)) == text


def test_encoded_file_with_a_vocabulary(tmp_path):
    v = Vocab.from_text("abc é")
    path = write(tmp_path, "abc é" * 3 + "ab😀cQé")
    with pytest.raises(data.UnknownCharacterError, match=r"'😀' \(U\+1F600\) at position 17") as e:
        data.EncodedText.from_file(path, v, chunk_size=4)
    assert (e.value.char, e.value.position) == ("😀", 17)
    skipped = data.EncodedText.from_file(path, v, errors="skip", chunk_size=4)
    assert v.decode(skipped.ids) == "abc é" * 3 + "abcé"
    assert skipped.num_chars == 21 and skipped.skipped == 2
    wide = Vocab(chr(0x100 + i) for i in range(300))
    path = write(tmp_path, "\u0100\u0101\u012b", "w.txt")
    assert data.EncodedText.from_file(path, wide).ids.dtype == np.uint16


@pytest.mark.parametrize("content,message", [
    (b"", "is empty"),
    (b"abc\x00def", r"binary file \(it contains NUL bytes\)"),
    (b"abcd\xffef", r"not UTF-8 text \(invalid byte 0xff at offset 4\)"),
    ("caf\xe9 ".encode("latin-1") * 3, r"invalid byte 0xe9 at offset 3\)"),
    ("aé".encode() + b"\xc3", r"invalid byte 0xc3 at offset 3\)"),          # cut at the end
    ("abcdefg".encode() + b"\xe2\x82" + b"x", r"invalid byte 0xe2 at offset 7\)"),
])
@pytest.mark.parametrize("chunk", [1, 2, 1 << 18])
def test_text_file_errors(tmp_path, content, message, chunk):
    path = write(tmp_path, content)
    with pytest.raises(data.TextFileError, match=message):
        data.EncodedText.from_file(path, chunk_size=chunk)
    with pytest.raises(data.TextFileError, match=message):
        "".join(data.read_text_chunks(path, chunk))


def test_a_fifo_is_refused_at_once_never_read(tmp_path):
    import os

    from fastrnn.safeio import NotARegularFile

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # no writer: reading it would block forever
    with pytest.raises(NotARegularFile, match="FIFO"):
        data.EncodedText.from_file(fifo)
    with pytest.raises(NotARegularFile, match="FIFO"):
        "".join(data.read_text_chunks(fifo))


def test_encoded_text_checks():
    v = Vocab.from_text("ab")
    with pytest.raises(TypeError, match="1-D array of uint8"):
        data.EncodedText(np.zeros(3, np.int32), v, 3, "")
    with pytest.raises(ValueError, match="num_chars=2 is less than the 3 ids"):
        data.EncodedText(np.zeros(3, np.uint8), v, 2, "")
    with pytest.raises(ValueError, match="errors must be"):
        data.EncodedText.from_file("x", errors="ignore")
    with pytest.raises(ValueError, match="chunk_size"):
        data.EncodedText.from_file("x", chunk_size=0)


def test_loader_keeps_compact_ids_and_hands_out_int32():
    ids = np.random.default_rng(1).integers(0, 200, 5000).astype(np.uint8)
    ids.flags.writeable = False
    shared = CharBatches(ids, 4, 9, copy=False)
    own = CharBatches(ids, 4, 9)
    assert np.shares_memory(shared._x["train"], ids) and not np.shares_memory(own._x["train"], ids)
    assert own._x["train"].dtype == np.uint8     # int32 input is stored compactly too
    assert CharBatches(ids.astype(np.int64), 4, 9)._x["train"].dtype == np.uint8
    for (xa, ya), (xb, yb) in zip(shared, CharBatches(ids.astype(np.int32), 4, 9)):
        assert xa.dtype == ya.dtype == np.int32
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    x, y = shared.next_batches(3)
    assert x.dtype == np.int32 and x.shape == (3, 4, 9) and x.flags.c_contiguous
    # int64 (or strided) ids cannot be used as they are: converted even with copy=False
    assert not np.shares_memory(CharBatches(ids.astype(np.int64), 4, 9, copy=False)._x["train"], ids)


def test_too_short_error_carries_the_sizes():
    with pytest.raises(data.TextTooShortError) as e:
        CharBatches(np.zeros(400, np.uint8), 4, 10, val_fraction=0.05)
    err = e.value
    assert (err.split, err.size, err.num_ids, err.batch_size, err.seq_length, err.needed) == ("val", 20, 400, 4, 10, 41)
    assert (err.val_fraction, err.test_fraction) == (0.05, 0.0) and isinstance(err, ValueError)
