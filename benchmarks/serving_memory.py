"""Resident memory of a process serving one tier: every tier loaded as needed (the
default) against only that tier (`AdaptivePipeline.from_profile(..., tiers=[name])`,
`autoq serve --tier NAME`), which releases the full-precision weights the tier does not use.

    OMP_NUM_THREADS=1 python benchmarks/serving_memory.py --profile PROFILE.json
    OMP_NUM_THREADS=1 python benchmarks/serving_memory.py --sd15 /tmp/sd15

Each case runs in a fresh process: RSS after importing torch, diffusers, transformers,
torchao, bitsandbytes, optimum-quanto, gguf and autoq is the baseline; the figure is RSS
after one generation on the tier (2 steps) over that baseline, beside the tier's weight
bytes. ``--sd15 FOLDER`` builds the SD1.5
architecture with random weights there (once, 4.3 GB) and a profile of two tiers for it
(fp32; torchao int8 weight-only UNet and text encoder beside the fp32 VAE).
Results: benchmarks/results/serving_memory_<name>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from datetime import date, datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESULTS = Path("benchmarks/results")

CHILD = r"""
import json, sys, psutil
import torch, diffusers, transformers, torchao, bitsandbytes, optimum.quanto, gguf
import autoq.runtime
rss = lambda: psutil.Process().memory_info().rss
baseline = rss()
from autoq.runtime import AdaptivePipeline
from autoq.backends import weight_bytes
from autoq.pipeline import module_components
profile, tier, alone = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
pipe = AdaptivePipeline.from_profile(
    profile, allow_mismatch=True, device="cpu", tiers=[tier] if alone else None
)
pipe.pin(tier)
out = pipe("a red circle", num_inference_steps=2, generator=torch.Generator().manual_seed(0))
runner = pipe._build(pipe._index)
weights = sum(weight_bytes(m) for m in module_components(runner).values())
print(json.dumps({"tier": out.tier, "alone": alone, "rss_over_baseline": rss() - baseline,
                  "weight_bytes": weights}))
"""


def sd15_profile(folder: Path) -> Path:
    """A two-tier profile for the SD1.5 architecture saved in ``folder``."""
    from autoq.device import fingerprint
    from autoq.pipeline import PipelinePlan, folder_hash
    from autoq.profile import (
        Constraints,
        Metrics,
        ModelIdentity,
        Profile,
        StudyInfo,
        Tier,
        write_profile,
    )
    from benchmarks.models import build_folder

    build_folder("sd15", folder)
    components = ("unet", "text_encoder", "vae")

    def tier(name: str, precision: str) -> Tier:
        precisions = {c: (precision if c != "vae" else "fp32") for c in components}
        metrics = Metrics(
            clip_score=0.0, clip_score_std=0.0, latency_s=10.0, latency_p90_s=10.0,
            peak_memory_bytes=1, weight_bytes=1, memory_method="not measured",
        )  # fmt: skip
        plan = PipelinePlan(precisions=precisions, steps=2)
        return Tier(name=name, plan=plan, metrics=metrics)

    tiers = [tier("quality", "fp32"), tier("small", "ao_int8wo")]
    profile = Profile(
        autoq_version="benchmark",
        created=datetime.now(timezone.utc),
        fingerprint=fingerprint(bench=False),
        model=ModelIdentity(
            source=str(folder.resolve()),
            content_hash=folder_hash(folder),
            pipeline_class="StableDiffusionPipeline",
        ),
        constraints=Constraints(),
        prompts=["a red circle"],
        seeds=[0],
        guidance_scale=5.0,
        height=256,
        width=256,
        reference=tiers[0].model_copy(update={"name": "reference"}),
        tiers=tiers,
        study=StudyInfo(
            storage="none",
            study_name="hand-made",
            sampler="none",
            seed=0,
            trials_completed=0,
            trials_failed=0,
            trials_pruned=0,
        ),
    )
    path = folder.parent / f"{folder.name}-profile.json"
    write_profile(profile, path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", type=Path)
    parser.add_argument("--sd15", type=Path)
    args = parser.parse_args()
    if (args.profile is None) == (args.sd15 is None):
        parser.error("give --profile PATH or --sd15 FOLDER")
    path = args.profile or sd15_profile(args.sd15)
    name = "sd15" if args.sd15 else path.stem

    from autoq.profile import read_profile

    rows = []
    for tier in [t.name for t in read_profile(path).tiers]:
        for alone in (False, True):
            done = subprocess.run(
                [sys.executable, "-c", CHILD, str(path), tier, "1" if alone else "0"],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"serving_memory_{name}"
    stem.with_suffix(".json").write_text(
        json.dumps({"date": date.today().isoformat(), "rows": rows})
    )
    lines = [
        f"{name}: RSS over the library baseline after one generation, fresh process each "
        f"({date.today().isoformat()})",
        "",
        "| tier | loaded | RSS over baseline MiB | tier weights MiB |",
        "|---|---|---:|---:|",
    ]
    for row in rows:
        loaded = "that tier only" if row["alone"] else "every tier as needed"
        lines.append(
            f"| {row['tier']} | {loaded} | {row['rss_over_baseline'] / 2**20:,.0f} | "
            f"{row['weight_bytes'] / 2**20:,.0f} |"
        )
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
