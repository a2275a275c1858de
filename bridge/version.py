"""The bridge's version, in a module of its own so any part can name it.

Importing the root package would pull in `create_app()`'s wiring (every part), so the parts
that report the version (ops metrics, the admin `!bridgeversion` command, the web status, the
CLI) import it from here. No thread of its own: a constant read by whoever asks.
"""

__version__ = "0.1.0"
