"""Fuzz: random JSON bodies and field values for every endpoint never make the paper exchange answer 500.

Most examples go through the real request pipeline in-process (schema, key check, business logic); a
smaller sample goes over HTTP to cover the transport (JSON parsing, routing, trailing slashes).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from algomirror.simulator.endpoints import ENDPOINTS
from algomirror.simulator.ratelimit import RateLimitConfig
from algomirror.simulator.rest import _dispatch
from algomirror.simulator.server import RunningSimulator, start_in_thread
from algomirror.simulator.validation import SCHEMAS, ListOf
from tests.sim_fixtures import default_test_config

NAMES = sorted(ENDPOINTS)
SYMBOLS = ["NIFTY", "NIFTY01DEC2626000CE", "NIFTY29DEC26FUT", "SENSEX", "NOSUCH", "", "nifty"]
EXCHANGES = ["NFO", "NSE_INDEX", "BFO", "NSE", "nfo", "XYZ"]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(
        [
            "65",
            "-1",
            "1e999",
            "NaN",
            "0.05",
            "26000",
            "5.5",
            "ATM",
            "OTM60",
            "01DEC26",
            "2026-11-25",
            "MARKET",
            "LIMIT",
            "SL",
            "SL-M",
            "BUY",
            "sell",
            "MIS",
            "NRML",
            "CNC",
            "CE",
            "pe",
            "options",
        ]
    ),
    st.sampled_from(SYMBOLS + EXCHANGES),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def field_values(endpoint: str, key: str) -> st.SearchStrategy[Any]:
    field = SCHEMAS[endpoint].fields.get(key)
    if isinstance(field, ListOf):
        item = st.fixed_dictionaries(
            {},
            optional=dict.fromkeys(field.item.fields, json_values),
        )
        return st.one_of(st.lists(item, max_size=3), json_values)
    return json_values


@st.composite
def bodies(draw: st.DrawFn, key: str) -> tuple[str, Any]:
    endpoint = draw(st.sampled_from(NAMES))
    fields = SCHEMAS[endpoint].fields
    body: dict[str, Any] = {}
    for name in fields:
        if name == "apikey":
            if draw(st.integers(0, 9)) > 0:
                body[name] = key
            continue
        if draw(st.booleans()):
            body[name] = draw(field_values(endpoint, name))
    if draw(st.integers(0, 9)) == 0:
        body[draw(st.text(min_size=1, max_size=6))] = draw(json_values)
    if draw(st.integers(0, 19)) == 0:
        return endpoint, draw(json_values)  # not even an object
    return endpoint, body


# One pooled client: a new connection per call costs ~40 ms of client-side set-up, not server time.
_HTTP = httpx.Client()


@pytest.fixture(scope="module")
def running() -> Iterator[RunningSimulator]:
    sim = start_in_thread(default_test_config(rate_limits=RateLimitConfig(enabled=False)))
    try:
        yield sim
    finally:
        sim.stop()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_dispatch_when_random_bodies_never_answers_500(
    running: RunningSimulator, data: st.DataObject
) -> None:
    endpoint, body = data.draw(bodies(running.api_keys[0]))
    status, reply = running.call(lambda: _dispatch(running.core, endpoint, body))
    assert status in (200, 400, 401, 403, 404), (endpoint, body, status, reply)
    assert reply["status"] in ("success", "error")
    if status != 200:
        assert reply["status"] == "error" and "message" in reply
    json.dumps(reply)  # always serialisable


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_http_when_random_bodies_never_answers_500(running: RunningSimulator, data: st.DataObject) -> None:
    endpoint, body = data.draw(bodies(running.api_keys[0]))
    slash = data.draw(st.sampled_from(["", "/"]))
    r = _HTTP.post(
        f"{running.rest_url}/api/v1/{endpoint}{slash}",
        content=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert r.status_code in (200, 400, 401, 403, 404), (endpoint, body, r.status_code, r.text)
    assert r.json()["status"] in ("success", "error")


@pytest.mark.parametrize("raw", [b"", b"not json", b"{bad", b"\xff\xfe"])
def test_http_when_body_is_not_json_answers_500_like_openalgo(running: RunningSimulator, raw: bytes) -> None:
    r = httpx.post(f"{running.rest_url}/api/v1/placeorder", content=raw, timeout=10)
    assert r.status_code == 500 and r.json()["status"] == "error"


def test_http_when_path_unknown_answers_404_json(running: RunningSimulator) -> None:
    r = httpx.post(f"{running.rest_url}/api/v1/x", json={}, timeout=10)
    assert (r.status_code, r.json()) == (
        404,
        {"status": "error", "message": "Not found", "path": "/api/v1/x"},
    )
    r = httpx.get(f"{running.rest_url}/api/v1/funds", timeout=10)
    assert r.status_code == 405
