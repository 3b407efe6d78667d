"""Every example query of IoT Hub's docs (shared/reference/azure-iot-hub.md §3), parsed and run by the evaluator."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from hub.domain.devices import ConnectionState, DeviceStatus
from hub.domain.jobs import DeviceJob, DeviceJobStatus, JobType, device_job_document
from hub.domain.json import JsonObject, JsonValue
from hub.domain.twin import PropertySet, Twin, isoformat, twin_document
from hub.errors import QuerySyntaxError
from hub.query.ast import Source
from hub.query.evaluate import matches, run_query
from hub.query.parser import parse_condition, parse_query

SEEN = datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC)


def device(
    device_id: str,
    *,
    region: str | None = "US",
    reported: JsonObject | None = None,
    status: DeviceStatus = DeviceStatus.ENABLED,
    connected: bool = False,
    seen: bool = True,
) -> JsonObject:
    tags: JsonObject = {"deviceType": "sensor"}
    if region is not None:
        tags["location"] = {"region": region, "plant": "Redmond43" if region == "US" else "Dublin"}
    stamp: JsonObject = {"$lastUpdated": isoformat(SEEN)}
    twin = Twin(
        device_id=device_id,
        tags=tags,
        desired=PropertySet({"telemetryConfig": {"sendFrequencyInSecs": 60}}, stamp, 3),
        reported=PropertySet(reported or {}, stamp, 12),
        version=4,
        revision=20,
        status=status,
        connection_state=ConnectionState.CONNECTED if connected else ConnectionState.DISCONNECTED,
        last_activity_time=SEEN if seen else None,
    )
    return twin_document(twin)


def telemetry(frequency: JsonValue, status: str, connectivity: str | None = None) -> JsonObject:
    reported: JsonObject = {"telemetryConfig": {"sendFrequencyInSecs": frequency, "status": status}}
    if connectivity is not None:
        reported["connectivity"] = connectivity
    return reported


# Listed out of deviceId order on purpose: results come back ordered.
FLEET: list[JsonObject] = [
    device("lowercase-region", region="us", reported=telemetry(600, "Success", "WiFi")),
    device("building43-sensor2", reported=telemetry(300, "Pending", "wired")),
    device("building43-sensor1", reported=telemetry(60, "Success", "wifi"), connected=True),
    device("building43-sensor3", reported=telemetry(30, "Success", "cellular"), seen=False),
    device("dublin-sensor1", region="EU", reported=telemetry(120, "Error", "wifi"), connected=True),
    device("string-frequency", reported=telemetry("60", "Pending")),
    device("unconfigured", seen=False),
    device("retired", region=None, status=DeviceStatus.DISABLED),
]


def ids(rows: list[JsonObject]) -> list[JsonValue]:
    return [row["deviceId"] for row in rows]


def run(text: str, docs: list[JsonObject] = FLEET) -> list[JsonObject]:
    return run_query(parse_query(text), docs)


def test_region_and_reported_frequency() -> None:
    text = (
        "SELECT * FROM devices WHERE tags.location.region = 'US' "
        "AND properties.reported.telemetryConfig.sendFrequencyInSecs >= 60"
    )
    rows = run(text)
    # Not 30 s, not region 'us' (case-sensitive), not the frequency reported as the string "60".
    assert ids(rows) == ["building43-sensor1", "building43-sensor2"]
    assert rows[0] is FLEET[2]  # SELECT * yields the twins themselves
    assert rows[0]["properties"]["reported"]["$version"] == 12  # type: ignore[call-overload,index]


def test_connectivity_in_a_list() -> None:
    rows = run("SELECT * FROM devices WHERE properties.reported.connectivity IN ['wired','wifi']")
    assert ids(rows) == ["building43-sensor1", "building43-sensor2", "dublin-sensor1"]


def test_count_grouped_by_reported_status() -> None:
    text = (
        "SELECT properties.reported.telemetryConfig.status AS status, COUNT() AS numberOfDevices "
        "FROM devices GROUP BY properties.reported.telemetryConfig.status"
    )
    rows = run(text)
    # Devices without the property form one group whose key is left out; groups in key order.
    assert rows == [
        {"numberOfDevices": 2},
        {"status": "Error", "numberOfDevices": 1},
        {"status": "Pending", "numberOfDevices": 2},
        {"status": "Success", "numberOfDevices": 3},
    ]


def test_count_grouped_by_status_as_in_the_docs() -> None:
    # The docs' own fleet: six devices that all report a status.
    fleet = [
        device(f"device{index}", reported=telemetry(60, status))
        for index, status in enumerate(["Success", "Pending", "Success", "Error", "Success", "Pending"])
    ]
    text = (
        "SELECT properties.reported.telemetryConfig.status AS status, COUNT() AS numberOfDevices "
        "FROM devices GROUP BY properties.reported.telemetryConfig.status"
    )
    rows = run(text, fleet)
    assert sorted(rows, key=lambda row: -int(row["numberOfDevices"])) == [  # type: ignore[arg-type]
        {"numberOfDevices": 3, "status": "Success"},
        {"numberOfDevices": 2, "status": "Pending"},
        {"numberOfDevices": 1, "status": "Error"},
    ]


def test_projection_of_identity_fields() -> None:
    text = (
        "SELECT DeviceId, LastActivityTime FROM devices WHERE status = 'enabled' AND connectionState = 'Disconnected'"
    )
    seen = isoformat(SEEN)
    # Identity field names are case-insensitive and come back canonical; a never-seen device has none.
    assert run(text) == [
        {"deviceId": "building43-sensor2", "lastActivityTime": seen},
        {"deviceId": "building43-sensor3"},
        {"deviceId": "lowercase-region", "lastActivityTime": seen},
        {"deviceId": "string-frequency", "lastActivityTime": seen},
        {"deviceId": "unconfigured"},
    ]


def test_modules_are_not_supported() -> None:
    text = (
        "SELECT * FROM devices.modules WHERE properties.reported.status = 'scanning' "
        "AND deviceId IN ['device1','device2']"
    )
    with pytest.raises(QuerySyntaxError) as info:
        parse_query(text)
    assert info.value.position is not None
    assert "modules" in info.value.message


def job(job_id: str, device_id: str, job_type: JobType, status: DeviceJobStatus, created: str) -> JsonObject:
    created_time = datetime.fromisoformat(created).replace(tzinfo=UTC)
    record = DeviceJob(job_id, device_id, job_type, status, created_time, created_time, start_time=created_time)
    return device_job_document(record)


JOBS: list[JsonObject] = [
    job("job-e", "d1", JobType.UPDATE_TWIN, DeviceJobStatus.COMPLETED, "2017-01-15"),
    job("job-a", "d1", JobType.UPDATE_TWIN, DeviceJobStatus.COMPLETED, "2016-10-01"),
    job("job-b", "d1", JobType.UPDATE_TWIN, DeviceJobStatus.COMPLETED, "2016-08-01"),  # too early
    job("job-c", "d1", JobType.DEVICE_METHOD, DeviceJobStatus.COMPLETED, "2016-10-01"),  # other type
    job("job-d", "d1", JobType.UPDATE_TWIN, DeviceJobStatus.FAILED, "2016-10-01"),  # other status
    job("job-a", "d2", JobType.UPDATE_TWIN, DeviceJobStatus.COMPLETED, "2016-10-01"),  # other device
]


def test_device_jobs() -> None:
    text = (
        "SELECT * FROM devices.jobs WHERE devices.jobs.deviceId = 'd1' AND devices.jobs.jobType = 'scheduleUpdateTwin' "
        "AND devices.jobs.status = 'completed' AND devices.jobs.createdTimeUtc > '2016-09-01'"
    )
    rows = run(text, JOBS)
    # ISO-8601 strings compare as strings: '2016-10-01T00:00:00.0000000Z' > '2016-09-01'.
    assert [(row["deviceId"], row["jobId"]) for row in rows] == [("d1", "job-a"), ("d1", "job-e")]
    assert rows[0] is JOBS[1]


def test_job_query_conditions_select_the_same_devices() -> None:
    condition = parse_condition(
        "tags.location.region = 'US' AND properties.reported.telemetryConfig.sendFrequencyInSecs >= 60",
        Source.DEVICES,
    )
    selected = sorted(str(doc["deviceId"]) for doc in FLEET if matches(condition, doc))
    assert selected == ["building43-sensor1", "building43-sensor2"]
    assert parse_condition("*", Source.DEVICES) is None
