"""Finding secrets in text that a server or a library echoed back changed: in another case, or cut short.

A stored API key must never reach a page or a log line, yet servers quote it back in their errors
("invalid apikey ABCD…", upper-cased, truncated). Matching the exact string missed those, so a
:class:`SecretMatcher` finds, ignoring ASCII case:

* every piece of :data:`PIECE` or more characters of a registered secret of that length or longer (a
  piece of a random key that long does not occur by chance), and
* the whole of a shorter secret (at least 6 characters: shorter ones are not registered by callers).

Dependency-free, so the broker client (:meth:`algomirror.broker.errors.BrokerError.redact`) and the log
filter (:class:`algomirror.security.SecretRegistry`) share it.
"""

from __future__ import annotations

import string

# The shortest piece of a secret that is redacted wherever it appears.
PIECE = 12
_FOLD = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def fold(text: str) -> str:
    """``text`` with ASCII letters lower-cased (same length, so positions carry over)."""
    return text.translate(_FOLD)


def _windows(folded: str) -> set[str]:
    return {folded[i : i + PIECE] for i in range(len(folded) - PIECE + 1)}


class SecretMatcher:
    """A set of secrets and the spans of text where any of them (or a long enough piece) appears.

    Not thread-safe by itself: :class:`algomirror.security.SecretRegistry` guards it with a lock.
    """

    def __init__(self) -> None:
        # Reference counts, so removing one secret keeps the windows another still shares.
        self._windows: dict[str, int] = {}
        self._short: dict[str, int] = {}

    def __bool__(self) -> bool:
        return bool(self._windows or self._short)

    def add(self, secret: str) -> None:
        """Register ``secret`` (any length; callers skip very short ones)."""
        folded = fold(secret)
        if len(folded) >= PIECE:
            for window in _windows(folded):
                self._windows[window] = self._windows.get(window, 0) + 1
        elif folded:
            self._short[folded] = self._short.get(folded, 0) + 1

    def remove(self, secret: str) -> None:
        """Forget one registration of ``secret`` (a secret never added is ignored)."""
        folded = fold(secret)
        if len(folded) >= PIECE:
            for window in _windows(folded):
                left = self._windows.get(window, 0) - 1
                if left > 0:
                    self._windows[window] = left
                else:
                    self._windows.pop(window, None)
        elif folded:
            left = self._short.get(folded, 0) - 1
            if left > 0:
                self._short[folded] = left
            else:
                self._short.pop(folded, None)

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Sorted, merged ``(start, end)`` character ranges of ``text`` that hold a secret or a piece."""
        folded = fold(text)
        found: list[tuple[int, int]] = []
        if self._windows:
            for i in range(len(folded) - PIECE + 1):
                if folded[i : i + PIECE] in self._windows:
                    found.append((i, i + PIECE))
        for secret in self._short:
            start = folded.find(secret)
            while start >= 0:
                found.append((start, start + len(secret)))
                start = folded.find(secret, start + 1)
        found.sort()
        merged: list[tuple[int, int]] = []
        for start, end in found:
            if merged and start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
            else:
                merged.append((start, end))
        return merged

    def redact(self, text: str, replacement: str) -> str:
        """``text`` with every span of :meth:`spans` replaced by ``replacement``."""
        if not self or not text:
            return text
        spans = self.spans(text)
        if not spans:
            return text
        parts: list[str] = []
        position = 0
        for start, end in spans:
            parts.append(text[position:start])
            parts.append(replacement)
            position = end
        parts.append(text[position:])
        return "".join(parts)


def redact_secret(text: str, secret: str, replacement: str = "***") -> str:
    """``text`` with ``secret`` (any case) and every :data:`PIECE`-character piece of it replaced."""
    if not secret:
        return text
    matcher = SecretMatcher()
    matcher.add(secret)
    return matcher.redact(text, replacement)


__all__ = ["PIECE", "SecretMatcher", "fold", "redact_secret"]
