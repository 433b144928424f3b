"""`python -m medzoo.cli`: how launched training processes (torchrun, accelerate) run medzoo."""

from medzoo.cli import main

main()
