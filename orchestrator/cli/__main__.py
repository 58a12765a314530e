"""`python -m orchestrator.cli ...`: the same as the `orchestrator` command."""
from .main import main

main()
