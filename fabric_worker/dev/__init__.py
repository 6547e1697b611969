"""Private harnesses: a redis-server on a free port, and ``make demo``."""
