"""The signal bus on Redis Streams: publish, consume, settle, redelivery, dead letters, effects and
the agent registry.
"""
