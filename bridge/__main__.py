"""`python -m bridge` is the `ircbridge` command."""

from .cli import main

raise SystemExit(main())
