"""``sim``: a GPU simulated by a cost model, for tests and benchmarks anywhere.

It runs the :class:`~engines.contract.Engine` contract with in-flight
(continuous, chunked-prefill) or static batching, a prefix cache, and
per-iteration times from a roofline model of a real GPU and model
(:mod:`engines.sim.cost`, :mod:`engines.sim.profiles`), calibrated against
published TensorRT-LLM throughput (:mod:`engines.sim.calibration`). Outputs
are a pure function of the job (:func:`expected_output`), so every result
can be checked. Faults can be injected (:class:`SimFaults`).
"""

from engines.sim.engine import BATCHING_MODES, SimEngine, SimFaults
from engines.sim.outputs import expected_output

__all__ = ["BATCHING_MODES", "SimEngine", "SimFaults", "expected_output"]
