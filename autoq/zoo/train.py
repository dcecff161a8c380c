"""Reproduce the zoo's "shapes" weights from scratch: ``python -m autoq.zoo.train --out DIR``.

Re-running the same command resumes from the last checkpoint; finished stages are skipped.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from autoq._logging import configure
from autoq.zoo._train import STAGES, TrainConfig, train

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line and run `autoq.zoo._train.train`."""
    parser = argparse.ArgumentParser(prog="python -m autoq.zoo.train", description=__doc__)
    parser.add_argument("--out", required=True, help="working folder for checkpoints and models")
    parser.add_argument(
        "--stage",
        nargs="+",
        choices=[*STAGES, "all"],
        default=["all"],
        help="stages to run (each needs the earlier ones); default: all",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument(
        "--parallel-scorer",
        action="store_true",
        help="train the scorer in a second process while the generator trains",
    )
    defaults = TrainConfig()
    for name in ("vae_steps", "scorer_steps", "latent_count", "unet_steps"):
        parser.add_argument(
            f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name)
        )
    args = parser.parse_args(argv)
    configure()  # a command-line entry point: print the stage log lines
    config = TrainConfig(
        vae_steps=args.vae_steps,
        scorer_steps=args.scorer_steps,
        latent_count=args.latent_count,
        unet_steps=args.unet_steps,
    )
    stages = STAGES if "all" in args.stage else tuple(args.stage)
    train(
        args.out,
        stages=stages,
        config=config,
        threads=args.threads,
        parallel_scorer=args.parallel_scorer,
    )


if __name__ == "__main__":
    main()
