"""Host URLs cannot steer the client (issue 9, finding 2): rebuilt URLs, fixed paths, fixed failure texts,
and the administrator's allow-list enforced by the engine's client registry and account sync.

Real loopback servers: a recording HTTP server that answers like OpenAlgo only on its own paths, a port
that accepts connections and says nothing, one that hangs up, one that speaks another protocol.
"""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from algomirror.broker.client import HostPool, OpenAlgoClient, RetryPolicy, Timeouts
from algomirror.broker.errors import NotFoundError
from algomirror.broker.facade import (
    COULD_NOT_CONNECT,
    INVALID_HOST_URL,
    NOT_OPENALGO,
    TIMED_OUT,
    check_connection,
)
from algomirror.broker.hosts import UNRESTRICTED, HostNotAllowedError, HostPolicy, normalize_host_url
from algomirror.broker.registry import ClientRegistry
from algomirror.broker.transport import origin_of
from algomirror.db.models import TradingAccount, User
from algomirror.db.session import Database
from algomirror.engine.sync import AccountSync, SyncConfig
from algomirror.host_settings import load_host_policy, save_host_policy
from algomirror.security import SecretBox
from tests.integration.host_support import closed_port, raw_port, recording_server

KEY = "host-test-key-0123456789"
BOX = SecretBox(Fernet.generate_key())


# -------------------------------------------------------------------------------- URL handling


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:18500/sim/reset?",
        "http://127.0.0.1:18500/sim/reset#",
        "http://127.0.0.1:18500/sim/state?x=1",
        "http://user:pass@127.0.0.1:5000",
        "http://127.0.0.1:5000/a\tb",
        "http://127.0.0.1:5000/sim/../api",
        "http://127.0.0.1:5000/%2e%2e/sim",
        "http://127.1:5000",
    ],
)
def test_client_when_host_url_has_query_fragment_credentials_or_tricks_refuses(url: str) -> None:
    pool = HostPool()
    with pytest.raises(ValueError):
        OpenAlgoClient(url, KEY, pool=pool)


@pytest.mark.parametrize(
    "url", ["http://u:p@127.0.0.1:5000/api/v1/ping", "http://h:1/api/v1/ping?x", "http://h:1/api/v1/ping#"]
)
def test_origin_of_when_url_carries_credentials_query_or_fragment_refuses(url: str) -> None:
    with pytest.raises(ValueError):
        origin_of(url)


def test_normalize_when_url_is_acceptable_rebuilds_it_from_its_parts() -> None:
    assert (
        normalize_host_url("HTTP://OpenAlgo.Example.COM:05000/base/")
        == "http://openalgo.example.com:5000/base"
    )
    assert normalize_host_url("https://[::1]:8443") == "https://[::1]:8443"
    assert normalize_host_url("http://127.0.0.1:5000//") == "http://127.0.0.1:5000"


async def test_client_when_host_has_base_path_calls_only_its_fixed_api_paths() -> None:
    with recording_server() as server:
        async with HostPool() as pool:
            client = OpenAlgoClient(f"{server.url}/sim/reset/", KEY, pool=pool, retry=RetryPolicy(attempts=1))
            with pytest.raises(NotFoundError):  # the base path is a prefix, never the target
                await client.ping()
            with pytest.raises(ValueError):
                await client.call("../../sim/reset")
        assert server.paths == ["/sim/reset/api/v1/ping"]


def test_connection_test_when_host_ends_in_question_mark_never_reaches_sim_routes() -> None:
    # The demo exploit: the fixed /api/v1/ping became a query string and /sim/reset was called.
    with recording_server() as server:
        for crafted in (f"{server.url}/sim/reset?", f"{server.url}/sim/reset#", f"{server.url}/sim/reset?x"):
            result = check_connection(crafted, KEY, timeout=2.0)
            assert (result.ok, result.message) == (False, INVALID_HOST_URL)
        assert server.requests == []
        # A plain base path is a prefix of the fixed paths: /sim/reset itself is never called.
        prefixed = check_connection(f"{server.url}/sim/reset", KEY, timeout=2.0)
        assert (prefixed.ok, prefixed.message) == (False, NOT_OPENALGO)
        assert server.paths == ["/sim/reset/api/v1/ping"]
        assert check_connection(server.url, KEY, timeout=2.0).ok


@pytest.mark.parametrize(
    ("behaviour", "message"),
    [("silent", TIMED_OUT), ("hangup", NOT_OPENALGO), ("banner", NOT_OPENALGO)],
)
def test_connection_test_when_port_is_not_openalgo_says_one_fixed_thing(behaviour: str, message: str) -> None:
    with raw_port(behaviour) as port:
        result = check_connection(f"http://127.0.0.1:{port}", KEY, timeout=0.5)
    assert (result.ok, result.message, result.broker) == (False, message, None)
    assert "SSH" not in result.message


def test_connection_test_when_port_is_closed_says_could_not_connect() -> None:
    result = check_connection(f"http://127.0.0.1:{closed_port()}", KEY, timeout=1.0)
    assert (result.ok, result.status, result.message) == (False, "error", COULD_NOT_CONNECT)


# ------------------------------------------------------------------------------------ allow-list


def test_policy_when_restricted_allows_loopback_listed_names_and_ranges_only() -> None:
    policy = HostPolicy.parse("openalgo.example.com 10.1.0.0/16, [fd00::5]")
    allowed = ["http://127.0.0.1:5000", "http://localhost:5000", "http://[::1]:5000", "http://10.1.2.3"]
    allowed += ["https://openalgo.example.com/base", "http://[fd00::5]:1", "http://[::ffff:10.1.0.9]:80"]
    refused = ["http://10.2.0.1", "http://evil.example.com", "http://openalgo.example.com.evil.net"]
    refused += ["http://169.254.169.254", "http://[fd00::6]", "not a url"]
    assert [u for u in allowed if not policy.allows(u)] == []
    assert [u for u in refused if policy.allows(u)] == []
    no_loopback = HostPolicy.parse("10.1.0.0/16", allow_loopback=False)
    assert not no_loopback.allows("http://127.0.0.1:5000") and not no_loopback.allows("http://localhost")
    assert UNRESTRICTED.allows("http://169.254.169.254")
    with pytest.raises(ValueError, match="not a host name"):
        HostPolicy.parse("*.example.com")


def test_policy_when_stored_value_unreadable_falls_back_to_loopback_only() -> None:
    policy = HostPolicy.from_json("{not json")
    assert policy.restricted and policy.allows("http://127.0.0.1:1") and not policy.allows("http://10.0.0.1")
    kept = HostPolicy.parse("a.example.com 10.0.0.0/8", allow_loopback=False)
    assert HostPolicy.from_json(kept.to_json()) == kept


async def test_registry_when_host_not_allowed_sends_nothing_until_policy_allows_it() -> None:
    with recording_server() as server:
        outside = HostPolicy.parse("openalgo.example.com", allow_loopback=False)
        async with ClientRegistry(retry=RetryPolicy(attempts=1), host_policy=outside) as registry:
            client = registry.client(1, server.url, KEY)
            with pytest.raises(HostNotAllowedError):
                await client.ping()
            assert server.requests == []
            registry.set_host_policy(UNRESTRICTED)
            assert (await client.ping()).broker == "recorder"
            # Narrowing the list stops a client that is already in use.
            registry.set_host_policy(outside)
            with pytest.raises(HostNotAllowedError):
                await registry.client(1, server.url, KEY).call("funds")
        assert server.paths == ["/api/v1/ping"]


async def test_sync_when_allow_list_excludes_account_host_never_calls_it(database: Database) -> None:
    with recording_server() as server:
        with database.session() as s:
            user = User(username="trader", email="trader@example.com", password_hash="x")
            s.add(user)
            s.flush()
            account = TradingAccount(
                user_id=user.id,
                account_name="Outside",
                broker="sandbox",
                host_url=server.url,
                api_key_encrypted=BOX.encrypt(KEY),
                api_key_last4=KEY[-4:],
                is_primary=True,
            )
            s.add(account)
            s.flush()
            account_id = account.id
            save_host_policy(s, HostPolicy.parse("openalgo.example.com", allow_loopback=False))
        config = SyncConfig(timeouts=Timeouts(connect=1.0, read=2.0), retry=RetryPolicy(attempts=1))
        sync = AccountSync(database, BOX.decrypt, config=config)
        try:
            refused = await sync.sync_account_once(account_id)
            assert refused.errors and all(isinstance(e, HostNotAllowedError) for e in refused.errors.values())
            assert server.requests == []
            with database.session() as s:
                assert load_host_policy(s).restricted
                save_host_policy(s, HostPolicy.parse("", allow_loopback=True))  # loopback allowed again
            allowed = await sync.sync_account_once(account_id)
            assert "funds" in allowed.ok
            assert "/api/v1/funds" in server.paths
            assert all(path.startswith("/api/v1/") for path in server.paths)
        finally:
            await sync.aclose()
