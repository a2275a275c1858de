"""What the parts count, as a Protocol: the app's metrics are given to them, not looked up.

`bridge.ops.metrics.Metrics` is the real one (a Prometheus registry per app); `NO_METER`
counts nothing, for a bridge without an app (a CLI command, a unit test). The parts get
their meter at construction or through `Bridge.attach`, before any thread runs.

Thread: any thread (request threads, the inbox thread, the IRC thread, the senders); the
real meter's counters are thread-safe.
"""

from __future__ import annotations

from typing import Protocol


class Meter(Protocol):
    def relayed(self, direction: str, msgtype: object) -> None:
        """A message went across: `irc_to_matrix` (senders) or `matrix_to_irc`."""

    def transaction(self, seen: bool, new: int) -> None:
        """A transaction was stored: `seen` it before, `new` events queued."""

    def inbox_handled(self, done: int, failed: int) -> None: ...

    def outbox_retry(self) -> None: ...

    def outbox_failed(self) -> None: ...

    def irc_reconnect(self, network: str) -> None: ...


class NoMeter:
    """Counts nothing."""

    def relayed(self, direction: str, msgtype: object) -> None:
        pass

    def transaction(self, seen: bool, new: int) -> None:
        pass

    def inbox_handled(self, done: int, failed: int) -> None:
        pass

    def outbox_retry(self) -> None:
        pass

    def outbox_failed(self) -> None:
        pass

    def irc_reconnect(self, network: str) -> None:
        pass


NO_METER: Meter = NoMeter()
