"""`autoq tune`: multi-objective search over per-component precision, steps and scheduler."""

from autoq.pipeline import PROTECT_GROUPS
from autoq.tune._config import DEFAULT_TIMEOUT_S, Sampler, TuneConfig, parse_size, read_prompts
from autoq.tune._space import SearchSpace
from autoq.tune._study import tune
from autoq.tune._write import TuneResult, export_profile

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "PROTECT_GROUPS",
    "Sampler",
    "SearchSpace",
    "TuneConfig",
    "TuneResult",
    "export_profile",
    "parse_size",
    "read_prompts",
    "tune",
]
