"""Strategies area (placeholder until the strategy builder lands)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template
from flask_login import login_required

bp = Blueprint("strategies", __name__, url_prefix="/strategies")


@bp.route("/")
@login_required
def index() -> Any:
    return render_template("placeholder.html", title="Strategies", area="strategies")
