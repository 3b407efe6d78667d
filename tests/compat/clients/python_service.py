"""Back-end flows on the real Python service SDK (azure-iot-hub 2.7), run by the compat tests
in that SDK's own virtual environment: ``python python_service.py FLOW '{json arguments}'``.
Each flow uses the SDK as its documentation and samples do, asserts what it can check itself,
and prints one JSON line with what it saw. The service connection string comes from
``SERVICE_CONNECTION_STRING``; the CA from ``REQUESTS_CA_BUNDLE``.
"""

import base64
import json
import os
import sys
import time
from datetime import UTC, datetime, timedelta

from azure.iot.hub import IoTHubJobManager, IoTHubRegistryManager
from azure.iot.hub.models import CloudToDeviceMethod, JobRequest, QuerySpecification, Twin, TwinProperties
from msrest.exceptions import HttpOperationError

CONNECTION_STRING = os.environ["SERVICE_CONNECTION_STRING"]


def registry():
    return IoTHubRegistryManager.from_connection_string(CONNECTION_STRING)


def jobs():
    return IoTHubJobManager.from_connection_string(CONNECTION_STRING)


def http_status(call):
    """The HTTP status an SDK call failed with (or 200 when it did not fail)."""
    try:
        call()
    except HttpOperationError as error:
        return error.response.status_code
    return 200


def identity(device_id):
    primary = base64.b64encode(os.urandom(32)).decode()
    secondary = base64.b64encode(os.urandom(32)).decode()
    manager = registry()
    created = manager.create_device_with_sas(device_id, primary, secondary, "enabled")
    fetched = manager.get_device(device_id)
    assert fetched.authentication.symmetric_key.primary_key == primary
    updated = manager.update_device_with_sas(device_id, fetched.etag, primary, secondary, "disabled")
    duplicate = http_status(lambda: manager.create_device_with_sas(device_id, primary, secondary, "enabled"))
    return {
        "deviceId": created.device_id,
        "status": created.status,
        "etag": created.etag,
        "updatedStatus": updated.status,
        "duplicateStatus": duplicate,
        "primaryKey": primary,
    }


def twin(device_id):
    manager = registry()
    first = manager.get_twin(device_id)
    patch = Twin(tags={"building": "43"}, properties=TwinProperties(desired={"floor": 3}))
    updated = manager.update_twin(device_id, patch, first.etag)
    stale = http_status(lambda: manager.update_twin(device_id, Twin(tags={"x": 1}), first.etag))
    replacement = Twin(tags={"building": "44", "wing": "B"}, properties=TwinProperties(desired={"floor": 5}))
    replaced = manager.replace_twin(device_id, replacement, updated.etag)
    return {
        "firstEtag": first.etag,
        "updated": {"tags": updated.tags, "desired": updated.properties.desired, "etag": updated.etag},
        "staleEtagStatus": stale,
        "replaced": {"tags": replaced.tags, "desired": replaced.properties.desired, "etag": replaced.etag},
    }


def method(device_id, name="lockDoor", payload=None):
    request = CloudToDeviceMethod(method_name=name, payload=payload, response_timeout_in_seconds=15)
    result = registry().invoke_device_method(device_id, request)
    return {"status": result.status, "payload": result.payload}


def query(sql, page_size):
    manager = registry()
    pages, token = [], None
    while True:
        result = manager.query_iot_hub(QuerySpecification(query=sql), token, page_size)
        pages.append([item.device_id if hasattr(item, "device_id") else item for item in result.items])
        token = result.continuation_token
        if not token:
            break
    return {"pages": pages}


def wait_for(manager, job_id, timeout=120):
    deadline = time.monotonic() + timeout
    while True:
        job = manager.get_scheduled_job(job_id)
        if job.status in ("completed", "failed", "cancelled"):
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job.status}"
        time.sleep(1)


def job_json(job):
    stats = job.device_job_statistics
    return {
        "jobId": job.job_id,
        "type": job.type,
        "status": job.status,
        "statistics": None
        if stats is None
        else {
            "deviceCount": stats.device_count,
            "succeededCount": stats.succeeded_count,
            "failedCount": stats.failed_count,
        },
    }


def device_results(job_id):
    """Per-device results from devices.jobs. ``query_iot_hub`` reads every row as a Twin (so
    only deviceId and status survive); the full rows, with outcome and error, come from the
    same request through the SDK's protocol layer with ``raw=True``."""
    spec = QuerySpecification(query=f"SELECT * FROM devices.jobs WHERE devices.jobs.jobId = '{job_id}'")
    manager = registry()
    as_twins = {item.device_id: item.status for item in manager.query_iot_hub(spec, None, 100).items}
    rows = manager.protocol.query.get_twins(spec, None, "100", raw=True).response.json()
    assert as_twins == {row["deviceId"]: row["status"] for row in rows}
    return [{"deviceId": row["deviceId"], "status": row["status"], "outcome": row.get("outcome")} for row in rows]


def lock_door_request(job_id, condition, start_time):
    return JobRequest(
        job_id=job_id,
        type="scheduleDeviceMethod",
        cloud_to_device_method=CloudToDeviceMethod(method_name="lockDoor", payload={}, response_timeout_in_seconds=15),
        query_condition=condition,
        start_time=start_time,
        max_execution_time_in_seconds=60,
    )


def method_job(job_id, condition):
    manager = jobs()
    created = manager.create_scheduled_job(job_id, lock_door_request(job_id, condition, datetime.now(UTC)))
    finished = wait_for(manager, job_id)
    return {"created": job_json(created), "finished": job_json(finished), "devices": device_results(job_id)}


def twin_job(job_id, condition):
    manager = jobs()
    request = JobRequest(
        job_id=job_id,
        type="scheduleUpdateTwin",
        update_twin=Twin(etag="*", properties=TwinProperties(desired={"building": "43", "floor": 3})),
        query_condition=condition,
        start_time=datetime.now(UTC),
        max_execution_time_in_seconds=60,
    )
    created = manager.create_scheduled_job(job_id, request)
    finished = wait_for(manager, job_id)
    return {"created": job_json(created), "finished": job_json(finished), "devices": device_results(job_id)}


def list_jobs(job_type, job_status, page_size=None):
    """``query_scheduled_jobs`` takes no paging parameters: it reads the first page only
    (``page_size`` is the Node flow's and unused here)."""
    result = jobs().query_scheduled_jobs(job_type, job_status)
    # QueryResult.items is declared [object]: the jobs arrive as JobResponse dicts.
    assert result.type == "jobResponse"
    found = [{"jobId": job["jobId"], "type": job["type"], "status": job["status"]} for job in result.items]
    return {"jobs": found}


def cancel(job_id, condition):
    manager = jobs()
    in_an_hour = datetime.now(UTC) + timedelta(hours=1)
    created = manager.create_scheduled_job(job_id, lock_door_request(job_id, condition, in_an_hour))
    canceled = manager.cancel_scheduled_job(job_id)
    return {
        "created": job_json(created),
        "canceled": job_json(canceled),
        "now": job_json(manager.get_scheduled_job(job_id)),
    }


FLOWS = {
    "identity": identity,
    "twin": twin,
    "method": method,
    "query": query,
    "method_job": method_job,
    "twin_job": twin_job,
    "list_jobs": list_jobs,
    "cancel": cancel,
}

if __name__ == "__main__":
    arguments = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    print(json.dumps(FLOWS[sys.argv[1]](**arguments), default=str))
