"""One module per CLI subcommand, each with add_parser() and run(); imported lazily by the CLI."""
