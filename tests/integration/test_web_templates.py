"""Template helpers shared by every page: ``inr``, ``ist``, ``money_class``, ``masked_key``."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from flask import render_template_string

from algomirror.web.app import money_class
from tests.integration.web_support import make_env


def test_money_class_when_signed_amounts_given_names_the_sign() -> None:
    assert money_class(Decimal("12.5")) == "positive"
    assert money_class(Decimal("-0.01")) == "negative"
    assert money_class(Decimal(0)) == "zero"
    assert money_class(None) == "unknown"


def test_template_filters_when_rendered_format_inr_ist_and_masked_key(tmp_path: Path) -> None:
    env = make_env(f"sqlite:///{tmp_path / 'unused.db'}", tmp_path)
    at = datetime(2026, 11, 23, 18, 45, tzinfo=UTC)
    with env.app.test_request_context("/"):
        html = render_template_string(
            "{{ a|inr }}|{{ b|inr(0) }}|{{ none|inr }}|{{ at|ist }}|{{ k|masked_key }}|"
            "{{ money_class(b) }}|{{ a|money_class }}",
            a=Decimal("123456.5"),
            b=Decimal("-2500"),
            none=None,
            at=at,
            k="WXYZ",
        )
    assert html == "₹1,23,456.50|-₹2,500|—|24 Nov 2026 00:15:00 IST|••••WXYZ|negative|positive"
    env.database.dispose()
