"""One module per CLI command that grew beyond a few lines: ``add_parser(subparsers, common)`` + ``run(args)``."""
