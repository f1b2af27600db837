"""``python -m coordinator`` is the ``hivebus`` command."""

from coordinator.cli import main

main()
