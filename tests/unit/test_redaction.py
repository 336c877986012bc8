"""Key redaction catches what a server echoes back changed: another case, or a 12+ character piece
(issue 9 finding 9): in the log registry, in broker error messages, and not in ordinary text."""

from __future__ import annotations

import io
import logging

import pytest

from algomirror.broker.errors import AuthError, ServerError
from algomirror.redaction import PIECE, SecretMatcher, redact_secret
from algomirror.security import RedactingFilter, SecretRegistry

KEY = "f3a9c2d4e5b60718293a4b5c6d7e8f90a1b2c3d4e5f60718"


@pytest.mark.parametrize(
    "echoed",
    [
        KEY,
        KEY.upper(),
        KEY[:PIECE],
        KEY[-PIECE:],
        KEY[7 : 7 + PIECE].upper(),
        KEY[3:40],
        KEY.swapcase()[10:30],
    ],
)
def test_redact_secret_when_key_is_echoed_changed_removes_every_character_of_it(echoed: str) -> None:
    text = f"invalid apikey '{echoed}' for this request"
    clean = redact_secret(text, KEY)
    assert clean == "invalid apikey '***' for this request"


def test_redact_secret_when_only_a_short_piece_appears_leaves_the_text_alone() -> None:
    text = f"order {KEY[: PIECE - 1]} and {KEY[20 : 20 + PIECE - 1]}"
    assert redact_secret(text, KEY) == text
    assert redact_secret("nothing secret here at all", KEY) == "nothing secret here at all"


def test_redact_secret_when_two_pieces_and_the_whole_key_appear_replaces_each() -> None:
    text = f"a {KEY[:15]} b {KEY.upper()} c {KEY[-13:]} d"
    assert redact_secret(text, KEY) == "a *** b *** c *** d"


def test_matcher_when_short_secret_registered_matches_it_whole_in_any_case_only() -> None:
    matcher = SecretMatcher()
    matcher.add("Pass-w0rd")
    assert matcher.redact("db password PASS-W0RD!", "#") == "db password #!"
    assert matcher.redact("Pass-w0r is not it", "#") == "Pass-w0r is not it"
    matcher.remove("Pass-w0rd")
    assert matcher.redact("db password PASS-W0RD!", "#") == "db password PASS-W0RD!"


def test_registry_when_key_is_echoed_upper_case_or_cut_short_redacts_it() -> None:
    registry = SecretRegistry()
    registry.add(KEY)
    assert registry.redact(f"server said {KEY.upper()}") == "server said [REDACTED]"
    assert registry.redact(f"server said key={KEY[5:22]}...") == "server said key=[REDACTED]..."


def test_registry_when_secret_evicted_stops_redacting_only_that_secret() -> None:
    registry = SecretRegistry(limit=1)
    other = "0123456789abcdef0123"
    registry.add(KEY)
    registry.add(other)
    assert registry.redact(KEY[:20]) == KEY[:20]
    assert registry.redact(other.upper()) == "[REDACTED]"


def test_redacting_filter_when_log_line_quotes_a_changed_key_redacts_it() -> None:
    registry = SecretRegistry()
    registry.add(KEY)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter(registry))
    logger = logging.getLogger("algomirror.test_redaction_pieces")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("openalgo reply: %s", f"Invalid API key {KEY.upper()[:30]}")
        try:
            raise ValueError(f"echo {KEY[10:40]}")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert "[REDACTED]" in text
    folded = text.lower()
    assert not any(KEY[i : i + PIECE] in folded for i in range(len(KEY) - PIECE + 1))


@pytest.mark.parametrize("error_type", [AuthError, ServerError])
def test_broker_error_redact_when_message_echoes_key_changed_removes_it(error_type: type) -> None:
    error = error_type(f"Invalid openalgo apikey {KEY.upper()} (prefix {KEY[:16]})", endpoint="funds")
    error.redact(KEY)
    assert error.message == "Invalid openalgo apikey *** (prefix ***)"
    assert str(error) == error.message and error.args == (error.message,)
