"""Fernet key box, argon2 hashing, redaction filter, redirect-target and username checks, brokers."""

from __future__ import annotations

import logging

import pytest
from cryptography.fernet import Fernet

from algomirror.domain.brokers import BROKERS, is_known_broker
from algomirror.security import (
    RedactingFilter,
    SecretBox,
    SecretRegistry,
    check_username,
    make_password_hasher,
    mask_key,
    normalize_username,
    verify_password,
)
from algomirror.web.context import is_same_site_path


def test_secret_box_when_round_tripping_returns_the_key_and_hides_it_in_the_token() -> None:
    box = SecretBox(Fernet.generate_key())
    token = box.encrypt("my-openalgo-key-1234")
    assert "my-openalgo-key" not in token
    assert box.decrypt(token) == "my-openalgo-key-1234"


def test_secret_box_when_fernet_key_differs_raises_value_error() -> None:
    token = SecretBox(Fernet.generate_key()).encrypt("my-openalgo-key-1234")
    with pytest.raises(ValueError, match="cannot be decrypted"):
        SecretBox(Fernet.generate_key()).decrypt(token)


def test_mask_key_when_given_last4_shows_bullets_and_last4_only() -> None:
    assert mask_key("wxyz") == "••••wxyz"
    assert mask_key(None) == "••••"


def test_hasher_when_password_matches_verifies_and_otherwise_refuses() -> None:
    hasher = make_password_hasher(cheap=True)
    stored = hasher.hash("violet-harbour-cinnamon")
    assert stored.startswith("$argon2id$")
    assert verify_password(hasher, stored, "violet-harbour-cinnamon")
    assert not verify_password(hasher, stored, "violet-harbour-cinnamoN")
    assert not verify_password(hasher, "not-a-hash", "anything")


def test_hasher_when_parameters_change_reports_rehash_needed() -> None:
    cheap = make_password_hasher(cheap=True)
    production = make_password_hasher()
    assert production.check_needs_rehash(cheap.hash("violet-harbour-cinnamon"))
    assert production.time_cost >= 2 and production.memory_cost >= 19 * 1024


def test_redacting_filter_when_message_contains_secret_replaces_it() -> None:
    registry = SecretRegistry()
    registry.add("sk-live-0123456789")
    record = logging.LogRecord(
        "x", logging.INFO, __file__, 1, "calling with key=%s now", ("sk-live-0123456789",), None
    )
    assert RedactingFilter(registry).filter(record)
    assert record.getMessage() == "calling with key=[REDACTED] now"


def test_redacting_filter_when_registry_is_over_limit_drops_oldest() -> None:
    registry = SecretRegistry(limit=2)
    for value in ("first-secret", "second-secret", "third-secret"):
        registry.add(value)
    assert registry.redact("first-secret third-secret") == "first-secret [REDACTED]"


def test_redacting_filter_when_value_is_tiny_leaves_text_alone() -> None:
    registry = SecretRegistry()
    registry.add("abc")
    assert registry.redact("abc def") == "abc def"


@pytest.mark.parametrize("target", ["/", "/accounts/", "/accounts/3/edit?x=1", "/activity/?q=a%2Fb"])
def test_same_site_path_when_local_accepts(target: str) -> None:
    assert is_same_site_path(target)


@pytest.mark.parametrize(
    "target",
    [
        "",
        "//evil.example",
        "/\\evil.example",
        "https://evil.example/",
        "evil",
        "/\\/x",
        "/x\r\nLocation: y",
        "javascript:alert(1)",
        "/http://x",
    ],
)
def test_same_site_path_when_external_or_tricky_refuses(target: str) -> None:
    assert not is_same_site_path(target)


@pytest.mark.parametrize("name", ["abc", "a.b-c_d", "x" * 20, "user123"])
def test_check_username_when_valid_accepts(name: str) -> None:
    assert check_username(name) is None


@pytest.mark.parametrize("name", ["ab", "x" * 21, "has space", "émile", "a/b", "<script>"])
def test_check_username_when_invalid_explains(name: str) -> None:
    assert "3–20" in (check_username(normalize_username(name)) or "")


def test_brokers_when_listing_contains_openalgo_ids_without_duplicates() -> None:
    assert len(BROKERS) == len(set(BROKERS))
    for broker in ("zerodha", "angel", "dhan", "fyers", "sandbox", "dhan_sandbox", "shoonya"):
        assert is_known_broker(broker)
    assert not is_known_broker("Zerodha")
