"""Activity log page: the user's own entries (admins may look at anyone's), filtered and paginated."""

from __future__ import annotations

from datetime import date, time, timedelta

from flask import Blueprint, render_template, request
from flask.typing import ResponseReturnValue
from flask_login import login_required
from sqlalchemy import Select, false, func, or_, select
from sqlalchemy.orm import Session

from algomirror.db.models import ActivityLog, User
from algomirror.domain.timeutil import ist_combine
from algomirror.web.context import db, me
from algomirror.web.ids import parse_id

bp = Blueprint("activity", __name__, url_prefix="/activity")

PAGE_SIZE = 50


def logged_actions(session_db: Session, user_id: int | None) -> list[str]:
    """The distinct actions present in the activity rows of ``user_id`` (``None``: everyone's), sorted:
    the filter offers exactly what is logged, so a new kind of entry never goes missing from it."""
    query = select(ActivityLog.action).distinct()
    if user_id is not None:
        query = query.where(ActivityLog.user_id == user_id)
    return sorted(str(a) for a in session_db.scalars(query).all() if a)


def _parse_date(value: str | None) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return None


@bp.route("/")
@login_required
def index() -> ResponseReturnValue:
    """The activity log, newest first, ``PAGE_SIZE`` rows a page. GET parameters: ``action``, ``q``
    (text in details, action or IP), ``from``/``to`` (IST dates, inclusive), ``page``; an administrator
    also ``user`` (an id, or "all")."""
    user = me()
    session_db = db()
    args = request.args
    action = (args.get("action") or "").strip()[:100]
    text = (args.get("q") or "").strip()[:200]
    start = _parse_date(args.get("from"))
    end = _parse_date(args.get("to"))
    try:
        page = max(1, min(int(args.get("page", "1")), 100_000))
    except ValueError:
        page = 1
    who: int | None = user.id
    nobody = False
    if user.is_admin:
        raw = (args.get("user") or "").strip()
        if raw == "all":
            who = None
        elif raw.isascii() and raw.isdigit():
            # A number outside the id range names nobody (no query with it: the driver cannot bind it).
            who = parse_id(raw)
            nobody = who is None

    query: Select[tuple[ActivityLog, str]] = select(ActivityLog, User.username).outerjoin(
        User, User.id == ActivityLog.user_id
    )
    if who is not None:
        query = query.where(ActivityLog.user_id == who)
    if nobody:
        query = query.where(false())
    if action:
        query = query.where(ActivityLog.action == action)
    if start:
        query = query.where(ActivityLog.timestamp >= ist_combine(start, time(0, 0)))
    if end:
        query = query.where(ActivityLog.timestamp < ist_combine(end + timedelta(days=1), time(0, 0)))
    if text:
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = query.where(
            or_(
                ActivityLog.details.ilike(pattern, escape="\\"),
                ActivityLog.action.ilike(pattern, escape="\\"),
                ActivityLog.ip_address.ilike(pattern, escape="\\"),
            )
        )
    total = session_db.scalar(select(func.count()).select_from(query.order_by(None).subquery())) or 0
    rows = session_db.execute(
        query.order_by(ActivityLog.timestamp.desc(), ActivityLog.id.desc())
        .limit(PAGE_SIZE)
        .offset((page - 1) * PAGE_SIZE)
    ).all()
    users = session_db.scalars(select(User).order_by(User.username)).all() if user.is_admin else []
    pages = max(1, (total + PAGE_SIZE - 1) // PAGE_SIZE)
    filters = {
        "action": action,
        "q": text,
        "from": start.isoformat() if start else "",
        "to": end.isoformat() if end else "",
        "user": args.get("user", "") if user.is_admin else "",
    }
    return render_template(
        "activity/index.html",
        rows=rows,
        total=total,
        page=page,
        pages=pages,
        actions=logged_actions(session_db, None if user.is_admin else user.id),
        users=users,
        filters=filters,
    )
