"""Matrix reactions -> IRC: a TAGMSG with +draft/react and +draft/reply where the puppet's
link has message-tags and the reacted-to message has a msgid, else one short ACTION line
(`* alice reacted 👍 to "first words..."`), unless the user said `!reactions off`.

Thread: `reaction_of`, `fallback_line` are pure (any thread; the inbox thread builds);
`send_reaction` runs on the IRC thread (handed in with `irc.call`). IRC -> Matrix:
`reaction_content` on the homeserver senders (an IRC +draft/react row, see
bridge.irc.reactions).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..irc import tags as message_tags
from ..irc.network import Network
from ..irc.receipt import Receipt
from ..rules import formatting
from ..rules.ids import EventId, JsonDict, RoomId
from ..store import kinds
from ..store.models import Store

QUOTE_CHARS = 30  # of the reacted-to message's text in the fallback line
MAX_KEY_CHARS = 32  # a reaction key is an emoji or a short word; longer is cut


@dataclass(frozen=True)
class Reaction:
    event_id: EventId  # what was reacted to
    key: str


def reaction_of(content: JsonDict) -> Reaction | None:
    """The annotation an m.reaction content carries, if it is one."""
    relates = content.get("m.relates_to")
    if not isinstance(relates, dict) or relates.get("rel_type") != "m.annotation":
        return None
    event_id, key = relates.get("event_id"), relates.get("key")
    if not isinstance(event_id, str) or not isinstance(key, str) or not event_id:
        return None
    key = formatting.sanitize_line(key).strip()[:MAX_KEY_CHARS]
    return Reaction(EventId(event_id), key) if key else None


def fallback_line(key: str, original_body: str) -> str:
    """`reacted 👍 to "first words..."` (sent as an ACTION, so it reads `* alice reacted...`)."""
    text = " ".join(formatting.sanitize_line(formatting.strip_reply_fallback(original_body))
                    .split())
    if len(text) <= QUOTE_CHARS:
        quoted = text
    else:  # its first words: cut at a space where there is one
        cut = text[:QUOTE_CHARS]
        words = cut.rsplit(" ", 1)[0] if " " in cut[QUOTE_CHARS // 2:] else cut
        quoted = words.rstrip() + "..."
    return f'reacted {key} to "{quoted}"'


def react_tags(key: str, msgid: str) -> dict[str, str]:
    return {message_tags.REACT: key, message_tags.REPLY: msgid}


def send_reaction(net: Network, user_id: str, channel: str, key: str, msgid: str | None,
                  fallback: str | None, receipt: Receipt) -> None:
    """IRC thread: the user's puppet tells the channel of the reaction (see module)."""
    conn = net.puppet(user_id)
    conn.join(channel)
    if msgid and "message-tags" in conn.caps.enabled:
        line = message_tags.with_tags(f"TAGMSG {channel}", react_tags(key, msgid))
        conn.send(line, channel=channel, done=receipt.finished, before=receipt.started)
        return
    if fallback is None:
        receipt.finished(True, None)
        return
    net.say(user_id, None, channel, [fallback], "m.emote", receipt)


def reaction_content(store: Store, network: str, room_id: RoomId,
                     reaction: kinds.Reaction) -> JsonDict | None:
    """Sender thread: the m.reaction content of an IRC reaction to a message of this room
    (None when its msgid names no event here: nothing to react to)."""
    found = store.event_of_msgid(network, reaction.msgid)
    if found is None or found[0] != room_id:
        return None
    return {"m.relates_to": {"rel_type": "m.annotation", "event_id": found[1],
                             "key": reaction.key}}
