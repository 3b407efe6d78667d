"""Imports point inward (STYLE.md rule 1): the pure layers import no frameworks and no outer layer.

domain, query and wire import no web, database or MQTT library and nothing from api,
gateway, storage or engine; the engine imports no api, gateway or storage and no
FastAPI, SQLAlchemy/SQLModel or amqtt. Every import statement counts, including those
inside functions and ``if TYPE_CHECKING:`` blocks, and ``importlib.import_module("x")``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HUB = ROOT / "hub"

PURE_FORBIDDEN = (
    "fastapi",
    "starlette",
    "sqlalchemy",
    "sqlmodel",
    "amqtt",
    "paho",
    "aiomqtt",
    "httpx",
    "uvicorn",
    "hub.api",
    "hub.gateway",
    "hub.storage",
    "hub.engine",
)
ENGINE_FORBIDDEN = ("hub.api", "hub.gateway", "hub.storage", "fastapi", "sqlalchemy", "sqlmodel", "amqtt")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_names(path: Path, root: Path = ROOT) -> Iterator[tuple[int, str]]:
    """Every module ``path`` imports, as absolute dotted names, with line numbers.

    ``from pkg import name`` yields both ``pkg`` and ``pkg.name`` because ``name`` may be
    a submodule (``from hub import storage``).
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            yield node.lineno, base
            for alias in node.names:
                if alias.name != "*":
                    yield node.lineno, f"{base}.{alias.name}"
        elif isinstance(node, ast.Call):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if called in ("import_module", "__import__") and node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    yield node.lineno, first.value


def violations(paths: list[Path], forbidden: tuple[str, ...], root: Path = ROOT) -> list[str]:
    found = []
    for path in paths:
        for line, name in imported_names(path, root):
            for banned in forbidden:
                if name == banned or name.startswith(banned + "."):
                    found.append(f"{path.relative_to(root)}:{line} imports {name}")
                    break
    return sorted(set(found))


def modules_under(*packages: str) -> list[Path]:
    paths: list[Path] = []
    for package in packages:
        folder = HUB / package
        if folder.is_dir():
            paths += sorted(folder.rglob("*.py"))
    return paths


def test_pure_layers_import_no_frameworks_and_no_outer_layer() -> None:
    paths = modules_under("domain", "query", "wire")
    assert any(p.parent.name == "domain" for p in paths)
    assert any(p.parent.name == "wire" for p in paths)
    assert violations(paths, PURE_FORBIDDEN) == []


def test_engine_imports_no_adapter_and_no_framework() -> None:
    paths = modules_under("engine")
    assert paths, "hub/engine has no modules"
    assert violations(paths, ENGINE_FORBIDDEN) == []


def test_the_ports_import_only_the_inner_layers() -> None:
    # hub/ports.py is the engine's contract with storage and the gateway: it knows neither.
    assert violations([HUB / "ports.py"], (*ENGINE_FORBIDDEN, "hub.engine")) == []


# -- the checker itself ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "name"),
    [
        ("import fastapi", "fastapi"),
        ("import sqlalchemy.orm as orm", "sqlalchemy.orm"),
        ("from starlette.requests import Request", "starlette.requests"),
        ("from hub import storage", "hub.storage"),
        ("from hub.engine.services import Services", "hub.engine.services"),
        ("from ..storage import sql", "hub.storage"),
        ("from ..gateway.broker import Broker", "hub.gateway.broker"),
        ("from .. import api", "hub.api"),
        ("def f():\n    import amqtt.broker", "amqtt.broker"),
        ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import paho.mqtt.client", "paho.mqtt.client"),
        ("import importlib\nimportlib.import_module('uvicorn')", "uvicorn"),
        ("__import__('httpx')", "httpx"),
    ],
)
def test_the_checker_catches_every_import_form(tmp_path: Path, source: str, name: str) -> None:
    # Lay the file out as hub/domain/probe.py under a fake root so relative imports resolve.
    fake_domain = tmp_path / "hub" / "domain"
    fake_domain.mkdir(parents=True)
    probe = fake_domain / "probe.py"
    probe.write_text(source + "\n", encoding="utf-8")
    names = [n for _, n in imported_names(probe, tmp_path)]
    assert any(n == name or n.startswith(name + ".") for n in names), names
    assert violations([probe], PURE_FORBIDDEN, tmp_path)


def test_the_checker_allows_inward_imports(tmp_path: Path) -> None:
    fake_wire = tmp_path / "hub" / "wire"
    fake_wire.mkdir(parents=True)
    probe = fake_wire / "probe.py"
    probe.write_text(
        "import json\nfrom hub.errors import HubError\nfrom ..domain import twin\n"
        "from .topics import TopicError\nfrom fastapi_like import x\n",
        encoding="utf-8",
    )
    assert violations([probe], PURE_FORBIDDEN, tmp_path) == []
