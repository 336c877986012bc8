"""Strategies area (placeholder until the strategy builder lands)."""

from __future__ import annotations

from flask import Blueprint, render_template
from flask.typing import ResponseReturnValue
from flask_login import login_required

bp = Blueprint("strategies", __name__, url_prefix="/strategies")


@bp.route("/")
@login_required
def index() -> ResponseReturnValue:
    """The Strategies page (a placeholder until its feature arrives)."""
    return render_template("placeholder.html", title="Strategies", area="strategies")
