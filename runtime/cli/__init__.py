"""The `rsd` command line: one module per subcommand; shared flags in `flags`."""
