"""`autoq report`: one self-contained HTML page per profile (inline SVG and PNG)."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from autoq.profile._model import Profile, Tier

__all__ = ["write_report"]

_W, _H, _PAD = 420, 300, 44


def _scatter(profile: Profile, x_of: str, x_label: str, scale: float) -> str:
    """An SVG scatter of CLIP score against ``x_of``; tiers ringed and named."""
    points = [
        (getattr(p, x_of) / scale, p.clip_score, p.feasible)
        for p in profile.trials
        if p.clip_score is not None and getattr(p, x_of) is not None
    ]
    tiers = [
        (getattr(t.metrics, x_of) / scale, t.metrics.clip_score, t.name) for t in profile.tiers
    ]
    xs = [p[0] for p in points] + [t[0] for t in tiers]
    ys = [p[1] for p in points] + [t[1] for t in tiers]
    x0, x1 = min(xs), max(xs) or 1.0
    y0, y1 = min(ys), max(ys) or 1.0
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
        f'<text x="{_W / 2}" y="{_H - 8}" text-anchor="middle" font-size="12">{x_label}</text>',
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
            f'fill="#d83b3b">{html.escape(name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _img(base: Path, relative: str) -> str:
    path = base / relative
    if not path.is_file():
        return "<td>missing</td>"
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<td><img src="data:image/png;base64,{data}" width="128" height="128"></td>'


def _metrics_row(tier: Tier) -> str:
    return "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in tier.summary().values()) + "</tr>"


def write_report(profile: Profile, profile_path: str | Path, out: str | Path | None = None) -> Path:
    """Write the HTML report of ``profile`` (default: ``<profile>.html`` beside it).

    Args:
        profile: The loaded profile.
        profile_path: Its JSON file; sample image paths are relative to its folder.
        out: Target HTML file.

    Returns:
        The path written.
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
        rows.append(f"<tr><th>{html.escape(prompt)}</th>{cells}</tr>")
    header = "".join(f"<th>{html.escape(t.name)}</th>" for t in columns)
    constraints = profile.constraints.model_dump(exclude_none=True) or "none"
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>autoq profile: {html.escape(profile.model.source)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ddd;padding:4px 8px;font-size:13px;vertical-align:middle}}
img{{image-rendering:pixelated}}</style></head><body>
<h1>autoq profile: {html.escape(profile.model.source)}</h1>
<p>Device <code>{profile.fingerprint.fingerprint_id}</code>, model hash
<code>{profile.model.content_hash}</code>,
study <code>{html.escape(profile.study.study_name)}</code>
({profile.study.sampler}, {profile.study.trials_completed} completed,
{profile.study.trials_failed} failed, {profile.study.trials_pruned} pruned).
Constraints: {html.escape(str(constraints))}.</p>
<h2>Pareto front</h2>
<p>Blue: feasible trials; grey: infeasible; red rings: the profile's tiers.</p>
{_scatter(profile, "peak_memory_bytes", "peak memory (MiB)", 2**20)}
{_scatter(profile, "latency_s", "latency (s)", 1.0)}
<h2>Same prompts, same seeds, every tier</h2>
<table><tr><th>prompt</th>{header}</tr>{"".join(rows)}</table>
<h2>Metrics</h2>
<table><tr>{"".join(f"<th>{html.escape(h)}</th>" for h in profile.reference.summary())}</tr>
{"".join(_metrics_row(t) for t in columns)}</table>
</body></html>
"""
    target.write_text(page, encoding="utf-8")
    return target
