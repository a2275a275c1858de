"""The IRC side of the bridge: one IRC thread, one Network per configured network.

`IrcSide` is the only entry point for other modules. Everything that touches a connection is
handed to the IRC thread with `call`; nothing here imports the core or the web layer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import MappingProxyType
from typing import TYPE_CHECKING, TypedDict, TypeVar, TypeVarTuple

import irc.client

from ..rules.names import irc_lower
from .connection import IrcConnection, State
from .events import IrcCasemapping
from .network import IrcListener, Network
from .reactor import IrcThread
from .snapshot import NetworkSnapshot

if TYPE_CHECKING:
    from ..config.ini import NetworkConfig

log = logging.getLogger(__name__)

R = TypeVar("R")
Ts = TypeVarTuple("Ts")

__all__ = ["IrcSide", "IrcListener", "Network", "IrcConnection", "NetworkSnapshot", "NetworkStatus",
           "State"]

EVENTS = (
    "welcome", "featurelist", "nicknameinuse", "erroneusnickname", "disconnect", "error",
    "join", "part", "kick", "currenttopic", "topic", "pubmsg", "pubnotice", "action",
    "privmsg", "privnotice", "endofnames", "channelmodeis", "quit", "nick", "namreply",
    "mode",
    "cannotsendtochan", "nosuchnick", "nosuchchannel", "channelisfull", "inviteonlychan",
    "bannedfromchan", "badchannelkey", "nochanmodes", "chanoprivsneeded", "toomanychannels",
    "cap", "authenticate", "saslsuccess", "saslfail", "saslaborted", "sasltoolong",
    "passwdmismatch", "470", "489", "yourebannedcreep", "unavailresource",
    "batch", "fail",  # IRCv3 batches and FAIL (bridge.irc.history)
    "away", "chghost", "account", "setname", "whoreply",  # bridge.irc.presence
    "tagmsg",
)


class NetworkStatus(TypedDict, total=False):
    """One network's connections as `IrcSide.status` reports them (for /health, metrics)."""

    bot: str  # the bot's State value, "idle" or "stopped"
    bot_nick: str | None
    channels: list[str]
    puppets: dict[str, str]  # Matrix user -> State value
    kicked: dict[str, dict[str, object]]  # folded channel -> the kick's status


class IrcSide:
    """Starts the IRC thread and the networks; hands work in through `call`."""

    def __init__(self, networks: tuple[NetworkConfig, ...], listener: IrcListener,
                 bot_nick_for: Callable[[NetworkConfig], str]):
        self.thread = IrcThread()
        self.connector = ThreadPoolExecutor(max_workers=8, thread_name_prefix="irc-connect")
        self._by_conn: dict[irc.client.ServerConnection, tuple[Network, IrcConnection]] = {}
        self.networks: dict[str, Network] = {}
        # Network -> its NetworkSnapshot (nicks, NICKLEN, CASEMAPPING): an immutable mapping
        # of immutable values the IRC thread replaces whole, so any thread may read it.
        self._snapshots: MappingProxyType[str, NetworkSnapshot] = MappingProxyType(
            {config.name: NetworkSnapshot(config.name) for config in networks})
        self._listener = listener
        for config in networks:
            self.networks[config.name] = Network(
                config, self.thread, self.connector, listener, bot_nick=bot_nick_for(config),
                register=self._make_register(config.name), unregister=self._unregister,
            )
            self.networks[config.name].publish_casemapping = self._publish_casemapping
            self.networks[config.name].publish_snapshot = self._publish_snapshot
        for event in EVENTS:
            self.thread.reactor.add_global_handler(event, self._dispatch, 0)
        self.started = False

    def _make_register(
        self, network: str
    ) -> Callable[[irc.client.ServerConnection, IrcConnection], None]:
        def register(server_conn: irc.client.ServerConnection, conn: IrcConnection) -> None:
            self._by_conn[server_conn] = (self.networks[network], conn)
        return register

    def _unregister(self, server_conn: irc.client.ServerConnection) -> None:
        self._by_conn.pop(server_conn, None)

    def _dispatch(self, server_conn: irc.client.ServerConnection, event: irc.client.Event) -> None:
        found = self._by_conn.get(server_conn)
        if found is None:
            return
        network, conn = found
        try:
            network.on_event(conn, event)
        except Exception:  # noqa: BLE001 - one bad event must not stop the others
            log.exception("error handling IRC %s on %s", event.type, conn)

    # ------------------------------------------------------------ any thread
    def start(self, networks: list[str] | None = None) -> None:
        """Start the IRC thread and connect the bots of the given (default: all) networks."""
        self.thread.start()
        self.started = True
        for name in networks if networks is not None else list(self.networks):
            self.thread.call(self.networks[name].start)

    def call(self, fn: Callable[[*Ts], object], *args: *Ts) -> None:
        self.thread.call(fn, *args)

    def call_sync(self, fn: Callable[[*Ts], R], *args: *Ts, timeout: float = 10.0) -> R:
        return self.thread.call_sync(fn, *args, timeout=timeout)

    def network(self, name: str) -> Network | None:
        return self.networks.get(name)

    def _publish_casemapping(self, network: str, casemapping: str) -> None:
        """IRC thread: a network announced its CASEMAPPING (already in its snapshot); the
        core re-keys its channels."""
        self._listener.irc_casemapping(IrcCasemapping(network, casemapping))

    def _publish_snapshot(self, snapshot: NetworkSnapshot) -> None:
        """IRC thread: a network's nicks, NICKLEN or CASEMAPPING changed."""
        self._snapshots = MappingProxyType({**self._snapshots, snapshot.network: snapshot})

    def snapshot(self, network: str) -> NetworkSnapshot | None:
        """Any thread: what the IRC thread last published of a network (None: unknown)."""
        return self._snapshots.get(network)

    def casemapping(self, network: str) -> str:
        """Any thread: the CASEMAPPING a network announced (rfc1459 until its 005)."""
        snapshot = self._snapshots.get(network)
        return snapshot.casemapping if snapshot is not None else "rfc1459"

    def fold_for(self, server_conn: irc.client.ServerConnection) -> Callable[[str], str]:
        """The nick folding (ISUPPORT CASEMAPPING) of the network a connection is on."""
        found = self._by_conn.get(server_conn)
        return found[0].fold if found is not None else irc_lower

    def status(self) -> dict[str, NetworkStatus]:
        """A snapshot of every connection's state, taken on the IRC thread."""
        if not self.thread.alive:
            return {name: {"bot": "stopped", "puppets": {}} for name in self.networks}

        def snapshot() -> dict[str, NetworkStatus]:
            return {
                name: {
                    "bot": net.bot.state.value if net.bot else "idle",
                    "bot_nick": net.bot.nick if net.bot else None,
                    "channels": sorted(net.bot.channels) if net.bot else [],
                    "puppets": {u: c.state.value for u, c in net.puppets.items()},
                    "kicked": net.rejoins.status(),
                }
                for name, net in self.networks.items()
            }

        return self.call_sync(snapshot)

    def stop(self, message: str = "Bridge shutting down", timeout: float = 10.0) -> None:
        if not self.started:
            return
        for net in self.networks.values():
            self.thread.call(net.stop, message)
        self.thread.stop(timeout)
        self.connector.shutdown(wait=False, cancel_futures=True)
        self.started = False
