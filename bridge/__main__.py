"""`python -m bridge` is the `ircbridge` command.

Thread: the main thread of the CLI.
"""

from .cli.main import main

raise SystemExit(main())
