"""Control characters in text from users and brokers: refused in form fields, escaped in log records.

A control character here is one that can change how text is laid out or read rather than adding a visible
character: Unicode category Cc (C0 controls such as NUL, tab, CR and LF, DEL, the C1 controls), the line and
paragraph separators (Zl, Zp: ``str.splitlines`` and many viewers break lines on them) and the
bidirectional formatting characters (U+202A–U+202E, U+2066–U+2069, U+200E/U+200F, U+061C: "Trojan Source",
which reorder what is shown). Other format characters (zero-width joiner in emoji, soft hyphen) are allowed.

An account name such as ``"Main\\n2026-01-01 ERROR forged"`` used to forge a whole line in the log through
the engine's sync messages; :class:`ControlEscapingFilter` makes every log record one line of its own (its
traceback, if any, indented under it).
"""

from __future__ import annotations

import logging
import unicodedata

BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069",
)
_CATEGORIES = frozenset({"Cc", "Zl", "Zp"})
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Lines of a traceback (or stack) under a record start with this, so no text inside one can pass for
# the start of a record.
CONTINUATION_INDENT = "    "


def is_control(char: str) -> bool:
    """True for a single character that is a control character in the sense of this module."""
    return char in BIDI_CONTROLS or unicodedata.category(char) in _CATEGORIES


def first_control(text: str) -> str | None:
    """The first control character in ``text``, or None (a fast path for the common clean text)."""
    if text.isprintable():
        # isprintable() is False for every Cc/Zl/Zp character; bidi controls (Cf) are also not printable.
        return None
    return next((c for c in text if is_control(c)), None)


def describe(char: str) -> str:
    """A short human name for a control character, for error messages: ``'line feed (U+000A)'``."""
    name = unicodedata.name(char, "").lower() or "control character"
    return f"{name} (U+{ord(char):04X})"


def _escape_char(char: str) -> str:
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_control(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with every control character replaced by a visible escape (``\\n``, ``\\x00``,
    ``\\u202e``); ``keep_newlines`` leaves LF alone (for multi-line blocks that are indented)."""
    if first_control(text) is None:
        return text
    return "".join(
        _escape_char(c) if is_control(c) and not (keep_newlines and c == "\n") else c for c in text
    )


def _indented(block: str) -> str:
    lines = escape_control(block.rstrip("\n"), keep_newlines=True).split("\n")
    return "\n".join(CONTINUATION_INDENT + line for line in lines)


def _exception_texts(exc: BaseException | None) -> list[str]:
    """The messages (and notes) of ``exc`` and the exceptions chained to it."""
    texts: list[str] = []
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        try:
            texts.append(str(exc))
        except Exception:  # noqa: BLE001 - a broken __str__ is printed as such by the traceback anyway
            texts.append("")
        texts.extend(str(note) for note in getattr(exc, "__notes__", None) or ())
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return texts


class ControlEscapingFilter(logging.Filter):
    """Makes every record one line of its own: control characters in the rendered message are escaped
    (``\\n`` → ``\\\\n``); an exception whose message (or chained message) holds a control character is
    rendered once, escaped, with every line indented by :data:`CONTINUATION_INDENT`. Clean records are
    left untouched (their ``exc_info`` kept)."""

    _DONE = "_algomirror_escaped"

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, self._DONE, False):
            return True
        setattr(record, self._DONE, True)
        message = record.getMessage()
        escaped = escape_control(message)
        if escaped != message:
            record.msg = escaped
            record.args = None
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and any(first_control(text) for text in _exception_texts(exc)):
            assert record.exc_info is not None
            record.exc_text = _indented(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        elif exc is None and record.exc_text:
            # Already rendered by another filter (redaction): indent it all, since its origin is unknown.
            record.exc_text = _indented(record.exc_text)
        if record.stack_info and first_control(record.stack_info.replace("\n", "")):
            record.stack_info = _indented(record.stack_info)
        return True


__all__ = [
    "BIDI_CONTROLS",
    "CONTINUATION_INDENT",
    "ControlEscapingFilter",
    "describe",
    "escape_control",
    "first_control",
    "is_control",
]
