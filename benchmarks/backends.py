"""Every usable precision on the real Stable Diffusion 1.5 UNet architecture.

Builds the UNet from its published config (about 860M parameters, random weights: the
architecture decides bytes and speed, not the values), applies each precision usable on
this device, and records: total weight bytes, the share of parameters the precision
quantized, bytes per quantized parameter against the theoretical bits + scales, latency of
one UNet forward at 32x32 latents, and relative output error against fp32.

    python benchmarks/backends.py                  # SD1.5 UNet, results to benchmarks/results/
    python benchmarks/backends.py --config small   # a few seconds, for a smoke run

Results are appended per precision to a JSON file, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autoq.backends import (
    apply_precision,
    get_precision,
    list_precisions,
    probe_all,
    targets_for,
    weight_bytes,
)
from autoq.device import fingerprint
from benchmarks.models import SD15_UNET  # the published config, shared with execution.py

SMALL_UNET = {
    **SD15_UNET,
    "block_out_channels": [64, 128, 128, 128],
    "cross_attention_dim": 64,
    "layers_per_block": 1,
}


def build_unet(config: dict) -> torch.nn.Module:
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel.from_config(config).eval()


def unet_inputs(config: dict) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {
        "sample": torch.randn(1, 4, 32, 32, generator=gen),
        "timestep": torch.tensor([500]),
        "encoder_hidden_states": torch.randn(1, 77, config["cross_attention_dim"], generator=gen),
    }


def timed_forward(unet: torch.nn.Module, inputs: dict, repeats: int) -> tuple[torch.Tensor, float]:
    with torch.no_grad():
        out = unet(**inputs).sample  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            out = unet(**inputs).sample
            times.append(time.perf_counter() - start)
    return out.float(), statistics.median(times)


def measure(name: str, reference: torch.nn.Module, ref_out, inputs, repeats: int) -> dict:
    spec = get_precision(name)
    targets = targets_for(reference, spec)
    weights = [
        layer.weight
        for _, layer in targets
        if isinstance(getattr(layer, "weight", None), torch.Tensor)
    ]
    if spec.is_float_cast:
        weights = [p for p in reference.parameters() if p.is_floating_point()]
    quantized_params = sum(w.numel() for w in weights)
    total_params = sum(p.numel() for p in reference.parameters())
    theoretical = sum(spec.theoretical_bytes(tuple(w.shape)) for w in weights)
    before = weight_bytes(reference)

    start = time.perf_counter()
    model = apply_precision(copy.deepcopy(reference), name)
    apply_s = time.perf_counter() - start
    after = weight_bytes(model)
    out, latency = timed_forward(model, inputs, repeats)
    # Bytes now held by what the precision touched = total - untouched fp32 bytes.
    touched_bytes = after - (before - quantized_params * 4)
    row = {
        "precision": name,
        "backend": spec.backend,
        "weight_bits": spec.weight_bits,
        "total_bytes": after,
        "quantized_share": quantized_params / total_params,
        "bytes_per_quantized_param": touched_bytes / quantized_params,
        "theoretical_bytes_per_param": theoretical / quantized_params,
        "vs_theoretical": touched_bytes / theoretical,
        "latency_s": latency,
        "apply_s": apply_s,
        "rel_error": float((out - ref_out).norm() / ref_out.norm()),
    }
    del model
    gc.collect()
    return row


def markdown(rows: list[dict], header: str) -> str:
    lines = [
        header,
        "",
        "| precision | weight MB | quantized share | B/quantized param | theoretical | ratio "
        "| UNet forward (s) | rel. error |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['precision']} | {r['total_bytes'] / 1e6:,.0f} | {r['quantized_share']:.1%} "
            f"| {r['bytes_per_quantized_param']:.3f} | {r['theoretical_bytes_per_param']:.3f} "
            f"| {r['vs_theoretical']:.2f}x | {r['latency_s']:.2f} | {r['rel_error']:.4f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", choices=["sd15", "small"], default="sd15")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--precisions", nargs="*", help="default: every usable precision")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    config = SD15_UNET if args.config == "sd15" else SMALL_UNET
    usable = [r.precision for r in probe_all() if r.usable]
    unusable = {r.precision: r.reason for r in probe_all() if not r.usable}
    names = args.precisions or [p.name for p in list_precisions() if p.name in usable]
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"backends-{args.config}.json"
    done = json.loads(path.read_text())["rows"] if path.exists() else []
    finished = {r["precision"] for r in done}

    reference = build_unet(config)
    inputs = unet_inputs(config)
    ref_out, _ = timed_forward(reference, inputs, 1)
    params = sum(p.numel() for p in reference.parameters())
    print(
        f"UNet ({args.config}): {params / 1e6:.1f}M parameters, threads={torch.get_num_threads()}"
    )
    for name in names:
        if name in finished:
            continue
        row = measure(name, reference, ref_out, inputs, args.repeats)
        print(json.dumps(row))
        done.append(row)
        body = {
            "config": args.config,
            "parameters": params,
            "threads": torch.get_num_threads(),
            "fingerprint_id": fingerprint(bench=False).fingerprint_id,
            "unusable": unusable,
            "rows": done,
        }
        path.write_text(json.dumps(body, indent=1))
    header = (
        f"UNet `{args.config}` ({params / 1e6:.0f}M parameters), 32x32 latents, batch 1, "
        f"{torch.get_num_threads()} thread(s); "
        f"`python benchmarks/backends.py --config {args.config}`"
    )
    (args.out / f"backends-{args.config}.md").write_text(markdown(done, header))
    print(markdown(done, header))


if __name__ == "__main__":
    main()
