"""`python -m bertfit.ablate ARGS`: the same as `bertfit ablate ARGS`."""

from bertfit.ablate.command import main

main()
