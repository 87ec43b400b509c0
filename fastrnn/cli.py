"""The `fastrnn` command line (also `python -m fastrnn`).

Subcommands:

* ``fastrnn check``: verify every compiled kernel against the NumPy reference.
* ``fastrnn train [TEXTFILE]``: train a character-level language model (char-rnn's
  ``train.lua``); without TEXTFILE on :func:`fastrnn.data.default_corpus`.
* ``fastrnn sample CHECKPOINT``: generate text (char-rnn's ``sample.lua``); CHECKPOINT is a
  checkpoint file or a training ``--out`` directory (its best checkpoint).
* ``fastrnn eval CHECKPOINT TEXTFILE``: loss and bits per character on a text.

char-rnn's option names are accepted too (``-rnn_size``, ``-num_layers``,
``-checkpoint_dir``, ``-temperature``, ``-primetext``, ...). Bad input gives a one-line
error on stderr and exit status 1 (2 for usage errors); Ctrl-C gives status 130.

Whatever is printed that can hold user text (sampled text, file names, messages) goes
through :func:`fastrnn.terminal.sanitize`: control characters are escaped when the stream
is a terminal, and written as they are when it is a pipe or a file.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any, Dict, List, NoReturn, Optional, TextIO

from .terminal import escape_controls, is_terminal, sanitize

__all__ = ["main", "build_parser", "read_text", "read_text_ids", "DEFAULT_LR"]

#: Default learning rate per optimizer when ``--lr`` is not given.
DEFAULT_LR: Dict[str, float] = {
    "sgd": 1.0, "momentum": 0.1, "adagrad": 0.1, "rmsprop": 2e-3, "adam": 2e-3, "adamw": 2e-3,
}

#: Defaults of ``fastrnn train`` (options default to None so that --resume can tell which
#: ones were given; these fill in the rest for a new run).
TRAIN_DEFAULTS: Dict[str, Any] = {
    "model": "lstm", "hidden": 128, "layers": 2, "dropout": 0.0, "embedding": 64,
    "dtype": "float32", "batch": 32, "seq": 64, "val_fraction": 0.05, "optimizer": "adam",
    "clip": 5.0, "lr_decay": None, "lr_decay_after": 10, "eval_every": 200, "seed": 0,
}
DEFAULT_MAX_EPOCHS = 50.0  # char-rnn's -max_epochs, when no stop criterion is given


class CliError(Exception):
    """A user error: printed as one line, exit status 1."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, sanitize(f"{self.prog}: error: {message} (see {self.prog} --help)\n", sys.stderr))


# ---------------------------------------------------------------- argument types


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _nonneg_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    value = _float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


def _nonneg_float(text: str) -> float:
    value = _float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value


def _dropout(text: str) -> float:
    value = _float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a probability in [0, 1), got {text}")
    return value


def _fraction(text: str) -> float:
    value = _float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), got {text}")
    return value


def _top_p(text: str) -> float:
    value = _float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a probability in (0, 1], got {text}")
    return value


def _decay(text: str) -> float:
    value = _float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a factor in (0, 1], got {text}")
    return value


# ---------------------------------------------------------------- helpers


def _read_text_file(path: str, read: Any) -> Any:
    """``read(path)``, with CliError (one line, naming the file) if the file is missing, a
    directory, not a regular file, empty, binary or not UTF-8, or cannot be read."""
    from .data import TextFileError
    from .safeio import NotARegularFile

    if not os.path.exists(path):
        raise CliError(f"{path}: no such file")
    if os.path.isdir(path):
        raise CliError(f"{path} is a directory, not a text file")
    try:
        return read(path)
    except (TextFileError, NotARegularFile) as e:
        raise CliError(str(e)) from None
    except OSError as e:
        raise CliError(f"{path}: cannot read: {e.strerror or e}") from None


def read_text(path: str) -> str:
    """The UTF-8 text of a file; CliError (one line, naming the file) if it is missing,
    not a regular file (a directory, FIFO or device: never blocks), empty, binary (NUL
    bytes) or not UTF-8."""
    from .data import read_text_chunks

    return _read_text_file(path, lambda p: "".join(read_text_chunks(p)))


def read_text_ids(path: str, vocab: Any = None, errors: str = "strict") -> Any:
    """A text file as :class:`fastrnn.data.EncodedText` (compact ids; the text is never
    held whole as a str), with ``vocab`` (default: the file's own characters); CliError
    as :func:`read_text`. With ``vocab`` and ``errors="strict"``, a character outside it
    raises :class:`fastrnn.data.UnknownCharacterError` for the caller to word."""
    from .data import EncodedText

    return _read_text_file(path, lambda p: EncodedText.from_file(p, vocab, errors=errors))


def _too_short(e: Any, shown: str, resuming: bool) -> CliError:
    """fastrnn.data.TextTooShortError worded with the command line's flags."""
    part = {"train": "training", "val": "validation"}.get(e.split, e.split)
    remedy = ("resume with the text the run was trained on" if resuming else
              "use a smaller --batch or --seq, a longer text, or another --val-fraction")
    return CliError(f"{shown} is too short: its {part} part (--val-fraction {e.val_fraction:g}) has "
                    f"{e.size:,} of its {e.num_ids:,} characters, but --batch {e.batch_size} x --seq "
                    f"{e.seq_length} needs at least {e.needed:,}; {remedy}")


def _set_threads(threads: Optional[int]) -> None:
    if threads is None:
        return
    from . import set_num_threads

    set_num_threads(threads)
    try:  # also the BLAS under NumPy's matrix products, when threadpoolctl is there
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads, user_api="blas")
    except Exception:  # noqa: BLE001 - optional
        pass


def _json_value(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _print_json(obj: Dict[str, Any]) -> None:
    # json.dumps escapes every control character (and all non-ASCII): safe on a terminal
    print(json.dumps({k: _json_value(v) for k, v in obj.items()}, allow_nan=False), flush=True)


def _say(message: str, file: Optional[TextIO] = None) -> None:
    """Prints one message (which may hold file names or other user text) to ``file``
    (default stdout), with control characters escaped when it is a terminal."""
    file = sys.stdout if file is None else file
    print(sanitize(message, file), file=file, flush=True)


def _humanize(n: float) -> str:
    return f"{n:,.0f}"


# ---------------------------------------------------------------- check


def _cmd_check(args: argparse.Namespace) -> int:
    from . import build_info, set_num_threads
    from .check import format_table, run_check

    if args.threads is not None:
        set_num_threads(args.threads)
    info = build_info()
    print(f"fastrnn {info['version']}: kernel {info['isa']} (best on this CPU: {info['best_isa']}), "
          f"OpenMP {'on' if info['openmp'] else 'off'}, {info['threads']} threads")
    rows = run_check(seed=args.seed)
    print(format_table(rows))
    bad = [r for r in rows if not r.ok]
    if bad:
        print(f"FAILED: {len(bad)} of {len(rows)} kernels differ from the reference", file=sys.stderr)
        return 1
    print(f"all {len(rows)} kernels match the reference")
    return 0


# ---------------------------------------------------------------- train


_ARCH_KEYS = {  # CLI option -> (section, key) in the checkpoint config
    "model": ("model", "cell"), "hidden": ("model", "hidden_size"),
    "layers": ("model", "num_layers"), "dropout": ("model", "dropout"),
    "embedding": ("model", "embedding_dim"), "dtype": ("model", "dtype"),
    "seed": ("model", "seed"), "batch": ("train", "batch_size"),
    "seq": ("train", "seq_length"), "val_fraction": ("train", "val_fraction"),
    "optimizer": ("train", "optimizer"), "lr_decay": ("train", "lr_decay"),
    "lr_decay_after": ("train", "lr_decay_after"),
}


def _embedding_dim(option: int) -> Optional[int]:
    """CharRNN's embedding_dim for --embedding: 0 means one-hot inputs (None)."""
    return option or None


def _cmd_train(args: argparse.Namespace) -> int:
    import numpy as np

    from .checkpoint import open_checkpoint
    from .data import EncodedText, TextTooShortError, UnknownCharacterError, default_corpus
    from .models import CharRNN
    from .rundir import check_writable, refuse_reuse
    from .train import DEFAULT_CORPUS_SOURCE, STOP_CRITERIA, Trainer, TrainingDiverged

    _set_threads(args.threads)
    if args.data_dir is not None:
        if args.textfile is not None:
            raise CliError("give either TEXTFILE or -data_dir, not both")
        args.textfile = os.path.join(args.data_dir, "input.txt")
    out = args.out if args.out is not None else "cv"
    no_stop = args.max_iters is None and args.max_epochs is None and args.max_seconds is None
    max_epochs = DEFAULT_MAX_EPOCHS if no_stop else args.max_epochs
    common = dict(
        max_iters=args.max_iters, max_epochs=max_epochs, max_seconds=args.max_seconds,
        progress=args.progress, print_every=args.print_every, plot=not args.no_plot,
    )

    if args.resume is not None:
        # ---- continue a run
        source = args.resume if isinstance(args.resume, str) else out
        if not os.path.exists(source):
            raise CliError(f"nothing to resume: {source} does not exist (train without --resume first)")
        ckpt = open_checkpoint(source, which="latest")
        path = ckpt.path
        saved = {"model": ckpt.config.get("model", {}), "train": ckpt.config.get("train", {})}
        for opt, (section, key) in _ARCH_KEYS.items():
            given = getattr(args, opt)
            if given is None or key not in saved[section]:
                continue
            if opt == "embedding":
                given = _embedding_dim(given)
            have = saved[section][key]
            if isinstance(have, float) or isinstance(given, float):
                same = have is not None and math.isclose(float(given), float(have))
            else:
                same = given == have
            if not same:
                flag = "--" + opt.replace("_", "-")
                raise CliError(f"{flag} {given} differs from the checkpoint being resumed "
                               f"({path} has {key}={have!r}); drop the option to resume")
        textfile = args.textfile
        if textfile is None:
            textfile = saved["train"].get("data_source")
        on_default = textfile in (None, DEFAULT_CORPUS_SOURCE)
        shown = "the default corpus" if on_default else textfile
        try:
            data = (EncodedText.from_text(default_corpus(), ckpt.vocab) if on_default
                    else read_text_ids(textfile, ckpt.vocab))
        except UnknownCharacterError as e:
            raise CliError(f"{shown}: character {e.char!r} (U+{ord(e.char):04X}) at position "
                           f"{e.position} is not in the vocabulary of {path}: resume with the text "
                           f"it was trained on") from None
        out_dir = args.out if args.out is not None else os.path.dirname(os.path.abspath(path))
        if no_stop and all(saved["train"].get(k) is None for k in STOP_CRITERIA):
            stops = dict(max_epochs=DEFAULT_MAX_EPOCHS)  # a run saved without its stop criteria
        else:  # the run's own stop criteria, unless given again
            stops = dict(max_iters=args.max_iters, max_epochs=args.max_epochs, max_seconds=args.max_seconds)
        try:
            trainer = Trainer.resume(ckpt, data, out_dir=out_dir, lr=args.lr, clip=args.clip,
                                     eval_every=args.eval_every, **{**common, **stops})
        except TextTooShortError as e:
            raise _too_short(e, shown, resuming=True) from None
        check_writable(out_dir)
        _say(f"resuming {path} at iteration {trainer.iteration} (epoch {trainer.epoch:.2f})")
    else:
        # ---- a new run
        opts = {k: (getattr(args, k) if getattr(args, k) is not None else v)
                for k, v in TRAIN_DEFAULTS.items()}
        if args.textfile is None:
            try:
                data = EncodedText.from_text(default_corpus())
            except RuntimeError as e:
                raise CliError(str(e)) from None
            source, shown = DEFAULT_CORPUS_SOURCE, "the default corpus (Python standard-library sources)"
        else:
            data = read_text_ids(args.textfile)
            source, shown = os.path.abspath(args.textfile), args.textfile
        vocab = data.vocab
        lr = args.lr if args.lr is not None else DEFAULT_LR[opts["optimizer"]]
        model = CharRNN(len(vocab), hidden_size=opts["hidden"], num_layers=opts["layers"],
                        cell=opts["model"], dropout=opts["dropout"],
                        embedding_dim=_embedding_dim(opts["embedding"]), dtype=np.dtype(opts["dtype"]).type,
                        seed=opts["seed"])
        try:
            trainer = Trainer(
                model, data, vocab, batch_size=opts["batch"], seq_length=opts["seq"],
                val_fraction=opts["val_fraction"], optimizer=opts["optimizer"], lr=lr,
                clip=opts["clip"], lr_decay=opts["lr_decay"], lr_decay_after=opts["lr_decay_after"],
                eval_every=opts["eval_every"], out_dir=out, overwrite=args.overwrite,
                seed=opts["seed"], data_source=source, **common)
        except TextTooShortError as e:
            raise _too_short(e, shown, resuming=False) from None
        if not args.overwrite:
            refuse_reuse(out)
        check_writable(out)
        nb = trainer.loader.split_sizes
        _say(f"training a {opts['layers']}-layer {opts['model'].upper()} (hidden {opts['hidden']}, "
             f"{model.num_params():,} parameters) on {shown}: {data.num_chars:,} characters, "
             f"{len(vocab)} distinct; {nb['train']} batches of {opts['batch']}x{opts['seq']} per "
             f"epoch, {nb['val']} for validation; {opts['optimizer']} lr {lr:g}; checkpoints in "
             f"{out}/")

    try:
        summary = trainer.train()
    except TrainingDiverged as e:
        if args.json:
            _print_json({**e.summary, "error": str(e)})
        raise CliError(str(e)) from None
    except FileExistsError as e:
        raise CliError(str(e)) from None
    if args.json:
        _print_json(summary)
    else:
        line = (f"stopped ({summary['stopped']}): {summary['iterations']:,} iterations (epoch "
                f"{summary['epoch']:.2f}), {_humanize(summary['chars_per_sec'])} chars/s")
        if summary["val_bpc"] is not None:
            line += f", val loss {summary['val_loss']:.4f} ({summary['val_bpc']:.3f} bits/char)"
        _say(line)
        if summary["checkpoint"]:
            target = trainer.out_dir
            _say(f"checkpoint {summary['checkpoint']}; sample with: fastrnn sample {target}")
    return 130 if summary["stopped"] == "interrupted" else 0


# ---------------------------------------------------------------- sample


def _cmd_sample(args: argparse.Namespace) -> int:
    from .checkpoint import load_model
    from .sampling import sample, stream

    _set_threads(args.threads)
    model, vocab, ckpt = load_model(args.checkpoint)
    argmax = args.argmax or (args.sample is not None and args.sample == 0)
    kwargs = dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                  argmax=argmax, prime=args.prime, seed=args.seed)
    missing = [ch for ch in dict.fromkeys(args.prime) if ch not in vocab]
    if missing:
        ch = missing[0]
        raise CliError(f"--prime: character {ch!r} (U+{ord(ch):04X}) is not in the vocabulary "
                       f"of {ckpt.path}")
    if args.json:
        text = sample(model, vocab, args.length, **kwargs)
        _print_json({"text": text, "checkpoint": ckpt.path})
        return 0
    out = sys.stdout
    tty = is_terminal(out)
    last = ""
    for ch in stream(model, vocab, args.length, **kwargs):
        out.write(escape_controls(ch) if tty else ch)  # sanitize(), with isatty asked once
        last = ch or last
        if tty and ch == "\n":
            out.flush()
    if last != "\n":
        out.write("\n")
    out.flush()
    return 0


# ---------------------------------------------------------------- eval


def _cmd_eval(args: argparse.Namespace) -> int:
    from .checkpoint import load_model
    from .data import UnknownCharacterError
    from .train import LN2, evaluate_text

    _set_threads(args.threads)
    model, vocab, ckpt = load_model(args.checkpoint)
    try:
        data = read_text_ids(args.textfile, vocab, errors="skip" if args.unknown == "skip" else "strict")
    except UnknownCharacterError as e:
        raise CliError(f"{args.textfile}: character {e.char!r} (U+{ord(e.char):04X}) at position "
                       f"{e.position} is not in the vocabulary of {ckpt.path}; "
                       f"--unknown skip drops such characters") from None
    if data.ids.size < 2:
        raise CliError(f"{args.textfile}: fewer than 2 known characters: nothing to evaluate")
    loss, count = evaluate_text(model, data.ids, batch_size=args.batch, seq_length=args.seq)
    result = {"loss": loss, "bpc": loss / LN2, "chars": count,
              "skipped": data.skipped, "checkpoint": ckpt.path}
    if args.json:
        _print_json(result)
    else:
        extra = f" ({result['skipped']:,} unknown characters skipped)" if result["skipped"] else ""
        _say(f"loss {loss:.4f} nats/char, {loss / LN2:.4f} bits/char over {count:,} "
             f"predicted characters{extra} ({ckpt.path})")
    return 0


# ---------------------------------------------------------------- the parser


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fastrnn", description="Fast CPU recurrent networks.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    check = sub.add_parser("check", help="verify every compiled kernel against the NumPy reference")
    check.add_argument("--seed", type=int, default=0, help="random seed for the test data")
    check.add_argument("--threads", type=_positive_int, default=None, help="kernel threads")
    check.set_defaults(run=_cmd_check)

    # -- train
    t = sub.add_parser(
        "train", help="train a character-level language model (as char-rnn's train.lua)",
        description="Train a character-level language model on TEXTFILE (default: about 1 MB of "
                    "Python standard-library source). Checkpoints (the best and the latest) go to "
                    "--out; resume with --resume. char-rnn's option names work too.")
    t.add_argument("textfile", nargs="?", metavar="TEXTFILE", help="UTF-8 training text")
    t.add_argument("-data_dir", dest="data_dir", default=None, metavar="DIR",
                   help="char-rnn's way to name the text: DIR/input.txt")
    g = t.add_argument_group("model")
    g.add_argument("--model", "-model", choices=("rnn", "lstm", "gru"), default=None,
                   help="recurrent cell (default lstm)")
    g.add_argument("--hidden", "--hidden-size", "--rnn-size", "-rnn_size", dest="hidden",
                   type=_positive_int, metavar="H", help="hidden units per layer (default 128)")
    g.add_argument("--layers", "--num-layers", "-num_layers", dest="layers", type=_positive_int,
                   metavar="L", help="stacked layers (default 2)")
    g.add_argument("--dropout", "-dropout", type=_dropout, metavar="P",
                   help="dropout between layers, in [0, 1) (default 0)")
    g.add_argument("--embedding", type=_nonneg_int, metavar="E",
                   help="learned embedding size (default 64); 0 for one-hot inputs, as char-rnn")
    g.add_argument("--dtype", choices=("float32", "float64"), default=None, help="default float32")
    g = t.add_argument_group("data")
    g.add_argument("--batch", "--batch-size", "-batch_size", dest="batch", type=_positive_int,
                   metavar="B", help="sequences per batch (default 32)")
    g.add_argument("--seq", "--seq-length", "-seq_length", dest="seq", type=_positive_int,
                   metavar="T", help="timesteps per batch, the truncated-BPTT length (default 64)")
    g.add_argument("--val-fraction", "-val_frac", dest="val_fraction", type=_fraction,
                   metavar="F", help="share of the text held out for validation (default 0.05)")
    g = t.add_argument_group("optimization")
    g.add_argument("--optimizer", "-optim", dest="optimizer",
                   choices=("sgd", "momentum", "adagrad", "rmsprop", "adam", "adamw"),
                   default=None, help="default adam")
    g.add_argument("--lr", "--learning-rate", "-learning_rate", dest="lr", type=_positive_float,
                   help="learning rate (default: sgd 1, momentum 0.1, adagrad 0.1, others 2e-3)")
    g.add_argument("--clip", "--grad-clip", "-grad_clip", dest="clip", type=_nonneg_float,
                   help="clip the global gradient norm at this (default 5; 0: off)")
    g.add_argument("--lr-decay", "-learning_rate_decay", dest="lr_decay", type=_decay,
                   help="multiply the learning rate by this at the end of each epoch (default: no decay)")
    g.add_argument("--lr-decay-after", "-learning_rate_decay_after", dest="lr_decay_after",
                   type=_nonneg_int, metavar="EPOCH", help="start the decay after this epoch (default 10)")
    g.add_argument("--seed", "-seed", type=_nonneg_int, help="random seed (default 0)")
    g = t.add_argument_group("stopping, evaluation, checkpoints")
    g.add_argument("--max-iters", dest="max_iters", type=_positive_int, metavar="N",
                   help="stop after N iterations in total")
    g.add_argument("--max-epochs", "--epochs", "-max_epochs", dest="max_epochs",
                   type=_positive_float, metavar="E",
                   help=f"stop after E epochs in total (default {DEFAULT_MAX_EPOCHS:g} when no other stop is given)")
    g.add_argument("--max-seconds", dest="max_seconds", type=_positive_float, metavar="S",
                   help="stop after S seconds of this run")
    g.add_argument("--eval-every", "-eval_val_every", dest="eval_every", type=_positive_int,
                   metavar="N", help="validate and checkpoint every N iterations (default 200)")
    g.add_argument("--out", "--checkpoint-dir", "-checkpoint_dir", dest="out", metavar="DIR",
                   help="checkpoint directory (default cv, as char-rnn)")
    g.add_argument("--resume", nargs="?", const=True, default=None, metavar="CHECKPOINT",
                   help="continue the run in --out (or in CHECKPOINT, a file or directory) "
                        "exactly where it stopped")
    g.add_argument("--overwrite", action="store_true",
                   help="start afresh in an --out that holds an earlier run's checkpoints (deleting them)")
    g = t.add_argument_group("output")
    g.add_argument("--threads", type=_positive_int, help="kernel threads (default: all cores)")
    g.add_argument("--json", action="store_true",
                   help="print the summary as one JSON object on the last line")
    g.add_argument("--progress", choices=("auto", "bar", "log", "none"), default="auto",
                   help="tqdm bar on a terminal, log lines otherwise (default auto)")
    g.add_argument("--print-every", "-print_every", dest="print_every", type=_positive_int,
                   metavar="N", help="log a line every N iterations (default: every 5 s)")
    g.add_argument("--no-plot", action="store_true", help="do not write loss.png (needs matplotlib)")
    t.set_defaults(run=_cmd_train)

    # -- sample
    s = sub.add_parser("sample", help="generate text from a checkpoint (as char-rnn's sample.lua)",
                       description="Generate text from a checkpoint file or a training --out "
                                   "directory (its best checkpoint). On a terminal, control "
                                   "characters in the text are shown escaped (ESC as \\x1b); "
                                   "piped or redirected output is the text, byte for byte.")
    s.add_argument("checkpoint", metavar="CHECKPOINT", help="checkpoint file or --out directory")
    s.add_argument("--length", "-length", type=_nonneg_int, default=1000,
                   help="characters to generate (default 1000)")
    s.add_argument("--temperature", "-temperature", type=_positive_float, default=1.0,
                   help="> 0; lower is more conservative (default 1)")
    s.add_argument("--top-k", dest="top_k", type=_positive_int, default=None,
                   help="sample among the K likeliest characters")
    s.add_argument("--top-p", dest="top_p", type=_top_p, default=None,
                   help="nucleus sampling with mass P in (0, 1]")
    s.add_argument("--argmax", action="store_true", help="always take the likeliest character")
    s.add_argument("-sample", dest="sample", type=int, choices=(0, 1), default=None,
                   help=argparse.SUPPRESS)  # char-rnn: -sample 0 is argmax
    s.add_argument("--prime", "--primetext", "-primetext", dest="prime", default="",
                   metavar="TEXT", help="start text (printed, then continued)")
    s.add_argument("--seed", "-seed", type=_nonneg_int, default=None,
                   help="random seed (default: a fresh one each run)")
    s.add_argument("--threads", type=_positive_int, help="kernel threads")
    s.add_argument("--json", action="store_true", help='print {"text": ...} as one JSON object')
    s.set_defaults(run=_cmd_sample)

    # -- eval
    e = sub.add_parser("eval", help="loss and bits per character of a checkpoint on a text",
                       description="Mean cross-entropy (nats) and bits per character of the "
                                   "model on TEXTFILE, predicting every character after the "
                                   "first from all the ones before it: the text is one stream, "
                                   "the state starts at zero at its first character and is "
                                   "carried to the last. The result is that of running the "
                                   "whole text as one sequence (up to float rounding) and does "
                                   "not depend on --seq or --batch.")
    e.add_argument("checkpoint", metavar="CHECKPOINT", help="checkpoint file or --out directory")
    e.add_argument("textfile", metavar="TEXTFILE", help="UTF-8 text")
    e.add_argument("--unknown", choices=("skip", "error"), default="error",
                   help="characters outside the vocabulary: error (default) or skip them")
    e.add_argument("--batch", type=_positive_int, default=None,
                   help="accepted for older command lines; no effect (the text is one stream)")
    e.add_argument("--seq", type=_positive_int, default=256,
                   help="timesteps per kernel call (default 256): bounds the memory per call, "
                        "not the result")
    e.add_argument("--threads", type=_positive_int, help="kernel threads")
    e.add_argument("--json", action="store_true", help="print one JSON object with loss and bpc")
    e.set_defaults(run=_cmd_eval)
    return parser


def _one_line(message: Any) -> str:
    return " ".join(str(message).split()) or "unknown error"


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    prog = f"fastrnn {args.command}"
    from .checkpoint import CheckpointError

    try:
        return int(args.run(args))
    except KeyboardInterrupt as e:
        detail = f": {_one_line(e)}" if str(e) else ""
        _say(f"{prog}: interrupted{detail}", sys.stderr)
        return 130
    except BrokenPipeError:
        # e.g. `fastrnn sample run | head`: the reader is gone; stop quietly
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 0
    except (CliError, CheckpointError, OSError, ValueError, TypeError, RuntimeError, MemoryError) as e:
        _say(f"{prog}: error: {_one_line(e)}", sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - never a traceback for the user
        if os.environ.get("FASTRNN_DEBUG"):
            raise
        _say(f"{prog}: error: {type(e).__name__}: {_one_line(e)} (set FASTRNN_DEBUG=1 for a "
             f"traceback)", sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
