"""Sign-in lock-out without username enumeration or lock-out abuse (issue 9, finding 5).

Every refusal gets one answer and costs one argon2 verify; the lock is keyed by user and source address
(so failures elsewhere cannot lock the owner out), an address failing across many usernames is
throttled, and the owner hears of refused attempts at the next sign-in.
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from flask.testing import FlaskClient

from tests.integration.web_support import PASSWORD, WebEnv, add_user, login, make_env

WRONG = "wrong-password-123"
FLASH_RE = re.compile(r'<p class="flash flash-(\w+)">(.*?)</p>', re.S)


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> Iterator[WebEnv]:
    # The per-address throttle is what is under test here, not flask-limiter's request budget.
    web = make_env(db_url, tmp_path, ratelimit_auth="10000 per minute", login_address_max_failures=8)
    yield web
    web.database.dispose()


def client_from(env: WebEnv, address: str) -> FlaskClient:
    client = env.client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def flashes(response: Any) -> list[tuple[str, str]]:
    return FLASH_RE.findall(response.get_data(as_text=True))


def signed_in_now(client: FlaskClient) -> bool:
    return client.get("/accounts/").status_code == 200


class CountingHasher(PasswordHasher):
    """argon2 with a count of verify calls: the structural proof that every path pays for one."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.verifies = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:
        self.verifies += 1
        return super().verify(hash, password)


def test_login_when_existing_user_is_locked_answers_exactly_like_an_unknown_username(env: WebEnv) -> None:
    add_user(env, "alice")
    client = env.client()
    for _ in range(5):
        login(client, "alice", WRONG)
        login(client, "nobody", WRONG)
    locked_wrong = flashes(login(client, "alice", WRONG))
    locked_right = login(client, "alice", PASSWORD)
    unknown = flashes(login(client, "nobody", WRONG))
    first_try = flashes(login(env.client(), "carol", WRONG))
    assert locked_right.status_code == 200
    assert locked_wrong == flashes(locked_right) == unknown == first_try
    [(category, message)] = unknown
    assert category == "error" and "Wrong username or password" in message
    assert not signed_in_now(client)


@pytest.mark.parametrize("path", ["unknown user", "wrong password", "locked user", "throttled address"])
def test_login_when_refused_on_any_path_runs_exactly_one_argon2_verify(env: WebEnv, path: str) -> None:
    hasher = CountingHasher(time_cost=1, memory_cost=8, parallelism=1)
    env.state.hasher = hasher
    add_user(env, "alice")
    client = client_from(env, "10.0.0.66")
    if path == "locked user":
        for _ in range(5):
            login(client, "alice", WRONG)
    if path == "throttled address":
        for n in range(8):
            login(client, f"ghost{n}", WRONG)
    username, password = {
        "unknown user": ("nobody", WRONG),
        "wrong password": ("alice", WRONG),
        "locked user": ("alice", PASSWORD),
        "throttled address": ("alice", PASSWORD),
    }[path]
    before = hasher.verifies
    response = login(client, username, password)
    assert response.status_code == 200
    assert hasher.verifies - before == 1
    assert not signed_in_now(client)


def _median_seconds(client: FlaskClient, username: str, password: str, tries: int) -> float:
    times: list[float] = []
    for _ in range(tries):
        start = time.perf_counter()
        response = login(client, username, password)
        times.append(time.perf_counter() - start)
        assert response.status_code == 200
    return statistics.median(times)


def test_login_when_user_is_locked_takes_as_long_as_for_an_unknown_username(env: WebEnv) -> None:
    # A real cost (tens of milliseconds) so the hash dominates; the bounds are generous on purpose.
    hasher = PasswordHasher(time_cost=2, memory_cost=32 * 1024, parallelism=1)
    env.state.hasher = hasher
    add_user(env, "alice")
    sample = hasher.hash("timing-sample-password")
    start = time.perf_counter()
    for _ in range(3):
        hasher.verify(sample, "timing-sample-password")
    verify_cost = (time.perf_counter() - start) / 3
    client = env.client()
    for _ in range(5):
        login(client, "alice", WRONG)
    # Alternated, so a busy machine slows both samples alike (measured one after the other, a burst of
    # load during one series made them differ by more than the bound).
    stranger = env.client()
    locked_times: list[float] = []
    unknown_times: list[float] = []
    for _ in range(7):
        locked_times.append(_median_seconds(client, "alice", PASSWORD, 1))
        unknown_times.append(_median_seconds(stranger, "nobody", WRONG, 1))
    locked = statistics.median(locked_times)
    unknown = statistics.median(unknown_times)
    assert locked >= 0.5 * verify_cost and unknown >= 0.5 * verify_cost, (locked, unknown, verify_cost)
    assert max(locked, unknown) <= 3 * min(locked, unknown), (locked, unknown)


def test_login_when_another_address_failed_five_times_the_owner_still_signs_in_from_theirs(
    env: WebEnv,
) -> None:
    add_user(env, "alice")
    attacker = client_from(env, "203.0.113.9")
    for _ in range(5):
        login(attacker, "alice", WRONG)
    # Locked for the attacker's address, even with the right password ...
    assert login(attacker, "alice", PASSWORD).status_code == 200
    assert not signed_in_now(attacker)
    # ... and not for the owner's.
    owner = client_from(env, "192.0.2.10")
    assert login(owner, "alice", PASSWORD).status_code == 303
    assert signed_in_now(owner)


def test_login_when_one_address_fails_across_many_usernames_throttles_that_address_only(env: WebEnv) -> None:
    add_user(env, "alice")
    add_user(env, "bob")
    sprayer = client_from(env, "203.0.113.9")
    for n in range(8):  # never five on one username, but eight from one address
        login(sprayer, ["alice", "bob", "nobody", "ghost"][n % 4], WRONG)
    assert login(sprayer, "bob", PASSWORD).status_code == 200
    assert not signed_in_now(sprayer)
    assert login(client_from(env, "192.0.2.10"), "bob", PASSWORD).status_code == 303
    env.clock.advance(timedelta(minutes=15, seconds=1))
    assert login(sprayer, "bob", PASSWORD).status_code == 303


def test_login_when_attempts_failed_since_the_last_sign_in_tells_the_owner_count_and_addresses(
    env: WebEnv,
) -> None:
    add_user(env, "alice")
    assert login(client_from(env, "192.0.2.10"), "alice").status_code == 303
    env.clock.advance(timedelta(hours=1))
    for address, tries in (("203.0.113.9", 3), ("198.51.100.7", 1)):
        client = client_from(env, address)
        for _ in range(tries):
            env.clock.advance(timedelta(minutes=1))
            login(client, "alice", WRONG)
    owner = client_from(env, "192.0.2.10")
    response = login(owner, "alice")
    assert response.status_code == 303
    warnings = [m for c, m in flashes(owner.get(response.headers["Location"], follow_redirects=True))]
    assert "4 failed sign-in attempts since your last sign-in, from 203.0.113.9, 198.51.100.7." in warnings, (
        warnings
    )
    # Told once: the next sign-in has nothing to report.
    again = client_from(env, "192.0.2.10")
    response = login(again, "alice")
    assert not [
        m
        for c, m in flashes(again.get(response.headers["Location"], follow_redirects=True))
        if "failed sign-in" in m
    ]


@pytest.mark.parametrize("target", ["alice", "nobody"])
def test_login_when_one_name_is_hammered_the_address_throttle_fills_alike_for_known_and_unknown_names(
    env: WebEnv, target: str
) -> None:
    # Counting only wrong passwords let an attacker tell a real user (whose tries turn into lock
    # refusals after five) from an unknown name by whether their own next sign-in was throttled.
    add_user(env, "alice")
    add_user(env, "mallory")
    attacker = client_from(env, "203.0.113.77")
    for _ in range(8):
        login(attacker, target, WRONG)

    assert login(attacker, "mallory", PASSWORD).status_code == 200
    assert not signed_in_now(attacker)
