"""Everything shared by producers and workers that crosses Redis: key names,
the entry codec, the fleet config. Pure: no I/O."""
