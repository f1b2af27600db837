"""End-to-end tests: hivebus as real subprocesses (CLI, agents, coordinator, demo) on real servers."""
