"""`python -m bertfit.search`: the same as `bertfit search`."""

from bertfit.cli import stage_main
from bertfit.search import main

stage_main(main, "search")
