"""Distinct types for the Matrix ids that cross the bridge's seams (pure; any thread).

`NewType`s: free at run time (a `UserId` is a `str`), but mypy keeps a room id from being
passed where a user id is wanted. Made where an id enters the bridge (a Matrix event, the
store, the configuration) and passed on unchanged.
"""

from __future__ import annotations

from typing import NewType

UserId = NewType("UserId", str)  # @localpart:server
RoomId = NewType("RoomId", str)  # !opaque:server
EventId = NewType("EventId", str)  # $opaque

# Matrix JSON (a request or response body, an event, its content), as decoded.
JsonDict = dict[str, object]
