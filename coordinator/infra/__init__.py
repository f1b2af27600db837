"""Where hivebus meets the outside: Redis clients, the Lua scripts, the managed local Redis, ACL
rules, logging, the server checks.
"""
