"""Schemathesis against the hub's own OpenAPI document: every operation, over real HTTP.

A real hub runs in a thread of its own (schemathesis calls it synchronously), authenticated as
iothubowner. Each generated request must get no 5xx, a documented status code and a body
that matches the documented schema. Examples are bounded so that the file stays well under
a minute and a half; with ``CI`` set they are derandomized through the hypothesis profile that
tests/conftest.py loads, which these settings inherit.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import Case
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Ok
from schemathesis.schemas import BaseSchema
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from hub.runtime import Hub
from tests.e2e.conftest import hub_settings, service_token

EXAMPLES_PER_OPERATION = 60
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]


@dataclass(frozen=True)
class ThreadedHub:
    url: str
    token: str


@pytest.fixture(scope="module")
def threaded_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedHub]:
    """A hub on real sockets in its own thread and event loop, for as long as the module runs."""
    data_dir: Path = tmp_path_factory.mktemp("fuzz") / "data"
    started = threading.Event()
    found: list[ThreadedHub | BaseException] = []
    loop_box: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    async def run() -> None:
        stop = asyncio.Event()
        loop_box.append((asyncio.get_running_loop(), stop))
        try:
            async with Hub(hub_settings(data_dir)) as hub:
                assert hub.endpoints is not None
                found.append(ThreadedHub(hub.endpoints.http_url, service_token(hub, ttl=3 * 3600)))
                started.set()
                await stop.wait()
        except BaseException as exc:
            found.append(exc)
            started.set()
            raise

    thread = threading.Thread(target=asyncio.run, args=(run(),), name="fuzzed-hub")
    thread.start()
    try:
        assert started.wait(60), "the hub did not start within 60 s"
        result = found[0]
        if isinstance(result, BaseException):
            raise result
        yield result
    finally:
        if loop_box:
            loop, stop = loop_box[0]
            loop.call_soon_threadsafe(stop.set)
        thread.join(60)


@pytest.fixture(scope="module")
def openapi_schema(threaded_hub: ThreadedHub) -> BaseSchema:
    return schemathesis.openapi.from_url(f"{threaded_hub.url}/openapi.json")


def test_every_operation_answers_as_documented(openapi_schema: BaseSchema, threaded_hub: ThreadedHub) -> None:
    # One loop over the operations rather than schema.parametrize(): the lazy, fixture-backed
    # parametrization of schemathesis 4 does not run under pytest 9 (it reads request.node._nodeid).
    failures: list[str] = []
    operations = []
    for result in openapi_schema.get_all_operations():
        assert isinstance(result, Ok), result  # an operation the document cannot describe fails too
        operations.append(result.ok())
    assert len(operations) >= 15
    for operation in operations:

        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
            phases=[Phase.explicit, Phase.generate, Phase.shrink],
        )
        @given(case=operation.as_strategy())
        def exercise(case: Case[Any]) -> None:
            case.call_and_validate(headers={"Authorization": threaded_hub.token}, checks=CHECKS, timeout=30)

        try:
            exercise()
        except (AssertionError, FailureGroup) as exc:  # one report for all operations
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)


# -- what the fuzzer found, kept as plain examples ------------------------------------------------


def test_bulk_import_of_an_id_with_a_lone_surrogate_is_a_400(threaded_hub: ThreadedHub) -> None:
    """A JSON \\u escape may encode half a surrogate pair; the bulk result echoed such an id and the
    hub failed with 500 rendering it as UTF-8."""
    response = httpx.post(
        f"{threaded_hub.url}/devices",
        content=b'[{"id": "\\ud951"}, {"id": "fine-device"}]',
        headers={"Authorization": threaded_hub.token, "Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 400, response.text
    assert response.headers["iothub-errorcode"] == "ArgumentInvalid"
    assert "lone surrogate" in response.json()["Message"]
    listed = httpx.get(f"{threaded_hub.url}/devices", headers={"Authorization": threaded_hub.token}, timeout=30)
    assert "fine-device" not in {device["deviceId"] for device in listed.json()}  # nothing was imported


@pytest.mark.parametrize("path", ["/devices/key-test", "/devices"])
def test_a_symmetric_key_that_is_not_ascii_is_a_400(threaded_hub: ThreadedHub, path: str) -> None:
    """base64 decoding raises ValueError, not binascii.Error, for non-ASCII text: it was a 500."""
    device = {"authentication": {"symmetricKey": {"primaryKey": "Ç" * 44, "secondaryKey": None}}}
    body = [{"id": "key-test", **device}] if path == "/devices" else device
    response = httpx.request(
        "POST" if path == "/devices" else "PUT",
        f"{threaded_hub.url}{path}",
        json=body,
        headers={"Authorization": threaded_hub.token},
        timeout=30,
    )
    assert response.status_code == 400, response.text
    assert "symmetric keys must be base64" in response.json()["Message"]
