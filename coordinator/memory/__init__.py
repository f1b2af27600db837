"""Hot memory in Redis: an agent's state, short-term memory, decisions and episodic events."""
