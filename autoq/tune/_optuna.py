"""Optuna factories for the tuner: objectives, sampler, storage, and URL redaction."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from autoq.errors import ConfigError
from autoq.tune._config import TuneConfig
from autoq.tune._space import SearchSpace

if TYPE_CHECKING:
    import optuna

__all__ = ["CONSTRAINTS", "DIRECTIONS", "open_storage", "redact", "sampler", "storage_url"]

# CLIP score, latency s, peak memory MiB
DIRECTIONS: list[Literal["minimize", "maximize"]] = ["maximize", "minimize", "minimize"]
CONSTRAINTS = ("memory", "latency", "quality")  # Trial.set_constraint keys, <= 0 is feasible


def sampler(config: TuneConfig, space: SearchSpace) -> optuna.samplers.BaseSampler:
    import optuna

    # Constraints reach NSGA-II and TPE through `Trial.set_constraint` in the objective.
    if config.sampler == "nsga2":
        # A population sized to the budget, so short tunes still evolve a few generations.
        population = max(8, min(50, config.trials // 4))
        return optuna.samplers.NSGAIISampler(seed=config.seed, population_size=population)
    if config.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=config.seed, multivariate=True)
    if config.sampler == "random":
        return optuna.samplers.RandomSampler(seed=config.seed)
    return optuna.samplers.GridSampler(space.grid(), seed=config.seed)


def storage_url(config: TuneConfig, stem: str) -> str:
    if config.storage:
        return config.storage
    config.profiles_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(config.profiles_dir / f'{stem}.optuna.db').resolve()}"


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An Optuna RDB storage; a missing database driver or server becomes a clear error."""
    import optuna

    try:
        return optuna.storages.RDBStorage(url)
    except ImportError:
        raise ConfigError(
            f"No database driver for {redact(url)}; for PostgreSQL "
            "`pip install 'autoq[postgres]'` (psycopg)."
        ) from None
    except Exception as exc:  # sqlalchemy: bad URL, unreachable server, auth
        raise ConfigError(f"Cannot open study storage {redact(url)}: {exc}") from None


def redact(url: str) -> str:
    """A storage URL without its password."""
    import re

    return re.sub(r"(//[^:/@]+):[^@]*@", r"\1:***@", url)
