"""One module per ``ssl-rad`` subcommand, each with ``add_arguments(parser)`` and ``run(args) -> int``."""
