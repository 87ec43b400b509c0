"""Training a character-level language model, as Karpathy's char-rnn ``train.lua`` does.

:class:`Trainer` runs truncated backpropagation through time over a
:class:`~fastrnn.data.CharBatches` loader: the hidden state is carried from one batch to
the next and reset at the start of every epoch; gradients are clipped by their global
norm; any optimizer of :mod:`fastrnn.optim` is chosen by name. Every ``eval_every``
iterations it measures the validation loss (and bits per character, loss / ln 2) and
writes a checkpoint (:mod:`fastrnn.checkpoint`) that holds everything needed to resume
bitwise exactly: training N + M iterations gives the same parameters as training N,
stopping, resuming from the checkpoint and training M more.

Stops: ``max_iters`` (total), ``max_epochs`` (total), ``max_seconds`` (this call);
they are saved in checkpoints and restored by :meth:`Trainer.resume` unless others are
given. A NaN/inf loss or gradient, a loss above ``explode_factor`` times the first one
(as char-rnn), parameters made non-finite by an update, or a validation loss above
``explode_factor`` times that of a uniform guess (ln V) raises :class:`TrainingDiverged`
without saving anything, so the last checkpoint stays the last good one; Ctrl-C (SIGINT)
finishes the current iteration, saves a checkpoint and returns (a second Ctrl-C aborts
the iteration, still saving the last consistent state).

While it trains, a run holds the lock of its checkpoint directory
(:class:`fastrnn.rundir.RunDirectoryLock`), and deletes only checkpoints it wrote itself
(or, with ``overwrite=True``, the ones it replaces).

Example::

    from fastrnn.train import train
    summary = train(open("input.txt").read(), out_dir="cv", max_seconds=60)
    print(summary["val_bpc"], summary["checkpoint"])
"""
from __future__ import annotations

import itertools
import math
import os
import signal
import sys
import threading
import time
from typing import Any, Dict, List, Mapping, Optional, TextIO, Tuple, Union

import numpy as np

from . import optim as _optim
from .checkpoint import (
    Checkpoint,
    CheckpointError,
    checkpoint_name,
    copy_params,
    nonfinite_entries,
    open_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)
from .data import CharBatches, EncodedText, Vocab
from .rundir import RunDirectoryLock, checkpoint_entries, refuse_reuse, remove_orphaned_temporaries
from .terminal import sanitize

__all__ = [
    "Trainer",
    "TrainingDiverged",
    "train",
    "make_optimizer",
    "evaluate_loss",
    "evaluate_text",
    "OPTIMIZERS",
    "LN2",
    "DEFAULT_CORPUS_SOURCE",
    "STOP_CRITERIA",
]

LN2 = math.log(2.0)

#: Optimizer names accepted by :func:`make_optimizer` ("momentum" is SGD with momentum 0.9).
OPTIMIZERS: Tuple[str, ...] = ("sgd", "momentum", "adagrad", "rmsprop", "adam", "adamw")

State = Any  # an array h, or a tuple (h, c), as CharRNN uses

#: ``data_source`` recorded for a run on :func:`fastrnn.data.default_corpus`.
DEFAULT_CORPUS_SOURCE = "<default corpus>"

#: The Trainer's stop criteria: saved in checkpoints, restored on resume unless others are given.
STOP_CRITERIA: Tuple[str, ...] = ("max_iters", "max_epochs", "max_seconds")


class TrainingDiverged(RuntimeError):
    """The loss, the gradient or the parameters became NaN/inf, or the training or
    validation loss exploded; nothing was saved.

    Attributes:
        summary: the training summary at the point of the stop.
        checkpoint: path of the last good checkpoint, or None if none was written.
    """

    def __init__(self, message: str, summary: Dict[str, Any], checkpoint: Optional[str]) -> None:
        super().__init__(message)
        self.summary = summary
        self.checkpoint = checkpoint


def make_optimizer(name: str, params: Mapping[str, np.ndarray], lr: float,
                   **kwargs: Any) -> _optim.Optimizer:
    """An optimizer of :mod:`fastrnn.optim` by name: "sgd", "momentum" (SGD, momentum 0.9
    unless given), "adagrad", "rmsprop", "adam" or "adamw"; extra keyword arguments go to
    its constructor."""
    key = str(name).lower()
    if key == "sgd":
        return _optim.SGD(params, lr=lr, **kwargs)
    if key == "momentum":
        kwargs.setdefault("momentum", 0.9)
        return _optim.SGD(params, lr=lr, **kwargs)
    if key == "adagrad":
        return _optim.Adagrad(params, lr=lr, **kwargs)
    if key == "rmsprop":
        return _optim.RMSprop(params, lr=lr, **kwargs)
    if key == "adam":
        return _optim.Adam(params, lr=lr, **kwargs)
    if key == "adamw":
        return _optim.AdamW(params, lr=lr, **kwargs)
    raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


def _nll(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Softmax cross-entropies (nats, float64) of scores (N, T, V) at targets (N, T),
    flattened to (N*T,)."""
    s = scores.reshape(-1, scores.shape[-1]).astype(np.float64)
    m = s.max(axis=1, keepdims=True)
    log_z = np.log(np.exp(s - m).sum(axis=1)) + m[:, 0]
    return log_z - s[np.arange(s.shape[0]), targets.reshape(-1)]


def evaluate_loss(model: Any, batches: Any) -> float:
    """Mean cross-entropy (nats per character) of ``model`` over an iterable of (x, y)
    batches, carrying the hidden state from batch to batch, in eval mode (no dropout).
    The model's mode is restored afterwards; its random state is not used."""
    was_training = bool(getattr(model, "training", False))
    model.eval()
    total, count, state = 0.0, 0, None
    try:
        for x, y in batches:
            scores, state = model.forward(x, state)
            total += float(np.sum(_nll(scores, y)))
            count += y.size
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("evaluate_loss: no batches to evaluate")
    return total / count


def evaluate_text(model: Any, ids: Any, batch_size: Optional[int] = None,
                  seq_length: int = 256) -> Tuple[float, int]:
    """Mean cross-entropy (nats per character) of predicting every id of ``ids`` (1-D,
    any integer type, e.g. ``vocab.encode(text)``) from all the ones before it; returns
    ``(loss, count)`` with count = ``len(ids) - 1`` predictions.

    The text is one stream: the model starts from a zero state at the first id and
    carries its state to the last, in eval mode, so every id after the first is predicted
    exactly once with the whole text before it as history. The result is that of running
    the whole text as one sequence, ``model.loss(ids[None, :-1], ids[None, 1:])`` (up to
    the rounding of its sums): it does not depend on ``seq_length``, the number of steps
    per kernel call, which only bounds the memory per call (one (1, seq_length, V) block
    of scores). ``batch_size`` is accepted for compatibility and has no effect: cutting
    the text into streams that start from a zero state would change the result with
    their number. Only the ids of the current call are copied (and widened by the model).
    """
    a = np.asarray(ids)
    if a.ndim != 1 or a.dtype.kind not in "ui":
        raise TypeError(f"evaluate_text: ids must be a 1-D integer array, got {a.dtype} {a.shape}")
    P = a.size - 1
    if P < 1:
        raise ValueError("evaluate_text: need at least 2 ids (one prediction)")
    for name, v in (("batch_size", 1 if batch_size is None else batch_size), ("seq_length", seq_length)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"evaluate_text: {name} must be a positive integer, got {v!r}")
    T = int(seq_length)
    was_training = bool(getattr(model, "training", False))
    model.eval()
    total, state = 0.0, None
    try:
        for s in range(0, P, T):
            e = min(s + T, P)
            scores, state = model.forward(a[None, s:e], state)  # views of the ids: (1, e - s)
            total += float(np.sum(_nll(scores, a[None, s + 1:e + 1])))
    finally:
        model.train(was_training)
    return total / P, P


def _fmt_time(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class _Progress:
    """A tqdm bar (mode "bar") or plain log lines ("log"), or nothing ("none").

    The status shown is ``text`` of the last :meth:`update`, then the best validation
    loss (kept up to date by :meth:`set_best`, also after the last update), then ``eta``.
    """

    def __init__(self, mode: str, total: Optional[int], initial: int, file: TextIO,
                 print_every: Optional[int]) -> None:
        self.mode = mode
        self.file = file
        self.print_every = print_every
        self._last_print = time.perf_counter()
        self._first = True
        self._text = ""
        self._eta = ""
        self._best = ""
        self.bar = None
        if mode == "bar":
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="it", file=file,
                            dynamic_ncols=True, smoothing=0.1, leave=True)

    def _status(self) -> str:
        return ", ".join(part for part in (self._text, self._best, self._eta) if part)

    def set_best(self, best_val_loss: float) -> None:
        """The best validation loss (nats; inf: none yet) to show from now on; the bar
        shows it at once."""
        self._best = f"best val {best_val_loss / LN2:.3f} bpc" if math.isfinite(best_val_loss) else ""
        if self.bar is not None and self._text:
            self.bar.set_postfix_str(self._status(), refresh=False)

    def update(self, iteration: int, text: str, eta: str = "") -> None:
        """Iteration ``iteration`` is done: ``text`` (loss, speed) and ``eta`` (time left,
        or "") are the new status; the bar moves, and a log line is printed when due."""
        self._text, self._eta = text, eta
        text = self._status()
        if self.mode == "bar":
            self.bar.update(1)
            self.bar.set_postfix_str(text, refresh=False)
        elif self.mode == "log":
            now = time.perf_counter()
            if self.print_every:
                due = iteration % self.print_every == 0
            else:
                due = now - self._last_print >= 5.0 or self._first
            if due:
                self._first = False
                self._last_print = now
                self.write(f"iter {iteration}: {text}")

    def write(self, message: str) -> None:
        """One line (it may hold file names): control characters escaped on a terminal."""
        message = sanitize(message, self.file)
        if self.mode == "bar":
            self.bar.write(message, file=self.file)
        elif self.mode == "log":
            print(message, file=self.file, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class Trainer:
    """Truncated-BPTT training of a :class:`~fastrnn.models.CharRNN` with checkpoints.

    Args:
        model: a CharRNN (``params``/``grads``, ``loss``, ``forward``, ``train``/``eval``,
            ``rng_state``/``set_rng_state``, ``config``).
        data: the training text (a str, or an :class:`~fastrnn.data.EncodedText`, e.g.
            ``EncodedText.from_file(path)``, which keeps a long text as compact ids only;
            split into train/val by ``val_fraction``) or a ready
            :class:`~fastrnn.data.CharBatches` (then ``vocab`` is required).
        vocab: the vocabulary; default ``Vocab.from_text(data)`` (the EncodedText's own).
        batch_size, seq_length: B and T of the batches (char-rnn's -batch_size, -seq_length).
        val_fraction: share of the text held out for validation (0: no validation).
        optimizer: a name of :data:`OPTIMIZERS`; ``lr`` its learning rate;
            ``optimizer_kwargs`` extra constructor arguments (betas, weight_decay, ...).
        clip: maximal global gradient norm (None or 0: no clipping).
        lr_decay, lr_decay_after: char-rnn's learning-rate decay: multiply the rate by
            ``lr_decay`` at the end of each epoch from epoch ``lr_decay_after`` on.
        eval_every: iterations between validation + checkpoint (also done at the end).
        out_dir: checkpoint directory (None: no checkpoints). A new run refuses a
            directory that holds anything named like a checkpoint (``lm_*.npz``, readable
            or not) unless ``overwrite=True`` (then those are deleted once the new run
            writes its first checkpoint); continue a run with :meth:`resume`. While
            :meth:`train` runs it holds the directory's lock; it deletes only checkpoints
            it wrote.
        max_iters, max_epochs: stop after that many iterations / epochs in total;
            max_seconds: stop after that many seconds of this call to :meth:`train`.
        explode_factor: stop when the training loss exceeds this times the first one, or
            the validation loss this times the larger of ln V (a uniform guess) and the
            first training loss (None: only NaN/inf stop the run).
        progress: "auto" (a tqdm bar if ``file`` is a terminal and tqdm is installed,
            else log lines), "bar", "log" or "none". print_every: iterations between log
            lines (default: every 5 seconds). file: where progress goes (default stdout).
        plot: write ``loss.png`` (loss curves) into out_dir if matplotlib is installed.
        seed: recorded in the checkpoint (the model's own seed drives its randomness).
        data_source: recorded in the checkpoint (e.g. the text file's path).
    """

    def __init__(
        self,
        model: Any,
        data: Union[str, CharBatches],
        vocab: Optional[Vocab] = None,
        *,
        batch_size: int = 32,
        seq_length: int = 64,
        val_fraction: float = 0.05,
        optimizer: str = "adam",
        lr: float = 2e-3,
        optimizer_kwargs: Optional[Mapping[str, Any]] = None,
        clip: Optional[float] = 5.0,
        lr_decay: Optional[float] = None,
        lr_decay_after: int = 0,
        eval_every: int = 200,
        out_dir: Optional[str] = None,
        overwrite: bool = False,
        max_iters: Optional[int] = None,
        max_epochs: Optional[float] = None,
        max_seconds: Optional[float] = None,
        explode_factor: Optional[float] = 3.0,
        progress: str = "auto",
        print_every: Optional[int] = None,
        file: Optional[TextIO] = None,
        plot: bool = True,
        seed: Optional[int] = None,
        data_source: Optional[str] = None,
    ) -> None:
        self.model = model
        if isinstance(data, CharBatches):
            if vocab is None:
                raise ValueError("Trainer: pass vocab= together with a CharBatches loader")
            self.loader = data
            self.data_sha256: Optional[str] = None
        elif isinstance(data, (str, EncodedText)):
            if isinstance(data, str):
                if not data:
                    raise ValueError("Trainer: the text is empty")
                data = EncodedText.from_text(data, vocab)
            elif vocab is not None and vocab != data.vocab:
                raise ValueError(f"Trainer: the EncodedText's vocabulary ({len(data.vocab)} characters) "
                                 f"differs from vocab ({len(vocab)} characters)")
            vocab = data.vocab
            # the loader's splits and streams are views of the (read-only) ids: no copy
            self.loader = CharBatches(data.ids, batch_size, seq_length, val_fraction=val_fraction,
                                      copy=False)
            self.data_sha256 = data.sha256
        else:
            raise TypeError(f"Trainer: data must be a str, an EncodedText or a CharBatches, got "
                            f"{type(data).__name__}")
        self.vocab = vocab
        if len(vocab) != getattr(model, "vocab_size", len(vocab)):
            raise ValueError(f"Trainer: the model has vocab_size={model.vocab_size} but the "
                             f"vocabulary has {len(vocab)} characters")
        self.has_val = self.loader.split_sizes.get("val", 0) > 0

        def positive(name: str, v: Any, kind: type = int) -> Any:
            if v is None:
                return None
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) \
                    or not v > 0 or (kind is int and int(v) != v):
                raise ValueError(f"Trainer: {name} must be a positive {kind.__name__}, got {v!r}")
            return kind(v)

        self.eval_every = positive("eval_every", eval_every)
        self.max_iters = positive("max_iters", max_iters)
        self.max_epochs = positive("max_epochs", max_epochs, float)
        self.max_seconds = positive("max_seconds", max_seconds, float)
        self.print_every = positive("print_every", print_every)
        if clip is not None and (not isinstance(clip, (int, float)) or not clip >= 0 or not math.isfinite(clip)):
            raise ValueError(f"Trainer: clip must be a finite number >= 0 (0: no clipping), got {clip!r}")
        self.clip = float(clip) if clip else None
        if explode_factor is not None and not explode_factor > 1:
            raise ValueError(f"Trainer: explode_factor must be > 1 (or None), got {explode_factor!r}")
        self.explode_factor = explode_factor
        if progress not in ("auto", "bar", "log", "none"):
            raise ValueError(f"Trainer: progress must be 'auto', 'bar', 'log' or 'none', got {progress!r}")
        self.progress = progress
        self.file = file
        self.plot = bool(plot)
        self.seed = seed
        self.data_source = data_source
        self.optimizer_name = str(optimizer).lower()
        self.optimizer_kwargs = dict(optimizer_kwargs or {})
        self.optimizer = make_optimizer(self.optimizer_name, model.params, lr, **self.optimizer_kwargs)
        self.initial_lr = float(lr)
        self.lr_decay = None if lr_decay is None else float(lr_decay)
        self.lr_decay_after = int(lr_decay_after)
        self.scheduler: Optional[_optim.ExponentialLR] = (
            None if self.lr_decay is None else _optim.ExponentialLR(self.optimizer, self.lr_decay))
        self.out_dir = None if out_dir is None else os.fspath(out_dir)
        self.overwrite = bool(overwrite)

        # -- training state (all of it goes into checkpoints)
        self.iteration = 0
        self.carry: Optional[State] = None
        self.initial_loss: Optional[float] = None
        self.best_val_loss = math.inf
        self.best_checkpoint: Optional[str] = None   # file names inside out_dir
        self.last_checkpoint: Optional[str] = None  # full path of the last one written or loaded
        self.val_loss = math.nan                    # of the current parameters, if measured
        self.train_losses: List[float] = []
        self.val_history: List[Tuple[int, float]] = []
        self.elapsed_total = 0.0
        self.resumed = False
        self._last_saved_val = math.nan  # validation loss of last_checkpoint
        self._written: set = set()       # names of the checkpoints of this run in out_dir
        self._replaced: List[str] = []   # overwrite=True: the entries to delete after the first save

        self._interrupted = False
        self._checked_at: Optional[int] = None
        self._train_time = 0.0
        self._trained_chars = 0

    # ------------------------------------------------------------ configuration

    def config(self) -> Dict[str, Any]:
        """Everything needed to rebuild this trainer: ``{"model": ..., "train": ...}``."""
        return {
            "model": self.model.config(),
            "train": {
                "batch_size": self.loader.batch_size,
                "seq_length": self.loader.seq_length,
                "val_fraction": self.loader.val_fraction,
                "optimizer": self.optimizer_name,
                "lr": self.initial_lr,
                "optimizer_kwargs": self.optimizer_kwargs,
                "clip": self.clip,
                "lr_decay": self.lr_decay,
                "lr_decay_after": self.lr_decay_after,
                "eval_every": self.eval_every,
                "explode_factor": self.explode_factor,
                "max_iters": self.max_iters,
                "max_epochs": self.max_epochs,
                "max_seconds": self.max_seconds,
                "seed": self.seed,
                "data_source": self.data_source,
                "data_sha256": self.data_sha256,
            },
        }

    @property
    def epoch(self) -> float:
        """Fractional epoch: completed epochs plus the share of the current one."""
        return self.loader.epoch + self.loader.position / max(1, len(self.loader))

    # ------------------------------------------------------------ checkpoints

    def _checkpoint(self) -> Checkpoint:
        carry = None
        if self.carry is not None:
            carry = tuple(np.asarray(a) for a in (self.carry if isinstance(self.carry, tuple) else (self.carry,)))
        meta = {
            "initial_loss": self.initial_loss,
            "best_checkpoint": self.best_checkpoint,
            "carry_is_tuple": isinstance(self.carry, tuple),
            "elapsed_seconds": self.elapsed_total,
            "seed": self.seed,
            "time": time.time(),
        }
        history = {
            "train_loss": np.asarray(self.train_losses, dtype=np.float64),
            "val_iteration": np.asarray([i for i, _ in self.val_history], dtype=np.int64),
            "val_loss": np.asarray([v for _, v in self.val_history], dtype=np.float64),
        }
        return Checkpoint(
            params={k: np.array(v) for k, v in self.model.params.items()},
            config=self.config(),
            vocab=self.vocab,
            optimizer=self.optimizer.state_dict(),
            scheduler=None if self.scheduler is None else self.scheduler.state_dict(),
            model_rng=self.model.rng_state(),
            loader=self.loader.state_dict(),
            carry=carry,
            iteration=self.iteration,
            epoch=self.epoch,
            val_loss=self.val_loss,
            best_val_loss=self.best_val_loss,
            history=history,
            meta=meta,
        )

    def _free_name(self, tag: Optional[str]) -> str:
        """char-rnn's name for the current state, or, if an entry of out_dir has it
        already, the same with ``_it<iteration>`` (and a counter): a checkpoint never
        replaces another file."""
        assert self.out_dir is not None
        args = (self.model.cell, self.epoch, self.val_loss, tag)
        name = checkpoint_name(*args)
        if not os.path.lexists(os.path.join(self.out_dir, name)):
            return name
        name = checkpoint_name(*args, iteration=self.iteration)
        stem, k = name[:-len(".npz")], 2
        while os.path.lexists(os.path.join(self.out_dir, name)):
            name, k = f"{stem}-{k}.npz", k + 1
        return name

    def save(self, tag: Optional[str] = None) -> Optional[str]:
        """Writes a checkpoint of the current state into ``out_dir`` (named as char-rnn,
        see :func:`fastrnn.checkpoint.checkpoint_name`, never over an existing file), then
        deletes the checkpoints this run wrote but the best and this one. Returns its path
        (None without out_dir, where only the best validation loss is kept)."""
        better = math.isfinite(self.val_loss) and self.val_loss < self.best_val_loss
        if self.out_dir is None:
            if better:
                self.best_val_loss = self.val_loss
            return None
        name = self._free_name(tag)
        before = (self.best_val_loss, self.best_checkpoint)
        if better:
            self.best_val_loss = self.val_loss
            self.best_checkpoint = name
        path = os.path.join(self.out_dir, name)
        try:
            save_checkpoint(path, self._checkpoint())
        except BaseException:
            self.best_val_loss, self.best_checkpoint = before
            raise
        self.last_checkpoint = path
        self._last_saved_val = self.val_loss
        self._checked_at = self.iteration
        self._written.add(name)
        keep = [name] + ([self.best_checkpoint] if self.best_checkpoint else [])
        removed = prune_checkpoints(self.out_dir, keep, only=self._written | set(self._replaced))
        self._written -= {os.path.basename(p) for p in removed}
        self._replaced = []
        return path

    def load_state(self, ckpt: Checkpoint, lr: Optional[float] = None) -> None:
        """Restores the training state of a checkpoint into this trainer and its model
        (parameters in place, optimizer, scheduler, dropout RNG, loader position, carried
        state, counters, history); ``lr``, if given, then replaces the saved learning
        rate. ValueError/CheckpointError if the checkpoint does not fit."""
        where = ckpt.path or "checkpoint"
        saved = ckpt.config.get("train", {})
        if self.data_sha256 and saved.get("data_sha256") and saved["data_sha256"] != self.data_sha256:
            src = saved.get("data_source") or "its text"
            raise ValueError(f"{where} was trained on another text ({src}); resume with the same text")
        if ckpt.vocab != self.vocab:
            raise ValueError(f"{where}: its vocabulary differs from this trainer's")
        if str(saved.get("optimizer", self.optimizer_name)) != self.optimizer_name:
            raise ValueError(f"{where} was trained with optimizer {saved.get('optimizer')!r}, "
                             f"not {self.optimizer_name!r}")
        try:
            self.loader.load_state_dict(ckpt.loader)
            self.optimizer.load_state_dict(ckpt.optimizer)
            if self.scheduler is not None and ckpt.scheduler is not None:
                self.scheduler.load_state_dict(ckpt.scheduler)
            copy_params(self.model, ckpt.params, ckpt.path)
            self.model.set_rng_state(ckpt.model_rng)
        except (KeyError, TypeError) as e:
            raise CheckpointError(f"{where}: cannot restore the training state ({e})") from None
        if lr is not None:
            self.optimizer.lr = lr
        meta = ckpt.meta
        if ckpt.carry is None:
            self.carry = None
        elif meta.get("carry_is_tuple", len(ckpt.carry) > 1):
            self.carry = tuple(np.array(a) for a in ckpt.carry)
        else:
            self.carry = np.array(ckpt.carry[0])
        self.iteration = ckpt.iteration
        self.val_loss = ckpt.val_loss
        self.best_val_loss = ckpt.best_val_loss
        self.initial_loss = meta.get("initial_loss")
        self.best_checkpoint = meta.get("best_checkpoint")
        self.last_checkpoint = ckpt.path
        self._last_saved_val = ckpt.val_loss
        if self.best_checkpoint and (self.out_dir is None or not os.path.exists(
                os.path.join(self.out_dir, self.best_checkpoint))):
            # resumed into another directory: "best" restarts there
            self.best_checkpoint = None
            self.best_val_loss = math.inf
        self.elapsed_total = float(meta.get("elapsed_seconds", 0.0))
        h = ckpt.history
        self.train_losses = [float(v) for v in h.get("train_loss", [])]
        self.val_history = [(int(i), float(v)) for i, v in zip(h.get("val_iteration", []), h.get("val_loss", []))]
        self._checked_at = self.iteration
        self.resumed = True
        if self.out_dir is not None:  # the resumed run's own files may be pruned as it goes on
            here = os.path.abspath(self.out_dir)
            if ckpt.path and os.path.dirname(os.path.abspath(ckpt.path)) == here:
                self._written.add(os.path.basename(ckpt.path))
            if self.best_checkpoint:
                self._written.add(self.best_checkpoint)

    @classmethod
    def resume(cls, checkpoint: Union[str, Checkpoint], data: Optional[Union[str, EncodedText, CharBatches]] = None,
               **overrides: Any) -> "Trainer":
        """A trainer that continues the run of ``checkpoint`` (a file, a directory: its
        latest checkpoint, or a loaded :class:`~fastrnn.checkpoint.Checkpoint`) on the
        same ``data`` (default: the text file it was trained on, or the default corpus).
        The model, vocabulary and training settings come from the checkpoint; ``overrides``
        may change the stop criteria (without any, the run's own are restored),
        ``eval_every``, ``lr``, ``clip``, progress and output options (``out_dir`` defaults
        to the checkpoint's directory)."""
        from .models import CharRNN

        ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else open_checkpoint(checkpoint, "latest")
        path = ckpt.path or "checkpoint"
        saved = dict(ckpt.config.get("train", {}))
        if data is None:
            source = saved.get("data_source")
            if source in (None, DEFAULT_CORPUS_SOURCE):
                from .data import default_corpus

                data = default_corpus()
            else:
                data = EncodedText.from_file(source, ckpt.vocab)
        fixed = ("batch_size", "seq_length", "val_fraction", "optimizer", "optimizer_kwargs",
                 "lr_decay", "lr_decay_after")
        for k in fixed:
            if k in overrides and overrides[k] is not None and k in saved and overrides[k] != saved[k]:
                raise ValueError(f"cannot change {k} when resuming ({path} has {k}={saved[k]!r}, "
                                 f"got {overrides[k]!r})")
        kept = (*fixed, "lr", "clip", "eval_every", "explode_factor", "seed", "data_source")
        if all(overrides.get(k) is None for k in STOP_CRITERIA):
            kept += STOP_CRITERIA
        kwargs: Dict[str, Any] = {k: saved[k] for k in kept if k in saved}
        kwargs.update({k: v for k, v in overrides.items() if v is not None})
        kwargs.setdefault("out_dir", os.path.dirname(os.path.abspath(path)))
        try:
            model = CharRNN.from_config(ckpt.config["model"])
        except (TypeError, ValueError, KeyError) as e:
            raise CheckpointError(f"{path}: cannot rebuild the model from its config ({e})") from None
        trainer = cls(model, data, ckpt.vocab, **kwargs)
        trainer.load_state(ckpt, lr=overrides.get("lr"))
        return trainer

    # ------------------------------------------------------------ evaluation

    def evaluate(self, split: str = "val") -> float:
        """Mean loss (nats per character) on a whole split, state carried within it."""
        return evaluate_loss(self.model, self.loader.batches(split))

    # ------------------------------------------------------------ the loop

    def _progress_mode(self, file: TextIO) -> str:
        if self.progress != "auto":
            return self.progress
        try:
            tty = file.isatty()
        except (AttributeError, ValueError):
            tty = False
        if tty:
            try:
                import tqdm  # noqa: F401
            except ImportError:
                return "log"
            return "bar"
        return "log"

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self._interrupted:
            raise KeyboardInterrupt
        self._interrupted = True
        try:
            print("\ninterrupted: stopping after this iteration and saving a checkpoint "
                  "(Ctrl-C again to stop at once)", file=sys.stderr, flush=True)
        except Exception:  # noqa: BLE001 - never fail inside a signal handler
            pass

    def _stop_reason(self, start: float) -> Optional[str]:
        if self._interrupted:
            return "interrupted"
        if self.max_iters is not None and self.iteration >= self.max_iters:
            return "max_iters"
        if self.max_epochs is not None and self.epoch >= self.max_epochs - 1e-12:
            return "max_epochs"
        if self.max_seconds is not None and time.perf_counter() - start >= self.max_seconds:
            return "max_seconds"
        return None

    def _val_limit(self) -> Optional[float]:
        """The validation loss above which the run counts as diverged: ``explode_factor``
        times the larger of ln V (a uniform guess) and the first training loss."""
        if self.explode_factor is None:
            return None
        return self.explode_factor * max(math.log(len(self.vocab)), self.initial_loss or 0.0)

    def _diverged(self, what: str, progress: _Progress, updated: bool = False) -> None:
        last = self.last_checkpoint
        remedy = "a lower learning rate or tighter gradient clipping (the command line's --lr, --clip)"
        limit = self._val_limit()
        suspect = limit is not None and math.isfinite(self._last_saved_val) and self._last_saved_val > limit
        if not last:
            where = f"no checkpoint was written yet; try {remedy}"
        elif suspect:
            where = (f"the last checkpoint, {last}, has validation loss {self._last_saved_val:.4g} "
                     f"itself; resume from an earlier one with {remedy}")
        else:
            where = (f"the last good checkpoint is {last}; resume from it (Trainer.resume, or fastrnn "
                     f"train --resume) with {remedy}")
        state = ("the current parameters are not usable and" if updated
                 else "the parameters were not updated with it and")
        message = (f"training stopped at iteration {self.iteration + (0 if updated else 1)}: {what}; "
                   f"{state} nothing was saved: {where}")
        progress.close()
        raise TrainingDiverged(message, self.summary(stopped="diverged"), last)

    def _check_state(self, progress: _Progress, probe: bool) -> None:
        """Stops the run (TrainingDiverged) if the state to save holds a NaN or inf, or,
        with ``probe`` (when no validation loss will judge it), if the loss of the current
        parameters on the first training batch is above :meth:`_val_limit`."""
        bad = nonfinite_entries(self.model.params) + [
            f"optimizer {k}" for k in nonfinite_entries(self.optimizer.state_dict())]
        if bad:
            self._diverged(f"non-finite values in {', '.join(bad[:3])}", progress, updated=True)
        limit = self._val_limit()
        if probe and limit is not None:
            loss = evaluate_loss(self.model, itertools.islice(self.loader.batches("train"), 1))
            if not loss <= limit:
                self._diverged(f"the loss of the updated parameters on a training batch is {loss:.4g}, "
                               f"above {limit:.4g} ({self.explode_factor:g} x that of a uniform guess)",
                               progress, updated=True)

    def _eval_and_save(self, progress: _Progress, tag: Optional[str] = None) -> Optional[str]:
        self._check_state(progress, probe=not self.has_val)
        if self.has_val:
            self.val_loss = self.evaluate("val")
            if not math.isfinite(self.val_loss):
                self._diverged(f"the validation loss is {self.val_loss}", progress, updated=True)
            limit = self._val_limit()
            if limit is not None and self.val_loss > limit:
                self._diverged(f"the validation loss {self.val_loss:.4g} is above {limit:.4g} "
                               f"({self.explode_factor:g} x that of a uniform guess)", progress, updated=True)
            self.val_history.append((self.iteration, self.val_loss))
        path = self.save(tag)
        self._checked_at = self.iteration
        progress.set_best(self.best_val_loss)
        parts = []
        if self.has_val:
            parts.append(f"val loss {self.val_loss:.4f} ({self.val_loss / LN2:.3f} bpc)")
        if path:
            parts.append(f"saved {path}")
        progress.write(f"iter {self.iteration} (epoch {self.epoch:.2f}): " + ", ".join(parts))
        return path

    def train(self) -> Dict[str, Any]:
        """Trains until a stop criterion; returns :meth:`summary`.

        Without any of max_iters / max_epochs / max_seconds it runs until Ctrl-C.
        Raises :class:`TrainingDiverged` on NaN/inf or exploding loss. With ``out_dir``,
        the directory's lock is held throughout (RunDirectoryBusy if another run holds
        it; OSError if it cannot be written), orphaned temporary files of killed writers
        are deleted, and a new run refuses (FileExistsError) a directory holding anything
        named like a checkpoint unless ``overwrite=True``.
        """
        if self.out_dir is None:
            return self._run()
        with RunDirectoryLock(self.out_dir):
            remove_orphaned_temporaries(self.out_dir)
            if not self.resumed:
                if not self.overwrite:
                    refuse_reuse(self.out_dir)
                self._replaced = [n for n in checkpoint_entries(self.out_dir) if n not in self._written]
            return self._run()

    def _run(self) -> Dict[str, Any]:
        file = self.file if self.file is not None else sys.stdout
        mode = self._progress_mode(file)
        total = self.max_iters
        if total is None and self.max_epochs is not None:
            total = int(math.ceil(self.max_epochs * len(self.loader)))
        progress = _Progress(mode, total, self.iteration, file, self.print_every)
        progress.set_best(self.best_val_loss)  # e.g. of the run being resumed
        self._interrupted = False
        self._train_time = 0.0
        self._trained_chars = 0
        old_handler = None
        if threading.current_thread() is threading.main_thread():
            try:
                old_handler = signal.signal(signal.SIGINT, self._on_sigint)
            except (ValueError, OSError):
                old_handler = None
        start = time.perf_counter()
        elapsed_before = self.elapsed_total
        chars_per_batch = self.loader.batch_size * self.loader.seq_length
        smooth: Optional[float] = None
        stopped = "max_iters"
        phase = "idle"
        snapshot: Optional[Tuple[Dict[str, int], Optional[Dict[str, Any]]]] = None
        draws = self.model.rnn.dropout > 0  # forward draws dropout masks: keep their generator's state
        try:
            try:
                while True:
                    reason = self._stop_reason(start)
                    if reason is not None:
                        stopped = reason
                        break
                    # ---- one iteration; the loader and RNG states are restorable until
                    # the optimizer starts updating the parameters.
                    snapshot = (self.loader.state_dict(), self.model.rng_state() if draws else None)
                    phase = "forward"
                    t0 = time.perf_counter()
                    x, y = self.loader.next_batch("train")
                    epoch_done = self.loader.position == 0
                    self.model.train()
                    loss, grads, carry = self.model.loss(x, y, self.carry)
                    loss = float(loss)
                    if not math.isfinite(loss):
                        self._diverged(f"the training loss is {loss}", progress)
                    if self.initial_loss is None:
                        self.initial_loss = loss
                    elif self.explode_factor is not None and loss > self.explode_factor * self.initial_loss:
                        self._diverged(f"the loss exploded ({loss:.4f} > {self.explode_factor:g} x "
                                       f"the initial {self.initial_loss:.4f})", progress)
                    if self.clip is not None:
                        norm = _optim.clip_grad_norm(grads, self.clip)
                    else:
                        norm = math.sqrt(sum(float(np.sum(np.square(g, dtype=np.float64))) for g in grads.values()))
                    if not math.isfinite(norm):
                        self._diverged(f"the gradient norm is {norm}", progress)
                    phase = "update"
                    self.optimizer.step(grads)
                    self.iteration += 1
                    bad = nonfinite_entries(self.model.params)
                    if bad:
                        self._diverged(f"the update made parameters non-finite ({', '.join(bad[:3])})",
                                       progress, updated=True)
                    self.carry = None if epoch_done else carry
                    if epoch_done and self.scheduler is not None and self.loader.epoch >= self.lr_decay_after:
                        self.scheduler.step()
                    phase = "idle"
                    snapshot = None
                    self.val_loss = math.nan  # the parameters changed
                    dt = time.perf_counter() - t0
                    self._train_time += dt
                    self._trained_chars += chars_per_batch
                    self.train_losses.append(loss)
                    smooth = loss if smooth is None else 0.95 * smooth + 0.05 * loss
                    self.elapsed_total = elapsed_before + time.perf_counter() - start
                    cps = self._trained_chars / self._train_time if self._train_time > 0 else 0.0
                    text = f"loss {smooth:.3f} ({smooth / LN2:.2f} bpc), {cps:,.0f} chars/s"
                    eta = self._eta(start)
                    shown_eta = eta is not None and (mode != "bar" or total is None)  # a bar has its own
                    left = f"{_fmt_time(eta)} left" if shown_eta else ""
                    progress.update(self.iteration, text, left)
                    if self.eval_every and self.iteration % self.eval_every == 0:
                        phase = "eval"
                        self._eval_and_save(progress)
                        phase = "idle"
            except KeyboardInterrupt:
                stopped = "interrupted"
                if phase == "forward" and snapshot is not None:
                    # the batch was fetched (and dropout masks maybe drawn) but the
                    # parameters are untouched: rewind to the end of the last iteration.
                    self.loader.load_state_dict(snapshot[0])
                    if snapshot[1] is not None:
                        self.model.set_rng_state(snapshot[1])
                elif phase == "update":
                    progress.close()
                    last = self.last_checkpoint
                    raise KeyboardInterrupt(
                        "interrupted while updating the parameters: nothing saved"
                        + (f"; the last checkpoint is {last}" if last else "")) from None
            self.elapsed_total = elapsed_before + time.perf_counter() - start
            # ---- final evaluation / checkpoint
            if self.iteration != self._checked_at:
                if stopped == "interrupted":
                    self._check_state(progress, probe=True)
                    path = self.save(tag="interrupted")
                    progress.write(f"interrupted at iteration {self.iteration} (epoch {self.epoch:.2f})"
                                   + (f": saved {path}" if path else ""))
                else:
                    self._eval_and_save(progress)
            elif stopped == "interrupted":
                last = self.checkpoint_path()
                progress.write(f"interrupted at iteration {self.iteration}"
                               + (f"; the checkpoint {last} is up to date" if last else ""))
        finally:
            progress.close()
            if old_handler is not None:
                try:
                    signal.signal(signal.SIGINT, old_handler)
                except (ValueError, OSError):
                    pass
        self._plot()
        return self.summary(stopped=stopped)

    fit = train  # Keras's name

    def _eta(self, start: float) -> Optional[float]:
        etas = []
        now = time.perf_counter()
        if self.max_seconds is not None:
            etas.append(self.max_seconds - (now - start))
        rate = self._train_time / max(1, self._trained_chars // (self.loader.batch_size * self.loader.seq_length))
        if self.max_iters is not None:
            etas.append((self.max_iters - self.iteration) * rate)
        if self.max_epochs is not None:
            left = (self.max_epochs - self.epoch) * len(self.loader)
            etas.append(left * rate)
        return max(0.0, min(etas)) if etas else None

    def checkpoint_path(self) -> Optional[str]:
        """Path of the last checkpoint written or loaded (None if none)."""
        return self.last_checkpoint

    def summary(self, stopped: Optional[str] = None) -> Dict[str, Any]:
        """``chars_per_sec`` (training throughput of the last :meth:`train` call),
        ``iterations``, ``epoch``, ``train_loss`` (last), ``val_loss`` / ``val_bpc`` (of the
        current parameters; None if not measured), ``best_val_loss``, ``checkpoint`` (the
        last one written: the current state), ``best_checkpoint``, ``seconds``, ``stopped``."""
        val = self.val_loss if math.isfinite(self.val_loss) else None
        best = self.best_val_loss if math.isfinite(self.best_val_loss) else None
        return {
            "chars_per_sec": (self._trained_chars / self._train_time) if self._train_time > 0 else 0.0,
            "iterations": self.iteration,
            "epoch": round(self.epoch, 4),
            "train_loss": self.train_losses[-1] if self.train_losses else None,
            "val_loss": val,
            "val_bpc": None if val is None else val / LN2,
            "best_val_loss": best,
            "best_val_bpc": None if best is None else best / LN2,
            "checkpoint": self.checkpoint_path(),
            "best_checkpoint": (os.path.join(self.out_dir, self.best_checkpoint)
                                if self.out_dir and self.best_checkpoint else None),
            "seconds": self.elapsed_total,
            "stopped": stopped,
        }

    def _plot(self) -> Optional[str]:
        """Writes ``loss.png`` into out_dir when matplotlib is importable."""
        if not self.plot or self.out_dir is None or not self.train_losses:
            return None
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except ImportError:
            return None
        bpc = np.asarray(self.train_losses) / LN2
        fig = Figure(figsize=(7, 4))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        its = np.arange(1, len(bpc) + 1)
        ax.plot(its, bpc, lw=0.5, alpha=0.4, label="train")
        k = max(1, len(bpc) // 50)
        if k > 1:
            smooth = np.convolve(bpc, np.ones(k) / k, mode="valid")
            ax.plot(its[k - 1:], smooth, lw=1.2, label=f"train (mean of {k})")
        if self.val_history:
            vi, vl = zip(*self.val_history)
            ax.plot(vi, np.asarray(vl) / LN2, "o-", label="validation")
        ax.set_xlabel("iteration")
        ax.set_ylabel("bits per character")
        ax.legend()
        ax.grid(alpha=0.3)
        path = os.path.join(self.out_dir, "loss.png")
        try:
            fig.savefig(path, dpi=100)
        except OSError:
            return None
        return path


def train(
    text: str,
    *,
    cell: str = "lstm",
    hidden_size: int = 128,
    num_layers: int = 2,
    dropout: float = 0.0,
    embedding_dim: Optional[int] = None,
    dtype: Any = np.float32,
    seed: int = 0,
    **trainer_kwargs: Any,
) -> Dict[str, Any]:
    """Builds a vocabulary and a :class:`~fastrnn.models.CharRNN` for ``text`` and trains
    it with a :class:`Trainer` (keyword arguments as Trainer's); returns the summary."""
    from .models import CharRNN

    vocab = Vocab.from_text(text)
    model = CharRNN(len(vocab), hidden_size=hidden_size, num_layers=num_layers, cell=cell,
                    dropout=dropout, embedding_dim=embedding_dim, dtype=dtype, seed=seed)
    trainer_kwargs.setdefault("seed", seed)
    return Trainer(model, text, vocab, **trainer_kwargs).train()
