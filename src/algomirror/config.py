"""One frozen, validated settings object built once from ``ALGOMIRROR_*`` env vars and ``.env``.

Secrets (Flask secret key, Fernet key) are generated into ``instance/`` on first run when they are
not given, with a warning to back the Fernet key up: losing it makes every stored API key unreadable.
Secrets are held as :class:`pydantic.SecretStr`, so ``repr`` and logs never show them.

Production mode (``ALGOMIRROR_ENV=production``) generates nothing and assumes nothing: it refuses to
start without PostgreSQL (unless ``ALGOMIRROR_ALLOW_SQLITE``), Redis, and an explicit secret key and
Fernet key; the demo is off and cookies are ``Secure`` unless set otherwise (:func:`production_problems`).
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from cryptography.fernet import Fernet
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from algomirror.fileperms import make_private_dir, secure_instance_dir


class SettingsError(Exception):
    """Settings could not be built; ``str(exc)`` is a one-line, user-facing reason."""


def _url_password(url: str) -> str | None:
    try:
        return urlsplit(url).password or None
    except ValueError:
        return None


def redact_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``: for repr, logs and messages."""
    password = _url_password(url)
    if not password:
        return url
    scheme, sep, rest = url.partition("://")
    return scheme + sep + rest.replace(f":{password}@", ":***@", 1)


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
        # ``ALGOMIRROR_SECRET_KEY=`` (empty) means "not set": generate one, rather than run with "".
        env_ignore_empty=True,
    )

    # "production": the checks of production_problems() at every start; JSON logs (log_format "auto").
    env: Literal["development", "production"] = "development"
    # Production on SQLite anyway (a single-machine install that accepts its limits).
    allow_sqlite: bool = False
    # "auto" = JSON lines in production, readable text in development.
    log_format: Literal["auto", "text", "json"] = "auto"
    # /readyz reports the engine down when its last heartbeat (written every 5 s) is older than this.
    engine_heartbeat_stale_seconds: float = Field(default=30.0, ge=5, le=3600)

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
    # Reverse proxies in front of the app whose X-Forwarded-For/-Proto/-Host/-Port headers are trusted
    # (0 = none: the client address is the socket's). Set to the number of hops, usually 1, behind nginx
    # or Caddy; never when the app is reachable directly, or clients could forge their address.
    trust_proxy: int = Field(default=0, ge=0, le=10)
    session_idle_hours: int = Field(default=12, ge=1)
    remember_days: int = Field(default=30, ge=1)
    # Absolute lifetime of any session, remember-me included: used or not, it ends this many days after
    # sign-in (the remember-me cookie lasts at most this long too).
    session_max_days: int = Field(default=7, ge=1)
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

    # Whether `algomirror run` starts the engine inside the web process: "auto" = yes in demo mode or with
    # SQLite, no with PostgreSQL (production runs `algomirror engine` as its own service); "true"/"false".
    engine_in_process: Literal["auto", "true", "false"] = "auto"

    # Account sync intervals (seconds).
    sync_interval_market: float = Field(default=5.0, gt=0)
    sync_interval_closed: float = Field(default=60.0, gt=0)

    # Scheduled entries: how late (seconds after entry_time) an entry is still sent, e.g. after a
    # restart; later it is logged as missed, never sent late (exits and square-offs always run at once).
    schedule_entry_grace_seconds: float = Field(default=120.0, ge=0, le=3600)

    # Seconds between the engine's pings that keep each at-risk account's order connections open, so
    # that an exit's first order pays no connect (engine/order_warmer.py); 0 turns them off.
    order_warm_seconds: float = Field(default=10.0, ge=0, le=600)

    # Rate limits (flask-limiter syntax).
    ratelimit_global: str = "2000 per minute"
    ratelimit_auth: str = "30 per minute"
    ratelimit_api: str = "500 per minute"
    ratelimit_broker: str = "100 per minute"
    login_max_failures: int = Field(default=5, ge=1)
    login_lockout_minutes: int = Field(default=15, ge=1)
    # Failed sign-ins from one address, over every username, that throttle that address (same window).
    login_address_max_failures: int = Field(default=20, ge=1)

    activity_retention_days: int = Field(default=90, ge=1)
    order_archive_days: int = Field(default=30, ge=1)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("env", "log_format", mode="before")
    @classmethod
    def _lower_choice(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("engine_in_process", mode="before")
    @classmethod
    def _lower_engine_in_process(cls, value: Any) -> Any:
        if isinstance(value, bool):
            return "true" if value else "false"
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("secret_key")
    @classmethod
    def _check_secret_key(cls, value: SecretStr | None) -> SecretStr | None:
        # A short key makes session cookies guessable; generated keys are 64 characters.
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters (leave it unset to generate one)")
        return value

    @field_validator("ratelimit_global", "ratelimit_auth", "ratelimit_api", "ratelimit_broker")
    @classmethod
    def _check_rate_limit(cls, value: str) -> str:
        # Checked here: Flask-Limiter parses lazily, so a typo would otherwise fail every request.
        from limits import parse_many

        try:
            parse_many(value)
        except ValueError:
            raise ValueError('must be a rate limit like "30 per minute" or "5/second;100/hour"') from None
        return value

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

    def __repr_args__(self) -> Any:
        # Connection URLs may embed passwords: repr/str show them masked (model_dump keeps them).
        for name, value in super().__repr_args__():
            if name in ("database_url", "redis_url") and isinstance(value, str):
                value = redact_url(value)
            yield name, value

    def secret_values(self) -> list[str]:
        """Every secret these settings hold, for the log-redaction filter: the keys, the demo password
        and the passwords inside the database and Redis URLs (raw and percent-decoded)."""
        values = [self.demo_password.get_secret_value()]
        values += [v.get_secret_value() for v in (self.secret_key, self.fernet_key) if v is not None]
        for url in (self.database_url, self.redis_url):
            password = _url_password(url)
            if password:
                values += [password, unquote(password)]
        return values

    @property
    def effective_database_url(self) -> str:
        """The database URL in use: the configured one or the embedded SQLite file."""
        return self.database_url or f"sqlite:///{self.instance_dir / 'algomirror.db'}"

    @property
    def is_sqlite(self) -> bool:
        return self.effective_database_url.startswith("sqlite")

    @property
    def is_production(self) -> bool:
        """Whether ``ALGOMIRROR_ENV=production``."""
        return self.env == "production"

    @property
    def log_json(self) -> bool:
        """Whether log records are written as JSON lines (``log_format``; "auto" = in production)."""
        if self.log_format == "auto":
            return self.is_production
        return self.log_format == "json"

    @property
    def runs_engine_in_process(self) -> bool:
        """Whether `algomirror run` starts an engine thread (``engine_in_process``; "auto" = demo mode or
        SQLite)."""
        if self.engine_in_process == "auto":
            return self.demo or self.is_sqlite
        return self.engine_in_process == "true"

    def secret_key_value(self) -> str:
        if self.secret_key is None:
            raise SettingsError("secret key missing: build settings with load_settings()")
        return self.secret_key.get_secret_value()

    def fernet_key_value(self) -> bytes:
        if self.fernet_key is None:
            raise SettingsError("Fernet key missing: build settings with load_settings()")
        return self.fernet_key.get_secret_value().encode()


def _read_or_create(path: Path, make: Any, *, warn: str | None) -> str:
    """The key stored at ``path``, generating it first if missing. Raises :class:`SettingsError` (one
    line) when the instance directory cannot be read or written."""
    try:
        if path.exists():
            return path.read_text(encoding="utf-8").strip()
        make_private_dir(path.parent)
        value = str(make())
        # Written owner-read-only: these files are as sensitive as a password.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(value + "\n")
    except OSError as exc:
        raise SettingsError(
            f"cannot read or create {path} ({exc.strerror or exc}); check ALGOMIRROR_INSTANCE_DIR"
        ) from None
    if warn:
        print(warn.format(path=path), file=sys.stderr)
    return value


def production_problems(settings: Settings) -> list[str]:
    """What keeps ``settings`` from running in production, one short reason per variable (empty when
    nothing does, and always outside production). Secrets must be given, never generated: a key that
    exists only in one machine's ``instance/`` is lost with it."""
    if not settings.is_production:
        return []
    problems: list[str] = []
    if settings.is_sqlite and not settings.allow_sqlite:
        problems.append(
            "ALGOMIRROR_DATABASE_URL must be a PostgreSQL URL (postgresql+psycopg://user:pass@host:5432/db); "
            "SQLite is refused unless ALGOMIRROR_ALLOW_SQLITE=1"
        )
    if not settings.redis_url:
        problems.append(
            "ALGOMIRROR_REDIS_URL is required (redis://host:6379/0: rate limits and live updates shared by "
            "every process)"
        )
    if settings.secret_key is None:
        problems.append(
            "ALGOMIRROR_SECRET_KEY is required (at least 16 random characters; none is generated)"
        )
    if settings.fernet_key is None:
        problems.append(
            "ALGOMIRROR_FERNET_KEY is required (none is generated; an existing install's key is in "
            "instance/fernet.key)"
        )
    if settings.demo and "demo" in settings.model_fields_set:
        problems.append("ALGOMIRROR_DEMO=true is refused (the demo's password is public); set it to false")
    return problems


def load_settings(**overrides: Any) -> Settings:
    """Build the settings, generating missing secrets into ``instance_dir`` (never in production).

    Raises :class:`SettingsError` with a one-line message when a value is invalid, or, in production
    mode, naming every variable that is missing or refused (:func:`production_problems`).
    """
    try:
        base = Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "settings"
        name = f"ALGOMIRROR_{loc.upper()}" if loc != "settings" else loc
        raise SettingsError(f"invalid setting {name}: {first['msg']}") from None
    problems = production_problems(base)
    if problems:
        raise SettingsError("production mode (ALGOMIRROR_ENV=production): " + "; ".join(problems))
    updates: dict[str, Any] = {}
    if base.is_production:
        # Defaults that only suit a laptop: no public demo login; cookies only over HTTPS (the proxy).
        for name, value in (("demo", False), ("secure_cookies", True)):
            if name not in base.model_fields_set:
                updates[name] = value
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
    try:
        # What an older version (or another umask) left readable by others is owner-only again.
        secure_instance_dir(base.instance_dir)
    except OSError as exc:
        raise SettingsError(
            f"cannot restrict {base.instance_dir} to its owner ({exc.strerror or exc}); check its permissions"
        ) from None
    return base.model_copy(update=updates) if updates else base
