"""`ircbridge demo`: the main job, run as a user would, from the command line."""

from __future__ import annotations

import subprocess
import sys


def test_demo_plays_all_five_steps_and_cleans_up() -> None:
    result = subprocess.run([sys.executable, "-m", "bridge", "demo"], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for step in ("== 1.", "== 2.", "== 3.", "== 4.", "== 5."):
        assert step in out
    assert "<alice[m]> hi!" in out
    assert "@irc.freenode.net/_bob:localhost" in out
    assert "all five steps of the founding story were observed" in out
    workdir = out.split("ircbridge demo in ", 1)[1].split()[0]
    leftovers = subprocess.run(["pgrep", "-f", workdir], capture_output=True, text=True)
    assert leftovers.stdout.strip() == "", "a process of the demo is still running"
