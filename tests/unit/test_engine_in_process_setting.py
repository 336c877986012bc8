"""``ALGOMIRROR_ENGINE_IN_PROCESS``: where `algomirror run` starts an engine thread."""

from __future__ import annotations

from pathlib import Path

import pytest

from algomirror.config import SettingsError, load_settings

PG = "postgresql+psycopg://am@127.0.0.1:5432/am"


@pytest.mark.parametrize(
    ("database_url", "demo", "expected"),
    [
        ("", False, True),  # the embedded SQLite file: a single-process install
        ("", True, True),
        (PG, True, True),  # the demo always runs its engine
        (PG, False, False),  # production: `algomirror engine` runs separately
    ],
)
def test_runs_engine_in_process_when_auto_depends_on_demo_and_database(
    tmp_path: Path, database_url: str, demo: bool, expected: bool
) -> None:
    settings = load_settings(instance_dir=tmp_path, database_url=database_url, demo=demo)
    assert settings.engine_in_process == "auto"
    assert settings.runs_engine_in_process is expected


def test_runs_engine_in_process_when_set_in_env_follows_it_case_insensitively(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALGOMIRROR_ENGINE_IN_PROCESS", " TRUE ")
    assert load_settings(instance_dir=tmp_path, database_url=PG, demo=False).runs_engine_in_process is True
    monkeypatch.setenv("ALGOMIRROR_ENGINE_IN_PROCESS", "false")
    assert load_settings(instance_dir=tmp_path, demo=True).runs_engine_in_process is False


def test_engine_in_process_when_value_unknown_raises_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALGOMIRROR_ENGINE_IN_PROCESS", "sometimes")
    with pytest.raises(SettingsError) as info:
        load_settings(instance_dir=tmp_path)
    assert "ALGOMIRROR_ENGINE_IN_PROCESS" in str(info.value) and "\n" not in str(info.value)
