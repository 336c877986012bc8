"""Secrets at rest and passwords, shared by the web app, the engine and the CLI.

Fernet for broker API keys, argon2 for passwords, the password policy, and a logging filter that
redacts known secrets from every log line.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.fernet import Fernet, InvalidToken

from algomirror.common_passwords import is_common_password
from algomirror.controlchars import ControlEscapingFilter
from algomirror.redaction import SecretMatcher

PASSWORD_MIN = 12
PASSWORD_MAX = 128
USERNAME_RE = re.compile(r"^[a-z0-9_.-]{3,20}$")
API_KEY_MIN = 10

# --- redaction --------------------------------------------------------------------------------------


class SecretRegistry:
    """Plain-text secrets this process has handled (configured keys, decrypted API keys).

    :meth:`redact` finds them in any ASCII case, and any piece of 12 or more characters of a secret that
    long (a server echoing a key upper-cased or cut short): :class:`~algomirror.redaction.SecretMatcher`.
    Bounded: the oldest entries are dropped past ``limit``. Values shorter than 6 characters are not
    kept, since redacting them would mangle ordinary text.
    """

    def __init__(self, limit: int = 2000) -> None:
        self._values: dict[str, None] = {}
        self._matcher = SecretMatcher()
        self._limit = limit
        self._lock = threading.Lock()

    def add(self, value: str | None) -> None:
        if not value or len(value) < 6:
            return
        with self._lock:
            if value in self._values:
                self._values.pop(value)  # moved to the newest end; the matcher already has it
            else:
                self._matcher.add(value)
            self._values[value] = None
            while len(self._values) > self._limit:
                oldest = next(iter(self._values))
                self._values.pop(oldest)
                self._matcher.remove(oldest)

    def redact(self, text: str) -> str:
        """``text`` with every registered secret, in any case or as a 12+ character piece, replaced by
        ``[REDACTED]``."""
        with self._lock:
            return self._matcher.redact(text, "[REDACTED]")


SECRETS = SecretRegistry()


class RedactingFilter(logging.Filter):
    """Replaces every registered secret in a record's message (and exception text) by ``[REDACTED]``."""

    def __init__(self, registry: SecretRegistry = SECRETS) -> None:
        super().__init__()
        self.registry = registry

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = self.registry.redact(message)
        if redacted != message:
            record.msg = redacted
            record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            exc_text = logging.Formatter().formatException(record.exc_info)
            clean = self.registry.redact(exc_text)
            if clean != exc_text:
                record.exc_info = None
                record.exc_text = clean
        return True


def install_redaction(secrets: Iterable[str] = (), *, logger: logging.Logger | None = None) -> None:
    """Register ``secrets`` and put a :class:`RedactingFilter`, then a
    :class:`~algomirror.controlchars.ControlEscapingFilter` (one line per record, whatever users and
    brokers put in the text), on every handler of ``logger`` (root)."""
    for value in secrets:
        SECRETS.add(value)
    target = logger or logging.getLogger()
    for handler in target.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
        if not any(isinstance(f, ControlEscapingFilter) for f in handler.filters):
            handler.addFilter(ControlEscapingFilter())


# --- API keys at rest -------------------------------------------------------------------------------


class SecretBox:
    """Fernet encryption of broker API keys. Raises :class:`ValueError` when a token cannot be read
    (wrong Fernet key or corrupt value)."""

    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    def encrypt(self, plaintext: str) -> str:
        SECRETS.add(plaintext)
        return self._fernet.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def decrypt(self, token: str) -> str:
        try:
            value = self._fernet.decrypt(token.encode("ascii")).decode("utf-8")
        except InvalidToken:
            raise ValueError("stored API key cannot be decrypted (was the Fernet key changed?)") from None
        SECRETS.add(value)
        return value


def last4(api_key: str) -> str:
    return api_key[-4:]


def mask_key(last_four: str | None) -> str:
    """Display form of a stored key: bullets and its last four characters."""
    return "••••" + (last_four or "")


# --- passwords --------------------------------------------------------------------------------------


def make_password_hasher(*, cheap: bool = False) -> PasswordHasher:
    """argon2id with the library's RFC 9106 low-memory profile; ``cheap`` only for tests."""
    if cheap:
        return PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    return PasswordHasher()


def verify_password(hasher: PasswordHasher, password_hash: str, password: str) -> bool:
    try:
        return hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


@dataclass(frozen=True, slots=True)
class PolicyResult:
    errors: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.errors


def check_password_policy(password: str, *, username: str = "", email: str = "") -> PolicyResult:
    """12–128 characters, not containing the username or the email's local part, not a common password."""
    errors: list[str] = []
    if len(password) < PASSWORD_MIN:
        errors.append(f"Password must be at least {PASSWORD_MIN} characters.")
    if len(password) > PASSWORD_MAX:
        errors.append(f"Password must be at most {PASSWORD_MAX} characters.")
    lowered = password.lower()
    name = username.strip().lower()
    if len(name) >= 3 and name in lowered:
        errors.append("Password must not contain your username.")
    local = email.strip().lower().partition("@")[0]
    if len(local) >= 3 and local in lowered:
        errors.append("Password must not contain the name part of your email address.")
    if is_common_password(password):
        errors.append("This password is too common; choose another.")
    return PolicyResult(tuple(errors))


def normalize_username(username: str) -> str:
    return username.strip().lower()


def check_username(username: str) -> str | None:
    """An error message, or None when ``username`` (already normalised) is acceptable."""
    if not USERNAME_RE.fullmatch(username):
        return "Username must be 3–20 characters: letters, digits, '_', '.' or '-'."
    return None
