"""The main navigation in a real browser on the running demo: at a 1280 px laptop every item (Settings and
Admin last) is on screen without a sideways scroll; on a 390 px phone the row scrolls sideways and every
item can be brought into view and opened. Screenshots land in tests/e2e/artifacts/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Demo, signed_in_page

pytestmark = pytest.mark.e2e

# Each link's box against the nav's visible box (the nav scrolls sideways when it must).
LINKS_JS = """() => {
  const nav = document.querySelector('nav.mainnav');
  const box = nav.getBoundingClientRect();
  return {
    scroll: nav.scrollWidth - nav.clientWidth,
    links: [...nav.querySelectorAll('a')].map(a => {
      const r = a.getBoundingClientRect();
      return {label: a.textContent.trim(), left: r.left, right: r.right,
              inside: r.left >= box.left - 0.5 && r.right <= box.right + 0.5 && r.right <= window.innerWidth};
    }),
  };
}"""


def test_every_nav_item_is_on_screen_at_1280_px(
    demo_server: Demo, chromium: Any, artifacts_dir: Path
) -> None:
    page = signed_in_page(demo_server, chromium, 1280, 800)
    try:
        for path in ("/", "/settings/"):
            page.goto(demo_server.url + path)
            measured = page.evaluate(LINKS_JS)
            page.screenshot(path=str(artifacts_dir / f"nav-1280-{path.strip('/') or 'home'}.png"))
            labels = [link["label"] for link in measured["links"]]
            assert "Settings" in labels and "Strategies" in labels, labels
            hidden = [link["label"] for link in measured["links"] if not link["inside"]]
            assert measured["scroll"] <= 0 and hidden == [], f"{path}: cut off at 1280 px: {hidden}"
    finally:
        page.context.close()


def test_every_nav_item_can_be_reached_and_opened_on_a_phone(demo_server: Demo, chromium: Any) -> None:
    page = signed_in_page(demo_server, chromium, 390, 844)
    try:
        page.goto(demo_server.url + "/")
        labels = [link["label"] for link in page.evaluate(LINKS_JS)["links"]]
        nav = page.get_by_role("navigation", name="Main")
        for label in labels:
            link = nav.get_by_role("link", name=label, exact=True)
            link.scroll_into_view_if_needed()
            box = link.bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390 + 0.5, (label, box)
        # The last one opens its page (it was reachable, not only present).
        last = nav.get_by_role("link", name=labels[-1], exact=True)
        last.scroll_into_view_if_needed()
        last.click()
        page.wait_for_load_state()
        current = nav.locator('a[aria-current="page"]')
        assert current.inner_text().strip() == labels[-1]
    finally:
        page.context.close()
