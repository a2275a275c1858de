"""`python -m bridge` is the `ircbridge` command."""

from .cli.main import main

raise SystemExit(main())
