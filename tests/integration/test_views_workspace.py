"""Server side of the trader's workspace: the Orders status filter (page, live fragment, CSV, dashboard
link), the live Accounts list, the header's live part and market clock, the navigation's shortcuts, and
the table markup the layout relies on (row ids, column priorities, phone labels, ₹ in the header)."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from algomirror.domain.timeutil import FakeClock
from tests.factories import BASE_TIME, make_account, make_order
from tests.integration.web_support import WebEnv, make_env, signed_in


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> WebEnv:
    return make_env(db_url, tmp_path)


@pytest.fixture
def alice(env: WebEnv) -> FlaskClient:
    return signed_in(env, "alice")


@pytest.fixture
def orders(env: WebEnv, alice: FlaskClient) -> dict[str, int]:
    uid = env.user("alice").id
    with env.database.session() as s:
        a = make_account(s, uid, "Alpha", is_primary=True)
        b = make_account(s, uid, "Beta")
        make_order(s, a.id, "O1", status="open")
        make_order(s, a.id, "O2", status="trigger_pending", order_type="SL", trigger_price="90")
        make_order(s, a.id, "C1", status="complete")
        make_order(s, b.id, "R1", status="rejected", rejection_reason="RMS: insufficient margin")
        make_order(s, b.id, "X1", status="cancelled")
        return {"a": a.id, "b": b.id}


def _order_ids(html: str) -> list[str]:
    table = html.split('id="book-table"', 1)[1].split("</table>", 1)[0]
    return re.findall(r'data-col="order_id"[^>]*>([^<]+)</td>', table)


@pytest.mark.parametrize(
    ("status", "expected"),
    [("open", {"O1", "O2"}), ("complete", {"C1"}), ("rejected", {"R1"}), ("cancelled", {"X1"})],
)
def test_orders_when_status_filtered_shows_only_those_orders(
    alice: FlaskClient, orders: dict[str, int], status: str, expected: set[str]
) -> None:
    html = alice.get(f"/orders?status={status}").get_data(as_text=True)
    assert set(_order_ids(html)) == expected
    assert f'<option value="{status}" selected>' in html
    # The live fragment polls with the same filter, and the subtotals count only the filtered rows.
    assert f"/orders/live?status={status}" in html
    live = alice.get(f"/orders/live?status={status}").get_data(as_text=True)
    assert set(_order_ids(live)) == expected
    total = live.split('id="sub-total"', 1)[1].split("</tr>", 1)[0]
    assert re.search(rf'data-key="n"[^>]*>{len(expected)}</td>', total)


def test_orders_when_status_unknown_ignores_it_and_csv_keeps_the_filter(
    alice: FlaskClient, orders: dict[str, int]
) -> None:
    html = alice.get("/orders?status=weird").get_data(as_text=True)
    assert set(_order_ids(html)) == {"O1", "O2", "C1", "R1", "X1"}
    body = alice.get("/orders.csv?status=open").get_data(as_text=True)
    lines = [line for line in body.splitlines() if line.strip()]
    assert len(lines) == 3  # header + the two open orders
    # The reason is in the CSV as a column of its own; the page shows it under the status.
    assert "Reason" in lines[0]
    rejected = alice.get("/orders?status=rejected").get_data(as_text=True)
    status_cell = rejected.split('data-col="status"', 2)[2].split("</td>", 1)[0]
    assert (
        "rejected" in status_cell and 'class="reason"' in status_cell and "insufficient margin" in status_cell
    )
    assert 'data-col="rejection_reason"' not in rejected


def test_dashboard_open_orders_links_to_open_orders_only(alice: FlaskClient, orders: dict[str, int]) -> None:
    html = alice.get("/").get_data(as_text=True)
    tile = html.split('data-total="open_orders"', 1)[1].split("</dd>", 1)[0]
    assert 'href="/orders?status=open"' in tile and ">2<" in tile
    assert f'href="/orders?account={orders["a"]}&amp;status=open"' in html


def test_book_table_markup_carries_row_ids_priorities_labels_and_units(
    alice: FlaskClient, orders: dict[str, int]
) -> None:
    html = alice.get("/orders").get_data(as_text=True)
    table = html.split('id="book-table"', 1)[1].split("</table>", 1)[0]
    assert len(re.findall(r'<tr id="r-orders-\d+"', table)) == 5
    assert re.search(r'<th scope="col"[^>]*data-prio="3"[^>]*data-col="order_id"', table)
    assert re.search(r'<td[^>]*data-col="quantity" data-label="Qty"', table)
    assert re.search(r'<th[^>]*data-col="average_price">.*?<span class="unit">₹</span></th>', table, re.S)
    assert '<abbr title="Exchange">Exch</abbr>' in table
    # Amount cells leave the ₹ to the header.
    price = re.search(r'<td class="num" data-col="price"[^>]*>([^<]*)</td>', table)
    assert price is not None and price.group(1) == "100.00"
    assert 'hx-swap="morph"' in html and 'hx-ext="morph"' in html


def test_book_times_show_the_date_only_when_not_today(env: WebEnv, alice: FlaskClient) -> None:
    uid = env.user("alice").id
    env.clock.set(BASE_TIME + timedelta(minutes=5))
    with env.database.session() as s:
        a = make_account(s, uid, "Alpha", is_primary=True)
        make_order(s, a.id, "T1", placed_at=BASE_TIME)
        make_order(s, a.id, "Y1", placed_at=BASE_TIME - timedelta(days=1))
    html = alice.get("/orders").get_data(as_text=True)
    cells = re.findall(
        r'data-col="placed_at"[^>]*><time datetime="[^"]+" title="([^"]+)">([^<]+)</time>', html
    )
    shown = sorted(text for _, text in cells)
    assert len(shown) == 2
    assert re.fullmatch(r"\d\d:\d\d:\d\d", shown[0])  # today: time only
    assert re.fullmatch(r"\d\d \w{3} \d\d:\d\d", shown[1])  # yesterday: with its date
    assert all(title.endswith("IST") for title, _ in cells)


# ----------------------------------------------------------------------------------- accounts live


def test_accounts_live_when_polled_renders_the_table_and_follows_changes(
    env: WebEnv, alice: FlaskClient, orders: dict[str, int]
) -> None:
    page = alice.get("/accounts/").get_data(as_text=True)
    assert 'hx-get="/accounts/live"' in page and 'hx-swap="morph"' in page
    live = alice.get("/accounts/live").get_data(as_text=True)
    assert "<html" not in live
    assert f'id="acct-{orders["a"]}"' in live and f'id="acct-{orders["b"]}"' in live
    from sqlalchemy import update

    from algomirror.db.models import TradingAccount

    with env.database.session() as s:
        s.execute(
            update(TradingAccount)
            .where(TradingAccount.id == orders["b"])
            .values(connection_status="auth_failed", last_error="key rejected")
        )
    live = alice.get("/accounts/live").get_data(as_text=True)
    row = live.split(f'id="acct-{orders["b"]}"', 1)[1].split("</tr>", 1)[0]
    assert "auth failed" in row and "key rejected" in row


def test_accounts_live_never_shows_another_users_accounts(env: WebEnv, orders: dict[str, int]) -> None:
    bob = signed_in(env, "bob")
    live = bob.get("/accounts/live").get_data(as_text=True)
    assert "Alpha" not in live and "Beta" not in live


@pytest.mark.parametrize("path", ["/accounts/live", "/header/live"])
def test_live_fragment_when_signed_out_redirects_the_browser_to_sign_in(env: WebEnv, path: str) -> None:
    client = env.app.test_client()
    response = client.get(path, headers={"HX-Request": "true"})
    assert response.status_code == 401
    assert response.headers["HX-Redirect"] == "/login"


# ---------------------------------------------------------------------------------- header, clock


def test_header_live_shows_the_market_clock_and_says_which(env: WebEnv, alice: FlaskClient) -> None:
    env.clock.set(BASE_TIME)
    html = alice.get("/header/live").get_data(as_text=True)
    assert "<html" not in html
    assert re.search(
        r'<span class="clock-label">Market</span> <time datetime="[^"]+">\d\d:\d\d IST</time>', html
    )
    env.app.extensions["algomirror"].market_clock = FakeClock(BASE_TIME + timedelta(hours=3))
    html = alice.get("/header/live").get_data(as_text=True)
    assert "Demo market" in html and "paper exchange" in html
    page = alice.get("/settings/").get_data(as_text=True)
    assert 'id="market-clock"' in page and 'hx-get="/header/live"' in page


def test_navigation_when_signed_in_carries_a_shortcut_per_main_page(alice: FlaskClient) -> None:
    html = alice.get("/settings/").get_data(as_text=True)
    nav = html.split('<nav class="mainnav"', 1)[1].split("</nav>", 1)[0]
    keys = re.findall(r'data-shortcut="([a-z])"', nav)
    assert len(keys) == len(set(keys)) == 11
    assert {"d", "p", "o", "t", "h", "f", "a"} <= set(keys)
    # The help dialog lists every one of them.
    dialog = html.split('id="shortcuts-help"', 1)[1].split("</dialog>", 1)[0]
    assert all(f"<kbd>{key}</kbd>" in dialog for key in keys)
    assert 'aria-current="page"' in nav.split('data-shortcut="e"', 1)[1].split("</li>", 1)[0]


# ------------------------------------------------------------------------------ polls and sessions

POLL = {"HX-Request": "true", "X-AlgoMirror-Poll": "1"}


def test_background_polls_when_a_tab_is_left_open_do_not_keep_the_session_alive(env: WebEnv) -> None:
    alice = signed_in(env, "alice")
    for _ in range(14):  # an hour apart, for longer than the 12-hour idle limit
        env.clock.advance(timedelta(hours=1))
        alice.get("/header/live", headers=POLL)
    response = alice.get("/header/live", headers=POLL)
    assert response.status_code == 401, "the idle session should have ended"


def test_user_requests_keep_the_session_alive_where_polls_do_not(env: WebEnv) -> None:
    alice = signed_in(env, "alice")
    for _ in range(14):
        env.clock.advance(timedelta(hours=1))
        assert alice.get("/settings/").status_code == 200


def test_signed_out_poll_sends_the_browser_to_sign_in_and_back_to_its_page(env: WebEnv) -> None:
    client = env.app.test_client()
    response = client.get(
        "/orders/live", headers={**POLL, "HX-Current-URL": "http://localhost/orders?status=open"}
    )
    assert response.status_code == 401
    assert response.headers["HX-Redirect"] == "/login?next=/orders?status%3Dopen"
    hostile = client.get("/header/live", headers={**POLL, "HX-Current-URL": "http://evil.example//evil"})
    assert hostile.headers["HX-Redirect"] == "/login"


def test_live_regions_mark_their_requests_as_polls(alice: FlaskClient, orders: dict[str, int]) -> None:
    for path in ("/", "/orders", "/accounts/", f"/accounts/{orders['a']}/overview", "/settings/"):
        html = alice.get(path).get_data(as_text=True)
        polled = re.findall(r"<div[^>]*hx-trigger=\"every \d+s\"[^>]*>", html)
        assert polled, path
        assert all("X-AlgoMirror-Poll" in tag for tag in polled), (path, polled)
