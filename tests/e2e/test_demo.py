"""The README's demo (``python -m hub demo``): both jobs run to the end on every device, and nothing is left behind."""

from __future__ import annotations

import io
import re
from pathlib import Path

from rich.console import Console

from hub.demo import run_demo
from tests.e2e.processes import hub_env, run_cli


async def test_demo_runs_both_jobs_to_completion(tmp_path: Path) -> None:
    out = io.StringIO()
    console = Console(file=out, width=200, color_system=None)
    data_dir = tmp_path / "data"

    code = await run_demo(device_count=10, data_dir=data_dir, console=console, default_ports=False)

    text = out.getvalue()
    assert code == 0, text
    assert "10/10 simulated devices in building 42 connected" in text
    assert re.search(r"lock-doors-\d{6} completed in [\d.]+ s: 10 succeeded, 0 failed of 10 devices", text), text
    assert re.search(r"move-\d{6} completed in [\d.]+ s: 10 succeeded, 0 failed of 10 devices", text), text
    assert 'completed: 200 {"locked": true}' in text
    assert "10/10 devices applied desired floor 3" in text
    assert "the device acknowledged the update" in text
    assert '"floor": 3' in text
    assert "python -m job_client watch lock-doors" in text
    assert f"--data-dir {data_dir}" in text  # the given data dir is kept, and the commands point at it
    assert "demo finished" in text
    assert (data_dir / "tls" / "ca.pem").exists()


def test_demo_command_exits_zero_and_removes_its_data_dir(tmp_path: Path) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()

    result = run_cli("demo", "--devices", "5", "--free-ports", env=hub_env(TMPDIR=str(scratch)))

    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"lock-doors-\d{6} completed", result.stdout), result.stdout
    assert re.search(r"move-\d{6} completed", result.stdout), result.stdout
    assert "demo finished" in result.stdout
    assert list(scratch.iterdir()) == []  # its temporary data dir is gone
