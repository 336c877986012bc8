"""Margins pages (being built)."""

from __future__ import annotations

from flask import Blueprint, render_template
from flask.typing import ResponseReturnValue
from flask_login import login_required

bp = Blueprint("margins", __name__, url_prefix="/margins")


@bp.route("/")
@login_required
def index() -> ResponseReturnValue:
    """The Margins overview."""
    return render_template("placeholder.html", title="Margins")
