"""What-if patches for the benchmarks, loaded into the bridge process by `run.py --whatif`.

Never used outside the bench: each patch approximates a change to the bridge's code so that
its effect can be measured before anyone writes it for real (see docs/performance.md).
Python imports this `sitecustomize` at start-up because run.py puts this folder first on
the bridge's PYTHONPATH; IRCBRIDGE_BENCH_WHATIF names the patches, comma-separated:

- our_nicks: `Network.our_nicks()` answers from a set rebuilt when the number of puppets
  changes or 0.25 s passed, instead of building it from every connection on each IRC event
  (a real fix would keep the set up to date on connect/nick/close).
- irc_lower: `names.irc_lower` uses one translation table made once, not one per call.
- switchinterval: `sys.setswitchinterval(0.0005)` (default 0.005): a thread that waits for
  the GIL held by a CPU-bound thread gets it back sooner; shows how much of a latency is
  waiting for the GIL (a GIL convoy), not work.
"""

from __future__ import annotations

import os
import sys
import time

WANTED = {n.strip() for n in os.environ.get("IRCBRIDGE_BENCH_WHATIF", "").split(",") if n.strip()}


def _our_nicks() -> None:
    from bridge.irc import network

    original = network.Network.our_nicks

    def our_nicks(self):  # type: ignore[no-untyped-def]
        cached = self.__dict__.get("_whatif_nicks")
        now = time.monotonic()
        size = len(self.puppets)
        if cached is None or cached[0] != size or now - cached[1] > 0.25:
            cached = (size, now, original(self))
            self.__dict__["_whatif_nicks"] = cached
        return cached[2]

    network.Network.our_nicks = our_nicks  # type: ignore[method-assign]


def _irc_lower() -> None:
    from bridge.rules import names

    table = str.maketrans("[]\\~", "{}|^")

    def irc_lower(text: str) -> str:
        return text.lower().translate(table)

    names.irc_lower = irc_lower
    # modules that imported it by name
    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith("bridge.") and \
                getattr(module, "irc_lower", None) is not None:
            module.irc_lower = irc_lower  # type: ignore[attr-defined]


def _switchinterval() -> None:
    sys.setswitchinterval(0.0005)


PATCHES = {"our_nicks": _our_nicks, "irc_lower": _irc_lower, "switchinterval": _switchinterval}

# irc_lower last, so the modules the other patches import get it too
for name in [n for n in ("our_nicks", "switchinterval", "irc_lower") if n in WANTED]:
    try:
        PATCHES[name]()
        print(f"ircbridge bench: what-if patch {name} applied", file=sys.stderr)
    except Exception as e:  # noqa: BLE001 - the bench reports it; the bridge still starts
        print(f"ircbridge bench: what-if patch {name} failed: {e!r}", file=sys.stderr)
