"""A recording `IrcListener` for tests that run an `IrcSide` without the core.

It implements the declared Protocol method by method (no catch-all), and every call is checked
against the Protocol's signature: the arguments must bind to it and each must be an instance
of the event type it declares, so a call the core could not take fails the test where it is
made (the failure is kept in `mismatches` too: the IRC thread logs exceptions and goes on).
Methods run on the IRC thread; the tests read `events` from theirs.
"""

from __future__ import annotations

import inspect
import threading
import typing

from bridge.irc.events import ConnectionChange, IrcConnectionEvent, IrcEvent
from bridge.irc.network import IrcListener


def declared() -> dict[str, tuple[inspect.Signature, type]]:
    """Each `irc_*` method of the Protocol -> its signature and the event type it takes."""
    found: dict[str, tuple[inspect.Signature, type]] = {}
    for name, member in vars(IrcListener).items():
        if not (name.startswith("irc_") and callable(member)):
            continue
        hints = typing.get_type_hints(member)
        types = [hint for key, hint in hints.items() if key != "return"]
        assert len(types) == 1, f"{name} takes {types}: one event, nothing else"
        found[name] = (inspect.signature(member), types[0])
    return found


class RecordingListener:
    """Records `(method name, event)` of every call the IRC side makes."""

    def __init__(self) -> None:
        self.events: list[tuple[str, IrcEvent]] = []
        self.mismatches: list[str] = []
        self._lock = threading.Lock()
        self._declared = declared()

    def _heard(self, name: str, *args: object, **kwargs: object) -> None:
        signature, event_type = self._declared[name]
        try:
            bound = signature.bind(self, *args, **kwargs)
        except TypeError as e:
            self._mismatch(f"{name}{args!r}: {e}")
        (event,) = [v for k, v in bound.arguments.items() if k != "self"]
        if not isinstance(event, event_type):
            self._mismatch(f"{name} got a {type(event).__name__}, not a {event_type.__name__}")
        with self._lock:
            self.events.append((name, typing.cast(IrcEvent, event)))

    def _mismatch(self, text: str) -> typing.NoReturn:
        with self._lock:
            self.mismatches.append(text)
        raise AssertionError(text)

    def irc_message(self, *args: object, **kwargs: object) -> None:
        self._heard("irc_message", *args, **kwargs)

    def irc_private(self, *args: object, **kwargs: object) -> None:
        self._heard("irc_private", *args, **kwargs)

    def irc_topic(self, *args: object, **kwargs: object) -> None:
        self._heard("irc_topic", *args, **kwargs)

    def irc_connection(self, *args: object, **kwargs: object) -> None:
        self._heard("irc_connection", *args, **kwargs)

    def irc_membership(self, *args: object, **kwargs: object) -> None:
        self._heard("irc_membership", *args, **kwargs)

    def irc_power(self, *args: object, **kwargs: object) -> None:
        self._heard("irc_power", *args, **kwargs)

    def irc_channel_state(self, *args: object, **kwargs: object) -> None:
        self._heard("irc_channel_state", *args, **kwargs)

    def irc_casemapping(self, *args: object, **kwargs: object) -> None:
        self._heard("irc_casemapping", *args, **kwargs)

    def irc_failure(self, *args: object, **kwargs: object) -> None:
        self._heard("irc_failure", *args, **kwargs)

    def irc_reaction(self, *args: object, **kwargs: object) -> None:
        self._heard("irc_reaction", *args, **kwargs)

    def irc_ephemeral(self, *args: object, **kwargs: object) -> None:
        self._heard("irc_ephemeral", *args, **kwargs)

    def of(self, name: str) -> list[IrcEvent]:
        """The events of one method so far, oldest first."""
        with self._lock:
            return [event for called, event in self.events if called == name]

    def connection_events(self, what: str) -> list[IrcConnectionEvent]:
        """Every `irc_connection` event of one kind (a `ConnectionChange` value) so far."""
        change = ConnectionChange(what)
        return [e for e in self.of("irc_connection")
                if isinstance(e, IrcConnectionEvent) and e.change is change]
