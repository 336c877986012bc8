"""The fencing epoch: the database's word on which engine may write.

The single-instance lock keeps a second engine from *starting*; it cannot stop a first engine that lost
its lock without noticing yet (a dead lock connection, a paused process) from *writing*. So every engine
that wins the lock bumps ``engine_fence.epoch`` (:func:`take_epoch`) and every order-journal write checks,
inside its own transaction, that the stored epoch is still its own (:func:`check_fence`). A stale engine's
write is refused with :class:`FencedOutError` before it can record, and therefore send, an order.

Why the check cannot race the takeover:

- PostgreSQL: :func:`check_fence` reads the row ``FOR SHARE``. A newer engine's :func:`take_epoch`
  updates that row, so it waits until every transaction that already passed the check has ended; a check
  that comes after the takeover commits sees the new epoch.
- SQLite: write transactions begin ``IMMEDIATE`` (one writer at a time for the whole file), so the read in
  :func:`check_fence` and the bump in :func:`take_epoch` are serialized by the database lock.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session

from algomirror.db.models.engine_fence import FENCE_ROW_ID, EngineFence
from algomirror.domain.timeutil import ensure_aware


class FencedOutError(Exception):
    """A newer engine has taken over (the stored epoch is not ours). Halt: the caller must stop sending
    orders and writing the journal at once, and the process should stop; it never retries."""


class FenceMissingError(Exception):
    """The ``engine_fence`` row does not exist: the database is not migrated (run ``algomirror db
    upgrade``). Halt: no engine can be fenced, so none may start."""


def take_epoch(session: Session, *, holder: str, now: datetime) -> int:
    """Bump the fencing epoch by one and return the new value; record ``holder`` (``host:pid``) and ``now``
    (aware; stored UTC) as the acquisition and heartbeat times.

    Call right after winning the single-instance lock, then commit the session: the new epoch fences out
    every older engine from that commit on. The increment is done by the database (``epoch = epoch + 1``)
    so two concurrent callers can never get the same value. Raises :class:`FenceMissingError` when the
    fence row does not exist, and SQLAlchemy errors from the database as they come.
    """
    at = ensure_aware(now)
    result = session.execute(
        update(EngineFence)
        .where(EngineFence.id == FENCE_ROW_ID)
        .values(epoch=EngineFence.epoch + 1, holder=holder[:200], acquired_at=at, heartbeat_at=at)
        .execution_options(synchronize_session=False)
    )
    if not isinstance(result, CursorResult) or result.rowcount != 1:
        raise FenceMissingError("the engine_fence row is missing; run `algomirror db upgrade`")
    epoch = session.scalar(select(EngineFence.epoch).where(EngineFence.id == FENCE_ROW_ID))
    if epoch is None:
        raise FenceMissingError("the engine_fence row is missing; run `algomirror db upgrade`")
    return int(epoch)


def check_fence(session: Session, epoch: int) -> None:
    """Refuse the caller's write transaction unless the stored epoch is ``epoch``.

    Call inside the write transaction, before its writes, and commit (or roll back) promptly: on
    PostgreSQL the row is read ``FOR SHARE`` and a newer engine's :func:`take_epoch` waits for this
    transaction to end. Raises :class:`FencedOutError` when the stored epoch differs (or the fence row is
    gone); the caller must roll back and stop sending.
    """
    # FOR SHARE on PostgreSQL; SQLite has no row locks (the compiler drops the clause) and relies on
    # BEGIN IMMEDIATE write transactions instead.
    stored = session.scalar(
        select(EngineFence.epoch).where(EngineFence.id == FENCE_ROW_ID).with_for_update(read=True)
    )
    if stored is None or int(stored) != epoch:
        raise FencedOutError(f"engine epoch {epoch} is fenced out (the database holds epoch {stored})")


# Built once: the journal's batch writes check the fence on a Core connection (no ORM overhead).
_STORED_EPOCH = select(EngineFence.epoch).where(EngineFence.id == FENCE_ROW_ID).with_for_update(read=True)


def check_fence_on(connection: Connection, epoch: int) -> None:
    """:func:`check_fence` on the Core connection of a write transaction (same lock, same refusal:
    raises :class:`FencedOutError`)."""
    stored = connection.execute(_STORED_EPOCH).scalar()
    if stored is None or int(stored) != epoch:
        raise FencedOutError(f"engine epoch {epoch} is fenced out (the database holds epoch {stored})")


def heartbeat(session: Session, epoch: int, now: datetime) -> None:
    """Record ``now`` (aware; stored UTC) as the fence's heartbeat, only if ``epoch`` is still the stored
    epoch. The caller commits. Raises :class:`FencedOutError` when a newer engine has taken over."""
    result = session.execute(
        update(EngineFence)
        .where(EngineFence.id == FENCE_ROW_ID, EngineFence.epoch == epoch)
        .values(heartbeat_at=ensure_aware(now))
        .execution_options(synchronize_session=False)
    )
    if not isinstance(result, CursorResult) or result.rowcount != 1:
        raise FencedOutError(f"engine epoch {epoch} is fenced out (a newer engine has taken over)")


__all__ = [
    "FenceMissingError",
    "FencedOutError",
    "check_fence",
    "check_fence_on",
    "heartbeat",
    "take_epoch",
]
