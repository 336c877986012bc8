"""The feed manager's database reads and writes (PRODUCT §7.1, §7.3): what to watch per user (accounts,
the symbols of watched executions, the index spots of open runs), the ``websocket_connections`` row per
feed account (``feed:<account id>``) and the ``failover_events`` rows. Run in a worker thread; times are
aware UTC from the market clock.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from algomirror.broker.registry import ClientRegistry
from algomirror.db.models import (
    FailoverEvent,
    Strategy,
    StrategyExecution,
    StrategyLeg,
    StrategyRun,
    TradingAccount,
    WebSocketConnection,
)
from algomirror.db.models.enums import OPEN_RUN_STATUSES
from algomirror.db.session import Database
from algomirror.domain.instruments import UNDERLYINGS
from algomirror.engine.feed_types import WATCHED_EXECUTION_STATUSES, FeedAccount, Key
from algomirror.host_settings import load_host_policy


def load_feed_inputs(
    database: Database, registry: ClientRegistry
) -> tuple[dict[int, list[FeedAccount]], dict[int, set[Key]], dict[int, set[Key]]]:
    """Per user: the active accounts with a key (primary first, then by creation), the (symbol, exchange)
    of its watched executions, and the index spots of the instruments of its open runs. Hands the
    registry the host allow-list first. Raises SQLAlchemyError."""
    with database.session_factory() as session:
        # Clients are built from these rows: hand the registry the host allow-list first.
        registry.set_host_policy(load_host_policy(session))
        rows = session.scalars(
            select(TradingAccount)
            .where(TradingAccount.is_active.is_(True), TradingAccount.api_key_encrypted.is_not(None))
            .order_by(
                TradingAccount.user_id,
                TradingAccount.is_primary.desc(),
                TradingAccount.created_at,
                TradingAccount.id,
            )
        ).all()
        accounts: dict[int, list[FeedAccount]] = {}
        for r in rows:
            accounts.setdefault(r.user_id, []).append(
                FeedAccount(
                    r.id,
                    r.user_id,
                    r.account_name,
                    r.host_url,
                    r.websocket_url,
                    r.api_key_encrypted or "",
                    r.is_primary,
                    r.connection_status,
                )
            )
        at_risk: dict[int, set[Key]] = {}
        for user_id, symbol, exchange in session.execute(
            select(TradingAccount.user_id, StrategyExecution.symbol, StrategyExecution.exchange)
            .join(TradingAccount, TradingAccount.id == StrategyExecution.account_id)
            .where(
                StrategyExecution.status.in_(WATCHED_EXECUTION_STATUSES),
                StrategyExecution.symbol.is_not(None),
                StrategyExecution.exchange.is_not(None),
            )
            .distinct()
        ):
            at_risk.setdefault(user_id, set()).add((symbol, exchange))
        spots: dict[int, set[Key]] = {}
        for user_id, instrument in session.execute(
            select(Strategy.user_id, StrategyLeg.instrument)
            .join(StrategyRun, StrategyRun.strategy_id == Strategy.id)
            .join(StrategyLeg, StrategyLeg.strategy_id == Strategy.id)
            .where(StrategyRun.status.in_(OPEN_RUN_STATUSES))
            .distinct()
        ):
            spec = UNDERLYINGS.get(str(instrument).upper()) if instrument else None
            if spec is not None:
                spots.setdefault(user_id, set()).add((spec.name, spec.spot_exchange))
        return accounts, at_risk, spots


def write_connection_row(
    database: Database,
    account_id: int,
    now: datetime,
    status: str,
    connected: bool,
    disconnected: bool,
    messages: int | None,
) -> None:
    """Update (or create) the feed account's ``websocket_connections`` row: ``status``; a new connection
    resets its times and counts; ``messages`` of the current connection move ``last_heartbeat`` when they
    grew. Nothing when the account was deleted meanwhile. Raises SQLAlchemyError."""
    with database.session() as session:
        connection_id = f"feed:{account_id}"
        row = session.scalars(
            select(WebSocketConnection).where(WebSocketConnection.connection_id == connection_id)
        ).one_or_none()
        if row is None:
            if session.get(TradingAccount, account_id) is None:
                return  # deleted meanwhile
            row = WebSocketConnection(account_id=account_id, connection_id=connection_id)
            session.add(row)
        row.status = status
        if connected:
            row.connected_at = now
            row.disconnected_at = None
            row.messages_received = 0
            row.last_heartbeat = now
        if disconnected:
            row.disconnected_at = now
        if messages is not None:
            if messages != row.messages_received:
                row.last_heartbeat = now
            row.messages_received = messages


def write_failover_row(
    database: Database,
    from_account_id: int | None,
    to_account_id: int | None,
    reason: str,
    success: bool,
    error: str | None,
    now: datetime,
) -> None:
    """One ``failover_events`` row (reason cut to 100 characters). Raises SQLAlchemyError."""
    with database.session() as session:
        session.add(
            FailoverEvent(
                from_account_id=from_account_id,
                to_account_id=to_account_id,
                reason=reason[:100],
                timestamp=now,
                success=success,
                error_message=error,
            )
        )


__all__ = ["load_feed_inputs", "write_connection_row", "write_failover_row"]
