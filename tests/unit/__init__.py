"""Unit tests: pure rules, the store on SQLite, the layout; no Redis."""
