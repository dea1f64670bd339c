"""`python -m node.cli` runs the command line, as the `exchange-node` script does."""
from node.cli.main import main

main()
