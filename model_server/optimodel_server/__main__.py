"""``python -m optimodel_server --manifest URI``: the same command as ``optimodel serve``."""

from .cli import main

main()
