"""The IRC side's declared `IrcListener` and the core that implements it agree.

`Network` calls the listener only through the Protocol's signatures, so a method the core
implements with other parameters (or one the Protocol lacks) is a broken seam that a
catch-all test listener would hide. Pure introspection: no thread, no I/O.
"""

from __future__ import annotations

import inspect

from bridge.core.bridge import Bridge
from bridge.irc.network import IrcListener


def _methods(cls: type) -> dict[str, inspect.Signature]:
    return {name: inspect.signature(member) for name, member in vars(cls).items()
            if name.startswith("irc_") and callable(member)}


def test_core_implements_every_listener_method_with_the_same_parameters() -> None:
    declared = _methods(IrcListener)
    assert declared, "IrcListener declares no irc_* methods"
    for name, signature in declared.items():
        implemented = inspect.signature(getattr(Bridge, name))
        assert list(implemented.parameters) == list(signature.parameters), name


def test_network_passes_mentions_with_every_channel_message() -> None:
    parameters = _methods(IrcListener)["irc_message"].parameters
    assert "mentions" in parameters
    assert parameters["mentions"].default is inspect.Parameter.empty
