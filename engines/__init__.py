"""Inference engines behind one contract (:mod:`engines.contract`).

Pick one by name with a manifest::

    from engines import create_engine, load_manifest

    engine = create_engine(load_manifest("engines/manifests/sim-h200.json"))

Adapters are imported lazily by :mod:`engines.registry`, so importing this
package pulls in no GPU library.
"""

from engines.clock import Clock, VirtualClock, WallClock
from engines.manifest import Manifest, ManifestError, load_manifest, parse_manifest
from engines.names import engine_names
from engines.registry import EngineUnavailableError, create_engine

__all__ = [
    "Clock",
    "EngineUnavailableError",
    "Manifest",
    "ManifestError",
    "VirtualClock",
    "WallClock",
    "create_engine",
    "engine_names",
    "load_manifest",
    "parse_manifest",
]
