"""Risk area (placeholder until the risk pages land)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template
from flask_login import login_required

bp = Blueprint("risk", __name__, url_prefix="/risk")


@bp.route("/")
@login_required
def index() -> Any:
    return render_template("placeholder.html", title="Risk", area="risk")
