"""Risk area (placeholder until the risk pages land)."""

from __future__ import annotations

from flask import Blueprint, render_template
from flask.typing import ResponseReturnValue
from flask_login import login_required

bp = Blueprint("risk", __name__, url_prefix="/risk")


@bp.route("/")
@login_required
def index() -> ResponseReturnValue:
    """The Risk page (a placeholder until its feature arrives)."""
    return render_template("placeholder.html", title="Risk", area="risk")
