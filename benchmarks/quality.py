"""Can a profile's quality figures be trusted? Re-score its tiers on images the tune never saw.

    python benchmarks/quality.py stability [PROFILE] [--seeds 4]   # re-score, compare
    python benchmarks/quality.py span [PROFILE]                    # tier span ratios

stability: every tier (and the reference) is generated again on a disjoint evaluation set,
the shapes model's 16 held-out prompts x rounds 1000.. (each image its own noise seed,
16000 and up; the tune's are below 16 x its rounds), and scored with the same CLIP
scorer. Reported: how often a re-scored mean falls inside the tier's 95% interval (aim
>= 90%), over all held-out images and over each 16-image round alone, and how often a pair
of tiers that the profile calls different (`Profile.ties`: a significant paired
difference) comes out in the other order (aim 0); pairs the profile calls ties are
counted apart.

span: the default profile's fastest tier vs its best-quality tier in latency, and its
smallest tier vs its best-quality tier in peak memory (aims >= 3x and >= 2.5x), with the
latency ratio no choice of tiers from the same study could beat (the best-quality tier vs
the fastest measured plan whose mean CLIP meets the floor).

Results go to benchmarks/results/quality-*.json and print as Markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from itertools import combinations
from pathlib import Path

from autoq.profile import Profile, Tier, load_profile

RESULTS = Path("benchmarks/results")


def _shapes_profile(path: Path) -> Profile:
    """The shapes profile at ``path``, or the one in folder ``path`` tuned on this device
    (`load_profile`'s choice; another device's when none is: CLIP does not depend on it)."""
    return load_profile(path, model="zoo:shapes", allow_mismatch=True)


def _rescore(profile: Profile, tiers: list[Tier], seeds: list[int]) -> dict[str, list[float]]:
    import torch

    from autoq.pipeline import ComponentCache, assemble, load_model
    from autoq.quality import clustered_mean
    from autoq.tune._measure import EvalSet, run_images
    from autoq.zoo import prompts

    loaded = load_model(profile.model.source, None)
    loaded.pipe.set_progress_bar_config(disable=True)
    cache = ComponentCache(loaded.pipe, 2**34, model_hash=loaded.identity.content_hash)
    evalset = EvalSet(tuple(prompts("shapes")), tuple(seeds), 1)
    size = (profile.height, profile.width) if profile.height and profile.width else None
    scores: dict[str, list[float]] = {}
    for tier in tiers:
        run = run_images(
            assemble(cache, tier.plan),
            evalset,
            0,
            evalset.size,
            steps=tier.plan.steps,
            guidance_scale=profile.guidance_scale,
            scorer=loaded.scorer,
            device=torch.device("cpu"),
            size=size,
        )
        scores[tier.name] = run.scores
        interval = clustered_mean(run.scores, evalset.clusters(evalset.size))
        print(
            f"{tier.name}: profile {tier.metrics.quality_text()} | re-scored "
            f"{interval.estimate:.1f} [{interval.low:.1f}, {interval.high:.1f}] n={interval.n}",
            flush=True,
        )
    return scores


def stability(path: Path, n_seeds: int) -> dict:
    profile = _shapes_profile(path)
    tiers = [profile.reference, *profile.tiers]
    scores = _rescore(profile, tiers, [1000 + i for i in range(n_seeds)])
    means = {name: statistics.fmean(s) for name, s in scores.items()}
    per_round = len(profile.prompts) if profile.prompts else 16
    inside = []
    rounds_inside = rounds_total = 0
    for tier in tiers:
        low, high = tier.metrics.clip_ci or (tier.metrics.clip_score,) * 2
        own = scores[tier.name]
        for start in range(0, len(own) - per_round + 1, per_round):  # each seed round alone
            rounds_inside += low <= statistics.fmean(own[start : start + per_round]) <= high
            rounds_total += 1
        inside.append(
            {
                "tier": tier.name,
                "profile": tier.metrics.clip_score,
                "ci": [low, high],
                "n": tier.metrics.n_images,
                "rescored": means[tier.name],
                "inside": low <= means[tier.name] <= high,
            }
        )
    ties = set(profile.ties())
    pairs = []
    for a, b in combinations(profile.tiers, 2):
        tie = (a.name, b.name) in ties
        flipped = (a.metrics.clip_score - b.metrics.clip_score) * (
            means[a.name] - means[b.name]
        ) < 0
        pairs.append({"pair": [a.name, b.name], "tie": tie, "flipped": flipped})
    different = [p for p in pairs if not p["tie"]]
    return {
        "profile": str(path),
        "disjoint_set": f"16 held-out prompts x rounds 1000-{999 + n_seeds}",
        "images_per_tier": len(next(iter(scores.values()))),
        "torch_threads": _threads(),
        "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "tiers": inside,
        "pairs": pairs,
        "inside_rate": sum(t["inside"] for t in inside) / len(inside),
        "round_inside_rate": rounds_inside / max(rounds_total, 1),
        "round_checks": rounds_total,
        "different_pairs": len(different),
        "different_flipped": sum(p["flipped"] for p in different),
        "tie_pairs": len(pairs) - len(different),
        "tie_flipped": sum(p["flipped"] for p in pairs if p["tie"]),
    }


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def _dialed(tier: Tier) -> float:
    """A tier's latency at its fewest allowed steps (its own when it has no dial)."""
    points = [p for p in tier.steps_curve if tier.min_steps and p.steps >= tier.min_steps]
    return min([tier.metrics.latency_s, *(p.latency_s for p in points)])


def _fastest(profile: Profile, *, floor: bool) -> float:
    """Latency of the fastest measured trial (with ``floor``: whose mean meets the floor)."""
    return min(
        t.latency_s
        for t in profile.trials
        if t.latency_s is not None
        and t.clip_score is not None
        and (not floor or profile.quality_floor is None or t.clip_score >= profile.quality_floor)
    )


def _screened(profile: Profile, tier: Tier) -> float:
    """``tier``'s latency as its trial was timed (before any side-by-side timing)."""
    point = next((t for t in profile.trials if t.number == tier.trial), None)
    if point is None or point.latency_s is None:
        return tier.metrics.latency_s
    return point.latency_s


def span(path: Path) -> dict:
    profile = _shapes_profile(path)
    best = max(profile.tiers, key=lambda t: t.metrics.clip_score)
    fastest = min(profile.tiers, key=lambda t: t.metrics.latency_s)
    smallest = min(profile.tiers, key=lambda t: t.metrics.peak_memory_bytes)
    return {
        "profile": str(path),
        "best_quality": best.name,
        "fastest": fastest.name,
        "smallest": smallest.name,
        "latency_ratio": best.metrics.latency_s / fastest.metrics.latency_s,
        "memory_ratio": best.metrics.peak_memory_bytes / smallest.metrics.peak_memory_bytes,
        # Across all tiers, and with each tier's step dial turned down to its min_steps.
        "latency_span": max(t.metrics.latency_s for t in profile.tiers)
        / min(t.metrics.latency_s for t in profile.tiers),
        "memory_span": max(t.metrics.peak_memory_bytes for t in profile.tiers)
        / min(t.metrics.peak_memory_bytes for t in profile.tiers),
        "best_vs_fastest_dialed": best.metrics.latency_s / min(_dialed(t) for t in profile.tiers),
        # What any choice of tiers could reach: the best-quality tier against the fastest
        # plan the study measured whose mean CLIP meets the floor (the tuner asks more: the
        # lower end of its interval must), and against the fastest plan measured at all.
        # Trial points keep their screening latencies: the best tier's is used too, so a
        # drift between screening and the side-by-side timing does not enter the ratio.
        "latency_bound_at_floor": _screened(profile, best) / _fastest(profile, floor=True),
        "latency_bound_any": _screened(profile, best) / _fastest(profile, floor=False),
        "tiers": [
            {
                "tier": t.name,
                "clip": t.metrics.quality_text(),
                "latency_s": t.metrics.latency_s,
                "peak_mib": t.metrics.peak_memory_bytes / 2**20,
                "cheapest_in": t.cheapest_in,
                "min_steps": t.min_steps,
                "steps": t.plan.steps,
            }
            for t in profile.tiers
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["stability", "span"])
    parser.add_argument(
        "profile", nargs="?", type=Path, help="a profile or folder (default: profiles/)"
    )
    parser.add_argument("--seeds", type=int, default=4, help="seeds per held-out prompt")
    args = parser.parse_args()
    path = args.profile or Path("profiles")
    result = stability(path, args.seeds) if args.what == "stability" else span(path)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"quality-{args.what}.json").write_text(json.dumps(result, indent=2) + "\n")
    if args.what == "stability":
        print("| tier | profile CLIP [95% CI] n | re-scored mean | inside |")
        print("|---|---|---:|---|")
        for t in result["tiers"]:
            low, high = t["ci"]
            print(
                f"| {t['tier']} | {t['profile']:.1f} [{low:.1f}, {high:.1f}] n={t['n']} | "
                f"{t['rescored']:.1f} | {'yes' if t['inside'] else 'no'} |"
            )
        print(
            f"\ninside: {result['inside_rate']:.0%} (each 16-image round alone: "
            f"{result['round_inside_rate']:.0%} of {result['round_checks']}); "
            "pairs called different: "
            f"{result['different_pairs']}, flipped {result['different_flipped']}; "
            f"ties: {result['tie_pairs']}, flipped {result['tie_flipped']}"
        )
    else:
        print(
            f"fastest ({result['fastest']}) vs best quality ({result['best_quality']}) "
            f"latency: {result['latency_ratio']:.2f}x; smallest ({result['smallest']}) vs "
            f"best quality memory: {result['memory_ratio']:.2f}x; across tiers: latency "
            f"{result['latency_span']:.2f}x, memory {result['memory_span']:.2f}x; best quality "
            f"vs the fastest dialed-down tier: {result['best_vs_fastest_dialed']:.2f}x; "
            "bound for any tiers: vs the fastest measured plan whose mean meets the floor "
            f"{result['latency_bound_at_floor']:.2f}x, vs the fastest measured at all "
            f"{result['latency_bound_any']:.2f}x"
        )


if __name__ == "__main__":
    main()
