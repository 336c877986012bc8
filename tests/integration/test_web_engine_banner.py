"""The entries-halted banner: every signed-in page shows it while the engine's flag is set."""

from __future__ import annotations

from pathlib import Path

from algomirror.engine.halts import halt_entries, resume_entries
from tests.integration.web_support import START, make_env, signed_in

PAGE = "/activity/"  # any page on the base layout that renders without accounts


def test_base_layout_when_entries_halted_shows_the_alert_to_signed_in_users(
    db_url: str, tmp_path: Path
) -> None:
    env = make_env(db_url, tmp_path)
    try:
        client = signed_in(env, "alice")
        before = client.get(PAGE)
        assert before.status_code == 200 and "New entries are halted" not in before.get_data(as_text=True)

        with env.database.session() as s:
            halt_entries(s, "engine component sync crashed 5 times within 10 min", START)
        page = client.get(PAGE).get_data(as_text=True)
        assert 'role="alert"' in page and "New entries are halted" in page
        assert "engine component sync crashed 5 times within 10 min" in page
        anonymous = env.client().get("/login").get_data(as_text=True)
        assert "New entries are halted" not in anonymous

        with env.database.session() as s:
            resume_entries(s, user_id=None, now=START)
        assert "New entries are halted" not in client.get(PAGE).get_data(as_text=True)
    finally:
        env.database.dispose()


def test_base_layout_when_reason_contains_markup_escapes_it(db_url: str, tmp_path: Path) -> None:
    env = make_env(db_url, tmp_path)
    try:
        client = signed_in(env, "alice")
        with env.database.session() as s:
            halt_entries(s, "crashed: <script>alert(1)</script>", START)
        page = client.get(PAGE).get_data(as_text=True)
        assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page
    finally:
        env.database.dispose()
