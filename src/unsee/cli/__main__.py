"""``python -m unsee.cli``: what ``accelerate launch`` and ``torchrun`` run."""

from unsee.cli import main

main()
