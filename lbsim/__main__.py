"""``python -m lbsim``: the same command line as ``lbsim``."""

from .cli import main

main()
