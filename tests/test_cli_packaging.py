"""What ships: the wheel carries the playground's sample orders and the migrations (so a
plain ``pip install .`` or the Docker image has them), and the Docker files keep their
promises. No Docker engine runs here, so the image itself is not built by the tests."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_carries_the_sample_orders_and_the_migrations(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [wheel] = tmp_path.glob("supportbot-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "adapters/playground/sample_orders.jsonl" in names
    assert "bot/migrations/versions/0001_initial_schema.py" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "playground = adapters.playground:create" in text


def test_the_image_caches_dependencies_apart_from_the_code_and_runs_as_a_user_with_a_volume() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    steps = [line.split()[0] for line in dockerfile.splitlines() if re.match(r"^[A-Z]+ ", line)]
    text = dockerfile
    assert text.index("pip install --require-hashes -r requirements.lock") < text.index("COPY bot"), (
        "dependencies are a layer of their own, installed from the lock"
    )
    assert text.index("COPY requirements.lock") < text.index("pip install --require-hashes")
    assert "USER supportbot" in text and steps.count("USER") == 1
    assert 'VOLUME ["/home/supportbot/data"]' in text
    assert "DATABASE_URL=sqlite+aiosqlite:////home/supportbot/data/" in text
    assert "LOG_FORMAT=json" in text and "PLAYGROUND_ENABLED=false" in text


def test_the_build_context_leaves_out_secrets_databases_and_caches() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    for pattern in (".venv", ".env", "*.db", "*.db-wal", "__pycache__", ".mypy_cache", ".pytest_cache", ".git"):
        assert pattern in ignored, pattern


def test_compose_runs_postgres_a_migration_and_two_instances() -> None:
    compose = (ROOT / "compose.yaml").read_text()
    services = re.findall(r"^  ([a-z0-9-]+):$", compose.split("\nservices:\n", 1)[1], re.MULTILINE)
    assert services[:4] == ["postgres", "migrate", "bot-1", "bot-2"]
    assert "postgresql+asyncpg://" in compose
    assert 'command: ["db", "upgrade"]' in compose
    assert "service_completed_successfully" in compose and "service_healthy" in compose
    instances = len(re.findall(r"^  bot-[0-9]+:$", compose, re.MULTILINE))
    assert re.search(rf'KIMI_INSTANCES: "?{instances}"?$', compose, re.MULTILINE), (
        "each instance must keep to its share of the Kimi account's limits"
    )


def _pins(lock: Path) -> dict[str, str]:
    from packaging.utils import canonicalize_name

    pins: dict[str, str] = {}
    for line in lock.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)", line)
        if match:
            pins[canonicalize_name(match.group(1))] = match.group(2)
    return pins


def test_the_locks_pin_every_declared_dependency_within_its_floor_and_hash_every_file() -> None:
    """CI installs requirements-dev.lock and the image requirements.lock: a dependency added to
    pyproject.toml without running .ci/lock, or a floor raised past the pinned version, fails here."""
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    for lock, declared in (
        ("requirements.lock", project["dependencies"] + extras["postgres"]),
        ("requirements-dev.lock", project["dependencies"] + extras["dev"]),
    ):
        pins = _pins(ROOT / lock)
        for text in declared:
            requirement = Requirement(text)
            name = canonicalize_name(requirement.name)
            assert name in pins, f"{lock} does not pin {requirement.name}: run .ci/lock"
            assert requirement.specifier.contains(pins[name], prereleases=True), (
                f"{lock} pins {requirement.name}=={pins[name]}, outside {requirement.specifier}: run .ci/lock"
            )
        body = (ROOT / lock).read_text()
        unhashed = [line for line in body.split("\n") if "==" in line and not line.rstrip().endswith("\\")]
        assert not unhashed, f"{lock}: pinned without a hash: {unhashed[:3]}"


def test_no_lock_admits_an_aiohttp_or_h11_with_a_known_request_smuggling_advisory() -> None:
    from packaging.version import Version

    for lock in ("requirements.lock", "requirements-dev.lock"):
        pins = _pins(ROOT / lock)
        assert Version(pins["aiohttp"]) >= Version("3.13.3"), lock
        assert Version(pins["h11"]) >= Version("0.16.0"), lock
