"""Engine manifests: the nine fields that start an engine, checked up front.

A manifest is a JSON or TOML file with exactly nine required fields and no
defaults. Anything missing, unknown, mistyped or inconsistent raises
:class:`ManifestError` naming the field and the value, so a worker refuses
to start before it claims any work. Problems are reported one at a time, the
first in a fixed order (the field order of :class:`Manifest`), so the same
file always gives the same message.

Checks that need the engine (does the device exist, is the model known) are
made by the engine's constructor and raise :class:`ManifestError` too.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engines.contract import Capacity
from engines.names import engine_names

DTYPES = ("float32", "float16", "bfloat16", "fp8")
MANIFEST_DIR = Path(__file__).parent / "manifests"
"""Where the shipped manifests live (``sim-h200.json`` and friends)."""

_STR_FIELDS = ("backend", "model", "dtype", "device")
_INT_FIELDS = (
    "max_batch_size",
    "max_num_tokens",
    "max_seq_len",
    "kv_cache_tokens",
    "kv_block_tokens",
)


class ManifestError(ValueError):
    """A manifest was refused.

    ``field`` is None for file-level problems; ``source`` (the file, or what
    the caller named the mapping) is None when an engine refuses a field.
    """

    def __init__(self, source: str | None, field: str | None, message: str) -> None:
        where = "manifest" if source is None else f"manifest {source}"
        if field is not None:
            where += f": field {field!r}"
        # One line, always: messages end up in logs and exit summaries.
        super().__init__(" ".join(f"{where}: {message}".splitlines()))
        self.source = source
        self.field = field


@dataclass(frozen=True, slots=True)
class Manifest:
    """What to run and within which limits. Build with :func:`load_manifest`."""

    backend: str  # a registered engine name
    model: str
    dtype: str  # one of DTYPES
    max_batch_size: int
    max_num_tokens: int
    max_seq_len: int
    kv_cache_tokens: int
    kv_block_tokens: int
    device: str  # "cpu" or a GPU name as the driver reports it

    def capacity(self) -> Capacity:
        """The engine limits this manifest sets."""
        return Capacity(
            max_batch_size=self.max_batch_size,
            max_num_tokens=self.max_num_tokens,
            kv_cache_tokens=self.kv_cache_tokens,
            kv_block_tokens=self.kv_block_tokens,
            max_seq_len=self.max_seq_len,
        )


FIELDS: tuple[str, ...] = tuple(Manifest.__dataclass_fields__)


def load_manifest(path: str | Path) -> Manifest:
    """Read and check a ``.json`` or ``.toml`` manifest file."""
    path = Path(path)
    source = str(path)
    suffix = path.suffix.lower()
    if suffix not in (".json", ".toml"):
        raise ManifestError(source, None, f"unsupported file type {suffix!r} (use .json or .toml)")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(source, None, f"cannot read file: {exc}") from exc
    data: Any
    try:
        if suffix == ".json":
            data = json.loads(text, object_pairs_hook=lambda pairs: _no_duplicates(source, pairs))
        else:
            data = tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ManifestError(source, None, f"cannot parse {suffix[1:].upper()}: {exc}") from exc
    return parse_manifest(data, source)


def parse_manifest(data: Mapping[str, Any], source: str) -> Manifest:
    """Check an already-parsed manifest; ``source`` names it in errors."""
    if not isinstance(data, Mapping):
        raise ManifestError(source, None, f"top level must be an object, got {type(data).__name__}")
    for name in FIELDS:
        if name not in data:
            raise ManifestError(source, name, "missing (every field is required)")
        _check_value(source, name, data[name])
    unknown = sorted(str(key) for key in data if key not in FIELDS)
    if unknown:
        raise ManifestError(
            source, unknown[0], f"unknown field (expected exactly: {', '.join(FIELDS)})"
        )
    manifest = Manifest(**{name: data[name] for name in FIELDS})
    _check_consistency(source, manifest)
    return manifest


def _check_value(source: str, name: str, value: object) -> None:
    if name in _STR_FIELDS:
        if not isinstance(value, str):
            raise ManifestError(source, name, f"expected a string, got {_show(value)}")
        if not value.strip():
            raise ManifestError(source, name, f"{value!r} must not be empty")
    else:
        # bool is an int subclass in Python; a manifest saying `true` is a mistake.
        if isinstance(value, bool) or not isinstance(value, int):
            raise ManifestError(source, name, f"expected an integer, got {_show(value)}")
        if value < 1:
            raise ManifestError(source, name, f"{value} must be >= 1")
    if name == "backend" and value not in engine_names():
        raise ManifestError(
            source, name, f"{value!r} is not a registered engine ({', '.join(engine_names())})"
        )
    if name == "dtype" and value not in DTYPES:
        raise ManifestError(source, name, f"{value!r} is not one of {', '.join(DTYPES)}")


def _check_consistency(source: str, m: Manifest) -> None:
    # (field, its value, the limit's name, the limit's value), in field order.
    rules = (
        ("max_batch_size", m.max_batch_size, "kv_cache_tokens", m.kv_cache_tokens),
        ("max_num_tokens", m.max_num_tokens, "kv_cache_tokens", m.kv_cache_tokens),
        ("max_seq_len", m.max_seq_len, "kv_cache_tokens", m.kv_cache_tokens),
        ("kv_block_tokens", m.kv_block_tokens, "max_seq_len", m.max_seq_len),
    )
    for name, value, limit_name, limit in rules:
        if value > limit:
            raise ManifestError(source, name, f"{value} exceeds {limit_name} ({limit})")


def _no_duplicates(source: str, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ManifestError(source, key, "appears more than once")
        result[key] = value
    return result


def _show(value: object) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"
