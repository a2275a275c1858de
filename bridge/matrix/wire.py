"""The shapes of what crosses the homeserver seam, typed without `Any`.

Why: a homeserver's answer is JSON of a shape the spec describes but nothing enforces (a
proxy, an old server or a bug may send anything), so its values are `object`: a caller
checks what it reads (`isinstance`) before relying on it. What the bridge sends is any
JSON-able mapping.

Thread: any (types only).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeAlias

# One JSON object as the homeserver answered it (its values unchecked).
JsonObject: TypeAlias = dict[str, object]
# A JSON object the bridge sends (a request body, an event's content).
JsonBody: TypeAlias = Mapping[str, object]
# Query-string parameters; a sequence repeats the key (`?server_name=a&server_name=b`).
QueryParams: TypeAlias = Mapping[str, str | Sequence[str]]
