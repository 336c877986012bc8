"""Administrator pages: users, activation, admin role, sign-up switch; the activity page's filters."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from tests.integration.web_support import WebEnv, login, make_env, post_form, register, signed_in


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> WebEnv:
    web = make_env(db_url, tmp_path)
    yield web
    web.database.dispose()


@pytest.fixture
def admin(env: WebEnv) -> FlaskClient:
    return signed_in(env, "root")


def test_admin_page_when_admin_lists_users(env: WebEnv, admin: FlaskClient) -> None:
    signed_in(env, "alice")
    html = admin.get("/admin/").get_data(as_text=True)
    assert "alice@example.com" in html and "root@example.com" in html
    assert "Sign-up is <strong>closed</strong>" in html


def test_deactivate_when_admin_acts_on_user_refuses_their_login_and_logs(
    env: WebEnv, admin: FlaskClient
) -> None:
    alice_client = signed_in(env, "alice")
    alice_id = env.user("alice").id
    assert post_form(admin, f"/admin/users/{alice_id}/deactivate", page="/admin/").status_code == 303
    assert not env.user("alice").is_active
    assert alice_client.get("/accounts/").status_code == 302
    assert "deactivated" in login(env.client(), "alice").get_data(as_text=True)
    post_form(admin, f"/admin/users/{alice_id}/activate", page="/admin/")
    assert env.user("alice").is_active
    assert login(env.client(), "alice").status_code == 303
    assert {"user_deactivated", "user_activated"} <= set(env.actions("root"))


def test_deactivate_when_admin_targets_self_refuses(env: WebEnv, admin: FlaskClient) -> None:
    root_id = env.user("root").id
    response = post_form(admin, f"/admin/users/{root_id}/deactivate", page="/admin/", follow_redirects=True)
    assert "cannot deactivate yourself" in response.get_data(as_text=True)
    assert env.user("root").is_active


def test_make_admin_when_admin_promotes_user_they_reach_admin_pages(env: WebEnv, admin: FlaskClient) -> None:
    alice = signed_in(env, "alice")
    assert alice.get("/admin/").status_code == 403
    post_form(admin, f"/admin/users/{env.user('alice').id}/make-admin", page="/admin/")
    assert env.user("alice").is_admin
    assert alice.get("/admin/").status_code == 200


def test_admin_action_when_user_id_unknown_gives_404(env: WebEnv, admin: FlaskClient) -> None:
    assert post_form(admin, "/admin/users/99999/deactivate", page="/admin/").status_code == 404


def test_signup_switch_when_toggled_opens_and_closes_registration(env: WebEnv, admin: FlaskClient) -> None:
    assert env.client().get("/register").status_code == 403
    post_form(admin, "/admin/signup", page="/admin/")
    assert "Sign-up is <strong>open</strong>" in admin.get("/admin/").get_data(as_text=True)
    assert register(env.client(), "newbie").status_code == 303
    post_form(admin, "/admin/signup", page="/admin/")
    assert env.client().get("/register").status_code == 403
    assert env.actions("root").count("settings_changed") == 2


def test_activity_page_when_filtered_by_action_text_and_dates_shows_matching_rows(
    env: WebEnv, admin: FlaskClient
) -> None:
    failed, changed = "<code>login_failed</code>", "<code>settings_changed</code>"
    login(env.client(), "root", "wrong-password-123")
    env.clock.advance(timedelta(days=2))
    admin = signed_in(env, "root")  # the old session went idle for two days
    post_form(admin, "/admin/signup", page="/admin/")
    html = admin.get("/activity/?action=login_failed").get_data(as_text=True)
    assert failed in html and changed not in html
    html = admin.get("/activity/?q=signup_enabled").get_data(as_text=True)
    assert changed in html and failed not in html
    # Dates are IST calendar days: the fixture clock starts 23 Nov 2026 09:30 IST.
    html = admin.get("/activity/?from=2026-11-25&to=2026-11-25").get_data(as_text=True)
    assert changed in html and failed not in html
    html = admin.get("/activity/?to=2026-11-23").get_data(as_text=True)
    assert failed in html and changed not in html
    assert "23 Nov 2026 09:30:00 IST" in html
    # Junk filters are ignored, not errors.
    assert admin.get("/activity/?from=notadate&page=abc&user=x").status_code == 200


def test_activity_page_when_many_rows_paginates(env: WebEnv, admin: FlaskClient) -> None:
    from algomirror.db.models import ActivityLog

    root_id = env.user("root").id
    with env.database.session() as s:
        for i in range(55):
            s.add(
                ActivityLog(
                    user_id=root_id,
                    action="connection_tested",
                    details=f"probe {i:02d}",
                    timestamp=env.clock.now() - timedelta(minutes=i + 1),
                )
            )
    first = admin.get("/activity/").get_data(as_text=True)
    assert "Page 1 of 2" in first and "56 entries" in first  # 55 + the sign-in
    assert "probe 00" in first and "probe 54" not in first
    second = admin.get("/activity/?page=2&action=").get_data(as_text=True)
    assert "Page 2 of 2" in second and "probe 54" in second and "probe 00" not in second
