"""One frozen, validated settings object built once from ``ALGOMIRROR_*`` env vars and ``.env``.

Secrets (Flask secret key, Fernet key) are generated into ``instance/`` on first run when they are
not given, with a warning to back the Fernet key up: losing it makes every stored API key unreadable.
Secrets are held as :class:`pydantic.SecretStr`, so ``repr`` and logs never show them.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from cryptography.fernet import Fernet
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class SettingsError(Exception):
    """Settings could not be built; ``str(exc)`` is a one-line, user-facing reason."""


def _default_instance_dir() -> Path:
    return Path(os.environ.get("ALGOMIRROR_INSTANCE_DIR", "instance")).resolve()


class Settings(BaseSettings):
    """Installation settings. Every field can be set as ``ALGOMIRROR_<NAME>``."""

    model_config = SettingsConfigDict(
        env_prefix="ALGOMIRROR_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    # Where generated keys, the SQLite database and the engine lock live.
    instance_dir: Path = Field(default_factory=_default_instance_dir)
    # Empty = SQLite file in instance_dir. PostgreSQL: postgresql+psycopg://user@host:5432/db
    database_url: str = ""
    db_pool_size: int = Field(default=10, ge=1, le=200)
    db_max_overflow: int = Field(default=20, ge=0, le=500)
    db_pool_recycle: int = Field(default=3600, ge=30)
    db_pool_pre_ping: bool = True
    sqlite_busy_timeout_ms: int = Field(default=5000, ge=0)

    secret_key: SecretStr | None = None
    fernet_key: SecretStr | None = None

    # Empty = in-memory rate-limit store and in-process bus; set for production (redis://host:6379/0).
    redis_url: str = ""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    # Cookie "Secure" flag; turn on behind HTTPS.
    secure_cookies: bool = False
    session_idle_hours: int = Field(default=12, ge=1)
    remember_days: int = Field(default=30, ge=1)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # Embedded demo: start the paper exchange in-process and seed a demo user + 3 accounts.
    demo: bool = True
    demo_username: str = "demo"
    demo_password: SecretStr = SecretStr("demo-password-2026")
    simulator_seed: int = 42
    # Ports of the embedded paper exchange (not OpenAlgo's 5000/8765, to avoid clashing with a real one).
    demo_sim_port: int = Field(default=18500, ge=1, le=65535)
    demo_sim_ws_port: int = Field(default=18765, ge=1, le=65535)
    # Simulated-clock speed of the demo market (1.0 = real time); the demo clock starts inside a session.
    demo_clock_speed: float = Field(default=1.0, gt=0, le=1000)

    # Broker client timeouts (seconds).
    http_connect_timeout: float = Field(default=4.0, gt=0)
    http_read_timeout: float = Field(default=10.0, gt=0)
    http_order_timeout: float = Field(default=30.0, gt=0)

    # Account sync intervals (seconds).
    sync_interval_market: float = Field(default=5.0, gt=0)
    sync_interval_closed: float = Field(default=60.0, gt=0)

    # Rate limits (flask-limiter syntax).
    ratelimit_global: str = "2000 per minute"
    ratelimit_auth: str = "30 per minute"
    ratelimit_api: str = "500 per minute"
    ratelimit_broker: str = "100 per minute"
    login_max_failures: int = Field(default=5, ge=1)
    login_lockout_minutes: int = Field(default=15, ge=1)

    activity_retention_days: int = Field(default=90, ge=1)
    order_archive_days: int = Field(default=30, ge=1)

    @field_validator("database_url")
    @classmethod
    def _check_db_url(cls, value: str) -> str:
        if value and not value.startswith(("sqlite", "postgresql")):
            raise ValueError("must start with sqlite:// or postgresql+psycopg://")
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str) -> str:
        if value and urlsplit(value).scheme not in {"redis", "rediss", "unix"}:
            raise ValueError("must be a redis:// URL")
        return value

    @model_validator(mode="after")
    def _check_fernet(self) -> Settings:
        if self.fernet_key is not None:
            try:
                Fernet(self.fernet_key.get_secret_value().encode())
            except ValueError as exc:
                raise ValueError("fernet_key is not a valid Fernet key (32 url-safe base64 bytes)") from exc
        return self

    @property
    def effective_database_url(self) -> str:
        """The database URL in use: the configured one or the embedded SQLite file."""
        return self.database_url or f"sqlite:///{self.instance_dir / 'algomirror.db'}"

    @property
    def is_sqlite(self) -> bool:
        return self.effective_database_url.startswith("sqlite")

    def secret_key_value(self) -> str:
        if self.secret_key is None:
            raise SettingsError("secret key missing: build settings with load_settings()")
        return self.secret_key.get_secret_value()

    def fernet_key_value(self) -> bytes:
        if self.fernet_key is None:
            raise SettingsError("Fernet key missing: build settings with load_settings()")
        return self.fernet_key.get_secret_value().encode()


def _read_or_create(path: Path, make: Any, *, warn: str | None) -> str:
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = str(make())
    # Written owner-read-only: these files are as sensitive as a password.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(value + "\n")
    if warn:
        print(warn.format(path=path), file=sys.stderr)
    return value


def load_settings(**overrides: Any) -> Settings:
    """Build the settings, generating missing secrets into ``instance_dir``.

    Raises :class:`SettingsError` with a one-line message when a value is invalid.
    """
    try:
        base = Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "settings"
        name = f"ALGOMIRROR_{loc.upper()}" if loc != "settings" else loc
        raise SettingsError(f"invalid setting {name}: {first['msg']}") from None
    updates: dict[str, Any] = {}
    if base.secret_key is None:
        updates["secret_key"] = SecretStr(
            _read_or_create(base.instance_dir / "secret_key", lambda: secrets.token_urlsafe(48), warn=None)
        )
    if base.fernet_key is None:
        key = _read_or_create(
            base.instance_dir / "fernet.key",
            lambda: Fernet.generate_key().decode(),
            warn=(
                "WARNING: generated a new encryption key at {path}. Back it up: without it the stored "
                "broker API keys cannot be decrypted."
            ),
        )
        try:
            Fernet(key.encode())
        except ValueError:
            raise SettingsError(f"the Fernet key in {base.instance_dir / 'fernet.key'} is corrupt") from None
        updates["fernet_key"] = SecretStr(key)
    return base.model_copy(update=updates) if updates else base
