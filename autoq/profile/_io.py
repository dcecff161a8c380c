"""Reading and writing profiles: validated on load, written atomically, never pickled."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from autoq._files import atomic_write_text
from autoq.errors import ConfigError
from autoq.profile._model import Profile

__all__ = ["read_profile", "write_profile"]


def write_profile(profile: Profile, path: str | Path) -> Path:
    """Write ``profile`` as JSON to ``path`` atomically (temp file + rename)."""
    return atomic_write_text(path, profile.model_dump_json(indent=2))


def read_profile(path: str | Path) -> Profile:
    """Load and validate a profile.

    Raises:
        ConfigError: The file is missing, not JSON, or not a valid profile; names the file.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"Cannot read profile {path}: {exc.strerror or exc}.") from None
    try:
        return Profile.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "file"
        raise ConfigError(
            f"{path} is not a valid autoq profile ({where}: {first['msg']}); "
            "re-run `autoq tune` to write a new one."
        ) from None
