"""`autoq report`: one self-contained HTML page per profile (inline SVG and PNG).

A profile is untrusted input (shared folders, a colleague's tune): every value it holds is
escaped before it reaches the page, and a sample image is embedded only when it is a PNG
file inside the profile's own folder.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from autoq._files import atomic_write_text
from autoq.errors import ConfigError
from autoq.profile._model import Profile, StudyInfo, Tier

__all__ = [
    "MAX_SAMPLE_BYTES",
    "conditions_text",
    "sample_path",
    "tier_details",
    "ties_text",
    "unmeasured_trials",
    "write_report",
]

_W, _H, _PAD = 420, 300, 44
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
"""No script, no fetch: even a value that escaped escaping could not run or phone home."""
MAX_SAMPLE_BYTES = 8 * 2**20
"""Largest sample image embedded; larger files are shown as missing."""


def _e(value: Any) -> str:
    """``value`` as HTML text, safe inside elements and quoted attributes."""
    return html.escape(str(value), quote=True)


def _finite(*values: float | None) -> bool:
    return all(v is not None and math.isfinite(v) for v in values)


def _scatter(profile: Profile, x_of: str, x_label: str, scale: float) -> str:
    """An SVG scatter of CLIP score against ``x_of``; tiers ringed and named."""
    points: list[tuple[float, float, bool]] = []
    for p in profile.trials:
        x, y = getattr(p, x_of), p.clip_score
        if x is not None and y is not None and _finite(x, y):
            points.append((x / scale, y, p.feasible))
    # A tier is ringed where its trial is: the search's timing, like every other point
    # (its side-by-side latency, in the tables, was timed after racing, on another footing).
    trials = {p.number: p for p in profile.trials}
    tiers = []
    for t in profile.tiers:
        point = trials.get(t.trial) if t.trial is not None else None
        x = getattr(point, x_of, None) if point is not None else None
        x = getattr(t.metrics, x_of) if x is None else x
        if _finite(x, t.metrics.clip_score):
            tiers.append((x / scale, t.metrics.clip_score, t.name))
    xs = [p[0] for p in points] + [t[0] for t in tiers]
    ys = [p[1] for p in points] + [t[1] for t in tiers]
    if not xs:
        return "<p>No measured trial to plot.</p>"
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)

    def px(x: float, y: float) -> tuple[float, float]:
        return (
            _PAD + (x - x0) / (x1 - x0) * (_W - 2 * _PAD),
            _H - _PAD - (y - y0) / (y1 - y0) * (_H - 2 * _PAD),
        )

    parts = [
        f'<svg width="{_W}" height="{_H}" xmlns="http://www.w3.org/2000/svg">',
        f'<rect x="{_PAD}" y="{_PAD}" width="{_W - 2 * _PAD}" height="{_H - 2 * _PAD}" '
        'fill="none" stroke="#999"/>',
        f'<text x="{_W / 2}" y="{_H - 8}" text-anchor="middle" font-size="12">{_e(x_label)}</text>',
        f'<text x="12" y="{_H / 2}" font-size="12" transform="rotate(-90 12 {_H / 2})" '
        'text-anchor="middle">CLIP score</text>',
        f'<text x="{_PAD}" y="{_H - _PAD + 14}" font-size="10">{x0:.3g}</text>',
        f'<text x="{_W - _PAD}" y="{_H - _PAD + 14}" font-size="10" '
        f'text-anchor="end">{x1:.3g}</text>',
        f'<text x="{_PAD - 4}" y="{_H - _PAD}" font-size="10" text-anchor="end">{y0:.3g}</text>',
        f'<text x="{_PAD - 4}" y="{_PAD + 8}" font-size="10" text-anchor="end">{y1:.3g}</text>',
    ]
    for x, y, ok in points:
        cx, cy = px(x, y)
        colour = "#3b7dd8" if ok else "#bbb"
        parts.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="3" fill="{colour}"/>')
    for x, y, name in tiers:
        cx, cy = px(x, y)
        parts.append(
            f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="7" fill="none" stroke="#d83b3b" '
            f'stroke-width="2"/><text x="{cx + 9:.1f}" y="{cy - 6:.1f}" font-size="11" '
            f'fill="#d83b3b">{_e(name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def sample_path(base: Path, relative: str) -> Path | None:
    """The sample image ``relative`` to the profile folder ``base``, or ``None`` unless it
    is a PNG file (by content) of at most `MAX_SAMPLE_BYTES` that resolves inside ``base``
    (no absolute paths, ``..`` or symlinks leading out)."""
    try:
        root = base.resolve()
        path = (root / relative).resolve()
        if not path.is_relative_to(root) or path.suffix.lower() != ".png" or not path.is_file():
            return None
        if path.stat().st_size > MAX_SAMPLE_BYTES:
            return None
        with path.open("rb") as f:
            return path if f.read(len(_PNG_MAGIC)) == _PNG_MAGIC else None
    except (OSError, ValueError, RuntimeError):  # NUL bytes, loops: not a usable sample
        return None


def _img(base: Path, relative: str) -> str:
    path = sample_path(base, relative)
    if path is None:
        return "<td>missing</td>"
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<td><img src="data:image/png;base64,{data}" width="128" height="128"></td>'


def _table(header: Iterable[Any], rows: Iterable[Iterable[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _ci(ci: tuple[float, float] | None) -> str:
    return "-" if ci is None else f"[{ci[0]:.2f}, {ci[1]:.2f}]"


def _steps_curve(tier: Tier) -> str:
    if not tier.steps_curve:
        return "-"
    return "; ".join(
        f"{p.steps}: {p.latency_s:.3f} s, CLIP {p.clip_score:.2f} {_ci(p.clip_ci)}"
        for p in tier.steps_curve
    )


def tier_details(tier: Tier) -> dict[str, str]:
    """Display strings of what a tier's `Tier.summary` does not already show: its quality
    interval and images, cheapest resource, fewest steps, and the steps and batch curves."""
    m = tier.metrics
    shown = " ".join(tier.summary())
    details = {"tier": tier.name}
    if "CI" not in shown:
        details["CLIP 95% CI"] = _ci(m.clip_ci)
        details["images"] = str(m.n_images or "-")
    if "cheapest" not in shown:
        details["cheapest in"] = ", ".join(tier.cheapest_in) or "-"
    if "steps dial" not in shown:
        details["min steps"] = "-" if tier.min_steps is None else str(tier.min_steps)
    details["steps curve"] = _steps_curve(tier)
    details["batch curve"] = _batch_curve(tier)
    # Compiling or converting: paid by the first generation of each process (warm() and
    # `autoq serve` pay it before serving).
    details["first-call build s"] = "-" if m.build_s is None else f"{m.build_s:.1f}"
    if m.predicted_latency_s is not None:
        details["predicted latency s"] = f"{m.predicted_latency_s:.3f}"
    return details


def _batch_curve(tier: Tier) -> str:
    """``"1: 12.8 s, 2: 22.2 s (1.15x), 4: 39.9 s (1.28x); fits 4"``: seconds of one call
    per batch size, images per second against batch 1, the largest batch that fits."""
    points = tier.batch_curve
    if not points:
        return "-"
    alone = points[0].latency_s / points[0].batch_size
    parts = [
        f"{p.batch_size}: {p.latency_s:.3g} s"
        + (f" ({alone * p.batch_size / p.latency_s:.2f}x)" if p.batch_size > 1 else "")
        for p in points
    ]
    fits = f"; fits {tier.max_batch}" if tier.max_batch is not None else ""
    return ", ".join(parts) + fits


def ties_text(profile: Profile) -> str:
    """The tier pairs whose quality is not ranked (`Profile.ties`), in one sentence."""
    ties = getattr(profile, "ties", None)  # Profile.ties() where the schema provides it
    if not callable(ties) or all(t.metrics.clip_ci is None for t in profile.tiers):
        return ""
    pairs = ties()
    if not pairs:
        return "Every pair of tiers differs significantly in quality: their order is measured."
    joined = ", ".join(f"{a} ~ {b}" for a, b in pairs)
    return f"Quality not ranked (no significant paired difference): {joined}."


def unmeasured_trials(profile: Profile) -> list[list[str]]:
    """``[number, state, plan, reason]`` for every failed, pruned or running trial."""
    return [
        [
            str(t.number),
            t.state,
            "-" if t.plan is None else t.plan.describe(),
            t.reason or "-",
        ]
        for t in profile.trials
        if t.state != "complete"
    ]


def _fewer_tiers(profile: Profile) -> str:
    note = getattr(profile, "fewer_tiers", None)  # where the schema provides it
    return f"{note[0].upper()}{note[1:]}." if note else ""


def _left_out(study: StudyInfo) -> str:
    if not study.left_out:
        return ""
    return (
        f" <strong>The time budget ({_e(study.timeout_s)} s) left out: "
        f"{_e('; '.join(study.left_out))}</strong>; a rerun of the tune finishes it."
    )


def conditions_text(profile: Profile) -> str:
    """How busy the machine was during the tune, in one sentence."""
    c = profile.conditions
    if c is None:
        return "not recorded"
    load = "-" if c.load_avg_1m is None else f"{c.load_avg_1m:.2f}"
    verdict = "busy: latencies may be distorted" if c.busy else "not busy"
    text = (
        f"{c.torch_threads} torch threads on {c.cpu_count} CPUs, "
        f"mean 1-minute load {load} ({verdict})"
    )
    if c.latency_drift is not None:
        low, high = c.latency_drift
        text += (
            f"; tiers and reference timed side by side after racing: {low:.2f}-{high:.2f}x "
            "their earlier timings"
        )
    return text


def write_report(profile: Profile, profile_path: str | Path, out: str | Path | None = None) -> Path:
    """Write the HTML report of ``profile`` (default: ``<profile>.html`` beside it).

    Args:
        profile: The loaded profile.
        profile_path: Its JSON file; sample image paths are relative to its folder.
        out: Target HTML file; missing folders are created.

    Returns:
        The path written.

    Raises:
        ConfigError: The report cannot be written there (named, with the reason).
    """
    profile_path = Path(profile_path)
    target = Path(out) if out is not None else profile_path.with_suffix(".html")
    base = profile_path.parent
    columns = [profile.reference, *profile.tiers]
    rows = []
    for i, prompt in enumerate(profile.prompts):
        cells = "".join(
            _img(base, t.samples[i]) if i < len(t.samples) else "<td>-</td>" for t in columns
        )
        rows.append(f"<tr><th>{_e(prompt)}</th>{cells}</tr>")
    header = "".join(f"<th>{_e(t.name)}</th>" for t in columns)
    constraints = profile.constraints.model_dump(exclude_none=True) or "none"
    size = (
        f"{profile.width}x{profile.height}"
        if profile.height is not None and profile.width is not None
        else "the pipeline's default size"
    )
    study = profile.study
    failures = unmeasured_trials(profile)
    failed_html = (
        _table(["trial", "state", "plan", "reason"], failures)
        if failures
        else "<p>None: every trial was measured.</p>"
    )
    summaries = [t.summary() for t in columns]
    details = [tier_details(t) for t in columns]
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>autoq profile: {_e(profile.model.source)}</title>
<meta http-equiv="Content-Security-Policy" content="{_CSP}">
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ddd;padding:4px 8px;font-size:13px;vertical-align:middle}}
img{{image-rendering:pixelated}}</style></head><body>
<h1>autoq profile: {_e(profile.model.source)}</h1>
<p>Device <code>{_e(profile.fingerprint.fingerprint_id)}</code>, model hash
<code>{_e(profile.model.content_hash)}</code> ({_e(profile.model.pipeline_class)}),
measured at {_e(size)}, guidance {_e(profile.guidance_scale)},
study <code>{_e(study.study_name)}</code>
({_e(study.sampler)}, {_e(study.trials_completed)} completed,
{_e(study.trials_failed)} failed, {_e(study.trials_pruned)} pruned).
Constraints: {_e(constraints)}.
Machine during the tune: {_e(conditions_text(profile))}.{_left_out(study)}</p>
<h2>Pareto front</h2>
<p>Blue: feasible trials; grey: infeasible; red rings: the profile's tiers. Latencies as
the search timed each trial; the tables' tier latencies were timed side by side after
racing.</p>
{_scatter(profile, "peak_memory_bytes", "peak memory (MiB)", 2**20)}
{_scatter(profile, "latency_s", "latency (s)", 1.0)}
<h2>Same prompts, same seeds, every tier</h2>
<table><tr><th>prompt</th>{header}</tr>{"".join(rows)}</table>
<h2>Metrics</h2>
{_table(summaries[0], [s.values() for s in summaries])}
<h2>Tier details: steps curve and what the metrics table leaves out</h2>
{_table(details[0], [d.values() for d in details])}
<p>{_e(ties_text(profile))} {_e(_fewer_tiers(profile))}</p>
<h2>Trials not measured</h2>
{failed_html}
</body></html>
"""
    try:
        return atomic_write_text(target, page)
    except OSError as exc:
        raise ConfigError(
            f"Cannot write the report to {target}: {exc.strerror or exc}; "
            "pass --out with a writable file path."
        ) from None
