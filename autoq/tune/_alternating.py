"""A sampler that hands each trial to one of several Optuna samplers in turn."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from optuna import Study
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

__all__ = ["Alternating"]


class Alternating(BaseSampler):
    """Trial ``n`` is drawn by ``samplers[n % len(samplers)]``; each sees every trial.

    Pairs a sampler that exploits its model (GP) with one that keeps exploring every
    dimension (TPE): see `benchmarks/tune.py samplers`.
    """

    def __init__(self, samplers: Sequence[BaseSampler]) -> None:
        if not samplers:
            raise ValueError("Alternating needs at least one sampler.")
        self._samplers = list(samplers)

    def _turn(self, trial: FrozenTrial) -> BaseSampler:
        return self._samplers[trial.number % len(self._samplers)]

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return self._turn(trial).infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self._turn(trial).sample_relative(study, trial, search_space)

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        return self._turn(trial).sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._turn(trial).before_trial(study, trial)

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        for sampler in self._samplers:
            sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        for sampler in self._samplers:
            sampler.reseed_rng()
