"""The pieces a chaos run drives (issue 13, part C): the paper exchange (in this process, accelerated ×1
clock inside a trading session, control API on), its control API over HTTP, a fresh database migrated to
head and seeded (one user, accounts keyed with the exchange's API keys, the strategies of
:func:`algomirror.chaos.schedule.legs_of`), and the killable engine subprocess
(``python -m algomirror.chaos.engine_proc``) with its logs.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

import httpx
from cryptography.fernet import Fernet
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from algomirror.chaos.crash import CRASH_LOG_VARIABLE, CRASH_POINTS, CRASH_VARIABLE
from algomirror.chaos.engine_proc import CLOCK_VARIABLE, EXITS_VARIABLE
from algomirror.chaos.schedule import legs_of
from algomirror.db.migrate import upgrade_url
from algomirror.db.models import Strategy, StrategyLeg, TradingAccount, User
from algomirror.db.session import Database
from algomirror.security import SecretBox
from algomirror.simulator.server import RunningSimulator, SimulatorConfig, start_in_thread

# Wed 25 Nov 2026 10:30 IST: a normal trading day, 4 h 45 min before the exchange squares off MIS.
SIM_START = datetime(2026, 11, 25, 5, 0, tzinfo=UTC)
EXPIRY = "01DEC26"
LOT = 65  # NIFTY's lot size on the paper exchange
# A strategy's max loss is this much per unit of one lot on every account (₹); a risk ending moves one
# short leg up by BREACH per unit, well past it, while the market's own drift in a cycle is a few rupees.
LOSS_PER_UNIT = Decimal(40)
BREACH = Decimal(150)
SYNC_SECONDS = 2  # the engine's account sync interval (s)
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

# The exit policy's waits scaled down for the engine (the same number of attempts as production).
SCALED_EXITS: dict[str, dict[str, float | int]] = {
    "retry": {
        "attempts": 5,
        "first_wait": 0.2,
        "max_wait": 1.0,
        "verify_interval": 0.2,
        "verify_timeout": 8.0,
    },
    "driver": {
        "fill_timeout": 5.0,
        "status_interval": 0.1,
        "resolve_seconds": 2.0,
        "resolve_interval": 0.2,
        "send_retry_delay": 0.1,
        # The engine's order calls time out after 3 s here (not 30): a lost entry is concluded never
        # placed 20 s after its outcome became unknown (60 s in production).
        "unplaced_after": 20.0,
    },
}


def symbol_of(strike_type: str) -> str:
    """The OpenAlgo symbol of a NIFTY option of the run's expiry (``"26000CE"`` → ``NIFTY01DEC2626000CE``)."""
    return f"NIFTY{EXPIRY}{strike_type}"


# ------------------------------------------------------------------------------------------ exchange


class Control:
    """The exchange's control API (``/sim/…``) with its token. Every call raises
    ``httpx.HTTPStatusError`` on a refusal and ``httpx.HTTPError`` when the exchange is unreachable."""

    def __init__(self, rest_url: str, token: str, timeout: float = 15.0) -> None:
        self._http = httpx.Client(
            base_url=rest_url + "/sim", timeout=timeout, headers={"Authorization": f"Bearer {token}"}
        )

    def post(self, path: str, **body: Any) -> dict[str, Any]:
        """POST ``/sim/{path}`` with the JSON ``body`` (None values left out); the answer's JSON."""
        payload = {k: (str(v) if isinstance(v, Decimal) else v) for k, v in body.items() if v is not None}
        response = self._http.post(path, json=payload)
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    def close(self) -> None:
        self._http.close()


@dataclass
class Exchange:
    """The running paper exchange, its control client and its API keys (account index i uses key i)."""

    running: RunningSimulator
    control: Control

    @property
    def rest_url(self) -> str:
        return self.running.rest_url

    @property
    def ws_url(self) -> str:
        return self.running.ws_url

    @property
    def api_keys(self) -> list[str]:
        return self.running.api_keys

    @property
    def token(self) -> str:
        token = self.running.control_token
        if token is None:  # the exchange is always started with its control API
            raise RuntimeError("the paper exchange has no control API")
        return token

    def now(self) -> datetime:
        """The exchange's accelerated clock now (aware UTC): its anchor plus elapsed real time × speed,
        not the last tick's instant (which lags by up to a tick)."""
        return self.running.core.clock.target()

    def ltp(self, symbol: str) -> Decimal:
        """The exchange's current LTP of an NFO ``symbol`` (₹). Raises LookupError when it has none."""
        quote = self.running.core.market.quote(symbol, "NFO")
        if quote is None:
            raise LookupError(f"no quote for {symbol}")
        return Decimal(str(quote.ltp))


@contextmanager
def exchange(seed: int, accounts: int) -> Iterator[Exchange]:
    """The paper exchange in a background thread on ephemeral loopback ports: market seed ``seed``,
    ``accounts`` API keys, accelerated ×1 from :data:`SIM_START`, control API and rate limits on."""
    config = SimulatorConfig(
        seed=seed, accounts=accounts, clock="accelerated", speed=1.0, start=SIM_START, control=True
    )
    running = start_in_thread(config)
    try:
        control = Control(running.rest_url, running.control_token or "")
        try:
            yield Exchange(running, control)
        finally:
            control.close()
    finally:
        running.stop()


# ------------------------------------------------------------------------------------------ database


@contextmanager
def database_url(kind: str, workdir: Path, *, postgres_url: str, keep: bool) -> Iterator[str]:
    """A fresh database migrated to head: a SQLite file in ``workdir``, or (``kind`` "postgresql") a new
    database ``am_chaos_<pid>_<hex>`` on the server of ``postgres_url``, dropped afterwards unless
    ``keep``. Raises ValueError for another ``kind``; the driver's errors (server down) propagate."""
    if kind == "sqlite":
        url = f"sqlite:///{workdir / 'chaos.db'}"
        upgrade_url(url, "head")
        yield url
        return
    if kind != "postgresql":
        raise ValueError(f"database must be sqlite or postgresql, not {kind!r}")
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    name = f"am_chaos_{os.getpid()}_{secrets.token_hex(3)}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
        try:
            upgrade_url(url, "head")
            yield url
        finally:
            if not keep:
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@dataclass
class Seeded:
    """What :func:`seed_world` created: ids in account / strategy order, and per strategy its legs'
    (leg id, action, symbol)."""

    user_id: int
    account_ids: list[int]
    strategy_ids: list[int]
    legs: list[list[tuple[int, str, str]]] = field(default_factory=list)

    def account_keys(self, keys: list[str]) -> dict[int, str]:
        """trading_accounts.id → the exchange API key it trades with."""
        return {account_id: keys[i] for i, account_id in enumerate(self.account_ids)}


def seed_world(database: Database, ex: Exchange, box: SecretBox, *, accounts: int, strategies: int) -> Seeded:
    """One user, ``accounts`` paper accounts (API keys encrypted with ``box``; the first is primary, its
    WebSocket the feed) and ``strategies`` strategies (:func:`legs_of`, MARKET legs of one lot, unwind on
    a leg's failure, max loss :data:`LOSS_PER_UNIT` × lot × accounts)."""
    with database.session() as session:
        # No password hashes to "!": nobody signs in as the chaos user.
        user = User(username="chaos", email="chaos@example.com", password_hash="!")  # noqa: S106
        session.add(user)
        session.flush()
        account_ids = []
        for i in range(accounts):
            key = ex.api_keys[i]
            account = TradingAccount(
                user_id=user.id,
                account_name=f"Chaos {i + 1}",
                broker="paper",
                host_url=ex.rest_url,
                websocket_url=ex.ws_url,
                api_key_encrypted=box.encrypt(key),
                api_key_last4=key[-4:],
                is_active=True,
                is_primary=i == 0,
                connection_status="connected",
            )
            session.add(account)
            session.flush()
            account_ids.append(account.id)
        seeded = Seeded(user.id, account_ids, [])
        for s in range(strategies):
            strategy = Strategy(
                user_id=user.id,
                name=f"Chaos {s + 1}",
                on_leg_failure="unwind",
                max_loss=LOSS_PER_UNIT * LOT * accounts,
            )
            session.add(strategy)
            session.flush()
            legs = []
            for n, (action, strike) in enumerate(legs_of(s), start=1):
                leg = StrategyLeg(
                    strategy_id=strategy.id,
                    leg_number=n,
                    instrument="NIFTY",
                    product_type="options",
                    expiry="current_week",
                    action=action,
                    option_type=strike[-2:],
                    order_type="MARKET",
                    lots=1,
                )
                session.add(leg)
                session.flush()
                legs.append((leg.id, action, symbol_of(strike)))
            seeded.strategy_ids.append(strategy.id)
            seeded.legs.append(legs)
    return seeded


# ------------------------------------------------------------------------------------------ engine


@dataclass(frozen=True)
class Death:
    """One engine process that ended: its start index, exit status and, for a SIGKILL, where it died
    (``external`` for the driver's own kill, a crash point's name, or ``unknown``)."""

    start: int
    returncode: int
    point: str | None


ENGINE_COMMAND = (sys.executable, "-m", "algomirror.chaos.engine_proc")


class EngineProcess:
    """Starts, kills and restarts ``python -m algomirror.chaos.engine_proc`` on one database. Each start
    gets the exchange's clock as of that moment and the crash plan for its start index; its output goes
    to ``workdir/engine-N.log`` (a pipe nobody reads would block it)."""

    def __init__(
        self,
        *,
        db_url: str,
        workdir: Path,
        fernet: bytes,
        ex: Exchange,
        seed: int,
        crash_rate: float,
    ) -> None:
        self.workdir = workdir
        self.ex = ex
        self.seed = seed
        self.crash_rate = crash_rate
        self.crash_log = workdir / "crash.log"
        self.crash_log.touch()
        self._crash_lines = 0
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("ALGOMIRROR_", "AM_CHAOS_"))},
            "ALGOMIRROR_DATABASE_URL": db_url,
            "ALGOMIRROR_INSTANCE_DIR": str(workdir / "instance"),
            "ALGOMIRROR_FERNET_KEY": fernet.decode(),
            # The account sync also confirms realised P&L from the broker's fills: often, so the end of
            # the run need not wait long for it.
            "ALGOMIRROR_SYNC_INTERVAL_MARKET": str(SYNC_SECONDS),
            "ALGOMIRROR_SYNC_INTERVAL_CLOSED": str(SYNC_SECONDS),
            # Shorter than the hangs the plan arms, so a hang is a timeout to the engine.
            "ALGOMIRROR_HTTP_CONNECT_TIMEOUT": "2",
            "ALGOMIRROR_HTTP_READ_TIMEOUT": "3",
            "ALGOMIRROR_HTTP_ORDER_TIMEOUT": "3",
            EXITS_VARIABLE: json.dumps(SCALED_EXITS),
        }
        self.starts = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._killed_by_us = False

    def start(self) -> None:
        """Start the next engine process (start index = the number of earlier starts)."""
        env = dict(self.env)
        env[CLOCK_VARIABLE] = json.dumps(
            {"sim_at": self.ex.now().isoformat(), "wall_at": time.time(), "speed": 1.0}
        )
        if self.crash_rate > 0:
            env[CRASH_VARIABLE] = json.dumps(
                {
                    "seed": self.seed,
                    "start": self.starts,
                    "rate": self.crash_rate,
                    "points": list(CRASH_POINTS),
                }
            )
            env[CRASH_LOG_VARIABLE] = str(self.crash_log)
        if self._log is not None:
            self._log.close()
        self._log = (self.workdir / f"engine-{self.starts + 1}.log").open("wb")
        # cwd: the work directory, so no stray .env file of the caller's is read as settings.
        self.proc = subprocess.Popen(
            list(ENGINE_COMMAND), env=env, cwd=self.workdir, stdout=self._log, stderr=subprocess.STDOUT
        )
        self.starts += 1
        self._killed_by_us = False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> bool:
        """SIGKILL the running engine and wait for it; False when it was not running."""
        if not self.alive():
            return False
        assert self.proc is not None
        self._killed_by_us = True
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        return True

    def reap(self) -> Death | None:
        """The death of the last engine if it has ended (once per process), else None."""
        if self.proc is None or self.proc.poll() is None:
            return None
        code = self.proc.returncode
        point: str | None = None
        if code == -signal.SIGKILL:
            lines = self.crash_log.read_text(encoding="utf-8").splitlines()
            fresh, self._crash_lines = lines[self._crash_lines :], len(lines)
            # The driver's own kill, else the point the engine logged before killing itself.
            point = "external" if self._killed_by_us else (fresh[-1] if fresh else "unknown")
        death = Death(self.starts - 1, code, point)
        self.proc = None
        return death

    def log_tail(self, start: int, size: int = 3000) -> str:
        """The end of engine start ``start``'s log (0-based)."""
        path = self.workdir / f"engine-{start + 1}.log"
        if not path.exists():
            return ""
        return path.read_bytes()[-size:].decode(errors="replace")

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM the running engine and wait (SIGKILL after ``timeout`` s); its exit status, None when
        none was running."""
        code: int | None = None
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                code = self.proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None
        return code


def new_box() -> tuple[bytes, SecretBox]:
    """A throwaway Fernet key for the run (the engine subprocess is given it) and its box."""
    key = Fernet.generate_key()
    return key, SecretBox(key)


__all__ = [
    "BREACH",
    "DEFAULT_PG_URL",
    "LOSS_PER_UNIT",
    "LOT",
    "SIM_START",
    "SYNC_SECONDS",
    "Control",
    "Death",
    "EngineProcess",
    "Exchange",
    "Seeded",
    "database_url",
    "exchange",
    "new_box",
    "seed_world",
    "symbol_of",
]
