"""Real peers on loopback for the demo and the tests: Synapse, IRC daemons, the bridge.

`stack.Stack` wires an IRC daemon (`ircd`), a Synapse homeserver (`synapse`) and the bridge
process together; `clients` has a plain IRC client and a small Matrix client to play users.

Thread: the test's or the demo's main thread.
"""
