"""Third-party network lookups (the AS API's /thirdparty endpoints; spec checklist F).

A part of `core.Bridge`: lets clients such as Element list the IRC networks, find the
alias of a channel and the virtual user of a nick.

Thread: request threads (the /thirdparty handlers of the AS API).
"""

from __future__ import annotations

from typing import TypedDict

from ..config.ini import Config
from ..matrix.wire import JsonObject
from ..rules.names import NetworkNames, valid_channel, valid_nick
from .directory import Directory


class ThirdPartyLocation(TypedDict):
    """One answer of /thirdparty/location: a channel's alias."""

    alias: str
    protocol: str
    fields: dict[str, str]  # network, channel


class ThirdPartyUser(TypedDict):
    """One answer of /thirdparty/user: a nick's virtual user."""

    userid: str
    protocol: str
    fields: dict[str, str]  # network, nickname


class ThirdPartyLookups:
    """The answers of the /thirdparty endpoints, from the configuration and the names."""

    def __init__(self, config: Config, names: dict[str, NetworkNames], directory: Directory):
        self.config = config
        self.names = names
        self.directory = directory

    # ------------------------------------------------------------ third-party lookups
    def thirdparty_protocol(self) -> JsonObject:
        """The `irc` protocol for clients' network pickers (spec checklist F44)."""
        return {
            "user_fields": ["network", "nickname"],
            "location_fields": ["network", "channel"],
            "icon": "mxc://matrix.org/irc",
            "field_types": {
                "network": {"regexp": "[a-zA-Z0-9_.-]+", "placeholder": "network"},
                "channel": {"regexp": "[#&+!][^\\s,:]+", "placeholder": "#channel"},
                "nickname": {"regexp": "[^\\s#&+!][^\\s]*", "placeholder": "nick"},
            },
            "instances": [
                {"network_id": n.name, "desc": n.display_name, "fields": {"network": n.name},
                 "icon": "mxc://matrix.org/irc"}
                for n in self.config.networks
            ],
        }

    def thirdparty_location(self, network: str | None,
                            channel: str | None) -> list[ThirdPartyLocation]:
        if not network or not channel or network not in self.names or not valid_channel(channel):
            return []
        alias = self.names[network].alias_for_channel(channel, self.directory.casemapping(network))
        return [{"alias": alias, "protocol": "irc",
                 "fields": {"network": network, "channel": channel}}]

    def thirdparty_user(self, network: str | None, nick: str | None) -> list[ThirdPartyUser]:
        if not network or not nick or network not in self.names or not valid_nick(nick):
            return []
        return [{"userid": self.names[network].user_id_for_nick(nick), "protocol": "irc",
                 "fields": {"network": network, "nickname": nick}}]

    def thirdparty_location_by_alias(self, alias: str | None) -> list[ThirdPartyLocation]:
        text = alias or ""
        parsed = self.directory.parse_alias(text)
        if parsed is None:
            return []
        network, channel = parsed
        return [{"alias": text, "protocol": "irc",
                 "fields": {"network": network, "channel": channel}}]

    def thirdparty_user_by_id(self, user_id: str | None) -> list[ThirdPartyUser]:
        text = user_id or ""
        for network, names in self.names.items():
            nick = names.nick_for_user_id(text)
            if nick is not None:
                return [{"userid": text, "protocol": "irc",
                         "fields": {"network": network, "nickname": nick}}]
        return []

