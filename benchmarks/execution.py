"""How components execute, at real size: autoq's executors against plain diffusers and
plain OpenVINO, side by side in one process on this CPU.

    OMP_NUM_THREADS=1 python benchmarks/execution.py                 # SD1.5 arch, 256 px
    OMP_NUM_THREADS=1 python benchmarks/execution.py --family sdxl   # SDXL arch
    OMP_NUM_THREADS=1 python benchmarks/execution.py --only unet     # the UNet table only

The pipeline is `benchmarks/models.py`'s (published configs, random weights). Two tables:

- **UNet forward** (classifier-free-guidance batch 2 at the latent size): every execution
  of the UNet autoq offers, plus ``openvino.convert_model`` + ``compile_model`` written
  directly (no autoq) and diffusers' bf16 + ``torch.compile`` recipe; median of
  ``--repeats`` after a warm-up, and the first call's seconds (compiling or converting).
- **Whole generations** (``--steps`` steps, guidance 5): plans assembled by autoq exactly as
  a tier runs, against plain diffusers fp32 and plain diffusers bf16 + compile (the whole
  pipeline cast to bf16, its UNet compiled).

Every figure is also a ratio to fp32 eager measured in the same run. Results are written
per row to ``benchmarks/results/execution-<family>.json``, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from autoq.backends import weight_bytes
from autoq.execution._openvino import openvino_config
from autoq.pipeline import ComponentCache, PipelinePlan, assemble, module_components
from benchmarks.models import build

RESULTS = Path("benchmarks/results")


def _median_after_first(call: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """(first call seconds, median of ``repeats`` later calls)."""
    began = time.perf_counter()
    call()
    first = time.perf_counter() - began
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        call()
        times.append(time.perf_counter() - began)
    return first, statistics.median(times)


def _unet_inputs(pipe: Any, size: int) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(0)
    latent = size // 8
    dim = pipe.unet.config.cross_attention_dim
    inputs: dict[str, Any] = {
        "sample": torch.randn(2, 4, latent, latent, generator=gen),
        "timestep": torch.tensor(500),
        "encoder_hidden_states": torch.randn(2, 77, dim, generator=gen),
    }
    if pipe.unet.config.addition_embed_type == "text_time":  # SDXL's extra conditioning
        inputs["added_cond_kwargs"] = {
            "text_embeds": torch.randn(2, 1280, generator=gen),
            "time_ids": torch.tensor([[size, size, 0, 0, size, size]] * 2, dtype=torch.float32),
        }
    return inputs


def _plain_openvino(unet: Any, inputs: dict[str, Any]) -> Callable[[], Any]:
    """The UNet converted and compiled with OpenVINO's own API, nothing of autoq."""
    import openvino as ov

    class Forward(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.unet = unet

        def forward(self, sample, timestep, encoder_hidden_states):  # type: ignore[no-untyped-def]
            return self.unet(sample, timestep, encoder_hidden_states, return_dict=False)[0]

    args = (inputs["sample"], inputs["timestep"], inputs["encoder_hidden_states"])
    with torch.no_grad():
        model = ov.convert_model(Forward(), example_input=args)
    compiled = ov.Core().compile_model(model, "CPU", openvino_config())
    return lambda: compiled([a.numpy() for a in args])


def unet_rows(pipe: Any, size: int, repeats: int, done: dict[str, dict], path: Path) -> None:
    """The UNet forward table, into ``done`` (by row name)."""
    inputs = _unet_inputs(pipe, size)
    cache = ComponentCache(pipe, max_bytes=2**40)

    def autoq(precision: str, executor: str) -> tuple[Callable[[], Any], Any]:
        module = cache.get("unet", precision, (), executor)
        return (lambda: module(**inputs)), module

    def plain_bf16_compile() -> tuple[Callable[[], Any], Any]:
        module = torch.compile(copy.deepcopy(pipe.unet).to(torch.bfloat16))
        cast = {k: v.to(torch.bfloat16) if k != "timestep" and torch.is_tensor(v) else v
                for k, v in inputs.items()}  # fmt: skip
        return (lambda: module(**cast)), module

    rows: dict[str, Callable[[], tuple[Callable[[], Any], Any]]] = {
        "autoq fp32 eager": lambda: autoq("fp32", "eager"),
        "autoq fp32 channels_last": lambda: autoq("fp32", "channels_last"),
        "autoq bf16 eager": lambda: autoq("bf16", "eager"),
        "autoq fp32 compile": lambda: autoq("fp32", "compile"),
        "autoq bf16 compile": lambda: autoq("bf16", "compile"),
        "autoq ao_int8dq compile": lambda: autoq("ao_int8dq", "compile"),
        "autoq fp32 openvino": lambda: autoq("fp32", "openvino"),
        "autoq fp32 openvino_int8": lambda: autoq("fp32", "openvino_int8"),
        "plain OpenVINO (convert_model + compile_model)": lambda: (
            _plain_openvino(pipe.unet, inputs),
            None,
        ),
        "plain diffusers bf16 + torch.compile": plain_bf16_compile,
    }
    for name, make in rows.items():
        key = f"unet: {name}"
        if key in done:
            continue
        with torch.no_grad():
            began = time.perf_counter()
            call, module = make()
            made_s = time.perf_counter() - began  # converting, casting, wrapping
            first, median = _median_after_first(call, repeats)
        done[key] = {
            "table": "unet",
            "name": name,
            "seconds": median,
            "first_call_s": round(made_s + first, 2),
            "weight_bytes": weight_bytes(module) if module is not None else None,
        }
        print(json.dumps(done[key]), flush=True)
        del call, module
        cache.retain(set())
        gc.collect()
        _save(done, path)


def generation_rows(
    pipe: Any, size: int, steps: int, repeats: int, done: dict[str, dict], path: Path
) -> None:
    """The whole-generation table, into ``done``."""
    cache = ComponentCache(pipe, max_bytes=2**40)
    components = list(module_components(pipe))  # the UNet, the VAE, every text encoder
    fp32 = dict.fromkeys(components, "fp32")

    def plan(**update: Any) -> PipelinePlan:
        return PipelinePlan(precisions=fp32, steps=steps).model_copy(update=update)

    everywhere = {c: "openvino" for c in components}
    plans = {
        "autoq fp32 eager (the reference)": plan(),
        "autoq bf16 everywhere": plan(precisions=dict.fromkeys(components, "bf16")),
        "autoq bf16, UNet compiled": plan(
            precisions=dict.fromkeys(components, "bf16"), execution={"unet": "compile"}
        ),
        "autoq OpenVINO everywhere": plan(execution=everywhere),
        "autoq OpenVINO int8 weights everywhere": plan(
            execution={c: "openvino_int8" for c in components}
        ),
        "autoq OpenVINO UNet + VAE, torch text encoder": plan(
            execution={"unet": "openvino", "vae": "openvino"}
        ),
    }

    def run(target: Any) -> Callable[[], Any]:
        target.set_progress_bar_config(disable=True)
        return lambda: target(
            "a red circle above a blue square",
            num_inference_steps=steps,
            guidance_scale=5.0,
            height=size,
            width=size,
            generator=torch.Generator().manual_seed(0),
            output_type="np",
        )

    def plain_bf16_compile() -> Any:
        plain = copy.deepcopy(pipe).to(torch.bfloat16)
        plain.unet = torch.compile(plain.unet)
        return plain

    makers: dict[str, Callable[[], Any]] = {
        name: (lambda p=p: assemble(cache, p)) for name, p in plans.items()
    }
    makers["plain diffusers bf16 + torch.compile (UNet)"] = plain_bf16_compile
    for name, make in makers.items():
        key = f"generation: {name}"
        if key in done:
            continue
        with torch.no_grad():
            target = make()
            first, median = _median_after_first(run(target), repeats)
        done[key] = {
            "table": "generation",
            "name": name,
            "seconds": median,
            "first_call_s": round(first, 2),
            "weight_bytes": sum(weight_bytes(m) for m in module_components(target).values()),
        }
        print(json.dumps(done[key]), flush=True)
        del target
        cache.retain(set())
        gc.collect()
        _save(done, path)


def _save(done: dict[str, dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(done, indent=1))


def markdown(done: dict[str, dict], meta: dict[str, Any]) -> str:
    out = []
    for table, title in (("unet", "UNet forward, CFG batch 2"), ("generation", "Whole generation")):
        rows = [r for r in done.values() if r.get("table") == table]
        if not rows:
            continue
        base = rows[0]["seconds"]
        out += [
            f"{title} ({meta['family']}, {meta['size']} px, {meta['threads']} thread(s))",
            "",
            "| execution | seconds | vs fp32 eager | first call s | weights GB |",
            "|---|---:|---:|---:|---:|",
        ]
        for r in rows:
            gb = "-" if r["weight_bytes"] is None else f"{r['weight_bytes'] / 1e9:.2f}"
            out.append(
                f"| {r['name']} | {r['seconds']:.2f} | {base / r['seconds']:.2f}x "
                f"| {r['first_call_s']:.1f} | {gb} |"
            )
        out.append("")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--family", choices=["sd15", "sdxl"], default="sd15")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=["unet", "generation"])
    args = parser.parse_args()
    path = RESULTS / f"execution-{args.family}.json"
    done: dict[str, dict] = json.loads(path.read_text()) if path.exists() else {}
    meta = {
        "family": args.family,
        "size": args.size,
        "steps": args.steps,
        "threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "torch": torch.__version__,
    }
    done["_meta"] = meta
    pipe = build(args.family)
    if args.only in (None, "unet"):
        unet_rows(pipe, args.size, args.repeats, done, path)
    if args.only in (None, "generation"):
        generation_rows(pipe, args.size, args.steps, args.repeats, done, path)
    _save(done, path)
    text = markdown(done, meta)
    (RESULTS / f"execution-{args.family}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
