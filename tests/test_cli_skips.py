"""The README's test command says in one line what it skipped and how to enable it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_a_run_without_postgresql_names_the_skip_and_how_to_enable_it() -> None:
    env = {k: v for k, v in os.environ.items() if k != "SUPPORTBOT_TEST_POSTGRES_URL"}
    env["SUPPORTBOT_TEST_POSTGRES"] = "off"  # a local supportbot_test database would be picked up
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_postgres.py"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("skipped ")]
    assert len(lines) == 1, result.stdout
    assert "SUPPORTBOT_TEST_POSTGRES_URL" in lines[0] and ".ci/run" in lines[0]
