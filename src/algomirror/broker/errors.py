"""Broker errors, classified once by what the caller should do.

::

    BrokerError
    ├── RetryableError            try again later (``retry_after`` seconds is a hint)
    │   ├── ConnectionFailedError     could not connect / connection dropped on a read
    │   ├── BrokerTimeoutError        a read took longer than its timeout
    │   ├── ServerError               5xx on a read
    │   ├── RateLimitedError          429 (the request was not executed)
    │   └── MalformedResponseError    HTML, garbage, non-JSON or an unexpected shape
    ├── RejectedError             the broker said no; ``message`` is shown to the user verbatim
    │   ├── NotFoundError             404 (unknown order id, symbol, option strike…)
    │   └── NotPlacedError            "success" without an order id (semi-auto queue): not placed
    ├── HaltError                 stop calling this account and alert
    │   ├── AuthError                 401/403: mark the account ``auth_failed`` until the key changes
    │   └── OrdersSuspendedError      order calls refused locally (engine lock lost…): nothing was sent
    └── UnknownOutcomeError       an order POST timed out, dropped or got a 5xx: it may or may not
                                  exist. Never retried by the client; the engine's journal resolves it.

:func:`classify_reply` turns any transport's reply (status + body) into a result or one of these; each
transport has one exception mapper (:mod:`algomirror.broker.transport` for aiohttp,
:mod:`algomirror.broker.transport_httpx` for httpx) for failures before a reply.
"""

from __future__ import annotations

import json
from typing import Any

from algomirror.redaction import redact_secret

# OpenAlgo sends no Retry-After on 429; its window is one second.
RATE_LIMIT_RETRY_AFTER = 1.0

_MAX_MESSAGE = 500


class BrokerError(Exception):
    """Base of every broker-call failure.

    ``message`` is safe to show and log: it never contains the API key. ``endpoint`` is the OpenAlgo
    endpoint name (``placeorder``), ``http_status`` the HTTP code when the server answered.
    """

    def __init__(self, message: str, *, endpoint: str = "", http_status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.endpoint = endpoint
        self.http_status = http_status

    def __str__(self) -> str:
        return self.message

    def redact(self, secret: str) -> None:
        """Remove ``secret`` from the message (defence in depth: a server might echo the key), also in
        another case or cut short: every piece of 12+ characters
        (:func:`~algomirror.redaction.redact_secret`)."""
        clean = redact_secret(self.message, secret, "***")
        if clean != self.message:
            self.message = clean
            self.args = (self.message,)


class RetryableError(BrokerError):
    """Transient: the same call may succeed later. ``retry_after`` is the suggested wait in seconds."""

    def __init__(
        self,
        message: str,
        *,
        endpoint: str = "",
        http_status: int | None = None,
        retry_after: float = 0.0,
    ) -> None:
        super().__init__(message, endpoint=endpoint, http_status=http_status)
        self.retry_after = retry_after


class ConnectionFailedError(RetryableError):
    """No connection, or it dropped during a read. For orders, only raised when nothing was sent."""


class BrokerTimeoutError(RetryableError):
    """A read call exceeded its timeout."""


class ServerError(RetryableError):
    """The server answered 5xx to a read call."""


class RateLimitedError(RetryableError):
    """429: the server's per-route window is full; the request was not executed."""


class MalformedResponseError(RetryableError):
    """The reply was not the JSON object the protocol promises (HTML, garbage, wrong shape)."""


class RejectedError(BrokerError):
    """A definitive "no" from the broker. ``message`` is the broker's text, verbatim.

    ``orderid`` is set when the broker recorded the rejected order (a [paper] CNC sell without holdings
    answers 400 with an order id).
    """

    def __init__(
        self,
        message: str,
        *,
        endpoint: str = "",
        http_status: int | None = None,
        orderid: str | None = None,
    ) -> None:
        super().__init__(message, endpoint=endpoint, http_status=http_status)
        self.orderid = orderid


class NotFoundError(RejectedError):
    """404: the order id, symbol or strike does not exist (right after placement, [live] may lag)."""


class NotPlacedError(RejectedError):
    """The server said "success" but returned no order id (semi-auto approval queue): not placed."""


class HaltError(BrokerError):
    """Stop calling this account (or strategy) and alert; retrying cannot help."""


class AuthError(HaltError):
    """401/403: the key is wrong or the broker login lapsed. Mark the account ``auth_failed``."""


class OrdersSuspendedError(HaltError):
    """Order calls are suspended engine-wide (:meth:`ClientRegistry.suspend_orders`); nothing was
    sent. ``message`` carries the reason. Reads still work."""


class UnknownOutcomeError(BrokerError):
    """An order POST whose effect is unknown (timeout, dropped connection, 5xx, unreadable reply).

    The order may exist. Never retry blindly: look it up in the order book first.
    """


def account_status_for(exc: BrokerError) -> str:
    """The account status (PRODUCT.md §2) a failure counts toward.

    ``auth_failed`` for a rejected key (at once); ``failed`` when the server answered with an error
    (rejections, 4xx, 5xx, 429; three in a row make the account ``failed``); ``error`` for network
    errors, timeouts and unreadable replies (three in a row make it ``error``).
    """
    if isinstance(exc, AuthError):
        return "auth_failed"
    if isinstance(exc, MalformedResponseError):
        return "error"
    if isinstance(exc, RejectedError) or exc.http_status is not None:
        return "failed"
    return "error"


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"


def error_message(body: object) -> str:
    """The user-facing text of an error body, whatever family shape it uses (protocol §1.3)."""
    if not isinstance(body, dict):
        return _clip(str(body))
    message = body.get("message")
    errors = body.get("errors")
    if isinstance(message, str) and errors is not None:
        return _clip(f"{message}: {_flatten(errors)}")
    if message is None and isinstance(body.get("error"), str):
        message = body["error"]
    if message is None:
        return "no message"
    return _clip(message if isinstance(message, str) else _flatten(message))


def _flatten(value: object) -> str:
    if isinstance(value, dict):
        return "; ".join(f"{key}: {_flatten(item)}" for key, item in value.items())
    if isinstance(value, list):
        return " ".join(_flatten(item) for item in value)
    return str(value)


def _decode(body: bytes | str) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None


def _kind(content_type: str | None) -> str:
    return (content_type or "").split(";")[0].strip() or "no content type"


def classify_reply(
    status: int,
    body: bytes | str,
    *,
    content_type: str | None = None,
    endpoint: str,
    order: bool,
) -> dict[str, Any]:
    """Return the JSON object of a successful reply, or raise the classified :class:`BrokerError`.

    Transport-neutral: ``status`` is the HTTP code, ``body`` the reply body as received, and
    ``content_type`` the Content-Type header (only quoted in messages). ``order`` is true for calls that
    may create or change orders (place, smart, split, basket, options, modify, cancel, cancel-all,
    close): their 5xx and unreadable replies raise :class:`UnknownOutcomeError`, while the same on a
    read is a :class:`RetryableError`. A 429 means nothing was executed, so it stays retryable for
    orders too. Failures before any reply are the transport's mapper's job
    (:mod:`algomirror.broker.transport`).
    """
    code = status
    decoded = _decode(body)
    if code == 429:
        raise RateLimitedError(
            f"rate limited by the server ({error_message(decoded) if decoded is not None else 'HTTP 429'})",
            endpoint=endpoint,
            http_status=code,
            retry_after=RATE_LIMIT_RETRY_AFTER,
        )
    if code in (401, 403):
        text = error_message(decoded) if isinstance(decoded, dict) else f"HTTP {code}"
        raise AuthError(text, endpoint=endpoint, http_status=code)
    if code >= 500:
        text = error_message(decoded) if isinstance(decoded, dict) else f"HTTP {code} ({_kind(content_type)})"
        if order:
            raise UnknownOutcomeError(
                f"server error {code} on {endpoint}, the order may or may not exist: {text}",
                endpoint=endpoint,
                http_status=code,
            )
        raise ServerError(f"server error {code}: {text}", endpoint=endpoint, http_status=code)
    if not isinstance(decoded, dict):
        if 400 <= code < 500:
            # A proxy or a wrong URL answering HTML: the request was refused, not executed.
            raise RejectedError(
                f"HTTP {code} with a non-JSON reply ({_kind(content_type)}): "
                "is the host URL an OpenAlgo server?",
                endpoint=endpoint,
                http_status=code,
            )
        text = f"HTTP {code} with a non-JSON reply ({_kind(content_type)})"
        if order:
            raise UnknownOutcomeError(
                f"{text}; the order may or may not exist", endpoint=endpoint, http_status=code
            )
        raise MalformedResponseError(text, endpoint=endpoint, http_status=code)
    reply_status = decoded.get("status")
    if code == 200 and reply_status == "success":
        return decoded
    if 400 <= code < 500 or reply_status == "error":
        orderid = decoded.get("orderid")
        cls = NotFoundError if code == 404 else RejectedError
        raise cls(
            error_message(decoded),
            endpoint=endpoint,
            http_status=code,
            orderid=str(orderid) if orderid not in (None, "") else None,
        )
    text = f"HTTP {code} reply without status success/error"
    if order:
        raise UnknownOutcomeError(
            f"{text}; the order may or may not exist", endpoint=endpoint, http_status=code
        )
    raise MalformedResponseError(text, endpoint=endpoint, http_status=code)


def not_sent(reason: str, *, endpoint: str) -> ConnectionFailedError:
    """The request never left: safe to retry, for an order too (a transport mapper's building block)."""
    return ConnectionFailedError(reason, endpoint=endpoint)


def lost_after_send(reason: str, *, endpoint: str, order: bool, timed_out: bool = False) -> BrokerError:
    """The request may have reached the server but no reply came: unknown outcome for an order;
    for a read a :class:`BrokerTimeoutError` (``timed_out``) or :class:`ConnectionFailedError`."""
    if order:
        return UnknownOutcomeError(f"{reason}; the order may or may not exist", endpoint=endpoint)
    if timed_out:
        return BrokerTimeoutError(reason, endpoint=endpoint)
    return ConnectionFailedError(reason, endpoint=endpoint)


def unreadable_reply(reason: str, *, endpoint: str, order: bool) -> BrokerError:
    """The server answered (and may have acted) but its reply could not be read."""
    if order:
        return UnknownOutcomeError(f"{reason}; the order may or may not exist", endpoint=endpoint)
    return MalformedResponseError(reason, endpoint=endpoint)


def clip(text: str) -> str:
    """One line of at most 500 characters: exception texts quoted in messages."""
    return _clip(text)
