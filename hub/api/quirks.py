"""Answers shaped for one client where IoT Hub's clients read the same route two ways.

The job listing ``GET /jobs/v2/query``: IoT Hub answers with a bare JSON array of jobs and the
continuation in ``x-ms-continuation`` (what the Node, C# and Java service SDKs read). The
Python service SDK ``azure-iot-hub`` (2.x, through 2.7) calls it through a client generated
from the REST swagger, which declares a ``QueryResult`` object (``{"type", "items",
"continuationToken"}``), and its ``IoTHubJobManager.query_scheduled_jobs`` fails on the
array. That client names itself in ``User-Agent`` (msrest adds
``iothubgatewayserviceapis/{api-version}``), so those requests get the swagger's object;
everyone else gets the array.
"""

from __future__ import annotations

from typing import Any

__all__ = ["GENERATED_PYTHON_CLIENT", "JOB_ITEM_TYPE", "job_listing_body"]

GENERATED_PYTHON_CLIENT = "iothubgatewayserviceapis/"
JOB_ITEM_TYPE = "jobResponse"


def job_listing_body(items: list[Any], continuation: str | None, user_agent: str | None) -> Any:
    """The body of one page of the job listing for a client with this ``User-Agent``."""
    if user_agent and GENERATED_PYTHON_CLIENT in user_agent:
        return {"type": JOB_ITEM_TYPE, "items": items, "continuationToken": continuation}
    return items
