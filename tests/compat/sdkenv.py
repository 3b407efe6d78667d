"""Isolated environments for the real Azure IoT SDKs, built by the tests themselves.

Each SDK family gets its own environment, because their pins clash with fleethub's
(``azure-iot-device`` needs ``paho-mqtt<2``): a virtual environment per Python SDK and an npm
folder for the Node SDKs. They are cached under ``FLEETHUB_COMPAT_CACHE`` (default
``~/.cache/fleethub-compat``), keyed by what they hold, so only the first run downloads.

Building needs the package registries. When they cannot be reached the tests skip with the
installer's own words, except under ``CI``, where a missing SDK is a failure.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import venv
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = [
    "NODE_PACKAGES",
    "PYTHON_DEVICE",
    "PYTHON_SERVICE",
    "NodeEnv",
    "PythonEnv",
    "node_env",
    "python_env",
    "unavailable",
]

# The versions the compat suite proves; raise them deliberately, with a run of the suite.
PYTHON_DEVICE = ("azure-iot-device==2.14.0",)
# azure-iot-hub imports six without declaring it.
PYTHON_SERVICE = ("azure-iot-hub==2.7.0", "six")
NODE_PACKAGES = {
    "azure-iot-device": "1.18.4",
    "azure-iot-device-mqtt": "1.16.4",
    "azure-iothub": "1.16.6",
    "uuid": "9.0.1",  # the jobs tutorial's job ids
}

INSTALL_TIMEOUT = 600


def cache_root() -> Path:
    configured = os.environ.get("FLEETHUB_COMPAT_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "fleethub-compat"


def unavailable(reason: str) -> None:
    """Skip (or, under CI, fail) a test whose SDK environment cannot be had."""
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the SDK compatibility tests, but: {reason}", pytrace=False)
    pytest.skip(reason)


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _run(args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=INSTALL_TIMEOUT, check=False)


@dataclass(frozen=True)
class PythonEnv:
    root: Path

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"


@dataclass(frozen=True)
class NodeEnv:
    root: Path  # holds node_modules; scripts run with this as their working directory

    @property
    def node(self) -> str:
        found = shutil.which("node")
        assert found is not None
        return found


def python_env(name: str, requirements: tuple[str, ...]) -> PythonEnv:
    """A virtual environment holding ``requirements`` (built once, then reused)."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    root = cache_root() / f"{name}-py{version}-{_key(requirements)}"
    done = root / ".complete"
    if not done.exists():
        shutil.rmtree(root, ignore_errors=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(root)
        result = _run([str(root / "bin" / "python"), "-m", "pip", "install", "--quiet", *requirements])
        if result.returncode != 0:
            shutil.rmtree(root, ignore_errors=True)
            unavailable(f"pip could not install {' '.join(requirements)}:\n{_tail(result.stdout + result.stderr)}")
        done.write_text("\n".join(requirements))
    return PythonEnv(root)


def node_env(name: str = "node-sdks", packages: dict[str, str] = NODE_PACKAGES) -> NodeEnv:
    """An npm folder with ``packages`` installed (built once, then reused)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        unavailable("Node.js and npm are not on PATH")
    root = cache_root() / f"{name}-{_key(packages)}"
    done = root / ".complete"
    if not done.exists():
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        manifest = {"name": "fleethub-compat", "private": True, "dependencies": packages}
        (root / "package.json").write_text(json.dumps(manifest, indent=2))
        npm = shutil.which("npm")
        assert npm is not None
        result = _run([npm, "install", "--no-audit", "--no-fund", "--loglevel=error"], cwd=root)
        if result.returncode != 0:
            shutil.rmtree(root, ignore_errors=True)
            unavailable(f"npm could not install {', '.join(packages)}:\n{_tail(result.stdout + result.stderr)}")
        done.write_text(json.dumps(packages))
    return NodeEnv(root)
