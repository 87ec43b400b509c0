"""Control characters in user text: escaped on a terminal, exact through a pipe.

The command line runs in a real pseudo-terminal (``pty.openpty``, raw mode so that the
bytes read are the bytes written) and through pipes. The model is trained on a text full
of escape sequences (a window title, an OSC 52 clipboard write, a screen clear, C1
controls, a bidi override), so that its samples and a ``--prime`` hold them too; file
names carry them into progress lines and error messages.
"""
from __future__ import annotations

import json
import os
import pty
import select
import shutil
import subprocess
import sys
import time
import tty
import unicodedata

import pytest

from fastrnn.terminal import escape_controls, is_terminal, sanitize

HERE = os.path.dirname(os.path.abspath(__file__))
ENV = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
TINY = ["--hidden", "8", "--layers", "1", "--batch", "2", "--seq", "8", "--threads", "1"]

TITLE = "\x1b]0;pwned\x07"
CLIPBOARD = "\x1b]52;c;ZWNobyBwd25lZA==\x07"
CLEAR = "\x1b[2J\x1b[H"
PAYLOAD = TITLE + CLIPBOARD + CLEAR + "\x9b31m\x90x\x9c\u202egnp.exe\u2066\x7f\x08\r"
TEXT = ("some words " + PAYLOAD + " more words\n") * 30


def unsafe(ch: str) -> bool:
    """What a terminal may act on: controls but newline and tab, format characters but
    ZWNJ/ZWJ, line/paragraph separators, surrogates."""
    if ch in "\n\t\u200c\u200d":
        return False
    return unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Cs")


def run_pipe(*args, timeout=120):
    p = subprocess.run([sys.executable, "-m", "fastrnn", *args], capture_output=True,
                       timeout=timeout, env=ENV, cwd=HERE)
    return p.returncode, p.stdout, p.stderr


def run_pty(*args, timeout=120):
    """`python -m fastrnn ARGS` with stdin, stdout and stderr on one pseudo-terminal:
    (returncode, every byte written to the terminal)."""
    master, slave = pty.openpty()
    tty.setraw(slave)  # no output processing: what is read is exactly what was written
    try:
        p = subprocess.Popen([sys.executable, "-m", "fastrnn", *args], stdin=slave, stdout=slave,
                             stderr=slave, env=ENV, cwd=HERE)
    finally:
        os.close(slave)
    out = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no end of output after {timeout} s: {bytes(out)!r}"
            ready, _, _ = select.select([master], [], [], left)
            if not ready:
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer closed the terminal
                break
            if not data:
                break
            out += data
        rc = p.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        os.close(master)
    return rc, bytes(out)


def assert_safe(shown: str):
    bad = sorted({f"U+{ord(c):04X}" for c in shown if unsafe(c)})
    assert not bad, f"raw control characters {bad} reached the terminal: {shown!r}"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("term")
    path = d / "input.txt"
    path.write_text(TEXT, encoding="utf-8")
    rc, _, se = run_pipe("train", path, *TINY, "--max-iters", "2", "--out", d / "run",
                         "--progress", "none")
    assert rc == 0, se
    return str(d / "run")


# ---------------------------------------------------------------- the escaping rule


def test_every_control_character_is_escaped_and_text_is_kept():
    for cp in [*range(0x20), 0x7F, *range(0x80, 0xA0)]:
        ch = chr(cp)
        want = ch if ch in "\n\t" else f"\\x{cp:02x}"
        assert escape_controls(ch) == want
    for ch in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c" \
              "\u200b\u2060\ufeff\u00ad\u2028\u2029\U000e0041":
        shown = escape_controls(ch)
        cp = ord(ch)
        assert shown == (f"\\x{cp:02x}" if cp <= 0xFF else f"\\u{cp:04x}" if cp <= 0xFFFF else f"\\U{cp:08x}")
    assert escape_controls("\udcff") == "\\xff"  # a file name's byte that is not UTF-8
    kept = "plain ASCII ~ \\x1b\tcafé Ωμέγα 漢字 😀 👨\u200d👩\u200d👧 فارسی\u200cها\n"
    assert escape_controls(kept) == kept
    assert escape_controls(PAYLOAD).startswith("\\x1b]0;pwned\\x07\\x1b]52;c;")
    for cp in range(0x110000):  # nothing unsafe survives, whatever the character
        ch = chr(cp)
        if unsafe(ch):
            assert not any(unsafe(c) for c in escape_controls(ch)), hex(cp)


def test_sanitize_escapes_on_terminals_only(tmp_path):
    master, slave = pty.openpty()
    try:
        with open(slave, "w", closefd=False) as term, open(tmp_path / "f", "w") as plain:
            assert is_terminal(term) and not is_terminal(plain)
            assert sanitize(PAYLOAD, term) == escape_controls(PAYLOAD)
            assert sanitize(PAYLOAD, plain) == PAYLOAD
    finally:
        os.close(master)
        os.close(slave)
    assert not is_terminal(object())
    with pytest.raises(TypeError, match="str"):
        escape_controls(b"\x1b")


# ---------------------------------------------------------------- the command line


def test_sample_on_a_terminal_is_escaped_and_through_a_pipe_exact(ckpt):
    prime = PAYLOAD + "some "
    args = ("sample", ckpt, "--length", "200", "--seed", "3", "--prime", prime)
    rc, so, se = run_pipe(*args, "--json")
    assert rc == 0, se
    text = json.loads(so)["text"]
    assert text.startswith(prime) and any(unsafe(c) for c in text[len(prime):])

    rc, so, se = run_pipe(*args)
    assert rc == 0, se
    assert so == (text + "\n").encode("utf-8")  # a pipe gets the model's text, byte for byte

    rc, shown = run_pty(*args)
    assert rc == 0, shown
    shown = shown.decode("utf-8")
    assert_safe(shown)
    assert shown == escape_controls(text) + "\n"


def test_file_names_in_progress_lines_are_escaped_on_a_terminal(tmp_path):
    name = "in" + TITLE + CLEAR + "\u202eput.txt"
    path = tmp_path / name
    path.write_text(TEXT, encoding="utf-8")
    out = tmp_path / ("run" + CLIPBOARD)
    rc, shown = run_pty("train", path, *TINY, "--max-iters", "4", "--eval-every", "2", "--out", out,
                        "--progress", "log", "--print-every", "1", "--no-plot")
    assert rc == 0, shown
    shown = shown.decode("utf-8")
    assert_safe(shown)
    assert escape_controls(name) in shown  # "training ... on <name>"
    assert sum(escape_controls(str(out)) in line for line in shown.splitlines()) >= 3  # saved ..., sample with
    # through pipes the names are printed as they are
    rc, so, se = run_pipe("train", path, *TINY, "--max-iters", "2", "--out", out, "--overwrite",
                          "--progress", "log", "--no-plot")
    assert rc == 0, se
    assert name.encode() in so and str(out).encode() in so


CASES = ["missing text", "text is a directory", "bad option", "missing checkpoint",
         "prime not in the vocabulary", "eval result"]


@pytest.mark.parametrize("case", CASES)
def test_messages_with_user_text_are_escaped_on_a_terminal(case, ckpt, tmp_path):
    evil = "x" + TITLE + CLEAR + "\u202e"
    where = tmp_path / evil
    if case == "missing text":
        args = ("eval", ckpt, str(where) + ".txt")
    elif case == "text is a directory":
        where.mkdir()
        args = ("train", str(where))
    elif case == "bad option":
        args = ("sample", ckpt, "--bogus" + evil)
    elif case == "missing checkpoint":
        args = ("sample", str(where))
    else:  # the checkpoint's path is printed
        shutil.copytree(ckpt, where)
        text = tmp_path / "input.txt"
        text.write_text(TEXT, encoding="utf-8")
        args = ("sample", str(where), "--prime", "Q") if case.startswith("prime") else ("eval", str(where), str(text))
    rc, shown = run_pty(*args)
    assert (rc == 0) == (case == "eval result"), shown
    shown = shown.decode("utf-8")
    assert_safe(shown)
    assert escape_controls(evil) in shown and "Traceback" not in shown
    rc2, so, se = run_pipe(*args)  # through a pipe: unchanged
    assert rc2 == rc and evil.encode() in so + se


def test_undecodable_file_name_on_a_terminal(ckpt, tmp_path):
    name = os.fsencode(tmp_path) + b"/bad\xff\x1b[2J.txt"
    rc, shown = run_pty("eval", ckpt, os.fsdecode(name))
    assert rc == 1
    shown = shown.decode("utf-8")
    assert_safe(shown)
    assert "bad\\xff\\x1b[2J.txt" in shown and "no such file" in shown
