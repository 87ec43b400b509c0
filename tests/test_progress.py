"""The progress bar shows the best validation loss of the latest validation, the final
one included (the bar's last state is what stays on the screen)."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest

from fastrnn.data import Vocab
from fastrnn.models import CharRNN
from fastrnn.train import Trainer

HERE = os.path.dirname(os.path.abspath(__file__))
TEXT = "abcdefgh" * 150
VOCAB = Vocab.from_text(TEXT)

pytestmark = pytest.mark.usefixtures("one_thread")


def final_bar(output: str) -> str:
    """The bar's last rendering: tqdm redraws it after a carriage return each time."""
    bars = [part for part in output.replace("\n", "\r").split("\r") if "it/s" in part or "s/it" in part]
    assert bars, output
    return bars[-1]


@pytest.mark.parametrize("max_iters,eval_every", [(6, 1000), (8, 4), (9, 3), (7, 7)])
def test_the_bar_ends_with_the_final_best_validation(max_iters, eval_every, tmp_path):
    out = io.StringIO()
    model = CharRNN(len(VOCAB), hidden_size=16, num_layers=1, seed=0)
    trainer = Trainer(model, TEXT, VOCAB, batch_size=4, seq_length=16, val_fraction=0.1, lr=3e-2,
                      eval_every=eval_every, max_iters=max_iters, progress="bar", file=out,
                      out_dir=str(tmp_path), plot=False)
    summary = trainer.train()
    # every validation improves on the last one here: the final best is the newest number
    assert summary["best_val_loss"] == summary["val_loss"]
    assert f"best val {summary['best_val_bpc']:.3f} bpc" in final_bar(out.getvalue())


def test_a_resumed_bar_shows_the_saved_best_at_once(tmp_path):
    model = CharRNN(len(VOCAB), hidden_size=16, num_layers=1, seed=0)
    Trainer(model, TEXT, VOCAB, batch_size=4, seq_length=16, val_fraction=0.1, lr=3e-2, eval_every=4,
            max_iters=4, progress="none", out_dir=str(tmp_path), plot=False).train()
    out = io.StringIO()
    trainer = Trainer.resume(str(tmp_path), TEXT, max_iters=5, eval_every=1000, progress="bar", file=out,
                             plot=False)
    best = trainer.best_val_loss
    trainer.train()
    first = [p for p in out.getvalue().replace("\n", "\r").split("\r") if "5/5" in p][0]
    assert "best val" in first and trainer.best_val_loss <= best


def test_the_cli_bar_ends_with_the_final_best_validation(tmp_path):
    text = tmp_path / "input.txt"
    text.write_text(TEXT, encoding="utf-8")
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    p = subprocess.run(
        [sys.executable, "-m", "fastrnn", "train", str(text), "--hidden", "16", "--layers", "1",
         "--batch", "4", "--seq", "16", "--val-fraction", "0.1", "--lr", "0.03", "--threads", "1",
         "--max-iters", "10", "--eval-every", "6", "--progress", "bar", "--out", str(tmp_path / "run"),
         "--no-plot", "--json"],
        capture_output=True, text=True, timeout=120, env=env, cwd=HERE)
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    assert summary["best_val_loss"] == summary["val_loss"]
    assert f"best val {summary['best_val_bpc']:.3f} bpc" in final_bar(p.stdout)
