"""A broker that echoes the API key upper-cased or cut short in its errors: the key reaches neither a
page, nor the database, nor a log line (issue 9 finding 9). Real paper exchange, real sync, both
databases."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from algomirror.db.models import ActivityLog, TradingAccount
from algomirror.engine.sync import AccountSync
from algomirror.redaction import PIECE
from algomirror.runner import LOG_FORMAT
from algomirror.security import install_redaction
from tests.integration.test_sync import fast_config
from tests.integration.web_support import WebEnv, make_env, post_form, signed_in
from tests.sim_fixtures import SimHandle


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> Iterator[WebEnv]:
    web = make_env(db_url, tmp_path)
    yield web
    web.database.dispose()


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    algomirror_logger = logging.getLogger("algomirror")
    level = algomirror_logger.level
    algomirror_logger.setLevel(logging.DEBUG)
    install_redaction()
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        algomirror_logger.setLevel(level)


@pytest.fixture
async def sync(env: WebEnv) -> AsyncIterator[AccountSync]:
    engine_sync = AccountSync(env.database, env.state.box.decrypt, config=fast_config())
    try:
        yield engine_sync
    finally:
        await engine_sync.aclose()


def pieces_of(key: str) -> list[str]:
    return [key[i : i + PIECE].lower() for i in range(len(key) - PIECE + 1)]


def leaks(text: str, key: str) -> list[str]:
    folded = text.lower()
    return [piece for piece in pieces_of(key) if piece in folded]


async def test_sync_when_broker_echoes_the_key_changed_keeps_it_out_of_pages_rows_and_logs(
    env: WebEnv, simulator_session: SimHandle, sync: AccountSync, log_stream: io.StringIO
) -> None:
    sim = simulator_session
    key = sim.api_keys[0]
    assert len(key) >= 2 * PIECE
    client = signed_in(env, "alice")
    form = {
        "account_name": "Paper main",
        "broker": "zerodha",
        "host_url": sim.rest_url,
        "websocket_url": sim.ws_url,
        "api_key": key,
    }
    assert post_form(client, "/accounts/new", form, page="/accounts/new").status_code == 303
    account_id = env.accounts("alice")[0].id
    assert (await sync.sync_account_once(account_id)).status == "connected"

    echoed = f"bad apikey {key.upper()} (starts {key[: PIECE + 3]}, ends {key[-PIECE:].upper()})"
    sim.control.status_next(500, 3, endpoint="funds", message=echoed, apikey=key)
    statuses = [(await sync.sync_account_once(account_id)).status for _ in range(3)]
    assert statuses == ["connected", "connected", "failed"]

    with env.database.session_factory() as s:
        account = s.get(TradingAccount, account_id)
        assert account is not None and account.last_error is not None
        stored = [account.last_error, *(d or "" for d in s.scalars(select(ActivityLog.details)))]
    assert "bad apikey ***" in account.last_error  # the broker's words are kept, the key is not
    pages = ["/", "/accounts/", f"/accounts/{account_id}", f"/accounts/{account_id}/overview", "/activity/"]
    bodies = [client.get(page).get_data(as_text=True) for page in pages]
    assert any("bad apikey ***" in body for body in bodies)
    for text in [*stored, *bodies, log_stream.getvalue()]:
        assert leaks(text, key) == []
    assert "bad apikey" in log_stream.getvalue()
