"""The domain: ids, keys, models, errors, decisions, scoring and learning rules. Pure: no Redis, no
SQLite, no I/O.
"""
