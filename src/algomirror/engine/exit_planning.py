"""The web's side of an exit: one durable ``exit`` command per request, in the caller's transaction
(PRODUCT §6.7; DESIGN §1).

Four scopes, one command kind, one engine path (:class:`~algomirror.engine.exits.ExitExecutor`):

* ``execution`` — one leg on one account (``execution_id``);
* ``account`` — every execution of one account in one run (``run_id``, ``account_id``);
* ``run`` — a whole run of a strategy (``run_id``);
* ``all`` — every open execution of the user ("exit all"; the run's working entry orders are cancelled
  first).

The ids are checked against the user here (another user's id is a :class:`LookupError`, a 404 for the
page) and again by the engine. ``token`` is the page's idempotency token: the same token twice fails with
IntegrityError, so a double click is one command; two different commands for the same executions still
produce one exit each, because the engine claims every execution ``active → exiting`` once.
"""

from __future__ import annotations

from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from algomirror.db.models import (
    EngineCommand,
    Strategy,
    StrategyExecution,
    StrategyRun,
    TradingAccount,
)

EXIT_COMMAND = "exit"
ExitScope = Literal["execution", "account", "run", "all"]
SCOPES: tuple[str, ...] = ("execution", "account", "run", "all")


def _owned_run(session: Session, user_id: int, run_id: int | None) -> int:
    if run_id is None:
        raise ValueError("this exit scope needs a run_id")
    found = session.scalar(
        select(StrategyRun.id)
        .join(Strategy, Strategy.id == StrategyRun.strategy_id)
        .where(StrategyRun.id == run_id, Strategy.user_id == user_id)
    )
    if found is None:
        raise LookupError(f"run {run_id} not found")
    return run_id


def request_exit(
    session: Session,
    *,
    user_id: int,
    scope: ExitScope,
    token: str,
    run_id: int | None = None,
    account_id: int | None = None,
    execution_id: int | None = None,
    reason: str = "manual",
) -> EngineCommand:
    """Queue one ``exit`` command of ``scope`` (the caller commits). Raises ValueError for a scope
    without the ids it needs and LookupError for an id that is not the user's."""
    payload: dict[str, Any] = {"scope": scope, "reason": reason}
    if scope == "execution":
        if execution_id is None:
            raise ValueError("scope 'execution' needs an execution_id")
        found = session.scalar(
            select(StrategyExecution.id)
            .join(Strategy, Strategy.id == StrategyExecution.strategy_id)
            .where(StrategyExecution.id == execution_id, Strategy.user_id == user_id)
        )
        if found is None:
            raise LookupError(f"execution {execution_id} not found")
        payload["execution_id"] = execution_id
    elif scope == "account":
        payload["run_id"] = _owned_run(session, user_id, run_id)
        owned = session.scalar(
            select(TradingAccount.id).where(
                TradingAccount.id == account_id, TradingAccount.user_id == user_id
            )
        )
        if owned is None:
            raise LookupError(f"account {account_id} not found")
        payload["account_id"] = account_id
    elif scope == "run":
        payload["run_id"] = _owned_run(session, user_id, run_id)
    elif scope != "all":
        raise ValueError(f"unknown exit scope {scope!r}")
    command = EngineCommand(user_id=user_id, kind=EXIT_COMMAND, payload=payload, token=token)
    session.add(command)
    session.flush()
    return command


__all__ = ["EXIT_COMMAND", "SCOPES", "ExitScope", "request_exit"]
