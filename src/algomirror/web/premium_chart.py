"""The premium/Supertrend chart's data (issue 12): ``GET /risk/runs/<run_id>/premium.json``."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("premium_chart", __name__, url_prefix="/risk/runs")
