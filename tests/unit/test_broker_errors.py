"""Error classification: the transport-neutral reply classifier, and each transport's exception mapper.

The classifier gets what any transport hands over (status, body bytes, content type); the mappers turn
aiohttp's and httpx's exceptions into the class that says what the caller should do, by whether the
request can have reached the server. The same faults made to happen for real on loopback are in
tests/integration/test_broker_transport.py.
"""

from __future__ import annotations

import json as _json

import aiohttp
import httpx
import pytest
from aiohttp.client_reqrep import ConnectionKey

from algomirror.broker.errors import (
    AuthError,
    BrokerError,
    BrokerTimeoutError,
    ConnectionFailedError,
    HaltError,
    MalformedResponseError,
    NotFoundError,
    OrdersSuspendedError,
    RateLimitedError,
    RejectedError,
    RetryableError,
    ServerError,
    UnknownOutcomeError,
    account_status_for,
    classify_reply,
    error_message,
)
from algomirror.broker.transport import map_aiohttp_error
from algomirror.broker.transport_httpx import map_httpx_error


def _resp(
    code: int,
    *,
    json: object = None,
    text: str | None = None,
    content: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes, str | None]:
    """A reply as any transport hands it over: status, raw body, Content-Type."""
    if json is not None:
        return code, _json.dumps(json).encode(), "application/json"
    ctype = (headers or {}).get("content-type", "text/plain" if text is not None else None)
    return code, content if content is not None else (text or "").encode(), ctype


def classify(reply: tuple[int, bytes, str | None], *, endpoint: str, order: bool) -> dict[str, object]:
    status, body, ctype = reply
    return classify_reply(status, body, content_type=ctype, endpoint=endpoint, order=order)


def test_classify_when_success_returns_payload() -> None:
    body = {"status": "success", "orderid": "25112201234567"}
    assert classify(_resp(200, json=body), endpoint="placeorder", order=True) == body


@pytest.mark.parametrize("order", [True, False])
def test_classify_when_429_raises_rate_limited_with_one_second_hint(order: bool) -> None:
    with pytest.raises(RateLimitedError) as info:
        classify(_resp(429, json={"message": "10 per 1 second"}), endpoint="placeorder", order=order)
    assert info.value.retry_after == pytest.approx(1.0)
    assert "10 per 1 second" in info.value.message
    assert isinstance(info.value, RetryableError)


def test_classify_when_403_raises_auth_error_which_is_a_halt() -> None:
    body = {"status": "error", "message": "Invalid openalgo apikey"}
    with pytest.raises(AuthError) as info:
        classify(_resp(403, json=body), endpoint="funds", order=False)
    assert isinstance(info.value, HaltError)
    assert info.value.message == "Invalid openalgo apikey"
    assert info.value.http_status == 403


def test_classify_when_403_with_html_still_raises_auth_error() -> None:
    with pytest.raises(AuthError):
        classify(_resp(403, text="<html>Forbidden</html>"), endpoint="funds", order=False)


def test_classify_when_400_raises_rejected_with_verbatim_message() -> None:
    text = "Insufficient funds. Required: ₹1,00,000.00, Available: ₹5.00, Shortage: ₹99,995.00"
    with pytest.raises(RejectedError) as info:
        classify(_resp(400, json={"status": "error", "message": text}), endpoint="placeorder", order=True)
    assert info.value.message == text
    assert info.value.orderid is None


def test_classify_when_400_carries_orderid_keeps_it_as_string() -> None:
    body = {"status": "error", "message": "No holdings to sell", "orderid": 25112201234567}
    with pytest.raises(RejectedError) as info:
        classify(_resp(400, json=body), endpoint="placeorder", order=True)
    assert info.value.orderid == "25112201234567"


def test_classify_when_404_raises_not_found_which_is_rejected() -> None:
    body = {"status": "error", "message": "Order 123 not found"}
    with pytest.raises(NotFoundError) as info:
        classify(_resp(404, json=body), endpoint="orderstatus", order=False)
    assert isinstance(info.value, RejectedError)
    assert info.value.message == "Order 123 not found"


def test_classify_when_200_with_status_error_raises_rejected() -> None:
    with pytest.raises(RejectedError):
        classify(
            _resp(200, json={"status": "error", "message": "broker said no"}), endpoint="funds", order=False
        )


def test_classify_when_500_on_read_raises_server_error() -> None:
    with pytest.raises(ServerError) as info:
        classify(_resp(500, json={"status": "error", "message": "boom"}), endpoint="funds", order=False)
    assert info.value.http_status == 500
    assert isinstance(info.value, RetryableError)


def test_classify_when_500_on_order_raises_unknown_outcome() -> None:
    with pytest.raises(UnknownOutcomeError):
        classify(_resp(502, text="<html>Bad gateway</html>"), endpoint="placeorder", order=True)


def test_classify_when_200_html_on_read_raises_malformed() -> None:
    html = "<!doctype html><html><body>Login</body></html>"
    with pytest.raises(MalformedResponseError) as info:
        classify(_resp(200, text=html, headers={"content-type": "text/html"}), endpoint="funds", order=False)
    assert "text/html" in info.value.message
    assert isinstance(info.value, RetryableError)


def test_classify_when_200_garbage_on_order_raises_unknown_outcome() -> None:
    with pytest.raises(UnknownOutcomeError):
        classify(_resp(200, content=b"\x00\xffgarbage"), endpoint="placeorder", order=True)


def test_classify_when_json_is_not_an_object_raises_malformed() -> None:
    with pytest.raises(MalformedResponseError):
        classify(_resp(200, json=[1, 2, 3]), endpoint="funds", order=False)


def test_classify_when_200_without_status_raises_malformed() -> None:
    with pytest.raises(MalformedResponseError):
        classify(_resp(200, json={"data": {}}), endpoint="funds", order=False)


def test_classify_when_404_html_raises_rejected_not_retryable() -> None:
    with pytest.raises(RejectedError) as info:
        classify(_resp(404, text="<html>nginx</html>"), endpoint="funds", order=False)
    assert "non-JSON" in info.value.message


def test_classify_reply_when_body_is_text_not_bytes_reads_it_the_same() -> None:
    body = '{"status": "success", "orderid": "1"}'
    assert classify_reply(200, body, endpoint="placeorder", order=True)["orderid"] == "1"


def test_classify_reply_when_content_type_missing_says_so_in_message() -> None:
    with pytest.raises(MalformedResponseError) as info:
        classify_reply(200, b"<html>", endpoint="funds", order=False)
    assert "no content type" in info.value.message


# ----------------------------------------------------------------------------- aiohttp mapper


def _refused() -> aiohttp.ClientConnectorError:
    key = ConnectionKey("127.0.0.1", 9, False, True, None, None, None, None)
    return aiohttp.ClientConnectorError(key, OSError(111, "Connect call failed"))


@pytest.mark.parametrize("order", [True, False])
@pytest.mark.parametrize(
    "make",
    [_refused, lambda: aiohttp.ConnectionTimeoutError("pool wait or connect")],
    ids=["refused", "pool"],
)
def test_map_aiohttp_when_nothing_was_sent_gives_retryable_connection_failed_even_for_orders(
    order: bool, make: object
) -> None:
    exc = make()  # type: ignore[operator]
    mapped = map_aiohttp_error(exc, endpoint="placeorder", order=order)
    assert isinstance(mapped, ConnectionFailedError)
    assert isinstance(mapped, RetryableError)
    assert mapped.endpoint == "placeorder"


@pytest.mark.parametrize(
    "exc",
    [
        aiohttp.ServerDisconnectedError(),
        aiohttp.ClientOSError(104, "Connection reset by peer"),
        aiohttp.SocketTimeoutError("Timeout on reading data from socket"),
        TimeoutError(),
        aiohttp.ClientPayloadError("Can not decode content-encoding: gzip"),
    ],
    ids=["disconnected", "reset", "sock-read", "total", "payload"],
)
def test_map_aiohttp_when_request_was_written_gives_unknown_outcome_for_orders(exc: Exception) -> None:
    mapped = map_aiohttp_error(exc, endpoint="placeorder", order=True)
    assert isinstance(mapped, UnknownOutcomeError)
    assert not isinstance(mapped, RetryableError)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (aiohttp.ServerDisconnectedError(), ConnectionFailedError),
        (aiohttp.ClientOSError(104, "Connection reset by peer"), ConnectionFailedError),
        (aiohttp.SocketTimeoutError("slow"), BrokerTimeoutError),
        (TimeoutError(), BrokerTimeoutError),
        (aiohttp.ClientPayloadError("bad gzip"), MalformedResponseError),
    ],
    ids=["disconnected", "reset", "sock-read", "total", "payload"],
)
def test_map_aiohttp_when_read_loses_reply_gives_retryable(
    exc: Exception, expected: type[BrokerError]
) -> None:
    mapped = map_aiohttp_error(exc, endpoint="funds", order=False)
    assert type(mapped) is expected
    assert isinstance(mapped, RetryableError)


def test_map_aiohttp_when_url_invalid_gives_rejected() -> None:
    mapped = map_aiohttp_error(aiohttp.InvalidUrlClientError("http://"), endpoint="funds", order=False)
    assert type(mapped) is RejectedError


def test_map_aiohttp_when_exception_is_foreign_returns_it_unchanged() -> None:
    exc = KeyError("x")
    assert map_aiohttp_error(exc, endpoint="funds", order=False) is exc


# ------------------------------------------------------------------------------- httpx mapper


@pytest.mark.parametrize("order", [True, False])
def test_map_httpx_when_connect_fails_gives_retryable_even_for_orders(order: bool) -> None:
    for exc in (httpx.ConnectError("refused"), httpx.ConnectTimeout("slow"), httpx.PoolTimeout("full")):
        assert isinstance(map_httpx_error(exc, endpoint="placeorder", order=order), ConnectionFailedError)


def test_map_httpx_when_read_times_out_on_read_gives_timeout() -> None:
    assert isinstance(
        map_httpx_error(httpx.ReadTimeout("slow"), endpoint="funds", order=False), BrokerTimeoutError
    )


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ReadTimeout("slow"),
        httpx.RemoteProtocolError("dropped"),
        httpx.ReadError("reset"),
        httpx.DecodingError("bad gzip"),
    ],
)
def test_map_httpx_when_order_reply_is_lost_gives_unknown_outcome(exc: Exception) -> None:
    mapped = map_httpx_error(exc, endpoint="placeorder", order=True)
    assert isinstance(mapped, UnknownOutcomeError)
    assert not isinstance(mapped, RetryableError)


def test_map_httpx_when_exception_is_not_httpx_returns_it_unchanged() -> None:
    exc = KeyError("x")
    assert map_httpx_error(exc, endpoint="funds", order=False) is exc


def test_orders_suspended_is_a_halt_not_a_retry() -> None:
    exc = OrdersSuspendedError("order calls suspended (engine lock lost)")
    assert isinstance(exc, HaltError)
    assert not isinstance(exc, RetryableError | AuthError)


def test_error_message_when_order_family_dict_string_is_kept() -> None:
    body = {"status": "error", "message": "{'quantity': ['Quantity must be a positive number.']}"}
    assert error_message(body) == "{'quantity': ['Quantity must be a positive number.']}"


def test_error_message_when_data_family_object_is_flattened() -> None:
    body = {"status": "error", "message": {"exchange": ["Must be one of: NSE, NFO."]}}
    assert error_message(body) == "exchange: Must be one of: NSE, NFO."


def test_error_message_when_options_family_errors_are_appended() -> None:
    body = {"status": "error", "message": "Validation error", "errors": {"offset": ["Invalid offset"]}}
    assert error_message(body) == "Validation error: offset: Invalid offset"


def test_redact_when_message_contains_secret_removes_it() -> None:
    exc = BrokerError("bad key abcdef123456 given")
    exc.redact("abcdef123456")
    assert "abcdef123456" not in str(exc)
    assert "abcdef123456" not in repr(exc)


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (AuthError("Invalid openalgo apikey", http_status=403), "auth_failed"),
        (RejectedError("Insufficient funds", http_status=400), "failed"),
        (ServerError("boom", http_status=500), "failed"),
        (RateLimitedError("10 per 1 second", http_status=429), "failed"),
        (MalformedResponseError("HTML", http_status=200), "error"),
        (ConnectionFailedError("refused"), "error"),
        (BrokerTimeoutError("slow"), "error"),
        (UnknownOutcomeError("lost"), "error"),
        (UnknownOutcomeError("500", http_status=500), "failed"),
    ],
)
def test_account_status_for_when_failure_classified_maps_to_product_status(
    exc: BrokerError, status: str
) -> None:
    assert account_status_for(exc) == status
