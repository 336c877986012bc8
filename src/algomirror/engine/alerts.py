"""Alerts a person must acknowledge (``engine_alerts``), raised by the engine, shown by the web.

An alert is raised when the engine cannot settle something on its own: reconciliation found broker state
it cannot explain, an exit used up its attempts, a failed leg was kept open. The same open alert is not
raised twice (same user, kind, account, run, execution and title): a component that finds the same
problem on every pass adds nothing until a person has acknowledged the first one.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.orm import InstrumentedAttribute, Session

from algomirror.db.models import EngineAlert
from algomirror.db.models.alerts import ALERT_SEVERITIES
from algomirror.domain.timeutil import ensure_aware

_MAX_TITLE = 300
_MAX_DETAILS = 4000


def raise_alert(
    session: Session,
    *,
    user_id: int,
    kind: str,
    title: str,
    now: datetime,
    severity: str = "warning",
    details: str | None = None,
    account_id: int | None = None,
    run_id: int | None = None,
    execution_id: int | None = None,
) -> EngineAlert:
    """Add an open alert (the caller commits), or return the identical open one already there.

    ``now`` is aware (stored UTC). Raises ValueError for an unknown ``severity``.
    """
    if severity not in ALERT_SEVERITIES:
        raise ValueError(f"unknown alert severity {severity!r}")
    title = title[:_MAX_TITLE]
    existing = session.scalar(
        select(EngineAlert).where(
            EngineAlert.user_id == user_id,
            EngineAlert.kind == kind,
            EngineAlert.title == title,
            EngineAlert.acknowledged_at.is_(None),
            _same(EngineAlert.account_id, account_id),
            _same(EngineAlert.run_id, run_id),
            _same(EngineAlert.execution_id, execution_id),
        )
    )
    if existing is not None:
        return existing
    alert = EngineAlert(
        user_id=user_id,
        kind=kind,
        severity=severity,
        title=title,
        details=details[:_MAX_DETAILS] if details else None,
        account_id=account_id,
        run_id=run_id,
        execution_id=execution_id,
        created_at=ensure_aware(now),
    )
    session.add(alert)
    session.flush()
    return alert


def _same(column: InstrumentedAttribute[int | None], value: int | None) -> ColumnElement[bool]:
    return column.is_(None) if value is None else column == value


def open_alerts(session: Session, user_id: int, *, limit: int = 50) -> list[EngineAlert]:
    """The user's unacknowledged alerts, most severe and newest first."""
    order = {"critical": 0, "warning": 1, "info": 2}
    rows = session.scalars(
        select(EngineAlert)
        .where(EngineAlert.user_id == user_id, EngineAlert.acknowledged_at.is_(None))
        .order_by(EngineAlert.created_at.desc(), EngineAlert.id.desc())
        .limit(limit)
    ).all()
    return sorted(rows, key=lambda a: order.get(a.severity, 3))


def acknowledge_alert(session: Session, alert_id: int, *, user_id: int, now: datetime) -> bool:
    """Mark one of the user's open alerts acknowledged (the caller commits). False when there is no such
    open alert of this user (another user's id acts as missing)."""
    result = session.execute(
        update(EngineAlert)
        .where(
            EngineAlert.id == alert_id,
            EngineAlert.user_id == user_id,
            EngineAlert.acknowledged_at.is_(None),
        )
        .values(acknowledged_at=ensure_aware(now), acknowledged_by=user_id)
    )
    return bool(getattr(result, "rowcount", 0))
