"""Everything that talks to Redis. The rest of the package never imports redis."""


def text(value: object) -> str:
    """A Redis reply (bytes, or str from a decoding client) as text; never raises."""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
