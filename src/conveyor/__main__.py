"""`python -m conveyor` runs the command-line tool."""

from conveyor.cli import main

main()
