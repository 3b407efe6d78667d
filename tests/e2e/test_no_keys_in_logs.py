"""Keys and signatures never reach the log, even with every logger at DEBUG."""

from __future__ import annotations

import base64
import logging
import secrets
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, unquote

import aiomqtt
import httpx
import pytest

from hub.runtime import Hub
from hub.wire.sas import device_resource_uri, generate_sas_token, parse_sas_token
from tests.e2e.conftest import DeviceCreds, create_device, hub_settings, mqtt_client, service_token


def _debug_every_logger() -> None:
    logging.getLogger().setLevel(logging.DEBUG)
    for logger in list(logging.root.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger):
            logger.setLevel(logging.DEBUG)


@pytest.fixture
def every_logger_at_debug(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Every logger, including those the hub's dependencies quiet, at DEBUG; levels restored after."""
    saved = {
        name: logger.level
        for name, logger in logging.root.manager.loggerDict.items()
        if isinstance(logger, logging.Logger)
    }
    caplog.set_level(logging.DEBUG)
    _debug_every_logger()
    try:
        yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def _new_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def _signature_of(token: str) -> str:
    return parse_sas_token(token).signature


async def _refused_login(hub: Hub, creds: DeviceCreds, password: str) -> None:
    with pytest.raises(aiomqtt.MqttCodeError):
        async with mqtt_client(hub, creds, password=password):
            pass


async def test_no_key_or_signature_is_ever_logged(
    tmp_path: Path,
    database_url: str,
    every_logger_at_debug: None,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Device creation, key rotation, REST calls and device logins with good and bad tokens, on
    each database backend; then no key, policy key or token signature may be in the output."""
    secrets_seen: set[str] = set()
    tokens: list[str] = []
    async with Hub(hub_settings(tmp_path / "data", database_url)) as hub:
        _debug_every_logger()  # uvicorn sets its own loggers while the hub starts
        assert hub.services is not None
        assert hub.endpoints is not None
        for policy in hub.services.policies.values():
            secrets_seen.update(policy.keys())
        owner = service_token(hub)
        tokens.append(owner)
        async with httpx.AsyncClient(
            base_url=hub.endpoints.http_url, timeout=30, headers={"Authorization": owner}
        ) as api:
            # Devices: generated keys, given keys, bulk import, then a key rotation.
            generated = await create_device(api, "logs-generated")
            given_primary, given_secondary = _new_key(), _new_key()
            response = await api.put(
                "/devices/logs-given",
                json={
                    "deviceId": "logs-given",
                    "authentication": {
                        "type": "sas",
                        "symmetricKey": {"primaryKey": given_primary, "secondaryKey": given_secondary},
                    },
                },
            )
            assert response.status_code == 200, response.text
            bulk_keys = (_new_key(), _new_key())
            response = await api.post(
                "/devices",
                json=[
                    {
                        "id": "logs-bulk",
                        "importMode": "create",
                        "authentication": {
                            "type": "sas",
                            "symmetricKey": {"primaryKey": bulk_keys[0], "secondaryKey": bulk_keys[1]},
                        },
                    }
                ],
            )
            assert response.status_code == 200, response.text
            etag = (await api.get("/devices/logs-generated")).json()["etag"]
            rotated = DeviceCreds("logs-generated", _new_key(), _new_key())
            response = await api.put(
                "/devices/logs-generated",
                headers={"If-Match": f'"{etag}"'},
                json={
                    "deviceId": "logs-generated",
                    "authentication": {
                        "type": "sas",
                        "symmetricKey": {"primaryKey": rotated.primary_key, "secondaryKey": rotated.secondary_key},
                    },
                },
            )
            assert response.status_code == 200, response.text
            secrets_seen.update(
                {generated.primary_key, generated.secondary_key, given_primary, given_secondary, *bulk_keys}
            )
            secrets_seen.update({rotated.primary_key, rotated.secondary_key})
            assert (await api.get("/devices")).status_code == 200
            assert (await api.get("/twins/logs-given")).status_code == 200

            # REST with good and bad tokens.
            assert hub.services is not None
            owner_key = hub.services.policies["iothubowner"].primary_key
            bad_tokens = [
                generate_sas_token("localhost", _new_key(), key_name="iothubowner"),  # wrong key
                service_token(hub, ttl=-5),  # expired
                service_token(hub, ttl=10 * 365 * 24 * 3600),  # lives too long
                generate_sas_token("elsewhere.example", owner_key, key_name="iothubowner"),  # foreign sr
                generate_sas_token("localhost", owner_key, key_name="nobody"),  # unknown policy
                service_token(hub, "registryRead"),  # valid, but lacks the right
            ]
            tokens.extend(bad_tokens)
            for bad in bad_tokens:
                response = await api.put("/devices/logs-denied", headers={"Authorization": bad}, json={})
                assert response.status_code in {401, 403}, response.text
            garbled = owner.replace("&se=", "&se=x")
            assert (await api.get("/devices", headers={"Authorization": garbled})).status_code == 401
            good_service = service_token(hub, "service")
            tokens.append(good_service)
            response = await api.get("/twins/logs-given", headers={"Authorization": good_service})
            assert response.status_code == 200

            # Device logins: good ones, and bad ones while the device is connected.
            good_login = rotated.token()
            tokens.append(good_login)
            async with mqtt_client(hub, rotated, password=good_login) as device:
                await device.subscribe("$iothub/twin/res/#")
                await device.publish("$iothub/twin/GET/?$rid=1", b"")
                stale = generated.token()  # the key before the rotation
                expired = rotated.token(ttl=-10)
                foreign = DeviceCreds("logs-given", given_primary, given_secondary).token()
                too_long = rotated.token(ttl=10 * 365 * 24 * 3600)
                other_device = generate_sas_token(device_resource_uri("localhost", "logs-other"), rotated.primary_key)
                for bad in (stale, expired, foreign, too_long, other_device):
                    tokens.append(bad)
                    await _refused_login(hub, rotated, bad)
                await _refused_login(hub, rotated, "SharedAccessSignature sr=garbage")
            given = DeviceCreds("logs-given", given_primary, given_secondary)
            secondary_login = given.token(key=given_secondary)
            tokens.append(secondary_login)
            async with mqtt_client(hub, given, password=secondary_login):
                pass

    out, err = capfd.readouterr()
    log_text = "\n".join(
        [caplog.text, out, err, *(record.getMessage() for record in caplog.records), *map(repr, caplog.records)]
    )
    assert "logs-generated" in log_text, "nothing of the run was logged: the capture is broken"
    signatures = {_signature_of(token) for token in tokens}
    forms = {
        form
        for secret in secrets_seen | signatures
        for form in (secret, quote(secret, safe=""), unquote(secret), secret.rstrip("="))
        if len(form) >= 16
    }
    leaked = sorted(form for form in forms if form in log_text)
    where = sorted({_masked(line, leaked)[:300] for line in log_text.splitlines() if any(f in line for f in leaked)})
    assert not leaked, f"{len(leaked)} secrets in the log, in these lines:\n" + "\n".join(where[:20])


def _masked(line: str, leaked: list[str]) -> str:
    for form in sorted(leaked, key=len, reverse=True):
        line = line.replace(form, "<SECRET>")
    return line
