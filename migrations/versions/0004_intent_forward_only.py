"""The order journal's states move forward only, enforced by the database (issue 8).

A trigger on ``order_intents`` refuses an INSERT in any state but ``created`` and an UPDATE of ``state``
that the journal's state machine (``algomirror.domain.order_state``) does not allow, so no writer — ORM,
Core ``update()`` or raw SQL — can move an intent backwards or out of a terminal state. The transitions
are written out literally: a migration must not change when the app's code does.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (from, allowed next states); staying in the same state is always allowed.
FORWARD: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("created", ("sent", "rejected", "cancelled")),
    ("sent", ("acknowledged", "unknown", "complete", "cancelled", "rejected")),
    ("acknowledged", ("complete", "cancelled", "rejected")),
    ("unknown", ("acknowledged", "complete", "cancelled", "rejected")),
)

MESSAGE = "order_intents: illegal state transition"


def _allowed(old: str, new: str) -> str:
    """SQL that is true when ``old → new`` is a legal move (same-state writes included)."""
    pairs = " OR ".join(
        f"({old} = '{state}' AND {new} IN ({', '.join(repr(n) for n in nexts)}))" for state, nexts in FORWARD
    )
    return f"({new} = {old} OR {pairs})"


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            "CREATE TRIGGER trg_order_intents_insert_created BEFORE INSERT ON order_intents "
            "WHEN NEW.state <> 'created' "
            "BEGIN SELECT RAISE(ABORT, 'order_intents: a new intent starts created'); END"
        )
        op.execute(
            "CREATE TRIGGER trg_order_intents_forward_only BEFORE UPDATE OF state ON order_intents "
            f"WHEN NOT {_allowed('OLD.state', 'NEW.state')} "
            f"BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END"
        )
        return
    op.execute(
        "CREATE FUNCTION order_intents_forward_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN "
        "IF TG_OP = 'INSERT' THEN "
        "  IF NEW.state <> 'created' THEN "
        "    RAISE EXCEPTION 'order_intents: a new intent starts created' USING ERRCODE = 'check_violation'; "
        "  END IF; "
        f"ELSIF NOT {_allowed('OLD.state', 'NEW.state')} THEN "
        f"  RAISE EXCEPTION '{MESSAGE} % -> %', OLD.state, NEW.state USING ERRCODE = 'check_violation'; "
        "END IF; "
        "RETURN NEW; "
        "END $$"
    )
    op.execute(
        "CREATE TRIGGER trg_order_intents_forward_only BEFORE INSERT OR UPDATE OF state ON order_intents "
        "FOR EACH ROW EXECUTE FUNCTION order_intents_forward_only()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER trg_order_intents_forward_only")
        op.execute("DROP TRIGGER trg_order_intents_insert_created")
        return
    op.execute("DROP TRIGGER trg_order_intents_forward_only ON order_intents")
    op.execute("DROP FUNCTION order_intents_forward_only()")
