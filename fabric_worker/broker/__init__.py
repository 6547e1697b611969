"""Everything that talks to Redis. The rest of the package never imports redis."""
