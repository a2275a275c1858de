"""The module boundaries of design.md, checked by import-linter (contracts in setup.cfg)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_are_kept() -> None:
    tool = shutil.which("lint-imports")
    assert tool, "import-linter is part of the test extra: pip install -e '.[test]'"
    result = subprocess.run([tool, "--config", str(ROOT / "setup.cfg")], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_no_cycles_and_no_ignored_imports() -> None:
    """The cycles once found (ops <-> matrix, admin.runner <-> admin.rooms, core.access ->
    core.bridge) are kept out by an acyclic_siblings contract, and no contract is weakened."""
    text = (ROOT / "setup.cfg").read_text()
    assert "type = acyclic_siblings" in text
    assert "ignore_imports" not in text


def test_no_two_test_modules_share_a_name() -> None:
    """The test folders are not packages: two files of one name stop the whole suite's
    collection (`import file mismatch`), which a run of one folder never shows."""
    tests = Path(__file__).resolve().parents[1]
    names: dict[str, list[str]] = {}
    for path in tests.rglob("test_*.py"):
        names.setdefault(path.name, []).append(str(path.relative_to(tests)))
    assert {n: p for n, p in names.items() if len(p) > 1} == {}
