"""Training contenders that take turns, so that a slow period of a shared machine falls on
all of them alike.

Each contender trains for the same budget in all, in turns of a few seconds, the order
reversed every round (A B, B A, A B, ...). Run one after the other instead, a contender
that met one of this machine's slow periods (where two busy threads each run at about half
speed) was reported up to twice as slow as it is.
"""
from __future__ import annotations

import math
import time
from typing import Sequence


class Contender:
    """Trains in turns: ``run(seconds)`` trains for about that long, resuming where the
    previous turn stopped. ``train_seconds`` and ``chars`` count the training itself."""

    name: str = ""

    def __init__(self) -> None:
        self.train_seconds = 0.0
        self.chars = 0
        self.iterations = 0

    def run(self, seconds: float) -> None:
        raise NotImplementedError

    @property
    def chars_per_sec(self) -> float:
        return self.chars / self.train_seconds if self.train_seconds > 0 else 0.0


def take_turns(contenders: Sequence[Contender], budget: float, turn: float, pause: float = 0.3) -> None:
    """Trains every contender for `budget` seconds in all, in turns of at most `turn` seconds.

    Between turns the process sleeps for `pause` seconds: thread pools (OpenMP's, OpenBLAS's,
    PyTorch's) keep spinning for a while after their last call, and would share the cores
    with the next contender's first iterations.
    """
    if budget <= 0 or turn <= 0:
        raise ValueError(f"budget and turn must be > 0, got {budget} and {turn}")
    rounds = max(1, math.ceil(budget / turn))
    for r in range(rounds):
        left = budget - r * turn
        for c in (contenders if r % 2 == 0 else list(reversed(contenders))):
            time.sleep(pause)
            c.run(min(turn, left))
