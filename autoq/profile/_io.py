"""Reading and writing profiles: validated on load, written atomically, never pickled."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from pydantic import ValidationError

from autoq.errors import ConfigError
from autoq.profile._model import Profile

__all__ = ["read_profile", "write_profile"]


def write_profile(profile: Profile, path: str | Path) -> Path:
    """Write ``profile`` as JSON to ``path`` atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(profile.model_dump_json(indent=2))
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a profile is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


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
