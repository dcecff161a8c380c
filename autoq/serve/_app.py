"""`create_app`: the adaptive runtime behind FastAPI, with backpressure and metrics.

Generation runs off the event loop in a bounded thread pool. A request is refused with
503 and ``Retry-After`` when the queue is full, or when even the lowest tier could not
answer it within the SLO; everything else ends in 200 or a deliberate 4xx.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import io
import math
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse

from autoq._version import __version__
from autoq.errors import AutoqError, ConfigError, OutOfMemoryError, ProfileMismatchError
from autoq.serve._metrics import ServiceMetrics
from autoq.serve._schema import GenerateRequest, GenerateResponse, TierInfo, TiersResponse

if TYPE_CHECKING:
    from autoq.profile import Profile
    from autoq.runtime import AdaptivePipeline

__all__ = ["create_app"]

_OPEN_PATHS = {"/healthz", "/readyz"}


def _status(exc: AutoqError) -> int:
    if isinstance(exc, OutOfMemoryError):
        return 503
    if isinstance(exc, ConfigError | ProfileMismatchError):
        return 422
    return 500


def create_app(
    source: AdaptivePipeline | Profile | str | Path,
    *,
    max_queue: int = 8,
    slo_s: float | None = None,
    workers: int = 1,
    api_key: str | None = None,
    max_body_bytes: int = 64 * 1024,
    device: str | None = None,
) -> FastAPI:
    """Build the HTTP service.

    Args:
        source: A ready `AdaptivePipeline`, or a profile (object, file or directory).
        max_queue: Requests waiting beyond the ones generating; more get 503.
        slo_s: Latency objective per request; feeds the tier policy and admission.
        workers: Generations running at once.
        api_key: Required as ``Authorization: Bearer <key>`` or ``X-API-Key`` if given.
        max_body_bytes: Larger request bodies get 413.
        device: Generation device when building the pipeline from a profile.

    Raises:
        ConfigError: A limit is not positive.
    """
    from autoq.runtime import AdaptivePipeline, DefaultPolicy

    for name, value in (
        ("max_queue", max_queue),
        ("workers", workers),
        ("max_body_bytes", max_body_bytes),
    ):
        if value < 1:
            raise ConfigError(f"{name} must be positive, but got {value}.")
    if slo_s is not None and slo_s <= 0:
        raise ConfigError(f"slo_s must be positive, but got {slo_s}.")
    pipe = (
        source
        if isinstance(source, AdaptivePipeline)
        else AdaptivePipeline.from_profile(
            source, policy=DefaultPolicy(slo_s=slo_s), device=device, max_concurrency=workers
        )
    )
    lock = threading.Lock()
    pending = {"n": 0}  # admitted requests not yet answered: queued + generating

    def queued() -> int:
        return max(pending["n"] - workers, 0)

    pipe.set_queue_source(queued)
    metrics = ServiceMetrics(pipe, lambda: pending["n"])
    names = [t.name for t in pipe.tiers]
    default_size = _default_size(pipe)

    pool: dict[str, ThreadPoolExecutor] = {}

    def executor() -> ThreadPoolExecutor:
        # One pool per serving lifetime: a server (or test client) may start the app again.
        if "pool" not in pool:
            pool["pool"] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="autoq-gen")
        return pool["pool"]

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        running = pool.pop("pool", None)
        if running is not None:
            running.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        lifespan=lifespan,
        title="autoq",
        version=__version__,
        description="Text-to-image generation that adapts its quantization tier to load.",
    )
    app.state.pipe = pipe
    app.state.metrics = metrics

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Any:
        length = request.headers.get("content-length")
        if request.method == "POST" and length is None:
            # A chunked body would dodge the size limit: ask for a declared length.
            return JSONResponse({"detail": "Send a Content-Length header."}, 411)
        if length is not None and (not length.isdigit() or int(length) > max_body_bytes):
            return JSONResponse({"detail": f"Body larger than {max_body_bytes} bytes."}, 413)
        if api_key is not None and request.url.path not in _OPEN_PATHS:
            given = request.headers.get("x-api-key") or request.headers.get(
                "authorization", ""
            ).removeprefix("Bearer ")
            if not hmac.compare_digest(given.encode(), api_key.encode()):
                return JSONResponse({"detail": "Missing or wrong API key."}, 401)
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # Location and message only: echoing the input back could be large, or not even
        # JSON (NaN, Infinity).
        errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        return JSONResponse({"detail": errors}, 422)

    @app.exception_handler(AutoqError)
    async def autoq_error(_request: Request, exc: AutoqError) -> JSONResponse:
        return JSONResponse({"detail": str(exc), "error": type(exc).__name__}, _status(exc))

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        return JSONResponse({"ready": True, "tier": pipe.tier.name})

    @app.get("/tiers", response_model=TiersResponse)
    async def tiers() -> TiersResponse:
        return TiersResponse(
            current=pipe.tier.name,
            tiers=[
                TierInfo(
                    name=t.name,
                    plan=t.plan.describe(),
                    clip_score=t.metrics.clip_score,
                    latency_s=t.metrics.latency_s,
                    peak_memory_bytes=t.metrics.peak_memory_bytes,
                )
                for t in pipe.tiers
            ],
        )

    @app.get("/metrics")
    async def prometheus() -> PlainTextResponse:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return PlainTextResponse(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def reject(reason: str, retry_after: float, detail: str) -> JSONResponse:
        metrics.rejections.labels(reason).inc()
        metrics.requests.labels("none", "503").inc()
        headers = {"Retry-After": str(max(1, math.ceil(retry_after)))}
        return JSONResponse({"detail": detail}, 503, headers=headers)

    @app.post("/generate", response_model=GenerateResponse)
    async def generate(body: GenerateRequest) -> Any:
        if body.tier is not None and body.tier not in names:
            return JSONResponse({"detail": f"Unknown tier {body.tier!r}; valid: {names}."}, 422)
        for side in (body.width, body.height):
            if side is not None and side > 4 * default_size:
                return JSONResponse(
                    {"detail": f"width/height at most {4 * default_size} for this model."}, 422
                )
        lowest = pipe.tiers[-1].metrics.latency_s * pipe.signals().latency_ratio
        with lock:
            if queued() >= max_queue:
                return reject(
                    "queue_full",
                    lowest * (queued() / workers + 1),
                    f"Queue full ({max_queue} waiting); retry later.",
                )
            predicted = lowest * (pending["n"] // workers + 1)
            if slo_s is not None and predicted > slo_s:
                return reject(
                    "slo",
                    predicted - slo_s,
                    f"Even the fastest tier would take {predicted:.2f}s > SLO "
                    f"{slo_s:.2f}s at this load; retry later.",
                )
            pending["n"] += 1
        start = time.perf_counter()
        try:
            out = await asyncio.get_running_loop().run_in_executor(
                executor(), lambda: _run(pipe, body)
            )
        except OutOfMemoryError as exc:
            metrics.requests.labels("none", "503").inc()
            return JSONResponse({"detail": str(exc)}, 503, headers={"Retry-After": "5"})
        finally:
            with lock:
                pending["n"] -= 1
        seconds = time.perf_counter() - start
        metrics.requests.labels(out.tier, "200").inc()
        metrics.latency.labels(out.tier).observe(seconds)
        buffer = io.BytesIO()
        out.images[0].save(buffer, format="PNG")
        steps = body.steps or pipe.profile.tier(out.tier).plan.steps
        return GenerateResponse(
            image=base64.b64encode(buffer.getvalue()).decode(),
            tier=out.tier,
            steps=steps,
            latency_ms=seconds * 1000,
            seed=body.seed,
        )

    return app


def _default_size(pipe: AdaptivePipeline) -> int:
    base = pipe._cache.base  # the loaded diffusers pipeline
    unet = getattr(base, "unet", None) or getattr(base, "transformer", None)
    sample = getattr(getattr(unet, "config", None), "sample_size", 64) or 64
    return int(sample) * int(getattr(base, "vae_scale_factor", 8))


def _run(pipe: AdaptivePipeline, body: GenerateRequest) -> Any:
    import torch

    kwargs: dict[str, Any] = {}
    if body.negative_prompt is not None:
        kwargs["negative_prompt"] = body.negative_prompt
    if body.width is not None:
        kwargs["width"] = body.width
    if body.height is not None:
        kwargs["height"] = body.height
    if body.steps is not None:
        kwargs["num_inference_steps"] = body.steps
    if body.guidance_scale is not None:
        kwargs["guidance_scale"] = body.guidance_scale
    if body.seed is not None:
        kwargs["generator"] = torch.Generator("cpu").manual_seed(body.seed)
    return pipe(body.prompt, tier=body.tier, **kwargs)
