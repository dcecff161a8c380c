"""Each diffusers family end to end on this CPU: screen, dtype discipline, tune, runtime."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from autoq.pipeline import PROTECT_GROUPS, load_pipeline, module_components, screen
from tests.families.builders import FAMILIES, FAMILY_PROMPTS

T5_ENCODERS = {"sd3": "text_encoder_3", "flux": "text_encoder_2", "pixart_sigma": "text_encoder"}
FOUR_BIT = ("gguf_q4_0", "bnb_nf4", "bnb_fp4")


def _images(pipe: object, steps: int = 2) -> np.ndarray:
    with torch.no_grad():
        image = pipe(  # type: ignore[operator]
            FAMILY_PROMPTS[0],
            num_inference_steps=steps,
            guidance_scale=5.0,
            generator=torch.Generator().manual_seed(0),
            output_type="np",
        ).images
    return np.asarray(image, dtype=np.float32)


def test_half_precision_components_hand_on_fp32(family: str, family_folder: Path) -> None:
    """Every component in bf16 and fp16, with and without protect, runs on the inputs the
    pipeline really gives it, hands on fp32 and stays within the cast's bound; a pipeline
    with every component cast generates finite images close to fp32."""
    from autoq.backends import PROTECT_PRESETS, apply_precision

    pipe = load_pipeline(family_folder)
    pipe.set_progress_bar_config(disable=True)
    components = list(module_components(pipe))
    result = screen(
        pipe,
        dict.fromkeys(components, ("bf16", "fp16")),
        [(), PROTECT_GROUPS],
        prompt=FAMILY_PROMPTS[0],
        guidance_scale=5.0,
    )
    assert result.dropped == []
    assert result.kept == dict.fromkeys(components, ("bf16", "fp16"))
    assert len(result.rel_errors) == 4 * len(components)
    for (component, dtype, _), error in result.rel_errors.items():
        assert error < (0.05 if dtype == "bf16" else 0.01), (component, dtype)

    reference = _images(pipe)
    skip = [p for group in PROTECT_GROUPS for p in PROTECT_PRESETS[group]]
    for component in components:
        # bf16 with fp32 islands (norms, io, embeddings): the combination that used to fail.
        apply_precision(getattr(pipe, component), "bf16", skip=skip)
        assert getattr(pipe, component).dtype == torch.float32  # what the pipeline reads
    images = _images(pipe)
    assert np.isfinite(images).all()
    assert np.abs(images - reference).mean() < 0.02
    assert np.abs(images - reference).max() < 0.25


@pytest.mark.parametrize("family", list(T5_ENCODERS), indirect=True)
def test_four_bit_t5_keeps_wo_in_fp32(family: str, family_folder: Path) -> None:
    """GGUF and bitsandbytes 4-bit on a T5 encoder keep `wo` unquantized, as transformers
    does (`_keep_in_fp32_modules`): T5 casts `wo`'s input to `wo.weight.dtype`, which is
    uint8 for both (a crash for GGUF, relative error ~1.1 for bitsandbytes)."""
    from autoq.backends import apply_precision, get_precision

    pipe = load_pipeline(family_folder)
    pipe.set_progress_bar_config(disable=True)
    encoder = T5_ENCODERS[family]
    result = screen(
        pipe, {encoder: FOUR_BIT}, [(), PROTECT_GROUPS], prompt=FAMILY_PROMPTS[0],
        guidance_scale=5.0,
    )  # fmt: skip
    assert result.dropped == []
    assert result.kept[encoder] == FOUR_BIT
    for (_, precision, _), error in result.rel_errors.items():  # without the keep: 1.36-1.53
        assert error < get_precision(precision).max_rel_error, precision

    quantized = apply_precision(getattr(pipe, encoder), "bnb_nf4")
    wo = [m for n, m in quantized.named_modules() if n.endswith(".wo")]
    assert wo and all(type(m) is torch.nn.Linear for m in wo)
    assert all(m.weight.dtype == torch.float32 for m in wo)


def test_screen_catches_t5_quantized_wo(
    family_builder: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the fp32 keep, a quantized T5 `wo` crashes (GGUF) or silently corrupts
    (bitsandbytes 4-bit, relative error ~1.4); the screen leaves both out, with why."""
    import autoq.backends._targets as targets

    monkeypatch.setattr(targets, "keep_in_fp32", lambda module, precision: [])
    pipe = load_pipeline(family_builder("sd3"))
    pipe.set_progress_bar_config(disable=True)
    result = screen(
        pipe,
        {"text_encoder_3": ("fp32", "gguf_q8_0", "bnb_nf4")},
        prompt=FAMILY_PROMPTS[0],
        guidance_scale=5.0,
    )
    assert result.kept == {"text_encoder_3": ("fp32",)}
    reasons = {out.precision: out.reason for out in result.dropped}
    assert "unsigned char" in reasons["gguf_q8_0"]  # T5 cast its activations to uint8
    assert "exceeds its bound 0.35" in reasons["bnb_nf4"]


def test_screen_leaves_out_what_fails_with_the_reason(
    family_builder: Callable[[str], Path],
) -> None:
    """A precision whose module breaks the pipeline's contract is left out, with why."""
    from autoq.backends import apply_precision

    pipe = load_pipeline(family_builder("flux"))
    pipe.set_progress_bar_config(disable=True)

    def broken(component: str, precision: str, protect: tuple[str, ...]) -> torch.nn.Module:
        module = apply_precision(
            __import__("copy").deepcopy(getattr(pipe, component)), precision, check=False
        )
        if precision == "fp16":  # a stand-in for a backend that corrupts silently
            with torch.no_grad():
                for p in module.parameters():
                    p.mul_(3)
        return module

    result = screen(
        pipe,
        {"text_encoder_2": ("fp32", "bf16", "fp16"), "vae": ("bf16",)},
        [()],
        prompt=FAMILY_PROMPTS[0],
        guidance_scale=5.0,
        build=broken,
    )
    assert result.kept == {"text_encoder_2": ("fp32", "bf16"), "vae": ("bf16",)}
    (out,) = result.dropped
    assert (out.component, out.precision) == ("text_encoder_2", "fp16")
    assert "exceeds its bound 0.01" in out.reason
    assert out.rel_error is not None and out.rel_error > 0.01


@pytest.mark.slow
def test_short_tune_has_no_failed_trial_and_every_tier_generates(
    family: str, family_folder: Path, scorer_folder: Path, tmp_path: Path
) -> None:
    from autoq.runtime import AdaptivePipeline
    from autoq.tune import TuneConfig, tune

    config = TuneConfig.create(
        model=str(family_folder),
        scorer=str(scorer_folder),
        trials=4,
        steps=(1, 2),
        # The pairings this family test is about; the screen tests cover the rest.
        precisions=("fp32", "bf16", "fp16", "gguf_q4_0", "bnb_nf4", "quanto_int8"),
        executions=("eager",),  # storage per family; tests/execution covers executors
        prompts=FAMILY_PROMPTS[:2],
        n_prompts=2,
        eval_images=2,  # racing re-measures on this many; the tune tests cover racing
        profiles_dir=tmp_path / "profiles",
        device="cpu",
        seed=0,
        max_batch=2,  # every family's pipeline takes a batch of prompts, seeds apart
    )
    result = tune(config)
    states = [t.state for t in result.profile.trials]
    assert "failed" not in states, [t.reason for t in result.profile.trials if t.reason]
    assert result.profile.study.trials_failed == 0
    assert states.count("complete") >= 2, states  # something was measured, not all pruned
    assert result.profile.tiers
    assert all([p.batch_size for p in t.batch_curve] == [1, 2] for t in result.profile.tiers)
    runtime = AdaptivePipeline.from_profile(result.path, allow_mismatch=False)
    for tier in result.profile.tiers:
        output = runtime(FAMILY_PROMPTS[0], tier=tier.name, output_type="np")
        assert np.isfinite(np.asarray(output.images)).all(), tier.name
    # The same runtime behind the HTTP service: a request is served on a profiled tier.
    from fastapi.testclient import TestClient

    from autoq.serve import create_app

    with TestClient(create_app(runtime)) as client:
        response = client.post("/generate", json={"prompt": FAMILY_PROMPTS[0], "seed": 1})
    assert response.status_code == 200, response.text
    assert response.json()["tier"] in {t.name for t in result.profile.tiers}


def test_family_names_are_stable() -> None:
    assert FAMILIES == ("sdxl", "sd3", "flux", "pixart_sigma", "sana")


@pytest.mark.slow
@pytest.mark.parametrize("family", ["sdxl"], indirect=True)
def test_ddim_stands_for_euler_only_where_it_draws_the_same_images(
    family: str, family_folder: Path, tmp_path: Path
) -> None:
    """This family's Euler config leaves ``clip_sample`` unset: DDIM built from it clips
    its x0 estimate to [-1, 1] (its default) and, on random weights, draws other images
    (17-20 dB apart), so the two stay apart. With clipping off, DDIM is Euler's method on
    the same timesteps (132 dB apart): one plan."""
    import optuna

    from autoq.pipeline import ComponentCache, PipelinePlan
    from autoq.tune._evaluate import Evaluator
    from autoq.tune._measure import EvalSet

    def aliases(pipe: object, folder: Path) -> dict[int, dict[str, str]]:
        evaluator = Evaluator(
            ComponentCache(pipe, 2**30),  # type: ignore[arg-type]
            EvalSet(tuple(FAMILY_PROMPTS[:2]), (0,), 1),
            scorer=None,  # type: ignore[arg-type]
            device=torch.device("cpu"),
            guidance_scale=5.0,
            workdir=folder,
            reference_plan=PipelinePlan(
                precisions=dict.fromkeys(module_components(pipe), "fp32"),
                steps=4,  # type: ignore[arg-type]
            ),
        )
        return evaluator.scheduler_aliases(optuna.create_study(), [2, 4], ["default", "ddim"])

    pipe = load_pipeline(family_folder)
    pipe.set_progress_bar_config(disable=True)
    assert aliases(pipe, tmp_path / "a") == {
        n: {"default": "default", "ddim": "ddim"} for n in (2, 4)
    }
    pipe.scheduler.register_to_config(clip_sample=False)  # what DDIM is built from
    assert aliases(pipe, tmp_path / "b") == {
        n: {"default": "default", "ddim": "default"} for n in (2, 4)
    }
