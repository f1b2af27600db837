"""Contract tests: the library in-process against fakeredis and real redis-servers (6.2 and 7.x)."""
