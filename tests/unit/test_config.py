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
