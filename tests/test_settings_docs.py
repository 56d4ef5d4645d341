"""``supportbot run --help`` and README's settings table tell an operator the same thing: every
setting the bot reads has a description, appears in the table, and has the same default in both."""

from __future__ import annotations

import re
from pathlib import Path

from tests.processes import supportbot

ROOT = Path(__file__).resolve().parent.parent


def _help_rows(tmp_path: Path) -> dict[str, tuple[str, str]]:
    done = supportbot(tmp_path, "run", "--help")
    assert done.returncode == 0, done.stderr
    rows: dict[str, tuple[str, str]] = {}
    section = done.stdout.split("settings (environment variables", 1)[1]
    for line in section.splitlines()[1:]:
        match = re.match(r"^  ([A-Z][A-Z0-9_]+)\s+(.*?)(?: \[default: (.*)\])?$", line)
        if match:
            rows[match.group(1)] = (match.group(2).strip(), match.group(3) or "")
    return rows


def _readme_rows() -> dict[str, str]:
    """Each variable of README's settings table with the default the table gives ('' for none)."""
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## Settings") :].split("\n## ", 1)[0]
    defaults: dict[str, str] = {}
    for line in table.splitlines():
        if not line.startswith("| `"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        names = re.findall(r"`([A-Z][A-Z0-9_]+)`", cells[0])
        given = [part.strip() for part in re.sub(r"\([^)]*\)", "", cells[-1]).split(",")]
        if len(given) != len(names):
            given = [cells[-1]] * len(names)
        for name, default in zip(names, given, strict=True):
            quoted = re.fullmatch(r"`([^`]*)`", default)
            defaults[name] = quoted.group(1) if quoted else ""
    return defaults


def test_every_setting_in_run_help_has_a_description_and_a_row_in_the_readme_with_the_same_default(
    tmp_path: Path,
) -> None:
    shown = _help_rows(tmp_path)
    documented = _readme_rows()
    assert len(shown) > 40
    undescribed = [name for name, (meaning, _) in shown.items() if not meaning.replace("(secret)", "").strip()]
    assert not undescribed, f"run --help gives no description for {undescribed}"
    assert sorted(set(shown) - set(documented)) == [], "settings missing from README's table"
    assert sorted(set(documented) - set(shown)) == [], "README documents settings run --help does not list"
    contradictions = {
        name: (default, documented[name])
        for name, (_, default) in shown.items()
        if documented[name] and default != documented[name]
    }
    assert contradictions == {}, "run --help default vs README default"
