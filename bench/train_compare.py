"""Training throughput and quality: fastrnn's Trainer against an equivalent PyTorch CPU script.

Both train the same character-level model on the same batches: an embedding, a 2-layer
LSTM of 256 units and a linear layer to the vocabulary (``nn.Embedding + nn.LSTM +
nn.Linear`` in PyTorch, ``CharRNN(embedding_dim=...)`` here), batch 50 x seq 50, Adam 2e-3,
gradient norm clipped at 5, the hidden state carried from batch to batch and reset at each
epoch, for the same wall-clock budget each, with the same number of threads. They train in
turns of a few seconds (``--turn``, see turns.py), so that a slow period of the machine
falls on both alike. Reported: training characters per second (evaluation excluded) and the validation
bits per character reached after the budget (the whole validation split, state carried).

    python bench/train_compare.py CORPUS.txt [--seconds 60] [--turn 5] [--threads N]

PyTorch is optional (``--no-torch``, or it is skipped when not installed). The numbers
depend on the machine and on what else runs on it; compare the two columns of one run.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from typing import List

import numpy as np

import fastrnn
from fastrnn.data import CharBatches, Vocab
from fastrnn.models import CharRNN
from fastrnn.train import Trainer
from turns import Contender, take_turns

LN2 = math.log(2.0)


def read_corpus(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


class FastrnnTrainer(Contender):
    name = "fastrnn"

    def __init__(self, text: str, vocab: Vocab, a: argparse.Namespace) -> None:
        super().__init__()
        model = CharRNN(len(vocab), hidden_size=a.hidden, num_layers=a.layers, cell="lstm",
                        embedding_dim=a.embedding, seed=a.seed)
        loader = CharBatches(vocab.encode(text), a.batch, a.seq, val_fraction=a.val_fraction)
        self.trainer = Trainer(model, loader, vocab, optimizer="adam", lr=a.lr, clip=a.clip,
                               eval_every=10**9, progress="none", plot=False)
        self.val_bpc = math.nan

    def run(self, seconds: float) -> None:
        before = self.trainer.iteration
        self.trainer.max_seconds = seconds
        s = self.trainer.train()  # ends with an evaluation of the validation split
        self.iterations = s["iterations"]
        self.chars += (s["iterations"] - before) * self.trainer.loader.batch_size * self.trainer.loader.seq_length
        self.train_seconds += self.trainer._train_time
        self.val_bpc = s["val_bpc"]


class TorchScript(Contender):
    name = "pytorch"

    def __init__(self, text: str, vocab: Vocab, a: argparse.Namespace) -> None:
        super().__init__()
        import torch
        from torch import nn

        torch.manual_seed(a.seed)
        torch.set_num_threads(a.threads)
        self.torch, self.nn, self.V = torch, nn, len(vocab)

        class Model(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.embed = nn.Embedding(len(vocab), a.embedding)
                self.lstm = nn.LSTM(a.embedding, a.hidden, a.layers, batch_first=True)
                self.head = nn.Linear(a.hidden, len(vocab))

            def forward(self, x, state=None):
                h, state = self.lstm(self.embed(x), state)
                return self.head(h), state

        self.model = Model()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=a.lr)
        self.loss_fn = nn.CrossEntropyLoss()
        self.loader = CharBatches(vocab.encode(text), a.batch, a.seq, val_fraction=a.val_fraction)
        self.clip = a.clip
        self.state = None

    def run(self, seconds: float) -> None:
        torch, nn, V = self.torch, self.nn, self.V
        self.model.train()
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            t0 = time.perf_counter()
            x, y = self.loader.next_batch("train")
            epoch_done = self.loader.position == 0
            x = torch.from_numpy(x.astype(np.int64))
            y = torch.from_numpy(y.astype(np.int64))
            logits, state = self.model(x, self.state)
            loss = self.loss_fn(logits.reshape(-1, V), y.reshape(-1))
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
            self.opt.step()
            self.state = None if epoch_done else tuple(s.detach() for s in state)
            self.iterations += 1
            self.chars += x.numel()
            self.train_seconds += time.perf_counter() - t0

    @property
    def val_bpc(self) -> float:
        torch, nn, V = self.torch, self.nn, self.V
        self.model.eval()
        total, count, state = 0.0, 0, None
        with torch.no_grad():
            for x, y in self.loader.batches("val"):
                logits, state = self.model(torch.from_numpy(x.astype(np.int64)), state)
                total += float(nn.functional.cross_entropy(
                    logits.reshape(-1, V), torch.from_numpy(y.astype(np.int64)).reshape(-1),
                    reduction="sum"))
                count += y.size
        return total / count / LN2


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("corpus", help="UTF-8 training text")
    p.add_argument("--seconds", type=float, default=60.0, help="training budget per contender")
    p.add_argument("--turn", type=float, default=5.0,
                   help="the contenders train in turns of this many seconds (see turns.py)")
    p.add_argument("--threads", type=int, default=None,
                   help="threads for both (default: fastrnn's default, all cores)")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--embedding", type=int, default=64)
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--seq", type=int, default=50)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--clip", type=float, default=5.0)
    p.add_argument("--val-fraction", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-torch", action="store_true", help="measure fastrnn only")
    a = p.parse_args()

    if not os.path.isfile(a.corpus):
        p.error(f"{a.corpus}: no such file")
    text = read_corpus(a.corpus)
    vocab = Vocab.from_text(text)
    if a.threads is not None:
        fastrnn.set_num_threads(a.threads)
    a.threads = fastrnn.get_num_threads()
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(a.threads, user_api="blas")
    except ImportError:
        pass

    print(f"corpus {a.corpus}: {len(text):,} chars, {len(vocab)} distinct; "
          f"{a.layers}-layer LSTM {a.hidden}, embedding {a.embedding}, batch {a.batch} x seq {a.seq}, "
          f"Adam {a.lr:g}, clip {a.clip:g}; {a.threads} threads; {a.seconds:g} s each "
          f"({fastrnn.build_info()['isa']})", flush=True)
    contenders: List[Contender] = [FastrnnTrainer(text, vocab, a)]
    if not a.no_torch:
        try:
            import torch  # noqa: F401
        except ImportError:
            print("  PyTorch is not installed: its column is left out", flush=True)
        else:
            contenders.append(TorchScript(text, vocab, a))
    take_turns(contenders, a.seconds, a.turn)

    print()
    print(f"{'':10s} {'iterations':>10s} {'chars/s':>12s} {'val bits/char':>14s}")
    for c in contenders:
        print(f"{c.name:10s} {c.iterations:>10,d} {c.chars_per_sec:>12,.0f} {c.val_bpc:>14.3f}")
    if len(contenders) == 2:
        f, t = contenders
        ratio = f.chars_per_sec / t.chars_per_sec if t.chars_per_sec else float("nan")
        print(f"\nfastrnn / pytorch: {ratio:.2f}x the training throughput; "
              f"val bits/char {f.val_bpc:.3f} vs {t.val_bpc:.3f} after {a.seconds:g} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
