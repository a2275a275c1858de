"""Admin rooms: the command grammar, the runner of commands, the rooms, the vault.

Commands run on the admin lanes' worker threads; their IRC work is handed to the IRC thread
through `IrcSide.call`; the vault seals what users entrust to the bridge. What they need of
the bridge is the `seams.BridgeForAdmin` Protocol.
"""
