"""Who may call what: the 401/403 matrix over the app's own route table, ``sr`` and token lifetime.

Every route comes from the FastAPI app the hub serves, so a route added later fails here
until it either checks a token (and is listed in RIGHTS) or is added to PUBLIC on purpose.
"""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import aiomqtt
import httpx
import pytest
from fastapi.routing import APIRoute, APIWebSocketRoute, iter_route_contexts
from starlette.routing import Route

from hub.api.app import create_app
from hub.api.device_websocket import DEVICE_WEBSOCKET_PATH
from hub.domain.policies import DEFAULT_POLICY_RIGHTS
from hub.runtime import Hub
from hub.wire.sas import generate_sas_token
from tests.e2e.conftest import create_device, hub_settings, mqtt_client, service_token

OWNER, SERVICE, READ, READ_WRITE = "iothubowner", "service", "registryRead", "registryReadWrite"
POLICIES = (OWNER, SERVICE, READ, READ_WRITE)

# Routes that answer without a token. Keep it short: /healthz for load balancers, /metrics
# (process figures only) for Prometheus scrapers, and the OpenAPI document with its viewers.
PUBLIC = frozenset({"/healthz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})

_REGISTRY_READ = frozenset({OWNER, READ, READ_WRITE})
_REGISTRY_WRITE = frozenset({OWNER, READ_WRITE})
_TWIN_READ = frozenset({OWNER, SERVICE, READ, READ_WRITE})  # ServiceConnect or RegistryRead
_TWIN_WRITE = frozenset({OWNER, SERVICE, READ_WRITE})  # ServiceConnect or RegistryWrite
_SERVICE_CONNECT = frozenset({OWNER, SERVICE})

# The policies allowed on each route, as IoT Hub grants them; every other policy gets 403.
RIGHTS: dict[tuple[str, str], frozenset[str]] = {
    ("PUT", "/devices/{device_id}"): _REGISTRY_WRITE,
    ("GET", "/devices/{device_id}"): _REGISTRY_READ,
    ("DELETE", "/devices/{device_id}"): _REGISTRY_WRITE,
    ("GET", "/devices"): _REGISTRY_READ,
    ("POST", "/devices"): _REGISTRY_WRITE,
    ("GET", "/twins/{device_id}"): _TWIN_READ,
    ("PATCH", "/twins/{device_id}"): _TWIN_WRITE,
    ("PUT", "/twins/{device_id}"): _TWIN_WRITE,
    ("POST", "/twins/{device_id}/methods"): _SERVICE_CONNECT,
    ("POST", "/devices/query"): _TWIN_READ,
    ("GET", "/jobs/v2/query"): _SERVICE_CONNECT,
    ("PUT", "/jobs/v2/{job_id}"): _SERVICE_CONNECT,
    ("GET", "/jobs/v2/{job_id}"): _SERVICE_CONNECT,
    ("POST", "/jobs/v2/{job_id}/cancel"): _SERVICE_CONNECT,
    ("GET", "/jobs/v2/{job_id}/devices"): _SERVICE_CONNECT,
    ("GET", "/jobs/v2/{job_id}/events"): _SERVICE_CONNECT,
    ("GET", "/schedules"): _SERVICE_CONNECT,
    ("PUT", "/schedules/{schedule_id}"): _SERVICE_CONNECT,
    ("GET", "/schedules/{schedule_id}"): _SERVICE_CONNECT,
    ("DELETE", "/schedules/{schedule_id}"): _SERVICE_CONNECT,
    ("POST", "/schedules/{schedule_id}/run"): _SERVICE_CONNECT,
    ("POST", "/schedules/{schedule_id}/enable"): _SERVICE_CONNECT,
    ("POST", "/schedules/{schedule_id}/disable"): _SERVICE_CONNECT,
    ("GET", "/schedules/{schedule_id}/runs"): _SERVICE_CONNECT,
    ("GET", "/statistics/devices"): _REGISTRY_READ,
    ("GET", "/statistics/service"): _TWIN_READ,
    ("GET", "/certificates"): _REGISTRY_READ,
    ("PUT", "/certificates/{name}"): _REGISTRY_WRITE,
    ("GET", "/certificates/{name}"): _REGISTRY_READ,
    ("DELETE", "/certificates/{name}"): _REGISTRY_WRITE,
}

UNAUTHORIZED = "IotHubUnauthorizedAccess"
FORBIDDEN = "IotHubUnauthorized"


def route_table(hub: Hub) -> tuple[set[tuple[str, str]], set[str]]:
    """(method, path) of every route of the hub's app that is not PUBLIC, and the public paths it
    has. The one WebSocket route, MQTT over WebSockets, is a device transport: the MQTT CONNECT
    inside it logs in (tests/e2e/test_mqtt_websockets.py proves it), so it is left out here."""
    assert hub.services is not None
    app = create_app(hub.services, max_token_lifetime=hub.settings.max_token_lifetime_seconds)
    guarded: set[tuple[str, str]] = set()
    public: set[str] = set()
    # iter_route_contexts flattens included routers and applies their prefixes, as serving does.
    for context in iter_route_contexts(app.routes):
        route, path = context.original_route, context.path
        if isinstance(route, APIWebSocketRoute) and path == DEVICE_WEBSOCKET_PATH:
            continue
        # A Mount, another websocket or any other kind of route needs its own auth check here first.
        assert isinstance(route, APIRoute | Route), f"unexpected kind of route: {route!r}"
        assert path, f"route without a path: {route!r}"
        if path in PUBLIC:
            public.add(path)
            continue
        assert isinstance(route, APIRoute), f"{path} is served outside FastAPI's dependencies"
        guarded.update((method, path) for method in context.methods or ())
    return guarded, public


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "authmatrix-x", path)


def assert_iothub_error(response: httpx.Response, status: int, code: str, *, says: str = "") -> None:
    where = f"{response.request.method} {response.request.url.path}"
    assert response.status_code == status, f"{where}: {response.status_code} {response.text}"
    assert response.headers["iothub-errorcode"] == code, where
    assert response.headers["content-type"] == "application/json", where
    body = response.json()
    assert set(body) == {"Message", "ExceptionMessage"}, where
    assert body["Message"] == f"ErrorCode:{code};{body['ExceptionMessage']}", where
    assert says in body["ExceptionMessage"], f"{where}: {body['ExceptionMessage']!r} lacks {says!r}"


@pytest.fixture
async def anonymous(hub: Hub) -> AsyncIterator[httpx.AsyncClient]:
    assert hub.endpoints is not None
    async with httpx.AsyncClient(base_url=hub.endpoints.http_url, timeout=30) as client:
        yield client


async def call(client: httpx.AsyncClient, method: str, path: str, authorization: str | None) -> httpx.Response:
    headers = {} if authorization is None else {"Authorization": authorization}
    body: dict[str, object] | None = {} if method in {"POST", "PUT", "PATCH"} else None
    return await client.request(method, concrete(path), headers=headers, json=body)


async def test_every_route_is_public_on_purpose_or_has_its_rights_listed(
    hub: Hub, anonymous: httpx.AsyncClient
) -> None:
    guarded, public = route_table(hub)
    assert guarded == set(RIGHTS), (
        f"routes without an entry in RIGHTS: {sorted(guarded - set(RIGHTS))}; "
        f"entries for routes that are gone: {sorted(set(RIGHTS) - guarded)}"
    )
    assert public == PUBLIC
    spec = (await anonymous.get("/openapi.json")).json()
    documented = {(method.upper(), path) for path, item in spec["paths"].items() for method in item}
    assert documented <= guarded | {("GET", path) for path in PUBLIC}
    for path in sorted(PUBLIC):
        response = await anonymous.get(path)
        assert response.status_code == 200, f"{path}: {response.status_code}"


@pytest.mark.parametrize(
    "case", ["missing", "not-sas", "malformed", "wrong-signature", "expired", "too-long", "foreign-sr", "no-policy"]
)
async def test_every_guarded_route_refuses_bad_tokens_with_401(
    hub: Hub, anonymous: httpx.AsyncClient, case: str
) -> None:
    assert hub.services is not None
    owner_key = hub.services.policies[OWNER].primary_key
    stranger_key = base64.b64encode(b"not a key of this hub" + b"!" * 11).decode()
    too_long = hub.settings.max_token_lifetime_seconds + 3600
    authorization, says = {
        "missing": (None, "missing Authorization header"),
        "not-sas": ("Bearer abc.def.ghi", "malformed SharedAccessSignature"),
        "malformed": ("SharedAccessSignature sr=localhost&sig=abc&se=soon", "malformed SharedAccessSignature"),
        "wrong-signature": (generate_sas_token("localhost", stranger_key, key_name=OWNER), "not valid for this hub"),
        "expired": (service_token(hub, OWNER, ttl=-5), "expired"),
        "too-long": (service_token(hub, OWNER, ttl=too_long), "lives longer than the allowed"),
        "foreign-sr": (generate_sas_token("other-hub.example", owner_key, key_name=OWNER), "not for this hub"),
        "no-policy": (generate_sas_token("localhost", owner_key, key_name="nobody"), "not valid for this hub"),
    }[case]
    guarded, _ = route_table(hub)
    for method, path in sorted(guarded):
        response = await call(anonymous, method, path, authorization)
        assert_iothub_error(response, 401, UNAUTHORIZED, says=says)


@pytest.mark.parametrize("policy", POLICIES)
async def test_each_policy_gets_403_exactly_where_it_lacks_the_right(
    hub: Hub, anonymous: httpx.AsyncClient, policy: str
) -> None:
    authorization = service_token(hub, policy)
    guarded, _ = route_table(hub)
    for method, path in sorted(guarded):
        response = await call(anonymous, method, path, authorization)
        if policy in RIGHTS[(method, path)]:
            assert response.status_code not in {401, 403}, f"{policy} {method} {path}: {response.text}"
        else:
            assert_iothub_error(response, 403, FORBIDDEN, says=f"policy {policy!r} lacks the")


def test_the_matrix_knows_every_policy() -> None:
    assert set(POLICIES) == set(DEFAULT_POLICY_RIGHTS)


# -- sr names this hub ------------------------------------------------------------------------


async def test_sr_may_carry_the_hub_name_with_a_port_encoded_or_not(hub: Hub, anonymous: httpx.AsyncClient) -> None:
    assert hub.services is not None
    assert hub.endpoints is not None
    key = hub.services.policies[OWNER].primary_key
    port = hub.endpoints.https_port
    for host in ("localhost", f"localhost:{port}", f"LOCALHOST:{port}", "127.0.0.1", f"[::1]:{port}"):
        # generate_sas_token url-encodes sr (Node's form); the raw form is azure-iot-hub's.
        encoded = generate_sas_token(host, key, key_name=OWNER)
        raw = encoded.replace(f"sr={quote(host, safe='')}", f"sr={host}")
        for authorization in (encoded, raw):
            response = await anonymous.get("/devices", headers={"Authorization": authorization})
            assert response.status_code == 200, f"{authorization}: {response.text}"
    for host in ("localhost.example", f"example.test:{port}", "localhost/devices", "10.1.2.3"):
        response = await anonymous.get(
            "/devices", headers={"Authorization": generate_sas_token(host, key, key_name=OWNER)}
        )
        assert_iothub_error(response, 401, UNAUTHORIZED, says="not for this hub: its sr must be one of localhost")


# -- maximum token lifetime, REST and device login ---------------------------------------------


@pytest.fixture
async def short_lived_hub(tmp_path: Path) -> AsyncIterator[Hub]:
    settings = hub_settings(tmp_path / "data").model_copy(update={"max_token_lifetime_seconds": 600})
    async with Hub(settings) as running:
        yield running


async def test_rest_refuses_tokens_beyond_the_maximum_lifetime(short_lived_hub: Hub) -> None:
    hub = short_lived_hub
    assert hub.endpoints is not None
    async with httpx.AsyncClient(base_url=hub.endpoints.http_url, timeout=30) as client:
        ok = await client.get("/devices", headers={"Authorization": service_token(hub, OWNER, ttl=500)})
        assert ok.status_code == 200, ok.text
        refused = await client.get("/devices", headers={"Authorization": service_token(hub, OWNER, ttl=1200)})
        assert_iothub_error(refused, 401, UNAUTHORIZED, says="lives longer than the allowed 600 s")


async def test_device_login_refuses_tokens_beyond_the_maximum_lifetime(short_lived_hub: Hub) -> None:
    hub = short_lived_hub
    assert hub.endpoints is not None
    async with httpx.AsyncClient(
        base_url=hub.endpoints.http_url, timeout=30, headers={"Authorization": service_token(hub, ttl=500)}
    ) as api:
        creds = await create_device(api)
    with pytest.raises(aiomqtt.MqttCodeError) as info:
        async with mqtt_client(hub, creds, password=creds.token(ttl=1200)):
            pass
    assert str(info.value.rc) == "Not authorized"  # CONNACK 5
    async with mqtt_client(hub, creds, password=creds.token(ttl=500)):
        pass
