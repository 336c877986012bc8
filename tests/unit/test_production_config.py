"""Production mode (``ALGOMIRROR_ENV=production``): every start-up refusal, the production defaults, and
the JSON log lines (parseable, without secrets)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from algomirror.config import Settings, SettingsError, load_settings, production_problems

PG_URL = "postgresql+psycopg://algomirror:pg-Pass-9876xyz@127.0.0.1:5432/algomirror"
REDIS_URL = "redis://:redis-Pass-5432abc@127.0.0.1:6379/0"
SECRET_KEY = "production-secret-key-0123456789abcdef"
FERNET_KEY = Fernet.generate_key().decode()


def production(tmp_path: Path, **changes: Any) -> dict[str, Any]:
    """A complete production configuration (as overrides), with ``changes`` applied (None = unset)."""
    values: dict[str, Any] = {
        "env": "production",
        "instance_dir": tmp_path / "instance",
        "database_url": PG_URL,
        "redis_url": REDIS_URL,
        "secret_key": SECRET_KEY,
        "fernet_key": FERNET_KEY,
    }
    values.update(changes)
    return {k: v for k, v in values.items() if v is not None}


def test_load_settings_when_production_complete_turns_demo_off_and_cookies_secure(tmp_path: Path) -> None:
    settings = load_settings(**production(tmp_path))
    assert settings.is_production
    assert settings.demo is False
    assert settings.secure_cookies is True
    assert settings.log_json is True
    assert not settings.is_sqlite
    # Nothing generated: the keys are the given ones and no key file was written.
    assert settings.secret_key_value() == SECRET_KEY
    assert settings.fernet_key_value() == FERNET_KEY.encode()
    assert not (tmp_path / "instance" / "fernet.key").exists()
    assert not (tmp_path / "instance" / "secret_key").exists()


def test_load_settings_when_production_sets_cookies_or_log_format_explicitly_keeps_them(
    tmp_path: Path,
) -> None:
    settings = load_settings(**production(tmp_path, secure_cookies=False, log_format="text"))
    assert settings.secure_cookies is False
    assert settings.log_json is False


@pytest.mark.parametrize(
    ("changes", "variable"),
    [
        ({"database_url": None}, "ALGOMIRROR_DATABASE_URL"),
        ({"database_url": "sqlite:////tmp/x.db"}, "ALGOMIRROR_DATABASE_URL"),
        ({"redis_url": None}, "ALGOMIRROR_REDIS_URL"),
        ({"secret_key": None}, "ALGOMIRROR_SECRET_KEY"),
        ({"fernet_key": None}, "ALGOMIRROR_FERNET_KEY"),
        ({"demo": True}, "ALGOMIRROR_DEMO"),
    ],
    ids=["no-database-url", "sqlite-url", "no-redis", "no-secret-key", "no-fernet-key", "demo-on"],
)
def test_load_settings_when_production_lacks_one_setting_refuses_naming_only_it(
    tmp_path: Path, changes: dict[str, Any], variable: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(**production(tmp_path, **changes))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("production mode (ALGOMIRROR_ENV=production): ")
    assert variable in message
    others = {
        "ALGOMIRROR_DATABASE_URL",
        "ALGOMIRROR_REDIS_URL",
        "ALGOMIRROR_SECRET_KEY",
        "ALGOMIRROR_FERNET_KEY",
        "ALGOMIRROR_DEMO=",
    } - {variable, variable + "="}
    assert [name for name in others if name in message] == []
    # Refused before anything was generated.
    assert not (tmp_path / "instance" / "fernet.key").exists()
    assert not (tmp_path / "instance" / "secret_key").exists()


def test_load_settings_when_production_lacks_everything_names_every_variable_on_one_line(
    tmp_path: Path,
) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(env="production", instance_dir=tmp_path / "instance")
    message = str(caught.value)
    assert "\n" not in message
    for variable in (
        "ALGOMIRROR_DATABASE_URL",
        "ALGOMIRROR_REDIS_URL",
        "ALGOMIRROR_SECRET_KEY",
        "ALGOMIRROR_FERNET_KEY",
    ):
        assert variable in message
    # The default demo is turned off in production, not refused.
    assert "ALGOMIRROR_DEMO" not in message


def test_load_settings_when_production_allows_sqlite_runs_on_the_instance_file(tmp_path: Path) -> None:
    settings = load_settings(**production(tmp_path, database_url=None, allow_sqlite=True))
    assert settings.is_sqlite
    assert settings.effective_database_url.endswith("algomirror.db")


def test_production_problems_when_development_is_empty_whatever_is_missing(tmp_path: Path) -> None:
    settings = Settings(instance_dir=tmp_path)
    assert settings.env == "development"
    assert settings.log_json is False
    assert production_problems(settings) == []


def test_settings_when_env_given_in_any_case_reads_it_and_refuses_unknown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALGOMIRROR_ENV", " PRODUCTION ")
    assert Settings(instance_dir=tmp_path).is_production
    monkeypatch.setenv("ALGOMIRROR_ENV", "prod")
    with pytest.raises(SettingsError, match="ALGOMIRROR_ENV"):
        load_settings(instance_dir=tmp_path)


# --- the commands and the gunicorn entry refuse with one line ------------------------------------------


def _clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALGOMIRROR_")}
    env.update(ALGOMIRROR_ENV="production", ALGOMIRROR_INSTANCE_DIR=str(tmp_path / "instance"), **extra)
    return env


CLI = [sys.executable, "-c", "from algomirror.cli import main; main()"]


@pytest.mark.parametrize(
    ("command", "status"),
    [
        ([*CLI, "run"], 2),
        ([*CLI, "engine"], 2),
        ([sys.executable, "-c", "import algomirror.wsgi as w; w.app"], 4),
    ],
    ids=["run", "engine", "wsgi"],
)
def test_start_when_production_lacks_postgres_exits_with_one_line_naming_the_variable(
    tmp_path: Path, command: list[str], status: int
) -> None:
    env = _clean_env(
        tmp_path,
        ALGOMIRROR_REDIS_URL=REDIS_URL,
        ALGOMIRROR_SECRET_KEY=SECRET_KEY,
        ALGOMIRROR_FERNET_KEY=FERNET_KEY,
    )
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert done.returncode == status, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("algomirror: production mode")
    assert "ALGOMIRROR_DATABASE_URL" in lines[0]
    assert "ALGOMIRROR_REDIS_URL" not in lines[0]
    assert not (tmp_path / "instance" / "fernet.key").exists()


def test_wsgi_module_when_imported_builds_nothing() -> None:
    import algomirror.wsgi as wsgi

    # ``app`` is built on first access only (gunicorn's), so importing opens no database.
    assert wsgi._app is None
    with pytest.raises(AttributeError):
        _ = wsgi.not_an_attribute  # type: ignore[attr-defined]


# --- JSON logs -----------------------------------------------------------------------------------------

LOG_SCRIPT = """
import logging, sys
from algomirror.config import load_settings
from algomirror.runner import configure_logging
settings = load_settings()
configure_logging(settings)
log = logging.getLogger("algomirror.test")
log.info("key %s and redis password %s", sys.argv[1], sys.argv[2])
log.warning("account name %s", "Main\\n2026-01-01 ERROR forged \\u202e")
try:
    raise RuntimeError("boom with " + sys.argv[1] + "\\nsecond line")
except RuntimeError:
    log.exception("failed")
log.error("rupee \\u20b9 100")
"""


def _run_logging(tmp_path: Path, env: dict[str, str]) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", LOG_SCRIPT, SECRET_KEY, "redis-Pass-5432abc"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return done.stderr.splitlines()


def test_logs_when_production_are_json_lines_without_secrets(tmp_path: Path) -> None:
    env = _clean_env(
        tmp_path,
        ALGOMIRROR_DATABASE_URL=PG_URL,
        ALGOMIRROR_REDIS_URL=REDIS_URL,
        ALGOMIRROR_SECRET_KEY=SECRET_KEY,
        ALGOMIRROR_FERNET_KEY=FERNET_KEY,
    )
    lines = _run_logging(tmp_path, env)
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert [r["message"].split(" ")[0] for r in records] == ["key", "account", "failed", "rupee"]
    assert [r["level"] for r in records] == ["INFO", "WARNING", "ERROR", "ERROR"]
    first = records[0]
    assert first["logger"] == "algomirror.test"
    assert first["time"].endswith("+00:00")
    assert isinstance(first["pid"], int)
    assert first["message"] == "key [REDACTED] and redis password [REDACTED]"
    assert "\n" not in records[1]["message"]
    assert "RuntimeError" in records[2]["exception"]
    assert records[3]["message"] == "rupee \u20b9 100"
    text = "\n".join(lines)
    for secret in (SECRET_KEY, "redis-Pass-5432abc", "pg-Pass-9876xyz", FERNET_KEY):
        assert secret not in text
    assert "\u202e" not in text  # written escaped: nothing can reorder a viewer's line


def test_logs_when_development_are_readable_text_lines(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALGOMIRROR_")}
    env.update(
        ALGOMIRROR_INSTANCE_DIR=str(tmp_path / "instance"),
        ALGOMIRROR_SECRET_KEY=SECRET_KEY,
        ALGOMIRROR_FERNET_KEY=FERNET_KEY,
    )
    lines = _run_logging(tmp_path, env)
    assert " INFO algomirror.test: key [REDACTED] and redis password " in lines[0]
    with pytest.raises(json.JSONDecodeError):
        json.loads(lines[0])
    assert SECRET_KEY not in "\n".join(lines)
