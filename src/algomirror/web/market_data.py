"""Market-data pages (issue 12): the live option chain and the feed status page."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("market_data", __name__, url_prefix="/market")
