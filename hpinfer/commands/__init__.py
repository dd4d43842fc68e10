"""One module per CLI command that outgrew ``hpinfer.cli``: ``add_parser(subparsers, ...)`` and ``run(args)``."""
