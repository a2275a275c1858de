"""IRCv3 `batch`: the open batches of one connection, and the lines that belong to them.

`BATCH +ref type params...` opens a batch, `BATCH -ref` closes it, and every line of it
carries the tag `batch=ref` (a batch may itself be inside another one). jaraco's irc knows
none of this: its `batch` event has the `+ref`/`-ref` as target and the type and params as
arguments, and the `batch` tag is one tag among the others. This module keeps the state;
what a batch means (chathistory, netsplit, netjoin) is `bridge.irc.history`'s business.

Pure (no I/O, no clock). Thread: the IRC thread, one tracker per connection.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

E = TypeVar("E")

# The batch types the bridge reads (the draft/ prefix is what older servers send).
CHATHISTORY = "chathistory"
NETSPLIT = "netsplit"
NETJOIN = "netjoin"


def batch_type(name: str) -> str:
    """`draft/chathistory` and `chathistory` are one type; lower case."""
    name = name.lower()
    return name[len("draft/"):] if name.startswith("draft/") else name


@dataclass
class Batch(Generic[E]):
    """One batch: its reference, type, parameters, the lines said in it (in order) and the
    batches nested in it."""

    ref: str
    type: str
    params: tuple[str, ...]
    parent: str | None = None  # the ref of the batch it is in
    events: list[E] = field(default_factory=list)
    children: list[Batch[E]] = field(default_factory=list)


class BatchTracker(Generic[E]):
    """The open batches of one connection (see module)."""

    def __init__(self, max_open: int = 64, max_events: int = 20000) -> None:
        self.open: dict[str, Batch[E]] = {}
        self.max_open = max_open  # a server that opens and never closes cannot grow us
        self.max_events = max_events

    def command(self, target: str, arguments: list[str],
                tags: Mapping[str, str]) -> Batch[E] | None:
        """A BATCH line (`target` is `+ref` or `-ref`): opens a batch (None), or closes one
        and returns it; a closed batch nested in an open one is also kept in its parent."""
        if len(target) < 2 or target[0] not in "+-":
            return None
        ref = target[1:]
        if target[0] == "+":
            if len(self.open) >= self.max_open:
                return None
            parent = tags.get("batch") or None
            self.open[ref] = Batch(ref, batch_type(arguments[0]) if arguments else "",
                                   tuple(arguments[1:]),
                                   parent if parent in self.open else None)
            return None
        batch = self.open.pop(ref, None)
        if batch is not None and batch.parent is not None and batch.parent in self.open:
            self.open[batch.parent].children.append(batch)
        return batch

    def of(self, tags: Mapping[str, str]) -> Batch[E] | None:
        """The open batch a line belongs to (its `batch` tag), if any."""
        ref = tags.get("batch")
        return self.open.get(ref) if ref else None

    def outermost(self, batch: Batch[E]) -> Batch[E]:
        """The batch that holds `batch` (itself when it is not nested)."""
        while batch.parent is not None and batch.parent in self.open:
            batch = self.open[batch.parent]
        return batch

    def add(self, batch: Batch[E], event: E) -> bool:
        """Keep a line of a batch; False when the batch is full (the line is dropped)."""
        if len(batch.events) >= self.max_events:
            return False
        batch.events.append(event)
        return True

    def clear(self) -> list[Batch[E]]:
        """The link is gone: its open batches end unfinished (returned)."""
        batches = list(self.open.values())
        self.open.clear()
        return batches
