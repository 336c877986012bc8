from __future__ import annotations

import logging
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from algomirror.config import SettingsError, load_settings


def test_load_settings_when_no_keys_generates_them_once_into_instance(tmp_path: Path, capsys) -> None:
    first = load_settings(instance_dir=tmp_path)
    err = capsys.readouterr().err
    assert "Back it up" in err
    assert (tmp_path / "fernet.key").exists() and (tmp_path / "secret_key").exists()
    assert oct((tmp_path / "fernet.key").stat().st_mode & 0o777) == "0o600"
    second = load_settings(instance_dir=tmp_path)
    assert capsys.readouterr().err == ""
    assert first.fernet_key_value() == second.fernet_key_value()
    assert first.secret_key_value() == second.secret_key_value()
    Fernet(first.fernet_key_value())  # a usable key


def test_settings_repr_when_secrets_set_redacts_them(tmp_path: Path, caplog) -> None:
    key = Fernet.generate_key().decode()
    s = load_settings(instance_dir=tmp_path, fernet_key=key, secret_key="super-secret-value-123")
    text = repr(s) + str(s) + str(s.model_dump())
    assert key not in text and "super-secret-value-123" not in text
    with caplog.at_level(logging.INFO):
        logging.getLogger("t").info("settings %s", s)
    assert "super-secret-value-123" not in caplog.text


def test_load_settings_when_env_value_invalid_raises_one_line(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("ALGOMIRROR_PORT", "not-a-port")
    with pytest.raises(SettingsError) as info:
        load_settings(instance_dir=tmp_path)
    message = str(info.value)
    assert "ALGOMIRROR_PORT" in message and "\n" not in message


def test_load_settings_when_fernet_key_malformed_refuses(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="Fernet"):
        load_settings(instance_dir=tmp_path, fernet_key="short")


def test_load_settings_when_database_url_unsupported_refuses(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="ALGOMIRROR_DATABASE_URL"):
        load_settings(instance_dir=tmp_path, database_url="mysql://x")


def test_effective_database_url_when_unset_is_sqlite_in_instance(tmp_path: Path) -> None:
    s = load_settings(instance_dir=tmp_path)
    assert s.is_sqlite
    assert s.effective_database_url == f"sqlite:///{tmp_path / 'algomirror.db'}"


def test_settings_when_built_are_frozen(tmp_path: Path) -> None:
    s = load_settings(instance_dir=tmp_path)
    with pytest.raises(Exception, match="frozen"):
        s.port = 1  # type: ignore[misc]


def test_load_settings_when_env_file_present_reads_it_and_env_wins(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ALGOMIRROR_PORT", raising=False)
    monkeypatch.delenv("ALGOMIRROR_HOST", raising=False)
    (tmp_path / ".env").write_text("ALGOMIRROR_PORT=8123\nALGOMIRROR_HOST=0.0.0.0\n", encoding="utf-8")
    monkeypatch.setenv("ALGOMIRROR_HOST", "127.0.0.2")
    s = load_settings(instance_dir=tmp_path / "i")
    assert s.port == 8123 and s.host == "127.0.0.2"


def test_load_settings_when_secret_env_is_empty_generates_one(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("ALGOMIRROR_SECRET_KEY", "")
    s = load_settings(instance_dir=tmp_path)
    assert len(s.secret_key_value()) >= 32
    assert (tmp_path / "secret_key").read_text(encoding="utf-8").strip() == s.secret_key_value()


def test_load_settings_when_secret_key_too_short_refuses_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(instance_dir=tmp_path, secret_key="tiny")
    assert "ALGOMIRROR_SECRET_KEY" in str(info.value) and "16" in str(info.value)
    assert "tiny" not in str(info.value) and "\n" not in str(info.value)


def test_load_settings_when_log_level_lower_case_accepts_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("ALGOMIRROR_LOG_LEVEL", "debug")
    assert load_settings(instance_dir=tmp_path).log_level == "DEBUG"


def test_trust_proxy_when_unset_is_zero_and_out_of_range_refuses(tmp_path: Path, monkeypatch) -> None:
    assert load_settings(instance_dir=tmp_path).trust_proxy == 0
    monkeypatch.setenv("ALGOMIRROR_TRUST_PROXY", "2")
    assert load_settings(instance_dir=tmp_path).trust_proxy == 2
    for bad in ("-1", "11", "yes"):
        monkeypatch.setenv("ALGOMIRROR_TRUST_PROXY", bad)
        with pytest.raises(SettingsError, match="ALGOMIRROR_TRUST_PROXY"):
            load_settings(instance_dir=tmp_path)


def test_load_settings_when_fernet_key_file_corrupt_refuses_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "fernet.key").write_text("not-a-key\n", encoding="utf-8")
    with pytest.raises(SettingsError, match="corrupt") as info:
        load_settings(instance_dir=tmp_path)
    assert "\n" not in str(info.value)


def test_settings_repr_when_urls_carry_passwords_masks_them(tmp_path: Path) -> None:
    s = load_settings(
        instance_dir=tmp_path,
        database_url="postgresql+psycopg://algo:pg-Pass%40word-77@db:5432/algomirror",
        redis_url="redis://:redis-secret-88@cache:6379/0",
    )
    text = repr(s) + str(s)
    assert "pg-Pass" not in text and "redis-secret-88" not in text
    assert "postgresql+psycopg://algo:***@db:5432/algomirror" in text
    assert "redis://:***@cache:6379/0" in text
    # The real values are still there for the code that connects.
    assert s.effective_database_url.endswith("pg-Pass%40word-77@db:5432/algomirror")


def test_secret_values_when_urls_carry_passwords_lists_them_for_log_redaction(tmp_path: Path) -> None:
    s = load_settings(
        instance_dir=tmp_path,
        database_url="postgresql+psycopg://algo:pg-Pass%40word-77@db:5432/algomirror",
        redis_url="redis://:redis-secret-88@cache:6379/0",
    )
    values = s.secret_values()
    for expected in (
        "pg-Pass%40word-77",
        "pg-Pass@word-77",
        "redis-secret-88",
        s.secret_key_value(),
        s.fernet_key_value().decode(),
        s.demo_password.get_secret_value(),
    ):
        assert expected in values


def test_redact_url_when_no_password_returns_it_unchanged() -> None:
    from algomirror.config import redact_url

    assert redact_url("postgresql+psycopg://postgres@127.0.0.1:5432/test") == (
        "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    )
    assert redact_url("") == ""
    assert redact_url("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"


def test_load_settings_when_instance_dir_unusable_refuses_in_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the instance directory should be", encoding="utf-8")
    with pytest.raises(SettingsError) as info:
        load_settings(instance_dir=blocker / "instance")
    message = str(info.value)
    assert "ALGOMIRROR_INSTANCE_DIR" in message and "\n" not in message


@pytest.mark.parametrize(
    "variable", ["RATELIMIT_GLOBAL", "RATELIMIT_AUTH", "RATELIMIT_API", "RATELIMIT_BROKER"]
)
def test_load_settings_when_rate_limit_unparsable_refuses_in_one_line(
    tmp_path: Path, monkeypatch, variable: str
) -> None:
    monkeypatch.setenv(f"ALGOMIRROR_{variable}", "thirty a minute")
    with pytest.raises(SettingsError, match=f"ALGOMIRROR_{variable}") as info:
        load_settings(instance_dir=tmp_path)
    assert "30 per minute" in str(info.value) and "\n" not in str(info.value)
    monkeypatch.setenv(f"ALGOMIRROR_{variable}", "5/second;100/hour")
    assert getattr(load_settings(instance_dir=tmp_path), variable.lower()) == "5/second;100/hour"


@pytest.mark.parametrize(
    ("host", "demo", "warns"),
    [
        ("127.0.0.1", True, False),
        ("::1", True, False),
        ("localhost", True, False),
        ("0.0.0.0", True, True),
        ("192.0.2.10", True, True),
        ("0.0.0.0", False, False),
    ],
)
def test_demo_exposure_warning_when_demo_listens_beyond_loopback_warns(
    tmp_path: Path, host: str, demo: bool, warns: bool
) -> None:
    from algomirror.runner import demo_exposure_warning

    message = demo_exposure_warning(load_settings(instance_dir=tmp_path, host=host, demo=demo))
    assert (message is not None) == warns
    if warns:
        assert message is not None and host in message and "ALGOMIRROR_DEMO=false" in message
