"""What a running hub leaves in its data dir for the commands that read it later.

``hub serve`` records the host name it serves as (the name in its TLS certificate and in
connection strings) and the ports it listens on in ``{data-dir}/hub.json``, so that
``hub connection-string`` prints the ``HostName`` the hub really answers to without being
told again."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["RUN_FILE", "read_run_record", "write_run_record"]

RUN_FILE = "hub.json"


def write_run_record(data_dir: Path, **fields: Any) -> None:
    """Replace the record atomically (a reader never sees half a file)."""
    path = data_dir / RUN_FILE
    partial = path.with_suffix(".json.tmp")
    partial.write_text(json.dumps(fields, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(partial, path)


def read_run_record(data_dir: Path) -> dict[str, Any]:
    """The last record, or {} when there is none or it cannot be read."""
    try:
        value = json.loads((data_dir / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}
