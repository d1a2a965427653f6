"""Command line interface: one module per verb, each with main(argv)."""
