"""Real engine subprocesses on a test's database, for the ``kill -9`` tests: the accounts re-keyed with a
Fernet key the subprocess is also given, a starter that keeps every engine's log in a file, and a real
SIGKILL. The paper exchange runs in the test's own process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import IO

from cryptography.fernet import Fernet

from algomirror.db.models import TradingAccount
from algomirror.engine.exit_planning import retry_exit
from algomirror.security import SecretBox
from tests import profile
from tests.integration.execution_support import World
from tests.integration.feed_support import until
from tests.integration.risk_engine_proc import OFFSET_VARIABLE

# ``algomirror engine`` as installed in the venv.
ENGINE_COMMAND = (str(Path(sys.executable).parent / "algomirror"), "engine")
# ``algomirror engine`` on the exchange's simulated time (``risk_engine_proc.py``).
RISK_ENGINE_COMMAND = (sys.executable, str(Path(__file__).with_name("risk_engine_proc.py")))
# How long a restarted engine may take to finish the work the killed one left.
DEADLINE = 30.0


def rekey(world: World) -> bytes:
    """A Fernet key the engine subprocess is also given; the accounts' API keys re-encrypted with it."""
    fernet = Fernet.generate_key()
    world.box = SecretBox(fernet)
    with world.database.session() as session:
        for i, account_id in enumerate(world.account_ids):
            account = session.get(TradingAccount, account_id)
            assert account is not None
            account.api_key_encrypted = world.box.encrypt(world.sim.api_keys[i])
    return fernet


class Engines:
    """Starts engine subprocesses (``command``, with ``env`` added to the environment) on one database;
    stops whatever is left at the end."""

    def __init__(
        self,
        db_url: str,
        tmp_path: Path,
        fernet: bytes,
        command: Sequence[str],
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.env = profile.child_env(
            {
                **os.environ,
                "ALGOMIRROR_DATABASE_URL": db_url,
                "ALGOMIRROR_INSTANCE_DIR": str(tmp_path / "instance"),
                "ALGOMIRROR_FERNET_KEY": fernet.decode(),
                "ALGOMIRROR_SYNC_INTERVAL_MARKET": "5",
                "ALGOMIRROR_SYNC_INTERVAL_CLOSED": "5",
                **(env or {}),
            }
        )
        self.command = list(command)
        self.tmp_path = tmp_path
        self.started: list[tuple[subprocess.Popen[bytes], IO[bytes]]] = []

    def start(self, command: Sequence[str] | None = None) -> subprocess.Popen[bytes]:
        """Start ``command`` (the default one when None), its log numbered after the others."""
        # The log goes to a file: a pipe nobody reads would block the engine once it filled.
        log = (self.tmp_path / f"engine-{len(self.started) + 1}.log").open("wb")
        proc = subprocess.Popen(
            list(command) if command is not None else self.command,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.started.append((proc, log))
        return proc

    def keep_running(self) -> None:
        """Restart the last engine (the default command) if it was refused the lock (exit 2): the killed
        one's database session (PostgreSQL's advisory lock) may outlive it for a moment. Any other exit
        fails the test."""
        proc, _ = self.started[-1]
        if proc.poll() is None:
            return
        assert proc.returncode == 2, self.logs()
        self.start()

    def logs(self) -> str:
        """The tail of every engine's log (for failure messages)."""
        parts = []
        for n in range(1, len(self.started) + 1):
            text = (self.tmp_path / f"engine-{n}.log").read_bytes()[-2500:].decode(errors="replace")
            parts.append(f"--- engine {n}\n{text}")
        return "\n".join(parts)

    def close(self) -> None:
        for proc, log in self.started:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
            log.close()


@contextmanager
def engines(
    db_url: str,
    tmp_path: Path,
    fernet: bytes,
    command: Sequence[str] = ENGINE_COMMAND,
    env: Mapping[str, str] | None = None,
) -> Iterator[Engines]:
    """An :class:`Engines` whose leftovers are stopped on the way out."""
    started = Engines(db_url, tmp_path, fernet, command, env)
    try:
        yield started
    finally:
        started.close()


def risk_engines(
    db_url: str, tmp_path: Path, fernet: bytes, offset: float
) -> AbstractContextManager[Engines]:
    """:func:`engines` of ``risk_engine_proc.py``, ``offset`` seconds ahead of real time (the exchange's)."""
    return engines(db_url, tmp_path, fernet, RISK_ENGINE_COMMAND, {OFFSET_VARIABLE: repr(offset)})


def kill_9(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL ``proc`` and wait for it (AssertionError if it died otherwise)."""
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=10) == -signal.SIGKILL


async def retried_until_closed(started: Engines, world: World, run_id: int, errors: Iterable[int]) -> str:
    """A person retries the exit of each execution id in ``errors`` (as the run page does); then wait,
    restarting an engine that was refused the lock, until the run is closed (AssertionError after
    DEADLINE seconds). The engines' log tails, for the caller's failure messages."""
    with world.database.session() as session:
        for n, execution_id in enumerate(errors):
            retry_exit(session, user_id=world.user_id, execution_id=execution_id, token=f"retry-{n}")

    def closed() -> bool:
        started.keep_running()
        return world.run(run_id).status == "closed"

    await until(closed, "the retried legs exited", timeout=DEADLINE)
    return started.logs()
