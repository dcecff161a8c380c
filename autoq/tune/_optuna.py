"""Optuna factories for the tuner: objectives, sampler, storage, and URL redaction."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

from autoq.errors import ConfigError
from autoq.tune._config import TuneConfig
from autoq.tune._space import SearchSpace

if TYPE_CHECKING:
    import optuna

__all__ = [
    "CONSTRAINTS",
    "DIRECTIONS",
    "GRACE_S",
    "HEARTBEAT_S",
    "open_storage",
    "redact",
    "sampler",
    "storage_url",
]

# CLIP score, latency s, peak memory MiB
DIRECTIONS: list[Literal["minimize", "maximize"]] = ["maximize", "minimize", "minimize"]
CONSTRAINTS = ("memory", "latency", "quality")  # Trial.set_constraint keys, <= 0 is feasible


HEARTBEAT_S = 20
"""How often a running trial records that its worker is alive."""
GRACE_S = 120
"""A running trial silent for this long belongs to a dead worker: it is failed and retried."""


def sampler(name: str, seed: int, trials: int, space: SearchSpace) -> optuna.samplers.BaseSampler:
    """The Optuna sampler called ``name`` (`autoq.tune.Sampler`), seeded with ``seed``."""
    import warnings

    import optuna

    # Constraints reach every sampler through `Trial.set_constraint` in the objective.
    if name == "gp":
        # Alone, the GP once kept 29 of a default-space tune's 30 trials at 30 steps: its
        # tiers spanned memory only.
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=2)
    if name == "gp-tpe":
        from autoq.tune._alternating import Alternating

        # The default: the GP exploits its model on even trials, TPE keeps exploring every
        # dimension (steps included) on odd ones. On `benchmarks/tune.py samplers`' grid
        # shaped like the default space: 0.989 of its hypervolume with 20% of its plans,
        # TPE alone 0.973 (docs/benchmarks.md: "Measured: tuning the shapes model").
        return Alternating([
            optuna.samplers.GPSampler(seed=seed, n_startup_trials=2),
            sampler("tpe", seed, trials, space),
        ])  # fmt: skip
    if name == "nsga2":
        # A population sized to the budget, so short tunes still evolve a few generations.
        population = max(8, min(50, trials // 4))
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=population)
    if name == "tpe":
        with warnings.catch_warnings():  # `group` is experimental in Optuna
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # Grouped: a component's protect toggle exists only when it is quantized.
            return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.GridSampler(space.grid(), seed=seed)


def storage_url(config: TuneConfig, stem: str) -> str:
    if config.storage:
        return config.storage
    config.profiles_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(config.profiles_dir / f'{stem}.optuna.db').resolve()}"


def open_storage(
    url: str, on_stale: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None
) -> optuna.storages.BaseStorage:
    """An Optuna RDB storage whose running trials send heartbeats, so that a dead worker's
    trial is failed (and ``on_stale`` called) by the next worker to start a trial.

    Raises:
        ConfigError: A missing database driver, a bad URL or an unreachable server.
    """
    import warnings

    import optuna

    for attempt in range(3):
        try:
            with warnings.catch_warnings():  # heartbeats are experimental in Optuna
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url,
                    heartbeat_interval=HEARTBEAT_S,
                    grace_period=GRACE_S,
                    heartbeat_stale_trial_callback=on_stale,
                )
        except ImportError:
            raise ConfigError(
                f"No database driver for {redact(url)}; for PostgreSQL "
                "`pip install 'autoq[postgres]'` (psycopg)."
            ) from None
        except Exception as exc:  # sqlalchemy: bad URL, unreachable server, auth
            if attempt < 2 and "UniqueViolation" in str(exc):
                # Workers starting together race to create Optuna's tables; the loser
                # finds them created on a second look.
                time.sleep(0.5 * (attempt + 1))
                continue
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(
                f"Cannot open study storage {redact(url)}: {first}; check the URL and that "
                "the database server is running."
            ) from None
    raise AssertionError("unreachable: the last attempt returns or raises")


def redact(url: str) -> str:
    """A storage URL without its password (in the authority or as a ``password=`` query)."""
    import re

    url = re.sub(r"(//[^:/@]*):[^@]*@", r"\1:***@", url)
    return re.sub(r"([?&]password=)[^&]*", r"\1***", url, flags=re.IGNORECASE)
