"""Trading calendar pages (being built)."""

from __future__ import annotations

from flask import Blueprint, render_template
from flask.typing import ResponseReturnValue
from flask_login import login_required

bp = Blueprint("calendar", __name__, url_prefix="/calendar")


@bp.route("/")
@login_required
def index() -> ResponseReturnValue:
    """The Trading calendar overview."""
    return render_template("placeholder.html", title="Trading calendar")
