"""Run the command line as ``python -m envsnap``."""

from envsnap.cli import main

main()
