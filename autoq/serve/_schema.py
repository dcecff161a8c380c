"""Request and response bodies of the HTTP API (pydantic; limits enforced here)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["GenerateRequest", "GenerateResponse", "TierInfo", "TiersResponse"]

MAX_PROMPT_CHARS = 1000
MAX_IMAGES = 8
"""Images one request may ask for (``num_images``)."""


class GenerateRequest(BaseModel):
    """The body most diffusers HTTP services accept, plus optional ``seed`` and ``tier``."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    negative_prompt: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    width: int | None = Field(default=None, ge=8, le=2048, multiple_of=8)
    height: int | None = Field(default=None, ge=8, le=2048, multiple_of=8)
    steps: int | None = Field(default=None, ge=1, le=150)
    guidance_scale: float | None = Field(default=None, ge=0.0, le=30.0)
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    tier: str | None = Field(default=None, max_length=100)
    num_images: int = Field(default=1, ge=1, le=MAX_IMAGES)
    """Images of this prompt, generated in one call (seeds ``seed``, ``seed + 1``, ...)."""

    @field_validator("prompt")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("prompt must not be blank")
        return value


class GenerateResponse(BaseModel):
    image: str
    """Base64-encoded PNG (the first of ``images``)."""
    images: list[str] = Field(default_factory=list)
    """Every image asked for (``num_images``), base64-encoded PNGs."""
    tier: str
    """The tier that served the request."""
    steps: int
    """The denoising steps it ran: the request's own if given, else the tier's step dial."""
    batch_size: int = 1
    """Requests that ran in the same pipeline call as this one (``--max-batch``)."""
    latency_ms: float
    seed: int | None = None


class TierInfo(BaseModel):
    name: str
    plan: str
    clip_score: float
    latency_s: float
    peak_memory_bytes: int
    steps: int
    """The tier's own step count."""
    min_steps: int | None = None
    """Fewest steps the runtime may serve it at under load (``None``: no dial)."""


class TiersResponse(BaseModel):
    current: str
    tiers: list[TierInfo]
