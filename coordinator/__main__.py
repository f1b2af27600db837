"""``python -m hivebus`` is the ``hivebus`` command."""

from hivebus.cli.main import main

main()
