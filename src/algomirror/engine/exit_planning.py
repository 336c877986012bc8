"""The web's side of an exit: one durable ``exit`` command per request, in the caller's transaction
(PRODUCT §6.7; DESIGN §1).

Four scopes, one command kind, one engine path (:class:`~algomirror.engine.exits.ExitExecutor`):

* ``execution`` — one leg on one account (``execution_id``);
* ``account`` — every execution of one account in one run (``run_id``, ``account_id``);
* ``run`` — a whole run of a strategy (``run_id``);
* ``all`` — every open execution of the user ("exit all", exit reason ``exit_all``; the run's working
  entry orders are cancelled first).

A person's exit (``retry_errors``, on by default for the reasons a person gives: ``manual`` and
``exit_all``) also takes legs in ``error`` (their exit used up its attempts) back to ``exiting`` with
the next attempt number: the "retry exit" of PRODUCT §5.10. :func:`retry_exit` is that button for one
leg; :func:`~algomirror.engine.exit_records.confirm_closed_outside` is the other way out of ``error``.

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
# Reasons only a person gives: their exits also retry legs in error.
PERSON_REASONS = ("manual", "exit_all")


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


def exit_payload(
    scope: ExitScope,
    *,
    reason: str = "manual",
    retry_errors: bool | None = None,
    run_id: int | None = None,
    account_id: int | None = None,
    execution_id: int | None = None,
) -> dict[str, Any]:
    """The payload of an ``exit`` command of ``scope`` from ids already checked against its user (the
    engine parses it with :func:`~algomirror.engine.exits.parse_scope`). ``reason`` "manual" of scope
    ``all`` becomes ``exit_all``; ``retry_errors`` defaults to on for a person's reason. An execution's
    ``run_id`` and ``account_id`` (when known) let the engine take its locks without a read. Raises
    ValueError for a scope without the ids it needs."""
    if scope == "all" and reason == "manual":
        reason = "exit_all"
    if retry_errors is None:
        retry_errors = reason in PERSON_REASONS
    payload: dict[str, Any] = {"scope": scope, "reason": reason}
    if retry_errors:
        payload["retry_errors"] = True
    if scope == "execution":
        if execution_id is None:
            raise ValueError("scope 'execution' needs an execution_id")
        payload["execution_id"] = execution_id
        if run_id is not None:
            payload["run_id"] = run_id
            payload["account_id"] = account_id
    elif scope in ("account", "run"):
        if run_id is None:
            raise ValueError("this exit scope needs a run_id")
        payload["run_id"] = run_id
        if scope == "account":
            if account_id is None:
                raise ValueError("scope 'account' needs an account_id")
            payload["account_id"] = account_id
    elif scope != "all":
        raise ValueError(f"unknown exit scope {scope!r}")
    return payload


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
    retry_errors: bool | None = None,
) -> EngineCommand:
    """Queue one ``exit`` command of ``scope`` (the caller commits). ``reason`` "manual" of scope
    ``all`` is recorded as ``exit_all``; ``retry_errors`` (default: for a person's reason) makes the
    command retry legs in ``error`` too. Raises ValueError for a scope without the ids it needs and
    LookupError for an id that is not the user's."""
    leg_run: int | None = None
    leg_account: int | None = None
    if scope == "execution":
        if execution_id is None:
            raise ValueError("scope 'execution' needs an execution_id")
        found = session.execute(
            select(StrategyExecution.run_id, StrategyExecution.account_id)
            .join(Strategy, Strategy.id == StrategyExecution.strategy_id)
            .where(StrategyExecution.id == execution_id, Strategy.user_id == user_id)
        ).first()
        if found is None:
            raise LookupError(f"execution {execution_id} not found")
        leg_run, leg_account = found.run_id, found.account_id
    elif scope in ("account", "run"):
        leg_run = _owned_run(session, user_id, run_id)
        if scope == "account":
            owned = session.scalar(
                select(TradingAccount.id).where(
                    TradingAccount.id == account_id, TradingAccount.user_id == user_id
                )
            )
            if owned is None:
                raise LookupError(f"account {account_id} not found")
            leg_account = account_id
    payload = exit_payload(
        scope,
        reason=reason,
        retry_errors=retry_errors,
        run_id=leg_run,
        account_id=leg_account,
        execution_id=execution_id,
    )
    command = EngineCommand(user_id=user_id, kind=EXIT_COMMAND, payload=payload, token=token)
    session.add(command)
    session.flush()
    return command


def retry_exit(session: Session, *, user_id: int, execution_id: int, token: str) -> EngineCommand:
    """A person's "retry exit" of one leg (typically in ``error``): an ``execution`` exit command with
    reason ``manual`` that claims ``error → exiting`` (the caller commits). Raises LookupError for an
    execution that is not the user's; the same token twice is an IntegrityError."""
    return request_exit(
        session,
        user_id=user_id,
        scope="execution",
        token=token,
        execution_id=execution_id,
        reason="manual",
        retry_errors=True,
    )


__all__ = [
    "EXIT_COMMAND",
    "PERSON_REASONS",
    "SCOPES",
    "ExitScope",
    "exit_payload",
    "request_exit",
    "retry_exit",
]
