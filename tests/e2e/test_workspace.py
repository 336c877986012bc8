"""The trader's workspace in a real browser, at a laptop's 1440×900 and a phone's 390×844, on the running
demo (paper exchange, engine sync, live refresh): tables fit, live updates leave the page where the user
put it, long names do not break pages, one market clock, the live Accounts list, the Orders status
filter, the index strip, shortcuts and the dark theme.

Screenshots of every page at both sizes land in tests/e2e/artifacts/ for a person to look at; the
assertions measure the rendered page (scroll widths, computed styles, element identity, positions)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from algomirror.db.models import TradingAccount
from tests.e2e.conftest import Demo, sign_in_demo
from tests.helpers import eventually

pytestmark = pytest.mark.e2e

LAPTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}
VIEWPORTS = {"1440x900": LAPTOP, "390x844": PHONE}
# The longest name an account may have (100 characters), given to one demo account for the whole module.
LONG_NAME = "Gamma " + "very-long-account-name-" * 4 + "x" * 2
LONG_NAME = (LONG_NAME + "y" * 100)[:100]
PAGES = ("/", "/positions", "/orders", "/trades", "/holdings", "/funds", "/accounts", "/activity")

OVERFLOW_JS = """() => ({
  page: document.documentElement.scrollWidth - window.innerWidth,
  tables: [...document.querySelectorAll('.table-wrap')].map(w => ({
    id: (w.querySelector('table') || {}).id || w.id || '',
    over: w.scrollWidth - w.clientWidth,
  })),
})"""


@pytest.fixture(scope="module")
def demo(demo_server: Demo) -> Demo:
    """The demo with a 100-character account name and its books synced."""
    with demo_server.database.session() as s:
        s.execute(
            update(TradingAccount)
            .where(TradingAccount.account_name == "Demo Gamma")
            .values(account_name=LONG_NAME)
        )
    return demo_server


def _open(demo: Demo, chromium: Any, viewport: dict[str, int], **options: Any) -> Any:
    context = chromium.new_context(viewport=viewport, **options)
    page = context.new_page()
    page.set_default_timeout(15_000)
    problems: list[str] = []
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.problems = problems
    sign_in_demo(page, demo)
    return page


@pytest.fixture(params=list(VIEWPORTS), ids=list(VIEWPORTS))
def page(request: pytest.FixtureRequest, demo: Demo, chromium: Any) -> Iterator[Any]:
    viewed = _open(demo, chromium, VIEWPORTS[request.param])
    viewed.viewport_name = request.param
    yield viewed
    viewed.context.close()


@pytest.fixture
def laptop(demo: Demo, chromium: Any) -> Iterator[Any]:
    viewed = _open(demo, chromium, LAPTOP)
    yield viewed
    viewed.context.close()


def _wait_for_rows(page: Any, minimum: int) -> None:
    rows = page.locator("#book-table tbody tr")
    eventually(lambda: rows.count() >= minimum, timeout=45, interval=0.25, what=f"{minimum} synced rows")


def _morphs(page: Any) -> int:
    return int(page.evaluate("() => window.__morphs || 0"))


def _count_morphs(page: Any) -> None:
    page.evaluate(
        "() => { window.__morphs = 0; "
        "document.addEventListener('algomirror:morphed', () => window.__morphs++); }"
    )


def _wait_for_refreshes(page: Any, n: int = 2) -> None:
    start = _morphs(page)
    eventually(lambda: _morphs(page) >= start + n, timeout=20, interval=0.1, what=f"{n} live refreshes")


# ------------------------------------------------------------------------------------- fit (2, 3)


def test_pages_when_rendered_fit_the_viewport_without_horizontal_scroll(
    page: Any, demo: Demo, artifacts_dir: Path
) -> None:
    page.goto(demo.url + "/orders")
    _wait_for_rows(page, 15)
    overview = page.locator("#book-table tbody tr").first.locator("td.name-cell a").get_attribute("href")
    for path in (*PAGES, overview):
        page.goto(demo.url + path)
        page.wait_for_load_state("load")
        measured = page.evaluate(OVERFLOW_JS)
        name = path.strip("/").replace("/", "-") or "dashboard"
        page.screenshot(path=str(artifacts_dir / f"{page.viewport_name}-{name}.png"), full_page=True)
        assert measured["page"] <= 0, f"{path} scrolls sideways at {page.viewport_name}: {measured}"
        for table in measured["tables"]:
            assert table["over"] <= 1, (
                f"{path}: table {table['id']} needs a sideways scroll at {page.viewport_name}"
            )
    assert not page.problems, page.problems


def test_long_account_name_when_shown_is_ellipsized_with_full_text_on_hover(page: Any, demo: Demo) -> None:
    page.goto(demo.url + "/positions")
    _wait_for_rows(page, 12)
    for path, selector in (
        ("/", f'.account-card h3 a[title="{LONG_NAME}"]'),
        ("/positions", f'#subtotals a[title="{LONG_NAME}"]'),
        ("/positions", f'#book-table a[title="{LONG_NAME}"]'),
        ("/accounts", f'#accounts-table a[title="{LONG_NAME}"]'),
    ):
        page.goto(demo.url + path)
        link = page.locator(selector).first
        eventually(lambda link=link: link.count() == 1, timeout=15, what=f"long name on {path}")
        box = link.bounding_box()
        assert box is not None and box["width"] < 400, f"{path}: the name is {box} wide"
        cut = link.evaluate(
            "e => e.scrollWidth > e.clientWidth || e.parentElement.scrollWidth > e.parentElement.clientWidth"
        )
        assert cut, f"{path}: a 100-character name should be cut with an ellipsis"
        assert link.inner_text().strip() == LONG_NAME  # the full text stays (copy, screen readers)
    # The activity log wraps long details inside its column instead of widening the table.
    with demo.database.session() as s:
        from algomirror.db.models import ActivityLog

        user_id = s.scalar(select(TradingAccount.user_id).where(TradingAccount.account_name == LONG_NAME))
        s.add(
            ActivityLog(
                user_id=user_id, action="connection_tested", details=f"account {LONG_NAME}: " + "z" * 300
            )
        )
    page.goto(demo.url + "/activity")
    details = page.locator("table.activity td.details").first
    assert "z" * 50 in details.inner_text().replace("\n", "")
    assert page.evaluate(OVERFLOW_JS)["page"] <= 0


def test_book_rows_on_a_phone_are_cards_with_the_figures_a_trader_needs(demo: Demo, chromium: Any) -> None:
    phone = _open(demo, chromium, PHONE)
    try:
        for path, labels in (
            ("/orders", {"Side", "Qty", "Status"}),
            ("/positions", {"Qty", "LTP", "P&L"}),
        ):
            phone.goto(demo.url + path)
            _wait_for_rows(phone, 12)
            row = phone.locator("#book-table tbody tr").first
            assert row.evaluate("e => getComputedStyle(e).display") == "grid"
            visible = row.evaluate(
                """e => [...e.querySelectorAll('td')].filter(td => getComputedStyle(td).display !== 'none')
                          .map(td => td.dataset.label || td.dataset.col || '')"""
            )
            assert labels <= set(visible), (path, visible)
            assert row.locator('td[data-col="symbol"]').is_visible()
            # The least important fields are left out of the card.
            hidden = row.evaluate(
                "e => [...e.querySelectorAll('td[data-prio]')]"
                ".every(td => getComputedStyle(td).display === 'none')"
            )
            assert hidden
            # Each visible figure is labelled (the card's small caption comes from data-label).
            caption = row.locator('td[data-col="quantity"]').evaluate(
                "td => getComputedStyle(td, '::before').content"
            )
            assert "Qty" in caption
    finally:
        phone.context.close()


def test_laptop_hides_nothing_and_narrow_laptop_drops_low_priority_columns_first(
    demo: Demo, chromium: Any
) -> None:
    viewed = _open(demo, chromium, LAPTOP)
    try:
        viewed.goto(demo.url + "/orders")
        _wait_for_rows(viewed, 15)
        shown = viewed.locator("#book-table thead th:visible").count()
        total = viewed.locator("#book-table thead th").count()
        assert shown == total  # all of Orders (Status included) at 1440 px
        viewed.set_viewport_size({"width": 1024, "height": 800})
        assert viewed.locator('#book-table th[data-col="order_id"]').is_hidden()
        assert viewed.locator('#book-table th[data-col="status"]').is_visible()
        assert viewed.evaluate(OVERFLOW_JS)["page"] <= 0
    finally:
        viewed.context.close()


# ------------------------------------------------------------------------------ live refresh (1)


@pytest.mark.parametrize("size", ["1440x520", "390x844"])
def test_live_refresh_keeps_scroll_focus_selection_and_the_rows_themselves(
    demo: Demo, chromium: Any, artifacts_dir: Path, size: str
) -> None:
    # A laptop with a short window: the Orders table scrolls inside its box and the page scrolls too.
    # A phone: the cards make a long page that scrolls.
    width, height = (int(n) for n in size.split("x"))
    viewed = _open(demo, chromium, {"width": width, "height": height})
    try:
        viewed.goto(demo.url + "/orders")
        _wait_for_rows(viewed, 15)
        _count_morphs(viewed)
        box = viewed.locator("#book-scroll")
        # Focus and select first (focusing scrolls the link into view), then put the scrolls in place.
        cancel = viewed.get_by_role("link", name=re.compile(r"Cancel order")).first
        cancel.focus()
        focused_id = viewed.evaluate("() => document.activeElement.closest('tr').id")
        symbol = viewed.locator('#book-table tbody tr td[data-col="symbol"]').nth(3)
        symbol.evaluate(
            "td => { const r = document.createRange(); r.selectNodeContents(td); "
            "const s = getSelection(); s.removeAllRanges(); s.addRange(r); }"
        )
        selected = viewed.evaluate("() => getSelection().toString()")
        assert selected
        inner = width > 900
        if inner:
            assert box.evaluate("e => e.scrollHeight > e.clientHeight"), "the table should scroll in its box"
            box.evaluate("e => { e.scrollTop = 90; }")
        viewed.evaluate("() => window.scrollTo(0, 150)")
        before = viewed.evaluate("() => [window.scrollY, document.getElementById('book-scroll').scrollTop]")
        assert before[0] > 0 and (before[1] > 0 or not inner)
        # Tag the rows: a replaced container would bring new elements without the tag.
        viewed.evaluate(
            "() => document.querySelectorAll('#book-table tbody tr').forEach(r => { r.__kept = true; })"
        )
        first_row = viewed.locator("#book-table tbody tr").nth(5)
        position = first_row.bounding_box()
        as_of = viewed.locator("#as-of").inner_text()
        viewed.screenshot(path=str(artifacts_dir / f"refresh-before-{size}.png"))

        _wait_for_refreshes(viewed, 2)
        eventually(lambda: viewed.locator("#as-of").inner_text() != as_of, timeout=10, what="new 'as of'")
        viewed.screenshot(path=str(artifacts_dir / f"refresh-after-{size}.png"))
        after = viewed.evaluate("() => [window.scrollY, document.getElementById('book-scroll').scrollTop]")
        assert after == before, "the refresh moved the page or the table"
        assert first_row.bounding_box() == position, "a row moved on screen"
        assert viewed.evaluate(
            "() => [...document.querySelectorAll('#book-table tbody tr')].every(r => r.__kept)"
        )
        assert (
            viewed.evaluate(
                "() => document.activeElement.closest('tr') && document.activeElement.closest('tr').id"
            )
            == focused_id
        )
        assert viewed.evaluate("() => getSelection().toString()") == selected
        assert not viewed.problems, viewed.problems
    finally:
        viewed.context.close()


def test_live_refresh_keeps_a_sideways_scroll(demo: Demo, chromium: Any) -> None:
    # On a phone the header's index strip scrolls sideways and refreshes every few seconds.
    phone = _open(demo, chromium, PHONE)
    try:
        phone.goto(demo.url + "/positions")
        strip = phone.locator("#header-live .index-strip")
        eventually(lambda: strip.count() == 1, timeout=30, interval=0.25, what="index strip")
        _count_morphs(phone)
        wide = strip.evaluate("e => e.scrollWidth > e.clientWidth")
        assert wide, "the index strip should scroll sideways on a phone"
        strip.evaluate("e => { e.scrollLeft = 60; }")
        left = strip.evaluate("e => e.scrollLeft")
        assert left > 0
        _wait_for_refreshes(phone, 2)
        assert strip.evaluate("e => e.scrollLeft") == left
    finally:
        phone.context.close()


# ------------------------------------------------------------------------------------ clock (8)


def test_every_page_shows_one_market_clock_and_says_which(page: Any, demo: Demo) -> None:
    page.goto(demo.url + "/positions")
    _wait_for_rows(page, 12)
    page.reload()  # the header and "as of" of one render, before any refresh replaces either
    clock = page.locator("#market-clock")
    assert "Demo market" in clock.inner_text()
    assert "paper exchange" in (clock.get_attribute("title") or "")
    header = datetime.fromisoformat(clock.locator("time").get_attribute("datetime") or "")
    as_of = page.locator("#as-of").inner_text()
    assert "demo market clock" in as_of
    rendered = datetime.fromisoformat(page.locator("#as-of time").get_attribute("datetime") or "")
    assert abs(header - rendered) < timedelta(minutes=2), (header, rendered)
    # Positions are stamped by the same clock as the header (the demo's sync runs every second).
    stamps = page.locator('#book-table td[data-col="updated_at"] time').evaluate_all(
        "ts => ts.map(t => t.getAttribute('datetime'))"
    )
    now = datetime.fromisoformat(page.locator("#as-of time").get_attribute("datetime") or "")
    assert stamps
    for stamp in stamps:
        assert abs(datetime.fromisoformat(stamp) - now) < timedelta(minutes=10), (stamp, now)
    for path in ("/", "/accounts", "/activity", "/settings"):
        page.goto(demo.url + path)
        assert "Demo market" in page.locator("#market-clock").inner_text()


# ---------------------------------------------------------------------------- accounts live (12)


def test_accounts_list_when_an_account_changes_updates_without_reload(page: Any, demo: Demo) -> None:
    laptop = page
    laptop.goto(demo.url + "/accounts")
    row = laptop.locator("#accounts-table tr", has_text="Demo Beta")
    assert "Backup" in row.inner_text()
    origin = laptop.evaluate("() => performance.timeOrigin")
    with demo.database.session() as s:
        s.execute(
            update(TradingAccount).where(TradingAccount.account_name == "Demo Beta").values(is_active=False)
        )
    try:
        eventually(
            lambda: "inactive" in row.inner_text(), timeout=15, interval=0.2, what="row shows inactive"
        )
        assert row.get_by_role("button", name="Activate").is_visible()
        assert laptop.evaluate("() => performance.timeOrigin") == origin, "the page must not reload"
    finally:
        with demo.database.session() as s:
            s.execute(
                update(TradingAccount)
                .where(TradingAccount.account_name == "Demo Beta")
                .values(is_active=True)
            )
    eventually(lambda: "inactive" not in row.inner_text(), timeout=15, interval=0.2, what="row active again")


# -------------------------------------------------------------------------- rupees, activity (9, 10)


def test_rupees_use_indian_grouping_and_market_orders_show_no_price(page: Any, demo: Demo) -> None:
    page.goto(demo.url + "/")
    cash = page.locator('[data-total="available_cash"]')
    eventually(lambda: "₹" in cash.inner_text(), timeout=30, interval=0.25, what="funds synced")
    # The demo accounts hold crores: 2,91,42,997.00 style, never 29,142,997.00.
    assert re.fullmatch(r"₹\d{1,2}(,\d\d)+,\d{3}\.\d\d", cash.inner_text().strip()), cash.inner_text()
    page.goto(demo.url + "/orders?symbol=PE")
    _wait_for_rows(page, 1)
    if page.viewport_name == "1440x900":
        market = page.locator("#book-table tbody tr", has_text="MARKET").first
        assert market.locator('td[data-col="price"]').inner_text().strip() == "—"
        assert market.locator('td[data-col="trigger_price"]').inner_text().strip() == "—"


def test_activity_filter_lists_what_was_logged_and_history_keeps_to_connections(
    page: Any, demo: Demo
) -> None:
    if page.viewport_name == "1440x900":
        # Cancel one of the demo's two resting orders (the phone run finds its log entries too).
        page.goto(demo.url + "/orders?status=open")
        _wait_for_rows(page, 1)
        page.get_by_role("link", name=re.compile(r"Cancel order")).first.click()
        page.get_by_role("button", name="Yes, cancel this order").click()

        def cancelled() -> bool:
            page.goto(demo.url + "/activity?action=order_cancelled")
            return page.locator("table.activity tbody td.details").count() >= 1

        eventually(cancelled, timeout=30, interval=0.5, what="the engine cancelled the order")
    page.goto(demo.url + "/activity")
    options = page.locator("#f-action option").evaluate_all("os => os.map(o => o.value)")
    assert {"demo_seeded", "order_cancel_requested", "order_cancelled"} <= set(options), options
    page.get_by_label("Action").select_option("demo_seeded")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r".*action=demo_seeded"))
    assert page.locator("table.activity tbody tr").count() >= 1
    assert page.evaluate(OVERFLOW_JS)["page"] <= 0
    page.goto(demo.url + "/")
    page.locator(".account-card h3 a").first.click()
    page.wait_for_url(re.compile(r".*/accounts/\d+/overview$"))
    history = page.locator("#acct-history-card")
    assert history.is_visible()
    assert "cancel" not in history.inner_text().lower()


# ------------------------------------------------------------------------- on top: filters etc.


def test_open_orders_tile_when_clicked_lists_open_orders_only(page: Any, demo: Demo) -> None:
    page.goto(demo.url + "/orders")
    _wait_for_rows(page, 15)
    page.goto(demo.url + "/")
    page.locator('[data-total="open_orders"] a').click()
    page.wait_for_url(re.compile(r".*/orders\?status=open$"))
    statuses = page.locator('#book-table td[data-col="status"] .ostatus').all_inner_texts()
    assert statuses and all(s.strip() in ("open", "trigger pending") for s in statuses), statuses
    assert page.get_by_label("Status").input_value() == "open"
    page.get_by_label("Status").select_option("complete")
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url(re.compile(r".*status=complete"))
    statuses = page.locator('#book-table td[data-col="status"] .ostatus').all_inner_texts()
    assert statuses and {s.strip() for s in statuses} == {"complete"}


def test_index_strip_when_synced_shows_the_three_indices_with_change(page: Any, demo: Demo) -> None:
    page.goto(demo.url + "/")
    strip = page.locator("#header-live .index-strip")
    eventually(lambda: strip.locator("li").count() == 3, timeout=30, interval=0.25, what="three indices")
    names = strip.locator("li").evaluate_all("ls => ls.map(l => l.dataset.index)")
    assert names == ["NIFTY", "BANKNIFTY", "SENSEX"]
    text = strip.inner_text()
    assert re.search(r"\d{2},\d{3}\.\d{2}", text), text
    assert "%" in text and "ago" in text


def test_keyboard_shortcuts_move_between_pages_and_focus_the_filter(laptop: Any, demo: Demo) -> None:
    laptop.goto(demo.url + "/")
    laptop.keyboard.press("g")
    laptop.keyboard.press("o")
    laptop.wait_for_url(re.compile(r".*/orders$"))
    origin = laptop.evaluate("() => performance.timeOrigin")
    laptop.keyboard.press("/")
    assert laptop.evaluate("() => document.activeElement.id") == "f-symbol"
    laptop.keyboard.type("gp")  # typing in the filter is text, not "go to Positions"
    assert laptop.locator("#f-symbol").input_value() == "gp"
    laptop.locator("#f-symbol").blur()
    laptop.keyboard.press("?")
    assert laptop.get_by_role("dialog", name="Keyboard shortcuts").is_visible()
    assert laptop.url.endswith("/orders") and laptop.evaluate("() => performance.timeOrigin") == origin
    laptop.keyboard.press("Escape")
    laptop.keyboard.press("g")
    laptop.keyboard.press("p")
    laptop.wait_for_url(re.compile(r".*/positions$"))


@pytest.mark.parametrize("viewport", list(VIEWPORTS))
def test_dark_theme_follows_the_system_and_the_toggle_overrides_it(
    demo: Demo, chromium: Any, viewport: str
) -> None:
    dark = _open(demo, chromium, VIEWPORTS[viewport], color_scheme="dark")
    try:
        background = "() => getComputedStyle(document.body).backgroundColor"
        assert dark.evaluate(background) == "rgb(15, 20, 27)"  # the dark --bg
        toggle = dark.locator("#theme-toggle")
        assert toggle.inner_text() == "Theme: system"
        toggle.click()  # the first click always changes what is seen: → light
        assert toggle.inner_text() == "Theme: light"
        assert dark.evaluate(background) == "rgb(245, 246, 248)"
        dark.reload()
        assert dark.evaluate(background) == "rgb(245, 246, 248)", "the choice survives a reload"
        dark.locator("#theme-toggle").click()  # → dark, pinned
        assert dark.locator("#theme-toggle").inner_text() == "Theme: dark"
        dark.locator("#theme-toggle").click()  # → system again
        assert dark.locator("#theme-toggle").inner_text() == "Theme: system"
        assert dark.evaluate(background) == "rgb(15, 20, 27)"
    finally:
        dark.context.close()
