"""Trading calendar pages (PRODUCT §8): holidays and special sessions added, edited and deleted by an
administrator only, each refusal an inline error naming the field with nothing changed, the CSV round
trip (a bad row named by its line, nothing imported), the import from an account's OpenAlgo
(``market/holidays`` on the paper exchange), the missing-year banner, and every change bumping the
calendar revision that running processes reload on."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import delete, func, select

from algomirror.db.calendar_store import calendar_revision, load_calendar
from algomirror.db.models import ActivityLog, MarketHoliday, SpecialTradingSession
from algomirror.domain.calendar import SpecialSession, TradingCalendar
from algomirror.web import calendar_cache
from tests.factories import make_account
from tests.integration.calendar_support import calendar_tables_restored
from tests.integration.web_support import WebEnv, make_env, post_form, signed_in
from tests.sim_fixtures import SimHandle


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> Iterator[WebEnv]:
    """The web app; the calendar's tables (reference data a PostgreSQL test database keeps between
    tests) are put back as they were afterwards, since these tests commit calendar edits."""
    made = make_env(db_url, tmp_path)
    with calendar_tables_restored(made.database):
        yield made


@pytest.fixture
def admin(env: WebEnv) -> FlaskClient:
    return signed_in(env, "alice")  # the first user is the administrator


def _post(client: FlaskClient, path: str, data: dict[str, Any], **kwargs: Any) -> Any:
    return post_form(client, path, data, page="/calendar/", **kwargs)


def _revision(env: WebEnv) -> int:
    with env.database.session_factory() as s:
        return calendar_revision(s)


def _holidays(env: WebEnv, day: date) -> list[tuple[str, str | None]]:
    with env.database.session_factory() as s:
        rows = s.execute(
            select(MarketHoliday.market, MarketHoliday.name)
            .where(MarketHoliday.date == day)
            .order_by(MarketHoliday.market)
        )
        return [(m, n) for m, n in rows]


def _holiday_count(env: WebEnv) -> int:
    with env.database.session_factory() as s:
        return int(s.scalar(select(func.count()).select_from(MarketHoliday)) or 0)


def _holiday_id(env: WebEnv, day: date) -> int:
    with env.database.session_factory() as s:
        found = s.scalar(select(func.min(MarketHoliday.id)).where(MarketHoliday.date == day))
        assert found is not None
        return int(found)


def _details(env: WebEnv, action: str) -> list[str]:
    with env.database.session_factory() as s:
        return [d or "" for d in s.scalars(select(ActivityLog.details).where(ActivityLog.action == action))]


HOLIDAY = {"day": "2026-12-30", "name": "Year-end closure", "market_NSE": "y", "market_NFO": "y"}


# ------------------------------------------------------------------------------------------- the page


def test_page_shows_status_seeded_holidays_and_expiries(env: WebEnv, admin: FlaskClient) -> None:
    html = admin.get("/calendar/?year=2026").get_data(as_text=True)
    assert "Trading calendar" in html and "Republic Day" in html and "Christmas" in html
    # 23 Nov 2026 09:30 IST (the test clock): NSE is in its session; the Settings tab row is there.
    assert "<strong>Open</strong> until 15:30" in html
    assert 'aria-label="Settings pages"' in html
    # 24 Nov 2026 is a holiday: that week's NIFTY expiry (Tuesday) moves to Monday 23 Nov.
    assert "Mon 23 Nov 2026" in html and "moved earlier by a holiday" in html


def test_non_admin_sees_the_calendar_but_cannot_change_it(env: WebEnv, admin: FlaskClient) -> None:
    bob = signed_in(env, "bob")
    html = bob.get("/calendar/").get_data(as_text=True)
    assert "Republic Day" not in html or "Edit</a>" not in html
    assert "Add holiday" not in html and "Import from OpenAlgo" not in html
    assert bob.get("/calendar/holidays/new").status_code == 403
    before = _holiday_count(env)
    assert _post(bob, "/calendar/holidays/new", HOLIDAY).status_code == 403
    hid = _holiday_id(env, date(2026, 12, 25))
    assert _post(bob, f"/calendar/holidays/{hid}/delete", {}).status_code == 403
    assert _holiday_count(env) == before


def test_banner_when_next_year_has_no_holidays_in_december(env: WebEnv, admin: FlaskClient) -> None:
    assert "2027's holidays are not loaded" not in admin.get("/calendar/").get_data(as_text=True)
    env.clock.advance(timedelta(days=10))  # 3 Dec 2026
    with env.database.session() as s:
        make_account(s, env.user("alice").id, "Main", api_key_encrypted=env.state.box.encrypt("k" * 20))
    html = signed_in(env, "alice").get("/calendar/").get_data(as_text=True)
    assert "2027's holidays are not loaded" in html
    # The OpenAlgo import offers the missing year first.
    assert '<option value="2027" selected>' in html.split('id="import-openalgo"', 1)[1]


# ------------------------------------------------------------------------------------------- holidays


def test_holiday_added_once_per_market_with_revision_and_activity(env: WebEnv, admin: FlaskClient) -> None:
    revision = _revision(env)
    response = _post(admin, "/calendar/holidays/new", HOLIDAY)
    assert response.status_code == 303
    assert _holidays(env, date(2026, 12, 30)) == [("NFO", "Year-end closure"), ("NSE", "Year-end closure")]
    assert _revision(env) == revision + 1
    assert _details(env, "calendar_holiday_added") == ["2026-12-30 Year-end closure (NSE, NFO)"]
    with env.database.session_factory() as s:
        assert load_calendar(s).is_holiday("NFO", date(2026, 12, 30))


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({**HOLIDAY, "day": "2026-12-26"}, "day", "is a Saturday"),
        ({**HOLIDAY, "day": "2026-13-01"}, "day", "must be a date like"),
        ({**HOLIDAY, "name": "  "}, "name", "Enter a name"),
        ({"day": "2026-12-30", "name": "No markets"}, "markets", "Choose at least one market"),
        ({**HOLIDAY, "day": "2026-12-25"}, "markets", "is already a holiday of"),
    ],
)
def test_holiday_refused_names_the_field_and_changes_nothing(
    env: WebEnv, admin: FlaskClient, data: dict[str, str], field: str, message: str
) -> None:
    before, revision = _holiday_count(env), _revision(env)
    response = _post(admin, "/calendar/holidays/new", data)
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert message in html
    if field != "markets":
        assert f'id="{field}-error"' in html or f'aria-describedby="{field}-' in html or message in html
    assert _holiday_count(env) == before and _revision(env) == revision


def test_holiday_edit_moves_it_and_delete_needs_confirmation(env: WebEnv, admin: FlaskClient) -> None:
    assert _post(admin, "/calendar/holidays/new", HOLIDAY).status_code == 303
    hid = _holiday_id(env, date(2026, 12, 30))
    edited = {"day": "2026-12-31", "name": "Year-end", "market_NSE": "y", "market_BSE": "y"}
    assert _post(admin, f"/calendar/holidays/{hid}/edit", edited).status_code == 303
    assert _holidays(env, date(2026, 12, 30)) == []
    assert _holidays(env, date(2026, 12, 31)) == [("BSE", "Year-end"), ("NSE", "Year-end")]
    assert "-> 2026-12-31 Year-end (NSE, BSE)" in _details(env, "calendar_holiday_changed")[0]

    hid = _holiday_id(env, date(2026, 12, 31))
    confirm = admin.get(f"/calendar/holidays/{hid}/delete")
    assert confirm.status_code == 200 and "Year-end" in confirm.get_data(as_text=True)
    assert _holidays(env, date(2026, 12, 31)) != []  # a GET deletes nothing
    revision = _revision(env)
    assert _post(admin, f"/calendar/holidays/{hid}/delete", {}).status_code == 303
    assert _holidays(env, date(2026, 12, 31)) == []
    assert _revision(env) == revision + 1
    assert admin.get(f"/calendar/holidays/{hid}/edit").status_code == 404


def test_holiday_edit_refused_keeps_the_original_rows(env: WebEnv, admin: FlaskClient) -> None:
    hid = _holiday_id(env, date(2026, 12, 25))
    before = _holidays(env, date(2026, 12, 25))
    response = _post(
        admin, f"/calendar/holidays/{hid}/edit", {"day": "2026-12-27", "name": "X", "market_NSE": "y"}
    )
    assert response.status_code == 400 and "is a Sunday" in response.get_data(as_text=True)
    assert _holidays(env, date(2026, 12, 25)) == before


# ------------------------------------------------------------------------------------------------ CSV


def _upload(client: FlaskClient, body: bytes, name: str = "holidays.csv") -> Any:
    from io import BytesIO

    return _post(
        client,
        "/calendar/holidays/import",
        {"file": (BytesIO(body), name)},
        content_type="multipart/form-data",
    )


def test_csv_export_then_import_into_an_empty_year_round_trips(env: WebEnv, admin: FlaskClient) -> None:
    exported = admin.get("/calendar/holidays.csv?year=2026")
    assert exported.status_code == 200 and exported.mimetype == "text/csv"
    body = exported.get_data()
    assert body.startswith(b"date,name,markets\n") and b"2026-01-26,Republic Day,NSE;BSE;NFO;BFO" in body
    before = _holidays(env, date(2026, 1, 26))
    with env.database.session() as s:
        s.execute(delete(MarketHoliday).where(MarketHoliday.date >= date(2026, 1, 1)))
    response = _upload(admin, body)
    assert response.status_code == 303
    assert _holidays(env, date(2026, 1, 26)) == before
    assert admin.get("/calendar/holidays.csv?year=2026").get_data() == body
    # Importing the same file again adds nothing.
    count = _holiday_count(env)
    assert _upload(admin, body).status_code == 303
    assert _holiday_count(env) == count


def test_csv_with_bad_rows_names_each_line_and_imports_nothing(env: WebEnv, admin: FlaskClient) -> None:
    body = (
        b"date,name,markets\n"
        b"2026-12-28,Fine,NSE\n"
        b"2026-12-26,Saturday,NSE\n"
        b"2026-02-30,No such day,NSE\n"
        b"2026-12-29,,NSE\n"
        b"2026-12-30,Unknown market,XYZ\n"
        b"2026-12-28,Twice,NSE\n"
        b"2026-12-31,Short row\n"
    )
    before, revision = _holiday_count(env), _revision(env)
    response = _upload(admin, body)
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert "Nothing was imported" in html
    for line in (
        "Line 3, date",
        "Line 4, date",
        "Line 5, name",
        "Line 6, markets",
        "Line 7, markets",
        "Line 8, row",
    ):
        assert line in html, line
    assert "Line 2" not in html
    assert _holiday_count(env) == before and _revision(env) == revision


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"day,title\n2026-12-28,x\n", "The first line must be the header"),
        (b"\xff\xfe\x00bad", "not UTF-8"),
        (b"date,name,markets\n", "no holiday rows"),
    ],
)
def test_csv_unreadable_file_is_refused(env: WebEnv, admin: FlaskClient, body: bytes, message: str) -> None:
    before = _holiday_count(env)
    response = _upload(admin, body)
    assert response.status_code == 400 and message in response.get_data(as_text=True)
    assert _holiday_count(env) == before


# ----------------------------------------------------------------------------------- special sessions

MUHURAT = {
    "day": "2026-11-08",  # a Sunday
    "name": "Muhurat trading",
    "market_open": "18:00",
    "market_close": "19:15",
    "market_NSE": "y",
    "market_NFO": "y",
}


def test_special_session_added_opens_the_market_that_evening(env: WebEnv, admin: FlaskClient) -> None:
    with env.database.session() as s:
        s.execute(delete(SpecialTradingSession))
    revision = _revision(env)
    assert _post(admin, "/calendar/specials/new", MUHURAT).status_code == 303
    assert _revision(env) == revision + 1
    with env.database.session_factory() as s:
        calendar = load_calendar(s)
    assert calendar.is_open("NFO", datetime(2026, 11, 8, 13, 0, tzinfo=UTC))  # 18:30 IST
    assert "2026-11-08 Muhurat trading 18:00-19:15 (NSE, NFO)" in _details(env, "calendar_special_added")
    html = admin.get("/calendar/?year=2026").get_data(as_text=True)
    assert "Muhurat trading" in html and "18:00–19:15" in html


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"market_close": "17:00"}, "The close must be after the open"),
        ({"day": "2026-11-25", "market_open": "15:00", "market_close": "16:00"}, "regular session"),
        ({"market_open": "25:00"}, "must be a time like"),
        ({"name": "Second one", "market_open": "19:00", "market_close": "20:00"}, "Overlaps Muhurat trading"),
    ],
)
def test_special_session_refused_names_the_reason_and_changes_nothing(
    env: WebEnv, admin: FlaskClient, change: dict[str, str], message: str
) -> None:
    with env.database.session() as s:
        s.execute(delete(SpecialTradingSession))
    assert _post(admin, "/calendar/specials/new", MUHURAT).status_code == 303
    revision = _revision(env)
    response = _post(admin, "/calendar/specials/new", {**MUHURAT, "name": "Other", **change})
    assert response.status_code == 400 and message in response.get_data(as_text=True)
    with env.database.session_factory() as s:
        assert s.scalar(select(func.count()).select_from(SpecialTradingSession)) == 1
    assert _revision(env) == revision


def test_special_session_edit_and_delete(env: WebEnv, admin: FlaskClient) -> None:
    with env.database.session() as s:
        s.execute(delete(SpecialTradingSession))
    assert _post(admin, "/calendar/specials/new", MUHURAT).status_code == 303
    with env.database.session_factory() as s:
        sid = s.scalar(select(SpecialTradingSession.id))
    assert (
        _post(admin, f"/calendar/specials/{sid}/edit", {**MUHURAT, "market_close": "19:30"}).status_code
        == 303
    )
    with env.database.session_factory() as s:
        row = s.get(SpecialTradingSession, sid)
        assert row is not None and row.market_close == time(19, 30)
    assert admin.get(f"/calendar/specials/{sid}/delete").status_code == 200
    assert _post(admin, f"/calendar/specials/{sid}/delete", {}).status_code == 303
    assert admin.get(f"/calendar/specials/{sid}/edit").status_code == 404


# ----------------------------------------------------------------------------------- OpenAlgo import


def test_import_from_openalgo_adds_the_missing_year(
    env: WebEnv, admin: FlaskClient, simulator: SimHandle
) -> None:
    # The paper exchange lists 2026's NSE holidays plus a Muhurat session; ours has lost 2026.
    exchange = simulator.running.core.calendar
    exchange.adopt(
        TradingCalendar(
            holidays=[(h.day, ex) for h in exchange.holidays(2026) for ex in h.exchanges],
            holiday_names={h.day: h.name for h in exchange.holidays(2026)},
            special_sessions=[
                SpecialSession(
                    date(2026, 11, 8), time(18, 0), time(19, 15), frozenset({"NSE", "NFO"}), "Muhurat"
                )
            ],
        )
    )
    with env.database.session() as s:
        s.execute(delete(MarketHoliday).where(MarketHoliday.date >= date(2026, 1, 1)))
        s.execute(delete(SpecialTradingSession))
        account = make_account(
            s,
            env.user("alice").id,
            "Paper",
            host_url=simulator.rest_url,
            api_key_encrypted=env.state.box.encrypt(simulator.api_keys[0]),
        )
        account_id = account.id
    revision = _revision(env)
    response = _post(admin, "/calendar/holidays/import-openalgo", {"account_id": account_id, "year": "2026"})
    assert response.status_code in (200, 303), response.get_data(as_text=True)[:2000]
    assert _holidays(env, date(2026, 1, 26)) == [(m, "Republic Day") for m in ("BFO", "BSE", "NFO", "NSE")]
    with env.database.session_factory() as s:
        calendar = load_calendar(s)
        specials = s.scalars(select(SpecialTradingSession)).all()
    assert [(x.name, x.market_open, x.market_close) for x in specials] == [
        ("Muhurat", time(18), time(19, 15))
    ]
    assert calendar.is_holiday("NFO", date(2026, 12, 25))
    assert calendar.is_open("NFO", datetime(2026, 11, 8, 13, 0, tzinfo=UTC))  # 18:30 IST
    assert _revision(env) > revision
    assert any("OpenAlgo 2026 via Paper" in d for d in _details(env, "calendar_holidays_imported"))
    # Again: nothing new, nothing changed.
    count = _holiday_count(env)
    response = _post(admin, "/calendar/holidays/import-openalgo", {"account_id": account_id, "year": "2026"})
    assert "0 holiday row(s) added" in response.get_data(as_text=True) or response.status_code == 303
    assert _holiday_count(env) == count


def test_import_from_openalgo_refuses_another_users_account(env: WebEnv, admin: FlaskClient) -> None:
    signed_in(env, "bob")
    with env.database.session() as s:
        other = make_account(
            s, env.user("bob").id, "Bob's", api_key_encrypted=env.state.box.encrypt("k" * 20)
        )
        other_id = other.id
    before = _holiday_count(env)
    response = _post(admin, "/calendar/holidays/import-openalgo", {"account_id": other_id, "year": "2026"})
    assert response.status_code == 400 and "Choose one of your active accounts" in response.get_data(
        as_text=True
    )
    assert _holiday_count(env) == before


def test_import_from_openalgo_when_the_server_is_down_says_so(env: WebEnv, admin: FlaskClient) -> None:
    with env.database.session() as s:
        account = make_account(
            s,
            env.user("alice").id,
            "Down",
            host_url="http://127.0.0.1:9",
            api_key_encrypted=env.state.box.encrypt("k" * 20),
        )
        account_id = account.id
    before = _holiday_count(env)
    response = _post(admin, "/calendar/holidays/import-openalgo", {"account_id": account_id, "year": "2026"})
    assert response.status_code == 502 and "could not list 2026" in response.get_data(as_text=True)
    assert _holiday_count(env) == before


# ----------------------------------------------------------------------------------- the web's calendar


def test_dashboard_market_status_follows_a_holiday_added_today(
    env: WebEnv, admin: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(calendar_cache, "CHECK_SECONDS", 0.0)
    with env.database.session() as s:
        make_account(s, env.user("alice").id, "Main")
    assert "Market open" in admin.get("/").get_data(as_text=True)
    today = {"day": "2026-11-23", "name": "Sudden closure", "market_NSE": "y", "market_NFO": "y"}
    assert _post(admin, "/calendar/holidays/new", today).status_code == 303
    assert "Market closed" in admin.get("/").get_data(as_text=True)


# ------------------------------------------------------------------------------------- trading hours


def _equity(env: WebEnv) -> tuple[int, dict[str, str]]:
    """The equity template's id and its edit form's values as the page renders them."""
    from algomirror.db.models.calendar import TradingHoursTemplate
    from algomirror.web.calendar_hours import _values_of

    with env.database.session_factory() as s:
        template = s.scalar(select(TradingHoursTemplate).where(TradingHoursTemplate.name == "equity"))
        assert template is not None
        return template.id, _values_of(template)


def test_hours_page_lists_templates_and_days(env: WebEnv, admin: FlaskClient) -> None:
    html = admin.get("/calendar/hours").get_data(as_text=True)
    assert "Equity" in html and "Commodity" in html and "Currency" in html
    assert "09:15–15:30" in html and "09:00–09:08" in html
    tid, _values = _equity(env)
    form = admin.get(f"/calendar/hours/{tid}").get_data(as_text=True)
    assert 'name="d0_market_open" value="09:15"' in form


def test_hours_edit_reaches_the_calendar_with_revision_and_activity(env: WebEnv, admin: FlaskClient) -> None:
    tid, values = _equity(env)
    values["d4_market_close"] = "15:00"  # Fridays close early
    revision = _revision(env)
    response = _post(admin, f"/calendar/hours/{tid}", values)
    assert response.status_code == 303, response.get_data(as_text=True)[:3000]
    assert _revision(env) == revision + 1
    with env.database.session_factory() as s:
        calendar = load_calendar(s)
    friday = datetime(2026, 11, 27, 9, 45, tzinfo=UTC)  # 15:15 IST
    assert not calendar.is_open("NSE", friday) and calendar.is_open("NSE", friday - timedelta(hours=1))
    assert any("Fri 09:15-15:00" in d for d in _details(env, "calendar_hours_changed"))


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"d2_market_close": "09:00"}, "d2_market_close", "The close must be after the open"),
        ({"d1_pre_end": "09:30"}, "d1_pre_end", "must end by the open (09:15)"),
        ({"d1_pre_end": ""}, "d1_pre_start", "both ends of the pre-open window"),
        ({"market_open": "9.15"}, "market_open", "is not a time like 09:15"),
        ({"market_MCX": "y"}, "markets", "MCX already follow the commodity template"),
    ],
)
def test_hours_edit_refused_names_the_field_and_changes_nothing(
    env: WebEnv, admin: FlaskClient, change: dict[str, str], field: str, message: str
) -> None:
    tid, values = _equity(env)
    revision = _revision(env)
    response = _post(admin, f"/calendar/hours/{tid}", {**values, **change})
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert message in html and f'id="{field}-error"' in html
    assert _equity(env)[1] == values and _revision(env) == revision


def test_hours_edit_is_for_administrators_only(env: WebEnv, admin: FlaskClient) -> None:
    tid, values = _equity(env)
    bob = signed_in(env, "bob")
    assert bob.get("/calendar/hours").status_code == 200
    assert bob.get(f"/calendar/hours/{tid}").status_code == 403
    assert _post(bob, f"/calendar/hours/{tid}", {**values, "d4_market_close": "15:00"}).status_code == 403
    assert _equity(env)[1] == values
    assert admin.get("/calendar/hours/999999").status_code == 404
