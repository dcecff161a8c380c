"""`autoq export`: a tier as a folder plain diffusers loads and generates the same images
with, or a one-line refusal saying why plain diffusers cannot represent it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from autoq.backends import targets_for
from autoq.errors import ModelMismatchError
from autoq.pipeline import PipelinePlan, load_pipeline, pipeline_folder
from autoq.profile import TIER_FILE, NotExportableError, export_tier, write_profile
from tests.export.conftest import (
    MAX_PIXEL_DIFF,
    autoq_images,
    load_exported,
    one_tier_profile,
    plain_images,
    quantized_layers,
)

PROMPT = "a red circle"
ZOO = "zoo:shapes"
SMALL = {"height": 32, "width": 32}

MIXED = PipelinePlan(
    precisions={"unet": "ao_intx4", "text_encoder": "quanto_int4", "vae": "ao_int8wo"},
    protect={"unet": ("attention",)},
    steps=3,
    scheduler="euler",
)
"""diffusers torchao with modules_to_not_convert (protect and the 32-multiple shape rule),
transformers quanto, a scheduler other than the model's own, and a step count."""


@pytest.mark.slow
def test_quantized_tier_round_trips_through_plain_diffusers(tmp_path: Path) -> None:
    result = export_tier(one_tier_profile(ZOO, MIXED), "tier", tmp_path / "out", device="cpu")

    plain = load_exported(result)
    base = load_pipeline(pipeline_folder(ZOO))
    assert type(plain.scheduler).__name__ == "EulerDiscreteScheduler"
    for component in ("unet", "text_encoder", "vae"):
        full = getattr(base, component)
        wanted = targets_for(full, MIXED.precisions[component], MIXED.skip_patterns(component))
        assert quantized_layers(getattr(plain, component)) == {n for n, _ in wanted}, component

    ours = autoq_images(pipeline_folder(ZOO), MIXED, PROMPT, **SMALL)
    theirs = plain_images(result, PROMPT, **SMALL)
    assert np.abs(ours - theirs).max() <= MAX_PIXEL_DIFF

    record = json.loads((result.folder / TIER_FILE).read_text())
    assert record["num_inference_steps"] == 3
    assert record["scheduler"] == "EulerDiscreteScheduler"
    assert record["torch_dtype"] == "float32"
    assert "torch_dtype=torch.float32" in result.code
    assert "modules_to_not_convert=['down_blocks.0.attentions'" in result.code
    written = {p.suffix for p in result.folder.rglob("*") if p.is_file()}
    assert ".safetensors" in written and not written & {".bin", ".pt", ".pth", ".pkl", ".ckpt"}


@pytest.mark.parametrize(
    ("precisions", "protect", "reason"),
    [
        (
            {"vae": "quanto_int8"},
            {},
            "quanto_int8 on Conv2d: autoq quantizes 46 Conv2d layer(s) of vae (e.g. "
            "encoder.conv_in), but diffusers QuantoConfig converts nn.Linear only",
        ),
        ({"unet": "gguf_q4_0"}, {}, "GGUF per component: diffusers loads GGUF only as one"),
        ({"unet": "bnb_nf4"}, {}, "bitsandbytes on cpu: diffusers' and transformers'"),
        (
            {"unet": "bf16", "text_encoder": "bf16", "vae": "bf16"},
            {},
            "bf16 on unet: autoq computes the component in bfloat16 but keeps latents, the "
            "scheduler and what components pass each other in float32; diffusers' "
            "torch_dtype=bfloat16 runs all of it in bfloat16, which changes the images",
        ),
        (
            {"unet": "bf16"},
            {"unet": ("norms",)},
            "in bfloat16 (and protected sub-modules stay float32)",
        ),
        ({"unet": "ao_int8wo", "vae": "fp16"}, {}, "fp16 on vae: autoq computes"),
    ],
)
def test_what_plain_diffusers_cannot_represent_is_refused(
    precisions: dict[str, str],
    protect: dict[str, tuple[str, ...]],
    reason: str,
    tmp_path: Path,
) -> None:
    plan = PipelinePlan(precisions=precisions, protect=protect, steps=2)
    with pytest.raises(NotExportableError) as info:
        export_tier(one_tier_profile(ZOO, plan), "tier", tmp_path / "out", device="cpu")
    assert reason in str(info.value)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()


def test_gguf_refusal_does_not_send_users_to_from_single_file(tmp_path: Path) -> None:
    plan = PipelinePlan(precisions={"unet": "gguf_q8_0"}, steps=2)
    with pytest.raises(NotExportableError, match="do not load there") as info:
        export_tier(one_tier_profile(ZOO, plan), "tier", tmp_path / "out", device="cpu")
    assert "AdaptivePipeline" in str(info.value)


def test_export_refuses_changed_weights(tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(pipeline_folder(ZOO), copy)
    profile = one_tier_profile(str(copy), PipelinePlan(precisions={"unet": "fp32"}, steps=2))
    weights = next((copy / "vae").glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelMismatchError, match="weights changed"):
        export_tier(profile, "tier", tmp_path / "out", device="cpu")


def test_cli_exports_and_prints_the_load_call(tmp_path: Path, capsys) -> None:
    from autoq.cli import main

    plan = PipelinePlan(precisions={"unet": "ao_int8dq", "vae": "fp32"}, steps=2)
    path = write_profile(one_tier_profile(ZOO, plan), tmp_path / "p.json")
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as code:
        main_args = ["export", str(path), "--tier", "tier", "--out", str(out), "--device", "cpu"]
        _run(main, main_args)
    assert code.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "DiffusionPipeline.from_pretrained(" in printed
    assert "Int8DynamicActivationInt8WeightConfig()" in printed
    assert (out / "model_index.json").exists() and (out / TIER_FILE).exists()

    refused = PipelinePlan(precisions={"unet": "gguf_q8_0"}, steps=2)
    bad = write_profile(one_tier_profile(ZOO, refused), tmp_path / "bad.json")
    with pytest.raises(SystemExit) as code:
        _run(main, ["export", str(bad), "--tier", "tier", "--out", str(tmp_path / "x")])
    assert code.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "GGUF per component" in err and "\n" not in err


def _run(main, args: list[str]) -> None:
    import sys

    argv = sys.argv
    sys.argv = ["autoq", *args]
    try:
        main()
        raise SystemExit(0)
    finally:
        sys.argv = argv


FAMILY_TEXT_PRECISION = {"CLIPTextModel": "quanto_int8", "CLIPTextModelWithProjection": "ao_int8wo"}
"""Text encoders quantized in the family round-trips; T5 and Gemma stay fp32 because
transformers keeps T5's ``wo`` in fp32 (``_keep_in_fp32_modules``) where autoq quantizes it,
which `plan_load` refuses (checked below)."""


@pytest.mark.slow
def test_each_family_round_trips(family: str, family_folder: Path, tmp_path: Path) -> None:
    from autoq.pipeline import load_pipeline, module_components
    from tests.families.builders import FAMILY_PROMPTS

    pipe = load_pipeline(family_folder)
    precisions = {}
    for name, module in module_components(pipe).items():
        if name in ("unet", "transformer"):
            precisions[name] = "ao_int8wo"
        else:
            precisions[name] = FAMILY_TEXT_PRECISION.get(type(module).__name__, "fp32")
    plan = PipelinePlan(precisions=precisions, steps=2)
    result = export_tier(
        one_tier_profile(str(family_folder), plan), "tier", tmp_path / "out", device="cpu"
    )
    kwargs = {"height": 32, "width": 32} if family != "sdxl" else {}
    ours = autoq_images(family_folder, plan, FAMILY_PROMPTS[0], **kwargs)
    theirs = plain_images(result, FAMILY_PROMPTS[0], **kwargs)
    assert np.isfinite(ours).all()
    assert np.abs(ours - theirs).max() <= MAX_PIXEL_DIFF


@pytest.mark.slow
def test_quantized_t5_is_refused_where_transformers_keeps_wo(
    tmp_path: Path, family_builder
) -> None:
    folder = family_builder("sd3")
    plan = PipelinePlan(precisions={"text_encoder_3": "ao_int8wo"}, steps=2)
    try:
        result = export_tier(
            one_tier_profile(str(folder), plan), "tier", tmp_path / "o", device="cpu"
        )
    except NotExportableError as exc:  # autoq quantizes `wo`, transformers would not
        assert "keeps ['wo'] of T5EncoderModel in float32 (_keep_in_fp32_modules)" in str(exc)
        assert "would keep 2 layer(s) autoq quantizes" in str(exc)
        return
    # autoq keeps `wo` too (it honours _keep_in_fp32_modules): then the export is exact.
    module = load_exported(result).text_encoder_3
    assert not any(name.endswith(".wo") for name in quantized_layers(module))
    assert torch.is_tensor(next(module.parameters()))


def test_execution_and_memory_tools_are_written_into_the_load_code(tmp_path: Path) -> None:
    plan = PipelinePlan(
        precisions={"unet": "fp32", "vae": "fp32"},
        execution={"unet": "compile", "vae": "compile"},
        memory=("vae_tiling",),
        steps=2,
    )
    result = export_tier(one_tier_profile(ZOO, plan), "tier", tmp_path / "out", device="cpu")
    lines = result.code.splitlines()
    assert "pipe.unet.compile_repeated_blocks()" in lines  # diffusers' regional compile
    assert "pipe.vae.decode = torch.compile(pipe.vae.decode)" in lines  # what the pipeline calls
    assert "pipe.vae.enable_tiling()" in lines
    assert lines.index("pipe.vae.enable_tiling()") < next(
        i for i, line in enumerate(lines) if line.startswith("image = pipe(")
    )


def test_an_openvino_tier_is_refused_in_one_line(tmp_path: Path) -> None:
    plan = PipelinePlan(precisions={"unet": "fp32"}, execution={"unet": "openvino_int8"}, steps=2)
    with pytest.raises(NotExportableError, match="openvino_int8 on unet: plain diffusers") as info:
        export_tier(one_tier_profile(ZOO, plan), "tier", tmp_path / "out", device="cpu")
    assert "AdaptivePipeline" in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()
