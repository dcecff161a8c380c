"""Measure the zoo's "shapes" pipeline: ``python -m autoq.zoo.evaluate [--grid PNG]``.

Prints the report as JSON: zero-shot colour/shape accuracy, the CLIP score gap between
matched and mismatched held-out prompts, and seconds per image at 20 steps.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from autoq.zoo._evaluate import evaluate, save_grid

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line, evaluate, print JSON and optionally save the sample grid."""
    import torch
    from diffusers import StableDiffusionPipeline

    from autoq.quality import ClipScorer
    from autoq.zoo import _registry, _shapes

    parser = argparse.ArgumentParser(prog="python -m autoq.zoo.evaluate", description=__doc__)
    parser.add_argument("--model", default=None, help="folder with pipeline/ and scorer/")
    parser.add_argument("--seeds", type=int, default=4, help="images per held-out prompt")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--grid", default=None, help="write the sample grid PNG here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    folder = _registry.model_path("shapes") if args.model is None else args.model
    pipeline = StableDiffusionPipeline.from_pretrained(f"{folder}/pipeline")
    scorer = ClipScorer.from_pretrained(f"{folder}/scorer")
    report, grid = evaluate(
        pipeline, scorer, seeds=args.seeds, steps=args.steps, guidance_scale=args.guidance
    )
    if args.grid:
        save_grid(grid, _shapes.evaluation_prompts(), args.grid)
    print(json.dumps(report.as_dict(), indent=2))


if __name__ == "__main__":
    main()
