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
    assert text.index("pip install -r") < text.index("COPY bot"), "dependencies are a layer of their own"
    assert text.index("COPY pyproject.toml") < text.index("pip install -r")
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
