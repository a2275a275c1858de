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
