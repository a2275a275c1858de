"""The `ircbridge` command (also `python -m bridge`): argparse commands on the main thread.

`main` (in main.py) is the console script `ircbridge = bridge.cli:main`. Nothing else in the
package imports the CLI (an import-linter contract), so no import cycle runs through it: the
devstack that the demo plays on writes its registration through bridge.config.registration.
"""

from .main import main

__all__ = ["main"]
