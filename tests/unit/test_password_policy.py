"""Password policy: 12–128 characters, not containing the username or email name, not common."""

from __future__ import annotations

import pytest

from algomirror.security import check_password_policy


def test_policy_when_password_is_long_and_unrelated_accepts() -> None:
    assert check_password_policy("violet-harbour-cinnamon", username="alice", email="alice@example.com").ok


@pytest.mark.parametrize(
    ("password", "fragment"),
    [
        ("short-pass1", "at least 12"),
        ("x" * 129, "at most 128"),
        ("my-alice-password-9", "username"),
        ("MY-ALICE-PASSWORD-9", "username"),
        ("wonderland-spring-77", "email"),
        ("password1234", "too common"),
        ("PASSWORD1234", "too common"),
        ("qwertyuiop123", "too common"),
        ("123456789012", "too common"),
        ("iloveyouiloveyou", "too common"),
    ],
)
def test_policy_when_password_breaks_a_rule_reports_it(password: str, fragment: str) -> None:
    result = check_password_policy(password, username="alice", email="wonderland@example.com")
    assert not result.ok
    assert any(fragment in e for e in result.errors), result.errors


def test_policy_when_password_is_exactly_12_and_128_chars_accepts() -> None:
    assert check_password_policy("abcdefghij.Z", username="bob", email="bob@example.com").ok
    assert check_password_policy("Zy7." * 32, username="bob", email="bob@example.com").ok


def test_policy_when_email_name_is_tiny_does_not_ban_every_password_containing_it() -> None:
    # A one-letter email name ("a@…") must not make every password with an "a" invalid.
    assert check_password_policy("banana-split-sundae", username="zed", email="a@example.com").ok
