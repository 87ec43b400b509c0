"""min-char-rnn, as Karpathy wrote it in NumPy, against the same configuration on fastrnn.

The configuration is min-char-rnn's: a vanilla (tanh) RNN with 100 hidden units, one
stream (batch 1) cut into 25-character pieces with the hidden state carried across them,
the loss summed over the 25 steps, Adagrad with learning rate 0.1, every gradient clipped
to [-5, 5]. The first contender is a plain NumPy re-implementation in min-char-rnn's
style (one-hot input vectors, a Python loop over the timesteps forward and backward,
column vectors). The other two are fastrnn's ``CharRNN(cell="rnn")`` with
``fastrnn.optim.Adagrad(..., clipvalue=5)``, which clips inside its update (the bits of
``clip_grad_value`` followed by ``step``):
  - ``train_step``: one compiled call per 25-character piece (loss, gradients, update);
  - ``train_steps``: ``--steps-per-call`` consecutive pieces per call (Keras's
    ``steps_per_execution``), the same steps with the same bits, the interpreter entered
    once per call.
All run for the same wall-clock budget on the same text, in turns of a few seconds
(``--turn``, see turns.py) so that a slow period of the machine falls on all alike; reported: characters per second,
the ratio to NumPy, and the smoothed loss reached (min-char-rnn's ``smooth_loss``, per
25-character piece).

    python bench/minchar_compare.py CORPUS.txt [--seconds 30] [--turn 5] [--threads N] [--steps-per-call K]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import List, Tuple

import numpy as np

import fastrnn
from fastrnn.data import CharBatches, Vocab
from fastrnn.models import CharRNN
from fastrnn.optim import Adagrad
from turns import Contender, take_turns


# ---------------------------------------------------------------- min-char-rnn in NumPy


class MinCharRNN:
    """min-char-rnn.py's model and update, as a class (float64, column vectors)."""

    def __init__(self, vocab_size: int, hidden_size: int = 100, learning_rate: float = 1e-1,
                 seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        V, H = vocab_size, hidden_size
        self.V, self.H, self.lr = V, H, learning_rate
        self.Wxh = rng.standard_normal((H, V)) * 0.01  # input to hidden
        self.Whh = rng.standard_normal((H, H)) * 0.01  # hidden to hidden
        self.Why = rng.standard_normal((V, H)) * 0.01  # hidden to output
        self.bh = np.zeros((H, 1))
        self.by = np.zeros((V, 1))
        self.mem = [np.zeros_like(p) for p in self.params()]

    def params(self) -> List[np.ndarray]:
        return [self.Wxh, self.Whh, self.Why, self.bh, self.by]

    def loss_fun(self, inputs: List[int], targets: List[int], hprev: np.ndarray) -> Tuple[float, List[np.ndarray], np.ndarray]:
        """inputs, targets: lists of ids; hprev: (H, 1). Returns the summed loss, the
        gradients and the last hidden state."""
        xs, hs, ys, ps = {}, {}, {}, {}
        hs[-1] = np.copy(hprev)
        loss = 0.0
        for t in range(len(inputs)):  # forward pass
            xs[t] = np.zeros((self.V, 1))  # one-hot
            xs[t][inputs[t]] = 1
            hs[t] = np.tanh(np.dot(self.Wxh, xs[t]) + np.dot(self.Whh, hs[t - 1]) + self.bh)
            ys[t] = np.dot(self.Why, hs[t]) + self.by
            ps[t] = np.exp(ys[t]) / np.sum(np.exp(ys[t]))
            loss += -np.log(ps[t][targets[t], 0])
        dWxh, dWhh, dWhy = np.zeros_like(self.Wxh), np.zeros_like(self.Whh), np.zeros_like(self.Why)
        dbh, dby = np.zeros_like(self.bh), np.zeros_like(self.by)
        dhnext = np.zeros_like(hs[0])
        for t in reversed(range(len(inputs))):  # backward pass
            dy = np.copy(ps[t])
            dy[targets[t]] -= 1
            dWhy += np.dot(dy, hs[t].T)
            dby += dy
            dh = np.dot(self.Why.T, dy) + dhnext
            dhraw = (1 - hs[t] * hs[t]) * dh
            dbh += dhraw
            dWxh += np.dot(dhraw, xs[t].T)
            dWhh += np.dot(dhraw, hs[t - 1].T)
            dhnext = np.dot(self.Whh.T, dhraw)
        for dparam in (dWxh, dWhh, dWhy, dbh, dby):
            np.clip(dparam, -5, 5, out=dparam)
        return loss, [dWxh, dWhh, dWhy, dbh, dby], hs[len(inputs) - 1]

    def update(self, grads: List[np.ndarray]) -> None:
        for param, dparam, mem in zip(self.params(), grads, self.mem):
            mem += dparam * dparam
            param += -self.lr * dparam / np.sqrt(mem + 1e-8)


class MinCharContender(Contender):
    name = "min-char-rnn (NumPy)"

    def __init__(self, data: np.ndarray, V: int, a: argparse.Namespace) -> None:
        super().__init__()
        self.model = MinCharRNN(V, a.hidden, a.lr, a.seed)
        self.data, self.seq = data, a.seq
        self.smooth_loss = -np.log(1.0 / V) * a.seq
        self.p = 0
        self.hprev = np.zeros((a.hidden, 1))

    def run(self, seconds: float) -> None:
        seq, data = self.seq, self.data
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            if self.p + seq + 1 >= len(data) or self.iterations == 0:
                self.hprev = np.zeros_like(self.hprev)
                self.p = 0
            inputs = data[self.p:self.p + seq].tolist()
            targets = data[self.p + 1:self.p + seq + 1].tolist()
            loss, grads, self.hprev = self.model.loss_fun(inputs, targets, self.hprev)
            self.smooth_loss = self.smooth_loss * 0.999 + loss * 0.001
            self.model.update(grads)
            self.p += seq
            self.iterations += 1
            self.chars += seq
        self.train_seconds += time.perf_counter() - start


# ---------------------------------------------------------------- the same on fastrnn


class FastrnnContender(Contender):
    def __init__(self, data: np.ndarray, V: int, a: argparse.Namespace, steps_per_call: int) -> None:
        super().__init__()
        self.name = "fastrnn, train_step" if steps_per_call == 1 else f"fastrnn, train_steps x{steps_per_call}"
        self.model = CharRNN(V, hidden_size=a.hidden, num_layers=1, cell="rnn", seed=a.seed,
                             dtype=np.float64 if a.float64 else np.float32)
        self.opt = Adagrad(self.model.params, lr=a.lr, clipvalue=5.0)  # min-char-rnn's np.clip(dparam, -5, 5)
        self.loader = CharBatches(data, 1, a.seq, val_fraction=0.0)
        self.steps_per_call, self.seq = steps_per_call, a.seq
        self.smooth_loss = -np.log(1.0 / V) * a.seq
        self.state = None

    def run(self, seconds: float) -> None:
        model, opt, loader = self.model, self.opt, self.loader
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            if self.steps_per_call == 1:  # one compiled call per step: loss, gradients and update
                x, y = loader.next_batch("train")
                loss, self.state = model.train_step(x, y, opt, self.state, reduction="sum")  # as min-char-rnn
                losses = [loss]
            else:  # steps_per_call steps per call, each from the state the one before left
                xs, ys = loader.next_batches(self.steps_per_call)
                losses, self.state = model.train_steps(xs, ys, opt, self.state, reduction="sum")
            for loss in losses:
                self.smooth_loss = self.smooth_loss * 0.999 + loss * 0.001
            if loader.position == 0:  # an epoch ended: min-char-rnn starts over from zeros
                self.state = None
            self.iterations += len(losses)
            self.chars += len(losses) * self.seq
        self.train_seconds += time.perf_counter() - start


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("corpus", help="UTF-8 training text")
    p.add_argument("--seconds", type=float, default=30.0, help="training budget per contender")
    p.add_argument("--turn", type=float, default=5.0,
                   help="the contenders train in turns of this many seconds (see turns.py)")
    p.add_argument("--threads", type=int, default=None,
                   help="fastrnn kernel threads (default: fastrnn's own, all cores; each kernel "
                        "sizes its team to its work, and a 100-unit stream's steps run on one)")
    p.add_argument("--steps-per-call", type=int, default=32,
                   help="steps per train_steps call for the third contender (Keras's steps_per_execution)")
    p.add_argument("--hidden", type=int, default=100)
    p.add_argument("--seq", type=int, default=25)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--float64", action="store_true",
                   help="fastrnn in float64, as min-char-rnn (default float32)")
    a = p.parse_args()
    if not os.path.isfile(a.corpus):
        p.error(f"{a.corpus}: no such file")
    with open(a.corpus, encoding="utf-8") as f:
        text = f.read()
    vocab = Vocab.from_text(text)
    data = vocab.encode(text)
    if a.threads is not None:
        fastrnn.set_num_threads(a.threads)
    print(f"corpus {a.corpus}: {len(text):,} chars, {len(vocab)} distinct; vanilla RNN "
          f"{a.hidden}, seq {a.seq}, batch 1, Adagrad {a.lr:g}, clip +-5; {a.seconds:g} s each",
          flush=True)
    contenders = [MinCharContender(data, len(vocab), a), FastrnnContender(data, len(vocab), a, 1),
                  FastrnnContender(data, len(vocab), a, a.steps_per_call)]
    take_turns(contenders, a.seconds, a.turn)
    print()
    print(f"{'':28s} {'iterations':>10s} {'chars/s':>10s} {'smooth loss':>12s} {'vs NumPy':>9s}")
    base = contenders[0].chars_per_sec
    for c in contenders:
        print(f"{c.name:28s} {c.iterations:>10,d} {c.chars_per_sec:>10,.0f} {c.smooth_loss:>12.2f} "
              f"{c.chars_per_sec / base:>8.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
