"""The HTTP API in-process: generation, validation, security, metrics, backpressure."""

from __future__ import annotations

import asyncio
import base64
import io

import httpx
import numpy as np
import pytest
import schemathesis
import torch
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from autoq.errors import ConfigError
from autoq.runtime import AdaptivePipeline, DefaultPolicy, ScriptedMonitor, Signals
from autoq.serve import create_app
from tests.runtime.conftest import MiB, instant_pipeline, make_profile


def runtime(slo_s: float | None = None, workers: int = 1, **options) -> AdaptivePipeline:
    monitor = ScriptedMonitor([Signals(available_memory_bytes=10_000 * MiB)])
    return AdaptivePipeline.from_profile(
        make_profile(), monitor=monitor, policy=DefaultPolicy(slo_s=slo_s, dwell_s=3600),
        device="cpu", max_concurrency=workers, **options,
    )  # fmt: skip


def post_generate_raw(app, receive, length: int) -> tuple[asyncio.Future, list[int]]:
    """POST /generate straight through ASGI with our own ``receive`` (to stall or drop the
    body, which an HTTP client cannot); returns the running call and the statuses sent."""
    statuses: list[int] = []

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
        "method": "POST", "scheme": "http", "path": "/generate", "raw_path": b"/generate",
        "query_string": b"", "root_path": "", "server": ("t", 80), "client": ("c", 1),
        "headers": [(b"content-type", b"application/json"),
                    (b"content-length", str(length).encode())],
    }  # fmt: skip
    return asyncio.ensure_future(app(scope, receive, send)), statuses


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(create_app(runtime()))


def test_generate_returns_a_png_and_the_tier(client: TestClient) -> None:
    response = client.post("/generate", json={"prompt": "a red circle", "seed": 3, "steps": 2})
    assert response.status_code == 200, response.text
    body = response.json()
    image = Image.open(io.BytesIO(base64.b64decode(body["image"])))
    assert image.format == "PNG" and image.size[0] > 0
    assert body["tier"] == "quality" and body["steps"] == 2 and body["latency_ms"] > 0
    again = client.post("/generate", json={"prompt": "a red circle", "seed": 3, "steps": 2})
    assert again.json()["image"] == body["image"]  # same seed, same image


def test_request_may_name_a_tier(client: TestClient) -> None:
    response = client.post("/generate", json={"prompt": "a square", "tier": "minimal", "steps": 1})
    assert response.json()["tier"] == "minimal"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"prompt": ""}, "prompt"),
        ({"prompt": "   "}, "blank"),
        ({"prompt": "x", "width": 65}, "multiple of 8"),
        ({"prompt": "x", "steps": 0}, "steps"),
        ({"prompt": "x", "guidance_scale": 99}, "guidance_scale"),
        ({"prompt": "x", "tier": "turbo"}, "Unknown tier 'turbo'"),
        ({"prompt": 5}, "prompt"),
        ({"prompt": "x", "path": "/etc/passwd"}, "path"),
        ({"prompt": "x", "width": 4096}, "width"),
    ],
)
def test_bad_requests_get_422_with_a_message(client: TestClient, body, fragment) -> None:
    response = client.post("/generate", json=body)
    assert response.status_code == 422
    assert fragment in response.text


def test_malformed_json_and_huge_bodies_are_refused(client: TestClient) -> None:
    bad = client.post(
        "/generate", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert bad.status_code == 422
    huge = client.post(
        "/generate", content=b"x" * 100_000, headers={"content-type": "application/json"}
    )
    assert huge.status_code == 413
    chunked = client.post(
        "/generate",
        content=iter([b'{"prompt": "x"}']),
        headers={"content-type": "application/json"},
    )
    assert chunked.status_code == 411


@pytest.mark.parametrize(
    "raw", [b'{"prompt":"x","guidance_scale":NaN}', b'{"prompt":"x","steps":Infinity}']
)
def test_non_finite_numbers_are_rejected(client: TestClient, raw: bytes) -> None:
    response = client.post("/generate", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422


def test_tiers_health_ready_metrics_and_openapi(client: TestClient) -> None:
    client.post("/generate", json={"prompt": "a red circle", "steps": 1})
    tiers = client.get("/tiers").json()
    assert [t["name"] for t in tiers["tiers"]] == ["quality", "balanced", "minimal"]
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json()["ready"] is True
    text = client.get("/metrics").text
    assert 'autoq_generations_total{steps="1",tier="quality"}' in text
    for name in ("autoq_requests_total", "autoq_request_latency_seconds_bucket",
                 "autoq_current_tier", "autoq_tier_switches", "autoq_oom_retries",
                 "autoq_queue_depth", "autoq_rejections"):  # fmt: skip
        assert name in text
    assert "/generate" in client.get("/openapi.json").json()["paths"]


def test_api_key_is_required_when_set() -> None:
    client = TestClient(create_app(instant_pipeline(), api_key="s3cret-key"))
    assert client.get("/tiers").status_code == 401
    assert client.get("/tiers", headers={"x-api-key": "wrong"}).status_code == 401
    assert client.get("/tiers", headers={"x-api-key": "s3cret-key"}).status_code == 200
    for scheme in ("Bearer", "bearer", "BEARER"):
        headers = {"Authorization": f"{scheme} s3cret-key"}
        assert client.get("/tiers", headers=headers).status_code == 200
    # A bare key in Authorization is no credential, on every path.
    for path in ("/tiers", "/metrics"):
        assert client.get(path, headers={"Authorization": "s3cret-key"}).status_code == 401
    assert client.get("/healthz").status_code == 200  # probes stay open


@pytest.mark.parametrize("key", ["pässwort-123", "short", "with space inside", "tab\there-123"])
def test_keys_that_could_never_match_are_refused_at_start(key: str) -> None:
    with pytest.raises(ConfigError, match="printable ASCII"):
        create_app(instant_pipeline(), api_key=key)


def test_ready_only_after_the_serving_tier_generated() -> None:
    client = TestClient(create_app(runtime()))
    response = client.get("/readyz")
    assert response.status_code == 503 and response.json()["ready"] is False
    client.post("/generate", json={"prompt": "a red circle", "steps": 1})
    assert client.get("/readyz").json()["ready"] is True


def test_warm_start_is_ready_before_any_request() -> None:
    with TestClient(create_app(runtime(), warm_all=True)) as client:
        pipe = client.app.state.pipe  # type: ignore[attr-defined]
        for _ in range(600):  # the warm-up runs in the background; bounded wait
            if client.get("/readyz").status_code == 200:
                break
            pipe._ready.wait(0.5)
        assert client.get("/readyz").json()["ready"] is True
        assert pipe._warmed == {0, 1, 2}  # every tier generated once
        assert pipe.metrics.snapshot()["requests"] == {}


def test_admission_refuses_a_request_whose_own_cost_exceeds_the_slo() -> None:
    pipe = instant_pipeline()
    client = TestClient(create_app(pipe, slo_s=2.0))
    # Profiled: minimal 0.05 s at 2 steps (the fastest); 150 steps: 3.75 s alone.
    response = client.post("/generate", json={"prompt": "x", "steps": 150})
    assert response.status_code == 503 and "alone" in response.json()["detail"]
    assert int(response.headers["Retry-After"]) >= 1
    # At 512x512 (4x the 256x256 the profile measured): 4 x 0.05 x 40 / 2 = 4 s.
    big = client.post("/generate", json={"prompt": "x", "steps": 40, "width": 512, "height": 512})
    assert big.status_code == 503
    assert pipe.calls == []  # nothing was generated for either
    ok = client.post("/generate", json={"prompt": "x", "steps": 40})
    assert ok.status_code == 200 and ok.json()["steps"] == 40  # 2 s: within the SLO


def test_a_disconnected_clients_queued_request_never_runs() -> None:
    import threading

    pipe = instant_pipeline()
    gate = threading.Event()
    pipe.gate = gate
    app = create_app(pipe, max_queue=4)

    async def scenario() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            first = asyncio.create_task(http.post("/generate", json={"prompt": "first"}))
            while len(pipe.started) < 1:  # the worker is busy with the first request
                await asyncio.sleep(0.01)
            gone = asyncio.Event()
            body = b'{"prompt": "abandoned"}'
            sent = {"body": False}

            async def receive() -> dict:
                if not sent["body"]:
                    sent["body"] = True
                    return {"type": "http.request", "body": body, "more_body": False}
                await gone.wait()
                return {"type": "http.disconnect"}

            second, statuses = post_generate_raw(app, receive, len(body))
            while pipe.signals().queue_depth < 1:  # admitted and queued behind the first
                await asyncio.sleep(0.01)
            gone.set()  # the client goes away
            await second
            gate.set()
            assert (await first).status_code == 200
            return statuses

    assert asyncio.run(scenario()) == [499]
    assert pipe.started == ["first"]  # the abandoned request never started
    assert "autoq_abandoned_total 1.0" in TestClient(app).get("/metrics").text


@pytest.mark.slow
def test_burst_beyond_the_queue_gets_only_200_and_503_and_moves_tiers_down() -> None:
    import statistics
    import time

    # Profile latencies from this machine's own speed, so the policy's prediction
    # (profiled x observed/profiled ratio x (queue + 1)) reflects the real load.
    warm = runtime()
    seconds = []
    for i in range(3):
        start = time.perf_counter()
        warm("a red circle", tier="quality", generator=torch.Generator().manual_seed(i))
        seconds.append(time.perf_counter() - start)
    t = statistics.median(seconds)
    monitor = ScriptedMonitor([Signals(available_memory_bytes=10_000 * MiB)])
    pipe = AdaptivePipeline.from_profile(
        make_profile(latencies=(t, t / 2, t / 4)), monitor=monitor,
        policy=DefaultPolicy(slo_s=2.5 * t, dwell_s=3600), device="cpu",
    )  # fmt: skip
    # Quality fits the SLO alone (t) but not with two or more requests ahead (>= 3t).
    app = create_app(pipe, max_queue=6, slo_s=2.5 * t)

    async def burst() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            calls = [http.post("/generate", json={"prompt": f"shape {i}", "seed": i}, timeout=600)
                     for i in range(12)]  # fmt: skip
            return await asyncio.gather(*calls)

    responses = asyncio.run(burst())
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 503} and 200 in codes and 503 in codes
    assert all("Retry-After" in r.headers for r in responses if r.status_code == 503)
    served = [r.json()["tier"] for r in responses if r.status_code == 200]
    assert set(served) - {"quality"}, served  # the queue pushed requests to cheaper tiers


def instant_app():
    return create_app(instant_pipeline())


@pytest.fixture(scope="module")
def fuzz_client() -> TestClient:
    return TestClient(instant_app())


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.dictionaries(
        st.sampled_from(["prompt", "negative_prompt", "width", "height", "steps",
                         "guidance_scale", "seed", "tier", "extra"]),
        st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                  st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=50),
                  st.lists(st.integers(), max_size=3)),
    )
)  # fmt: skip
def test_fuzzed_bodies_never_get_500(fuzz_client, body) -> None:
    response = fuzz_client.post("/generate", json=body)
    assert response.status_code in (200, 411, 413, 422), (body, response.text)


schema = schemathesis.openapi.from_asgi("/openapi.json", instant_app())


@schema.parametrize()
@settings(max_examples=40, deadline=None)
def test_openapi_spec_fuzzing_finds_no_server_error(case) -> None:
    response = case.call()
    assert response.status_code < 500, (case.body, response.text)


def test_allow_mismatch_serves_a_profile_from_another_device(tmp_path) -> None:
    from autoq.errors import ProfileMismatchError
    from autoq.profile import write_profile

    profile = make_profile()
    identity = profile.fingerprint.identity.model_copy(update={"total_memory_bytes": 7 * 2**30})
    other = profile.model_copy(
        update={"fingerprint": profile.fingerprint.model_copy(update={"identity": identity})}
    )
    path = write_profile(other, tmp_path / "other.json")
    with pytest.raises(ProfileMismatchError, match="total_memory_bytes"):
        create_app(path, device="cpu")
    app = create_app(path, device="cpu", allow_mismatch=True)
    assert TestClient(app).get("/tiers").status_code == 200


def test_a_body_that_never_arrives_gets_408() -> None:
    app = create_app(instant_pipeline(), body_timeout_s=0.2)

    async def scenario() -> list[int]:
        never = asyncio.Event()

        async def receive() -> dict:
            await never.wait()  # the client declared a body and never sends it
            return {"type": "http.disconnect"}

        call, statuses = post_generate_raw(app, receive, 20)
        await asyncio.wait_for(call, 30)
        return statuses

    assert asyncio.run(scenario()) == [408]


def test_concurrent_requests_are_batched_and_say_so() -> None:
    """Four requests at once on a runtime that batches: one pipeline call, each response
    with its own image and its batch size, counted in `autoq_batches_total`."""
    app = create_app(runtime(max_batch=4, batch_wait_s=5.0))

    async def four() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            bodies = [{"prompt": p, "seed": i, "steps": 1}
                      for i, p in enumerate(["a red circle", "a blue square", "a green star",
                                             "a pink triangle"])]  # fmt: skip
            answers = await asyncio.gather(*(client.post("/generate", json=b) for b in bodies))
            answers.append(await client.get("/metrics"))
            return answers

    *answers, metrics = asyncio.run(four())
    assert [a.status_code for a in answers] == [200] * 4
    assert [a.json()["batch_size"] for a in answers] == [4] * 4
    assert len({a.json()["image"] for a in answers}) == 4  # each its own image
    assert 'autoq_batches_total{size="4"} 1.0' in metrics.text


def test_a_request_may_ask_for_several_images_each_with_its_own_seed(client: TestClient) -> None:
    many = client.post("/generate", json={"prompt": "a red circle", "seed": 5, "num_images": 3})
    assert many.status_code == 200, many.text
    images = [np.asarray(_decoded(b)) for b in many.json()["images"]]
    assert len(images) == 3 and many.json()["image"] == many.json()["images"][0]
    assert not np.array_equal(images[0], images[1])  # seeds 5 and 6
    one = client.post("/generate", json={"prompt": "a red circle", "seed": 6})
    assert _psnr(images[1], np.asarray(_decoded(one.json()["image"]))) >= 40.0
    assert client.post("/generate", json={"prompt": "x", "num_images": 9}).status_code == 422
    text = client.get("/metrics").text
    assert 'autoq_images_total{tier="quality"}' in text
    assert "autoq_queue_delay_seconds_count" in text


def _decoded(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB")


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 100.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)
