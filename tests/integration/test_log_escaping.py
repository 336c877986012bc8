"""Log records are one line each, whatever users and brokers put in the text they quote: an account name
or a broker message holding a newline cannot forge a log line (issue 9 finding 8)."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import AsyncIterator, Iterator

import pytest
from cryptography.fernet import Fernet

from algomirror.controlchars import CONTINUATION_INDENT
from algomirror.db.models import TradingAccount, User
from algomirror.db.session import Database
from algomirror.engine.sync import AccountSync
from algomirror.runner import LOG_FORMAT
from algomirror.security import SecretBox, install_redaction
from tests.integration.test_sync import fast_config
from tests.sim_fixtures import SimHandle

BOX = SecretBox(Fernet.generate_key())
RECORD_START = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2},\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")
FORGED = "2026-11-25 10:30:00,000 ERROR algomirror.engine: forged"


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """A root handler in the production format, with the filters ``configure_logging`` installs."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    algomirror_logger = logging.getLogger("algomirror")
    level = algomirror_logger.level
    algomirror_logger.setLevel(logging.INFO)
    install_redaction()
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        algomirror_logger.setLevel(level)


def assert_one_line_per_record(text: str, records: int) -> None:
    lines = text.splitlines()
    starts = [line for line in lines if not line.startswith(CONTINUATION_INDENT)]
    assert all(RECORD_START.match(line) for line in starts), starts
    assert len(starts) == records, lines
    # Forged text may sit inside an indented traceback, never where a record starts.
    assert not any(line.startswith(("ERROR forged", FORGED)) for line in lines)


@pytest.fixture
async def sync(database: Database) -> AsyncIterator[AccountSync]:
    engine_sync = AccountSync(database, BOX.decrypt, config=fast_config())
    try:
        yield engine_sync
    finally:
        await engine_sync.aclose()


def add_account(database: Database, name: str, host: str, api_key: str) -> int:
    """An account row written directly (as one saved before the forms refused control characters)."""
    with database.session() as s:
        user = User(username="trader", email="trader@example.com", password_hash="x")
        s.add(user)
        s.flush()
        account = TradingAccount(
            user_id=user.id,
            account_name=name,
            broker="sandbox",
            host_url=host,
            api_key_encrypted=BOX.encrypt(api_key),
            api_key_last4=api_key[-4:],
            is_primary=True,
        )
        s.add(account)
        s.flush()
        return account.id


async def test_sync_log_when_broker_message_and_account_name_hold_newlines_cannot_forge_a_line(
    database: Database, simulator_session: SimHandle, sync: AccountSync, log_stream: io.StringIO
) -> None:
    sim = simulator_session
    account_id = add_account(database, "Main\n" + FORGED, sim.rest_url, sim.api_keys[0])
    assert (await sync.sync_account_once(account_id)).status == "connected"
    sim.control.status_next(
        500, 3, endpoint="funds", message="RMS down\nERROR forged\r\u202etxt.exe", apikey=sim.api_keys[0]
    )
    statuses = [(await sync.sync_account_once(account_id)).status for _ in range(3)]
    assert statuses == ["connected", "connected", "failed"]

    text = log_stream.getvalue()
    lost = [line for line in text.splitlines() if "connection lost" in line]
    assert len(lost) == 1, text
    # What the account name and the broker said is still in the line, escaped.
    assert "Main\\n" + FORGED in lost[0]
    assert "RMS down" in lost[0] and "\\u202etxt.exe" in lost[0]
    assert "\u202e" not in text and "\r" not in text
    records = [line for line in text.splitlines() if RECORD_START.match(line)]
    assert_one_line_per_record(text, len(records))
    assert len(records) >= 3  # two "failed (n in a row)" lines and the "connection lost" line


def test_log_when_message_or_arguments_hold_control_characters_escapes_them(log_stream: io.StringIO) -> None:
    log = logging.getLogger("algomirror.engine.sync")
    log.warning("account %s: %s", "A\x00B\x1b[31m", "line one\nERROR forged")
    log.info("name %r, tab\there, separator\u2028ERROR forged, next\u0085ERROR forged")
    text = log_stream.getvalue()
    assert_one_line_per_record(text, 2)
    assert "A\\x00B\\x1b[31m" in text and "line one\\nERROR forged" in text
    assert "tab\\there" in text and "\\u2028ERROR forged" in text and "\\x85ERROR forged" in text


def test_log_when_exception_message_holds_a_newline_indents_the_whole_traceback(
    log_stream: io.StringIO,
) -> None:
    log = logging.getLogger("algomirror.engine.sync")
    try:
        try:
            raise ValueError("broker said\nERROR forged")
        except ValueError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError:
        log.exception("account sync 1: worker crashed")
    text = log_stream.getvalue()
    assert_one_line_per_record(text, 1)
    assert CONTINUATION_INDENT + "ValueError: broker said\n" + CONTINUATION_INDENT + "ERROR forged" in text
    assert CONTINUATION_INDENT + "RuntimeError: wrapped" in text


def test_log_when_exception_is_clean_keeps_the_record_and_its_traceback_as_they_were(
    log_stream: io.StringIO, caplog: pytest.LogCaptureFixture
) -> None:
    install_redaction()  # also onto caplog's handler
    try:
        raise KeyError("missing")
    except KeyError:
        logging.getLogger("algomirror.engine.sync").exception("account sync 2: %s", "ordinary")
    assert caplog.records[-1].exc_info is not None
    text = log_stream.getvalue()
    assert "account sync 2: ordinary" in text
    assert "\nTraceback (most recent call last):" in text and "KeyError: 'missing'" in text
