"""The durable store (SQLite): promoted patterns, archived decisions, procedures and concepts; all
of its SQL lives here.
"""
