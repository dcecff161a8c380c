"""`create_app`: the adaptive runtime behind FastAPI, with admission control and metrics.

The routes are a thin adapter over `autoq.runtime.Dispatcher`, which admits, queues and
dispatches requests: a request some tier cannot finish within the SLO behind the ones
already admitted, or one that finds the queue full, gets 503 with ``Retry-After`` at
once. A queued request whose client disconnects is dropped before it starts. Everything
else ends in 200 or a deliberate 4xx.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import io
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.datastructures import Headers

from autoq._logging import get_logger
from autoq._version import __version__
from autoq.errors import (
    AutoqError,
    ConfigError,
    OutOfMemoryError,
    OverloadedError,
    ProfileMismatchError,
)
from autoq.serve._metrics import ServiceMetrics
from autoq.serve._schema import GenerateRequest, GenerateResponse, TierInfo, TiersResponse

if TYPE_CHECKING:
    from autoq.profile import Profile
    from autoq.runtime import AdaptivePipeline, ProcessPipeline

__all__ = ["create_app", "validate_api_key"]

log = get_logger("autoq.serve")

_OPEN_PATHS = {"/healthz", "/readyz"}

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def _status(exc: AutoqError) -> int:
    if isinstance(exc, OutOfMemoryError | OverloadedError):
        return 503
    if isinstance(exc, ConfigError | ProfileMismatchError):
        return 422
    return 500


def validate_api_key(key: str) -> str:
    """The key, if it is 8 to 256 printable ASCII characters (what an HTTP header can
    carry unchanged).

    Raises:
        ConfigError: Any other key; it could never match what a client sends.
    """
    if not 8 <= len(key) <= 256 or not all(33 <= ord(c) <= 126 for c in key):
        raise ConfigError(
            f"The API key must be 8 to 256 printable ASCII characters without spaces, but "
            f"got {len(key)} characters"
            + ("" if key.isascii() else " with non-ASCII ones")
            + "; generate one with `python -c 'import secrets; print(secrets.token_urlsafe())'`."
        )
    return key


def _presented_key(headers: Headers) -> str | None:
    """``X-API-Key: <key>`` or ``Authorization: Bearer <key>`` (scheme in any case).
    A bare key in ``Authorization`` is not a credential."""
    if "x-api-key" in headers:
        return headers["x-api-key"]
    scheme, _, token = headers.get("authorization", "").strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


class _Guard:
    """Declared, bounded bodies and the API key, checked before anything is read.

    A plain ASGI middleware (not Starlette's ``BaseHTTPMiddleware``, whose receive wrapper
    hides a client's disconnect from `Request.is_disconnected`)."""

    def __init__(self, app: Any, max_body_bytes: int, api_key: str | None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.api_key = api_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        length = headers.get("content-length")
        refusal = None
        if scope["method"] == "POST" and length is None:
            # A chunked body would dodge the size limit: ask for a declared length.
            refusal = JSONResponse({"detail": "Send a Content-Length header."}, 411)
        elif length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            refusal = JSONResponse(
                {"detail": f"Body larger than {self.max_body_bytes} bytes."}, 413
            )
        elif self.api_key is not None and scope["path"] not in _OPEN_PATHS:
            given = _presented_key(headers)
            if given is None or not hmac.compare_digest(given.encode(), self.api_key.encode()):
                refusal = JSONResponse({"detail": "Missing or wrong API key."}, 401)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)


class _BodyDeadline:
    """Read a declared-length POST body within ``timeout_s`` (else 408), then replay it."""

    def __init__(self, app: Any, timeout_s: float, max_bytes: int) -> None:
        self.app = app
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length", b"")
        if scope["type"] != "http" or not length.isdigit() or int(length) > self.max_bytes:
            await self.app(scope, receive, send)  # the app answers 411/413 or has no body
            return

        async def read_all() -> list[Message]:
            messages = []
            while True:
                message = await receive()
                messages.append(message)
                if message["type"] != "http.request" or not message.get("more_body"):
                    return messages

        try:
            buffered = await asyncio.wait_for(read_all(), self.timeout_s)
        except TimeoutError:
            response = JSONResponse(
                {"detail": f"Body not received within {self.timeout_s:g}s."}, 408
            )
            await response(scope, receive, send)
            return

        async def replay() -> Message:
            return buffered.pop(0) if buffered else await receive()

        await self.app(scope, replay, send)


def create_app(
    source: AdaptivePipeline | ProcessPipeline | Profile | str | Path,
    *,
    max_queue: int = 8,
    slo_s: float | None = None,
    workers: int = 1,
    api_key: str | None = None,
    max_body_bytes: int = 64 * 1024,
    device: str | None = None,
    model: str | None = None,
    allow_mismatch: bool = False,
    warm_all: bool = False,
    body_timeout_s: float = 10.0,
    max_batch: int = 1,
    tiers: Sequence[str] | None = None,
    worker_process: bool = False,
) -> FastAPI:
    """Build the HTTP service.

    Args:
        source: A ready `AdaptivePipeline` or `ProcessPipeline`, or a profile (object,
            file or directory).
        max_queue: Requests waiting beyond the ones generating; more get 503.
        slo_s: Latency objective per request; feeds the tier policy and admission.
        workers: Generations running at once.
        api_key: Required as ``Authorization: Bearer <key>`` or ``X-API-Key`` if given;
            8-256 printable ASCII characters.
        max_body_bytes: Larger request bodies get 413.
        device: Generation device when building the pipeline from a profile.
        model: With a profiles directory holding several models, the one to serve.
        allow_mismatch: Serve a profile tuned on another device (logged as a warning).
        warm_all: At start-up, generate once on every tier before ``/readyz`` says
            ready; otherwise on the serving tier and on every tier whose first call
            compiles or converts components (`Metrics.build_s`), so no request waits on it.
        body_timeout_s: A request body not received within this many seconds gets 408.
        max_batch: Compatible requests that may run as one pipeline call (each with its
            own seed: the image it would get alone); 1 runs each alone. A ready
            ``source`` brings its own.
        tiers: Serve only these tiers of a profile, holding only what they need
            (`AdaptivePipeline.from_profile`); a ready ``source`` brings its own.
        worker_process: Generate in a worker process of its own (`ProcessPipeline`), so
            the front end (parsing, validation, rejections) never takes the generating
            thread's interpreter lock; a ready ``source`` may be one already.

    Raises:
        ConfigError: A limit is not positive, or the API key is not printable ASCII.
    """
    from autoq.runtime import AdaptivePipeline, DefaultPolicy, Dispatcher, ProcessPipeline

    Dispatcher.check_limits(max_queue=max_queue, slo_s=slo_s, workers=workers)
    for name, value in (
        ("max_body_bytes", max_body_bytes),
        ("body_timeout_s", body_timeout_s),
        ("max_batch", max_batch),
    ):
        if value <= 0:
            raise ConfigError(f"{name} must be positive, but got {value}.")
    if api_key is not None:
        validate_api_key(api_key)
    if allow_mismatch:
        log.warning("serving_mismatched_profile", detail="profile tuned on another device")
    pipe: AdaptivePipeline | ProcessPipeline
    if isinstance(source, AdaptivePipeline | ProcessPipeline):
        pipe = source
    else:
        runtime = ProcessPipeline if worker_process else AdaptivePipeline
        pipe = runtime.from_profile(
            source,
            model=model,
            policy=DefaultPolicy(slo_s=slo_s),
            device=device,
            max_concurrency=workers,
            max_batch=max_batch,
            allow_mismatch=allow_mismatch,
            tiers=tiers,
        )
    dispatcher = Dispatcher(pipe, max_queue=max_queue, slo_s=slo_s, workers=workers)
    metrics = ServiceMetrics(pipe, lambda: dispatcher.pending)
    dispatcher.on_start = metrics.queue_delay.observe
    names = [t.name for t in pipe.tiers]

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Warm in the background: /healthz answers at once, /readyz once warm.
        built = [t.name for t in pipe.tiers if t.metrics.build_s is not None]
        warming = names if warm_all else list(dict.fromkeys([pipe.tier.name, *built]))
        dispatcher.warm(warming).add_done_callback(_log_warm_failure)
        yield
        dispatcher.shutdown()

    app = FastAPI(
        lifespan=lifespan,
        title="autoq",
        version=__version__,
        description="Text-to-image generation that adapts its quantization tier to load.",
    )
    app.state.pipe = pipe
    app.state.dispatcher = dispatcher
    app.state.metrics = metrics
    # The last added runs first: the guard, then the body deadline, then the routes.
    app.add_middleware(_BodyDeadline, timeout_s=body_timeout_s, max_bytes=max_body_bytes)
    app.add_middleware(_Guard, max_body_bytes=max_body_bytes, api_key=api_key)

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

    @app.get("/readyz", responses={503: {"description": "Not ready: still warming up."}})
    async def readyz() -> JSONResponse:
        # Ready once a generation has finished on the serving tier (extensions built,
        # kernels warm): a load balancer sends nothing that would wait on start-up work.
        return JSONResponse(
            {"ready": pipe.ready, "tier": pipe.tier.name}, 200 if pipe.ready else 503
        )

    @app.get("/tiers", response_model=TiersResponse)
    async def list_tiers() -> TiersResponse:
        return TiersResponse(
            current=pipe.tier.name,
            tiers=[
                TierInfo(
                    name=t.name,
                    plan=t.plan.describe(),
                    clip_score=t.metrics.clip_score,
                    latency_s=t.metrics.latency_s,
                    peak_memory_bytes=t.metrics.peak_memory_bytes,
                    steps=t.plan.steps,
                    min_steps=t.min_steps,
                )
                for t in pipe.tiers
            ],
        )

    @app.get("/metrics")
    async def prometheus() -> PlainTextResponse:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return PlainTextResponse(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/generate", response_model=GenerateResponse)
    async def generate(body: GenerateRequest, request: Request) -> Any:
        start = time.perf_counter()
        try:
            job = dispatcher.submit(
                body.prompt, tier=body.tier, steps=body.steps, height=body.height,
                width=body.width, guidance_scale=body.guidance_scale,
                negative_prompt=body.negative_prompt, seed=body.seed,
                num_images=body.num_images,
            )  # fmt: skip
        except OverloadedError as exc:
            metrics.rejections.labels(exc.reason).inc()
            metrics.requests.labels("none", "503").inc()
            headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))}
            return JSONResponse({"detail": str(exc)}, 503, headers=headers)
        # The body is read: the next ASGI message is the client's disconnect (or, once
        # the response is sent, the end of the exchange). Watch for it while queued.
        watcher = asyncio.ensure_future(request.receive())
        try:
            waiting = asyncio.wrap_future(job)
            await asyncio.wait({waiting, watcher}, return_when=asyncio.FIRST_COMPLETED)
            gone = watcher.done() and watcher.result().get("type") == "http.disconnect"
            if gone and job.cancel():  # still queued: it never starts
                metrics.abandoned.inc()
                log.info("request_abandoned", prompt_chars=len(body.prompt))
                return JSONResponse({"detail": "Client disconnected."}, 499)
            await asyncio.wait({waiting})
            if job.cancelled():  # the pool shut down before it started
                return JSONResponse({"detail": "Server shutting down."}, 503)
            out = waiting.result()
        except OutOfMemoryError as exc:
            metrics.requests.labels("none", "503").inc()
            return JSONResponse({"detail": str(exc)}, 503, headers={"Retry-After": "5"})
        finally:
            watcher.cancel()
        seconds = time.perf_counter() - start
        metrics.requests.labels(out.tier, "200").inc()
        metrics.latency.labels(out.tier).observe(seconds)
        metrics.images.labels(out.tier).inc(len(out.images))
        encoded = [_png(image) for image in out.images]
        return GenerateResponse(
            image=encoded[0],
            images=encoded,
            tier=out.tier,
            steps=out.steps,
            batch_size=getattr(out, "batch_size", 1),
            latency_ms=seconds * 1000,
            seed=body.seed,
        )

    return app


def _png(image: Any) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _log_warm_failure(future: Any) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("warm_up_failed", error=str(future.exception())[:300])
