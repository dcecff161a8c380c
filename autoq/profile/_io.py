"""Reading and writing profiles: validated on load, written atomically, never pickled.

Profiles are shared files (a fleet's profiles folder, a colleague's tune), so reading one
treats it as untrusted: bounded size, strict UTF-8, schema-validated.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from autoq._files import atomic_write_text
from autoq.errors import AutoqError, ConfigError
from autoq.profile._model import Profile

__all__ = ["MAX_PROFILE_BYTES", "read_profile", "write_profile"]

MAX_PROFILE_BYTES = 32 * 2**20
"""Largest profile file read; a tune of thousands of trials stays far below it."""


class UnreadableProfile(Exception):
    """Why a file is not a usable profile (one line, without the file name)."""


def write_profile(profile: Profile, path: str | Path) -> Path:
    """Write ``profile`` as JSON to ``path`` atomically (temp file + rename)."""
    return atomic_write_text(path, profile.model_dump_json(indent=2))


def parse_profile(path: Path) -> Profile:
    """Load and validate the profile at ``path``.

    Raises:
        UnreadableProfile: Why it is not a usable profile.
    """
    if path.is_dir():
        raise UnreadableProfile("a folder, not a profile file")
    try:
        size = path.stat().st_size
        if size > MAX_PROFILE_BYTES:
            raise UnreadableProfile(
                f"too large for a profile ({size / 2**20:,.1f} MiB, "
                f"at most {MAX_PROFILE_BYTES // 2**20} MiB)"
            )
        data = path.read_bytes()
    except OSError as exc:
        raise UnreadableProfile(f"unreadable ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnreadableProfile(f"not UTF-8 text (invalid byte at offset {exc.start})") from None
    try:
        return Profile.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "file"
        message = first["msg"].removeprefix("Value error, ")
        raise UnreadableProfile(f"not a valid autoq profile ({where}: {message})") from None
    except (AutoqError, ValueError, TypeError) as exc:  # a validator's own error
        raise UnreadableProfile(f"not a valid autoq profile ({exc})") from None


def read_profile(path: str | Path) -> Profile:
    """Load and validate a profile.

    Raises:
        ConfigError: The file is missing, too large, not UTF-8, not JSON, or not a valid
            profile; the one-line message names the file and what to do.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"Cannot read profile {path}: no such file; check the path.")
    try:
        return parse_profile(path)
    except UnreadableProfile as exc:
        reason = str(exc).rstrip(".")
        if reason.startswith(("unreadable", "a folder")):
            fix = "; check the path and its permissions"
        elif "`autoq tune`" in reason:
            fix = ""  # the reason already says what to do
        else:
            fix = "; re-run `autoq tune` to write a new one"
        raise ConfigError(f"Profile {path} is {reason}{fix}.") from None
