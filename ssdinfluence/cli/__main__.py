"""``python -m ssdinfluence.cli`` runs the command line."""

from . import main

main()
