"""hivebus test suite."""
