"""The engine service: one asyncio loop running components (account sync now; execution, risk, feeds
and scheduling later), guarded by the single-instance lock.

Production runs it as its own process (``algomirror engine``); the embedded demo runs it on a
background thread of the web process (:class:`EngineThread`).

Two failure rules:

- **A lost lock stops the engine.** While it runs, a watchdog verifies the lock and the fencing epoch
  every ``watch_interval`` seconds (:meth:`EngineLock.check`). When the lock is gone, or cannot be
  verified for ``lock_check_timeout`` seconds, the ``on_lock_lost`` callbacks run first (the client
  registry's ``suspend_orders``: no order leaves after that), then every component is stopped and
  :meth:`EngineService.run` raises :class:`LockLost`. A component that raises
  :class:`~algomirror.engine.fencing.FencedOutError` (a journal write refused: a newer engine holds the
  epoch) is proof of the same loss and takes the same path at once; it is never restarted. The engine
  never re-takes the lock in-process (crash-only): a supervisor restarts the process, which then waits
  its turn for the lock.
- **A crashing component is restarted, then escalated.** A crash is logged and the component restarted
  after ``restart_delay``. A component that crashes ``crash_limit`` times within ``crash_window`` is
  escalated once: an error log, an ``engine_component_failed`` activity row and the durable
  entries-halted flag (:mod:`algomirror.engine.halts`; the web shows a banner). It is then still
  restarted, but only every ``escalated_restart_delay`` seconds: sync and risk must keep running if they
  can, and entries stay halted until an operator clears the flag.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Protocol

from algomirror.db.session import Database
from algomirror.domain.timeutil import Clock, SystemClock
from algomirror.engine.fencing import FencedOutError
from algomirror.engine.halts import record_component_failure
from algomirror.engine.lock import EngineLock, LockLost

log = logging.getLogger(__name__)

LockLostCallback = Callable[[str], None]


class Component(Protocol):
    """A long-running part of the engine. ``run`` returns when ``stop`` is set."""

    name: str

    async def run(self, stop: asyncio.Event) -> None: ...


def _fenced_out(exc: Exception) -> FencedOutError | None:
    """The FencedOutError ``exc`` is or carries (a component's task group may wrap it), else None."""
    if isinstance(exc, FencedOutError):
        return exc
    if isinstance(exc, ExceptionGroup):
        found = exc.subgroup(FencedOutError)
        if found is not None:
            first = found.exceptions[0]
            return first if isinstance(first, FencedOutError) else _fenced_out(first)
    return None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:300]}" if lines else type(exc).__name__


class EngineService:
    """Runs components concurrently until stopped (see the module docstring for the failure rules).

    ``database`` receives the escalation records (without it an escalation is only logged);
    ``clock`` times crashes for the escalation window and stamps the records; ``on_lock_lost``
    callbacks receive the reason and must not block (e.g. ``ClientRegistry.suspend_orders``).
    Intervals and delays are in seconds.
    """

    def __init__(
        self,
        components: Sequence[Component],
        lock: EngineLock | None = None,
        *,
        database: Database | None = None,
        clock: Clock | None = None,
        on_lock_lost: Sequence[LockLostCallback] = (),
        crash_limit: int = 5,
        crash_window: timedelta = timedelta(minutes=10),
        on_stopped: Sequence[Callable[[], Awaitable[None]]] = (),
    ) -> None:
        if crash_limit < 1:
            raise ValueError("crash_limit must be at least 1")
        self.components = list(components)
        self.lock = lock
        self.database = database
        self.clock: Clock = clock or SystemClock()
        self.crash_limit = crash_limit
        self.crash_window = crash_window
        self.restart_delay = 2.0
        self.escalated_restart_delay = 300.0
        self.watch_interval = 0.25
        self.lock_check_timeout = lock.check_tolerance if lock is not None else 2.0
        self.heartbeat_interval = 5.0
        # How long components get to return after stop before they are cancelled.
        self.stop_grace = 10.0
        # Reason the lock was lost (None while held); set before any component is told to stop.
        self.lock_lost: str | None = None
        # Component name -> escalation reason, for components escalated in this process.
        self.escalated: dict[str, str] = {}
        self._lock_lost_callbacks: list[LockLostCallback] = list(on_lock_lost)
        # Shared resources (the client registry) closed once every component has stopped.
        self._on_stopped = list(on_stopped)
        self._stop: asyncio.Event | None = None
        self._locked = False

    def add_lock_lost_callback(self, callback: LockLostCallback) -> None:
        """Call ``callback(reason)`` first thing when the lock is lost (e.g. a registry's
        ``suspend_orders``)."""
        self._lock_lost_callbacks.append(callback)

    @property
    def epoch(self) -> int | None:
        """The fencing epoch this engine writes the journal under (None without a held lock)."""
        return self.lock.epoch if self.lock is not None else None

    def acquire_lock(self) -> None:
        """Take the single-instance lock and a new epoch now. Raises EngineAlreadyRunning (held by another
        engine) or the errors of :meth:`EngineLock.acquire`."""
        if self.lock is not None and not self._locked:
            self.lock.acquire()
            self._locked = True

    async def run(self) -> None:
        """Acquire the lock if not yet held (raises EngineAlreadyRunning), then run every component until
        :meth:`request_stop`. Raises :class:`LockLost` after stopping when the lock was lost."""
        self.acquire_lock()
        stop = self._stop = asyncio.Event()
        tasks = [
            asyncio.create_task(self._supervise(c, stop), name=f"engine:{c.name}") for c in self.components
        ]
        watchdog = (
            asyncio.create_task(self._watch(self.lock, stop), name="engine:lock-watchdog")
            if self.lock is not None
            else None
        )
        try:
            await stop.wait()
            await self._finish(tasks)
        finally:
            for task in [*tasks, *([watchdog] if watchdog is not None else [])]:
                task.cancel()
            await asyncio.gather(
                *tasks, *([watchdog] if watchdog is not None else []), return_exceptions=True
            )
            for close in self._on_stopped:
                try:
                    await close()
                except Exception:
                    log.exception("engine shutdown: closing %r failed", close)
            if self.lock is not None and self._locked:
                self.lock.release()
                self._locked = False
        if self.lock_lost is not None:
            raise LockLost(self.lock_lost)

    async def _finish(self, tasks: list[asyncio.Task[None]]) -> None:
        if not tasks:
            return
        _done, pending = await asyncio.wait(tasks, timeout=self.stop_grace)
        for task in pending:
            log.warning(
                "engine component task %s did not stop within %gs; cancelling",
                task.get_name(),
                self.stop_grace,
            )

    async def _watch(self, lock: EngineLock, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        last_ok = loop.time()
        next_beat = last_ok
        # The heartbeat is a write (it may wait for another writer): it runs beside the liveness checks,
        # never inside their deadline. Both have a thread of their own: in the loop's shared executor a
        # busy engine (fifty exits' database calls) queued the check past its deadline, and the engine
        # stopped itself mid-exit for a lock it still held.
        checker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine-lock-check")
        beater = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine-heartbeat")
        beat: asyncio.Future[None] | None = None
        try:
            while not stop.is_set():
                if beat is not None and beat.done():
                    lost = self._beat_result(beat)
                    beat = None
                    if lost is not None:
                        self._lose_lock(lost)
                        return
                now = loop.time()
                if beat is None and now >= next_beat:
                    beat = loop.run_in_executor(beater, lock.beat)
                    next_beat = now + self.heartbeat_interval
                remaining = last_ok + self.lock_check_timeout - now
                try:
                    await asyncio.wait_for(
                        loop.run_in_executor(checker, lock.check), timeout=max(remaining, 0.001)
                    )
                except LockLost as exc:
                    self._lose_lock(str(exc))
                    return
                except TimeoutError:
                    self._lose_lock(f"the lock could not be verified for {self.lock_check_timeout:g}s")
                    return
                except Exception as exc:  # noqa: BLE001 - any failure to verify counts toward the tolerance
                    # An ordinary pool connection failed (SQLite epoch read): not proof of loss by itself,
                    # but an unverifiable lock is treated as lost once the tolerance runs out.
                    log.warning("engine lock check failed (%s); retrying", _first_line(exc))
                    if loop.time() >= last_ok + self.lock_check_timeout:
                        self._lose_lock(f"the lock could not be verified for {self.lock_check_timeout:g}s")
                        return
                else:
                    last_ok = loop.time()
                try:
                    await asyncio.wait_for(stop.wait(), timeout=self.watch_interval)
                except TimeoutError:
                    pass
        finally:
            if beat is not None:
                beat.cancel()
            checker.shutdown(wait=False, cancel_futures=True)
            beater.shutdown(wait=False, cancel_futures=True)

    @staticmethod
    def _beat_result(beat: asyncio.Future[None]) -> str | None:
        """The loss reason from a finished heartbeat, or None (a failed write is only logged)."""
        if beat.cancelled():
            return None
        exc = beat.exception()
        if isinstance(exc, LockLost):
            return str(exc)
        if exc is not None:
            log.warning("engine heartbeat not written (%s); the lock checks go on", _first_line(exc))
        return None

    def _lose_lock(self, reason: str) -> None:
        if self.lock_lost is not None:
            return
        self.lock_lost = reason
        # Suspend sending before anything else, while no other coroutine can run.
        for callback in self._lock_lost_callbacks:
            try:
                callback(reason)
            except Exception:
                log.exception("an on-lock-lost callback failed; stopping the engine regardless")
        log.error(
            "engine lock lost (%s): order sending suspended, stopping the engine; it must be restarted "
            "(a supervisor does that) and will wait for the lock",
            reason,
        )
        if self._stop is not None:
            self._stop.set()

    async def _supervise(self, component: Component, stop: asyncio.Event) -> None:
        crashes: deque[datetime] = deque()
        while not stop.is_set():
            try:
                await component.run(stop)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any crash: fenced out stops the engine, else _on_crash logs it
                fenced = _fenced_out(exc)
                if fenced is not None:
                    # Not a crash: a newer engine holds the epoch. Restarting would only retry writes
                    # the database refuses while this engine's order calls could still leave.
                    self._lose_lock(f"a newer engine took over (component {component.name}: {fenced})")
                    log.error("engine component %s was fenced out", component.name, exc_info=exc)
                    return
                delay = await self._on_crash(component, exc, crashes)
                try:
                    await asyncio.wait_for(stop.wait(), timeout=delay)
                except TimeoutError:
                    continue
            else:
                return

    async def _on_crash(self, component: Component, exc: Exception, crashes: deque[datetime]) -> float:
        """Log the crash, escalate when it is one too many; return the delay before the restart (s)."""
        now = self.clock.now()
        crashes.append(now)
        while crashes and crashes[0] <= now - self.crash_window:
            crashes.popleft()
        name = component.name
        if name in self.escalated:
            log.error(
                "engine component %s crashed again (escalated: entries halted); restarting in %gs",
                name,
                self.escalated_restart_delay,
                exc_info=exc,
            )
            return self.escalated_restart_delay
        if len(crashes) < self.crash_limit:
            log.error(
                "engine component %s crashed; restarting in %gs", name, self.restart_delay, exc_info=exc
            )
            return self.restart_delay
        reason = (
            f"engine component {name} crashed {len(crashes)} times within "
            f"{self.crash_window.total_seconds() / 60:g} min (last: {_first_line(exc)})"
        )
        log.error(
            "%s; entries halted, restarting it every %gs", reason, self.escalated_restart_delay, exc_info=exc
        )
        if await self._record_escalation(name, reason, now):
            self.escalated[name] = reason
        return self.escalated_restart_delay

    async def _record_escalation(self, name: str, reason: str, now: datetime) -> bool:
        """Write the activity row and the entries-halted flag; False when that failed (retried at the
        next crash)."""
        database = self.database
        if database is None:
            log.error("no database given to the engine service: the halt of entries is not recorded")
            return True

        def write() -> None:
            with database.session() as session:
                record_component_failure(session, component=name, reason=reason, now=now)

        try:
            await asyncio.to_thread(write)
        except Exception:
            log.exception(
                "could not record the escalation of engine component %s; retrying at its next crash", name
            )
            return False
        return True

    def request_stop(self) -> None:
        if self._stop is not None:
            self._stop.set()


class EngineThread:
    """Runs an :class:`EngineService` on its own event loop in a daemon thread (embedded mode)."""

    def __init__(self, service: EngineService) -> None:
        self.service = service
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name="algomirror-engine", daemon=True)
        self._started = threading.Event()
        self.error: BaseException | None = None

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._run())
        except LockLost as exc:
            # Already logged by the service; the web process keeps serving without an engine.
            self.error = exc
            self._started.set()
        except BaseException as exc:  # recorded for the owner thread to report
            self.error = exc
            self._started.set()
            log.exception("engine thread stopped with an error")
        finally:
            self.loop.close()

    async def _run(self) -> None:
        self._started.set()
        await self.service.run()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> None:
        """Take the lock in the caller's thread (so EngineAlreadyRunning surfaces here), then start."""
        self.service.acquire_lock()
        self._thread.start()
        self._started.wait(timeout=10)
        if self.error is not None:
            raise self.error

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.service.request_stop)
            self._thread.join(timeout)
