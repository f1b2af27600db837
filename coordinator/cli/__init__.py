"""The hivebus command line: main.py builds the parser; each command group loads what it needs."""
