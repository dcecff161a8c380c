"""Generation in a worker process: the same images as in-process, the service in front of
it, start-up errors raised where the caller is, and a worker that dies fails its calls."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from autoq.errors import ModelMismatchError
from autoq.runtime import AdaptivePipeline, DefaultPolicy, ProcessPipeline, WorkerError
from tests.runtime.conftest import make_profile


@pytest.fixture(scope="module")
def worker():
    pipe = ProcessPipeline.from_profile(
        make_profile(), device="cpu", policy=DefaultPolicy(dwell_s=3600)
    )
    yield pipe
    pipe.close()


def test_a_worker_gives_the_image_the_runtime_gives_in_process(worker) -> None:
    request = {"tier": "balanced", "num_inference_steps": 2}
    out = worker("a red circle", generator=torch.Generator().manual_seed(3), **request)
    alone = AdaptivePipeline.from_profile(make_profile(), device="cpu")
    direct = alone("a red circle", generator=torch.Generator().manual_seed(3), **request)
    assert (out.tier, out.steps) == ("balanced", 2)
    assert np.array_equal(np.asarray(out.images[0]), np.asarray(direct.images[0]))
    assert worker.metrics.snapshot()["served"]["balanced"] == {2: 1}
    # Admission is answered here, from the profile: minimal at 2 steps, 0.05 s.
    assert worker.predict(tier="minimal", steps=2, ahead=0) == pytest.approx(0.05, rel=0.5)


def test_the_service_runs_in_front_of_a_worker(worker) -> None:
    from autoq.serve import create_app

    with TestClient(create_app(worker)) as client:
        response = client.post("/generate", json={"prompt": "a red circle", "seed": 1})
        assert response.status_code == 200, response.text
        assert client.get("/readyz").status_code == 200  # the warm-up ran in the worker
        assert client.get("/tiers").json()["current"] == worker.tier.name
        assert 'autoq_generations_total{steps="2",tier=' in client.get("/metrics").text
        two = client.post("/generate", json={"prompt": "x", "seed": 2, "num_images": 2})
        assert two.status_code == 200 and len(two.json()["images"]) == 2  # two generators
        bad = client.post("/generate", json={"prompt": "x", "tier": "turbo"})
        assert bad.status_code == 422 and "Unknown tier 'turbo'" in bad.text


def test_a_worker_that_cannot_start_raises_here() -> None:
    with pytest.raises(ModelMismatchError):
        ProcessPipeline.from_profile(make_profile(content_hash="0" * 64), device="cpu")


def test_a_worker_that_dies_fails_its_calls_with_a_reason() -> None:
    pipe = ProcessPipeline.from_profile(make_profile(), device="cpu")
    pipe._process.kill()
    pipe._process.join(10)
    with pytest.raises(WorkerError, match=r"exited|gone"):
        pipe("a red circle", num_inference_steps=1)
    pipe.close()
