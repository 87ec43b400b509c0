"""Text shown on a terminal: control characters made visible.

Text a user controls (a training text, hence what a model samples; file names; a prime
text) can hold escape sequences that a terminal would act on: change the window title,
write the clipboard (OSC 52), clear the screen, move the cursor, or reorder what is shown
(Unicode bidi overrides). Everything the command line prints that can hold such text goes
through :func:`sanitize`, which escapes those characters when the stream is a terminal
and leaves the text untouched otherwise, so that ``fastrnn sample ... > file`` stays exact.

Escaped, in Python's notation (``\\x1b``, ``\\u202e``, ``\\U000e0041``):

* control characters (Unicode category Cc) except newline and tab: C0 (U+0000-U+001F,
  with carriage return, backspace and ESC), DEL (U+007F) and C1 (U+0080-U+009F);
* format characters (Cf), which are invisible and include the bidi embeddings,
  overrides and isolates (U+202A-U+202E, U+2066-U+2069), the direction marks and the
  tag characters; except the zero-width joiner and non-joiner (U+200C, U+200D), which
  some scripts and emoji sequences need to be shown right;
* the line and paragraph separators (U+2028, U+2029);
* surrogates (Cs), which only a file name with bytes that are not UTF-8 holds: shown as
  the byte, ``\\xNN``, as Python's ``surrogateescape`` maps them.

Backslashes are left alone: an escape is a way to see a character, not a reversible
encoding.
"""
from __future__ import annotations

import functools
import re
import unicodedata
from typing import Any, Match

__all__ = ["escape_controls", "is_terminal", "sanitize"]

# Everything but printable ASCII, newline and tab is a candidate; unicodedata decides.
_CANDIDATE = re.compile(r"[^\n\t\x20-\x7e]")
_ESCAPED_CATEGORIES = frozenset(("Cc", "Cf", "Cs", "Zl", "Zp"))
_KEPT = frozenset("\u200c\u200d")


@functools.lru_cache(maxsize=4096)
def _escape_char(ch: str) -> str:
    if ch in _KEPT or unicodedata.category(ch) not in _ESCAPED_CATEGORIES:
        return ch
    cp = ord(ch)
    if 0xDC80 <= cp <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
        return f"\\x{cp - 0xDC00:02x}"
    if cp <= 0xFF:
        return f"\\x{cp:02x}"
    if cp <= 0xFFFF:
        return f"\\u{cp:04x}"
    return f"\\U{cp:08x}"


def _replace(match: Match[str]) -> str:
    return _escape_char(match.group())


def escape_controls(text: str) -> str:
    """``text`` with every control, format and separator character (see the module's
    documentation) replaced by its visible escape (``"\\x1b"`` for ESC); newline, tab and
    all printable characters unchanged."""
    if not isinstance(text, str):
        raise TypeError(f"escape_controls: text must be a str, got {type(text).__name__}")
    return _CANDIDATE.sub(_replace, text)


def is_terminal(stream: Any) -> bool:
    """Whether ``stream`` (a file object) is a terminal; False for anything without a
    working ``isatty``, such as a closed stream."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def sanitize(text: str, stream: Any) -> str:
    """``text`` as it may be written to ``stream``: with :func:`escape_controls` applied if
    the stream is a terminal, unchanged (byte-exact) otherwise."""
    return escape_controls(text) if is_terminal(stream) else text
