"""Every module of the bridge says in its docstring which thread runs its code.

The design gives each piece of state one owning thread (design.md, "Threads, and who owns
what"); a reader of any module must learn from its first lines whether the code runs on
request threads, the IRC thread, the inbox thread, the recorder, the homeserver senders, the
admin lanes, the pruner or the CLI's main thread, or on any thread because it is pure.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

BRIDGE = Path(__file__).resolve().parents[2] / "bridge"

# "thread" covers every named thread ("the IRC thread", "request threads", "any thread");
# "pure" covers code with no state and no I/O, which any thread may run.
VOCABULARY = re.compile(r"\bthreads?\b|\bpure\b", re.IGNORECASE)


def modules() -> list[Path]:
    return sorted(BRIDGE.rglob("*.py"))


def missing_thread(path: Path) -> str | None:
    """Why the module's docstring fails the rule, or None when it names its thread(s)."""
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"), str(path)))
    if not doc:
        return "no module docstring"
    if not VOCABULARY.search(doc):
        return "docstring names no thread (say which thread runs it, or 'any thread: pure')"
    return None


def test_the_walk_finds_the_packages() -> None:
    found = {p.relative_to(BRIDGE).parts[0] for p in modules()}
    assert {"rules", "irc", "pipeline", "core", "web", "cli"} <= found


def test_every_module_docstring_names_its_thread() -> None:
    problems = [f"{p.relative_to(BRIDGE.parent)}: {why}"
                for p in modules() if (why := missing_thread(p))]
    assert not problems, "\n".join(problems)


def test_the_rule_rejects_a_docstring_without_a_thread(tmp_path: Path) -> None:
    silent = tmp_path / "silent.py"
    silent.write_text('"""Does a thing."""\n', encoding="utf-8")
    said = tmp_path / "said.py"
    said.write_text('"""Does a thing.\n\nThread: any thread: pure.\n"""\n', encoding="utf-8")
    bare = tmp_path / "bare.py"
    bare.write_text("x = 1\n", encoding="utf-8")
    assert missing_thread(silent)
    assert missing_thread(bare) == "no module docstring"
    assert missing_thread(said) is None
