"""What the core asks of the parts wired into it after it is built: the admin rooms.

The admin rooms (bridge.admin) are made with the core, so the core cannot import them: it
declares here the Protocol it calls, and `Bridge.attach` hands the real object to every part
that needs it. mypy checks that `bridge.admin.rooms.AdminRooms` satisfies it.

Thread: the methods are called from the inbox thread (events, settings), the IRC thread
(connection reports, settings), request threads (portal made) and the senders (unlisted).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from ..irc.events import IrcConnectionEvent
from ..matrix.wire import JsonObject
from ..rules.ids import RoomId


class AdminPort(Protocol):
    """The admin rooms, as the core sees them."""

    def handle_event(self, event: JsonObject) -> bool:
        """An event of an admin room (or an invite that opens one): handled, True."""

    def puppet_settings(self, network: str, user_id: str) -> Mapping[str, object]:
        """A user's stored settings for a network (memory only; any thread)."""

    def owner_of(self, room_id: RoomId) -> str | None:
        """Whose admin room `room_id` is, if it is one."""

    def room_created(self, network: str, room_id: RoomId) -> None:
        """A portal was made: list it in the room directory (only queues)."""

    def room_unlisted(self, room_id: RoomId) -> None:
        """A room was taken out of the directory (its channel turned private)."""

    def connection_event(self, event: IrcConnectionEvent) -> None:
        """A connection's news, for its user's admin room (only queues)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...
