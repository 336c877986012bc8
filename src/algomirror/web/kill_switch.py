"""Kill switch pages (issue 12): per-account daily loss limits and the global flatten-and-stop switch."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("kill_switch", __name__, url_prefix="/risk/kill")
