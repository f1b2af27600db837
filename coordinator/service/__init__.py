"""The coordinator service: the lease, the consolidation pass (learning, archiving), retention and
set-aside records.
"""
