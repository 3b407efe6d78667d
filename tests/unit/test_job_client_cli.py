"""``fleethub-jobs``: the command set and argument checks that need no hub."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from job_client.cli import app

CONNECTION_STRING = "HostName=hub.test;SharedAccessKeyName=iothubowner;SharedAccessKey=a2V5"


def _commands(group: typer.Typer) -> set[str]:
    command = typer.main.get_command(group)
    return set(getattr(command, "commands", {}))


def test_the_minimal_command_set_is_there() -> None:
    assert {"devices", "twin", "invoke", "query"} <= _commands(app)
    devices = typer.main.get_command(app).commands["devices"]  # type: ignore[attr-defined]
    assert {"list", "get", "create", "delete"} <= set(devices.commands)


@pytest.mark.parametrize("args", [["twin", "update", "d1", "{bad"], ["invoke", "d1", "lockDoor", "--payload", "{"]])
def test_bad_json_is_refused_before_any_request(args: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETHUB_CONNECTION_STRING", CONNECTION_STRING)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "not valid JSON" in result.output


def test_a_connection_string_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLEETHUB_CONNECTION_STRING", raising=False)
    result = CliRunner().invoke(app, ["devices", "list"])
    assert result.exit_code == 2
    assert "FLEETHUB_CONNECTION_STRING" in result.output


@pytest.mark.parametrize("command", ["schedule-method", "watch", "devices", "twin"])
def test_command_help_needs_no_connection_string(command: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLEETHUB_CONNECTION_STRING", raising=False)
    result = CliRunner().invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output
