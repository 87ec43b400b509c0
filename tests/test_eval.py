"""Evaluation of a text: one stream with the state carried from its first character, so
the loss is that of the whole text run as one sequence, whatever --batch and --seq."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from fastrnn.checkpoint import load_model
from fastrnn.data import Vocab
from fastrnn.models import CharRNN
from fastrnn.train import evaluate_text

HERE = os.path.dirname(os.path.abspath(__file__))
TEXT = "the cat sat on the mat; the dog sat on the log. " * 25 + "a quick brown fox.\n" * 9  # 1,371 chars
VOCAB = Vocab.from_text(TEXT)
CHOICES = [(1, 7), (4, 16), (16, 256), (1000, 33), (3, 100_000), (None, 1)]  # (batch, seq)

pytestmark = pytest.mark.usefixtures("one_thread")


def whole_sequence_loss(model, ids):
    """The reference: the whole text as one sequence in one call, from a zero state."""
    model.eval()
    loss, _, _ = model.loss(ids[None, :-1], ids[None, 1:])
    return float(loss)


@pytest.mark.parametrize("cell,embedding", [("lstm", None), ("gru", None), ("rnn", None), ("lstm", 5)])
@pytest.mark.parametrize("dtype,rel", [(np.float64, 1e-12), (np.float32, 1e-6)])
def test_loss_is_the_whole_sequence_loss_for_any_batch_and_seq(cell, embedding, dtype, rel):
    model = CharRNN(len(VOCAB), hidden_size=10, num_layers=2, cell=cell, embedding_dim=embedding,
                    dtype=dtype, seed=1)
    ids = VOCAB.encode(TEXT)
    want = whole_sequence_loss(model, ids)
    for batch, seq in CHOICES:
        loss, count = evaluate_text(model, ids, batch_size=batch, seq_length=seq)
        assert count == len(TEXT) - 1
        assert math.isclose(loss, want, rel_tol=rel), (batch, seq, loss, want)
    # compact ids give the same losses
    for dt in (np.uint8, np.uint16, np.int64):
        loss, _ = evaluate_text(model, ids.astype(dt), seq_length=50)
        assert math.isclose(loss, want, rel_tol=rel)


def test_the_state_is_carried_through_the_whole_text():
    # A text that repeats a block: predicting the second copy needs the first one. With
    # the state carried, seq_length=1 sees as much history as one call over everything.
    model = CharRNN(len(VOCAB), hidden_size=12, num_layers=1, dtype=np.float64, seed=0)
    ids = VOCAB.encode(TEXT[:300])
    one_call = evaluate_text(model, ids, seq_length=10_000)
    assert evaluate_text(model, ids, seq_length=1) == pytest.approx(one_call, rel=1e-12)
    # ... and differs from restarting at zero state every 10 characters
    restarted = np.mean([evaluate_text(model, ids[s:s + 11], seq_length=11)[0] for s in range(0, 290, 10)])
    assert abs(restarted - one_call[0]) > 1e-6


def test_argument_errors():
    model = CharRNN(len(VOCAB), hidden_size=4, num_layers=1)
    with pytest.raises(ValueError, match="at least 2 ids"):
        evaluate_text(model, VOCAB.encode("a"))
    with pytest.raises(ValueError, match="seq_length must be a positive integer, got 0"):
        evaluate_text(model, VOCAB.encode("abc"), seq_length=0)
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got -1"):
        evaluate_text(model, VOCAB.encode("abc"), batch_size=-1)
    with pytest.raises(TypeError, match="1-D integer array"):
        evaluate_text(model, np.zeros(5))


# ---------------------------------------------------------------- the command line


def run(*args, timeout=120):
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    p = subprocess.run([sys.executable, "-m", "fastrnn", *map(str, args)], capture_output=True,
                       text=True, timeout=timeout, env=env, cwd=HERE)
    return p.returncode, p.stdout, p.stderr


@pytest.fixture(scope="module", params=["float32", "float64"])
def trained(request, tmp_path_factory):
    d = tmp_path_factory.mktemp("eval")
    text = d / "input.txt"
    text.write_text(TEXT, encoding="utf-8")
    rc, _, se = run("train", text, "--hidden", "8", "--layers", "1", "--batch", "2", "--seq", "8",
                    "--threads", "1", "--max-iters", "20", "--dtype", request.param, "--out", d / "run",
                    "--progress", "none", "--no-plot")
    assert rc == 0, se
    return str(d / "run"), str(text), request.param


def test_cli_eval_does_not_depend_on_batch_or_seq(trained):
    ckpt, text, dtype = trained
    rel = 1e-12 if dtype == "float64" else 1e-6
    model, vocab, _ = load_model(ckpt)
    ids = vocab.encode(TEXT)
    want = whole_sequence_loss(model, ids)
    for batch, seq in CHOICES:
        args = ["eval", ckpt, text, "--json", "--threads", "1", "--seq", seq]
        if batch is not None:
            args += ["--batch", batch]
        rc, so, se = run(*args)
        assert rc == 0, se
        result = json.loads(so)
        assert result["chars"] == len(TEXT) - 1
        assert math.isclose(result["loss"], want, rel_tol=rel), (batch, seq, result["loss"], want)
        assert math.isclose(result["bpc"], result["loss"] / math.log(2))
