"""`load_profile`: the profile tuned for this device, refusing one tuned elsewhere."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from autoq._logging import get_logger
from autoq.errors import ConfigError, ProfileMismatchError
from autoq.profile._io import read_profile
from autoq.profile._model import Profile

__all__ = ["fingerprint_differences", "load_profile"]

log = get_logger("autoq.profile")


def _flat(prefix: str, value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flat(f"{prefix}.{key}" if prefix else key, item))
        return out
    return {prefix: value}


def fingerprint_differences(profile: Profile) -> list[str]:
    """``field: profile value != this device's value`` for every identity field that
    differs (empty when the fingerprint ids match)."""
    from autoq.device import fingerprint

    here = fingerprint(bench=False)
    if here.fingerprint_id == profile.fingerprint.fingerprint_id:
        return []
    theirs = _flat("", profile.fingerprint.identity.model_dump(mode="json"))
    ours = _flat("", here.identity.model_dump(mode="json"))
    diffs = [
        f"{key}: {theirs.get(key)!r} != {ours.get(key)!r}"
        for key in sorted(set(theirs) | set(ours))
        if theirs.get(key) != ours.get(key)
    ]
    return diffs or [
        f"fingerprint_id: {profile.fingerprint.fingerprint_id} != {here.fingerprint_id}"
    ]


def _matches_model(profile: Profile, model: str | None) -> bool:
    if model is None:
        return True
    return model in (profile.model.source, profile.model.content_hash) or (
        profile.model.source.removeprefix("zoo:") == model
    )


def load_profile(
    path: str | Path, model: str | None = None, *, allow_mismatch: bool = False
) -> Profile:
    """Load the profile at ``path``, or the one in directory ``path`` tuned on this device.

    Args:
        path: A profile JSON file, or a directory of them (e.g. ``profiles/``).
        model: With a directory, only consider profiles of this model (source or hash).
        allow_mismatch: Accept a profile from another device, with a warning.

    Raises:
        ProfileMismatchError: The profile was tuned on another device; lists differences.
        ConfigError: Unreadable or invalid file (named), or no profile in the directory.
    """
    from autoq.device import fingerprint

    path = Path(path)
    if path.is_dir():
        candidates = []
        for file in sorted(path.glob("*.json")):
            try:
                profile = read_profile(file)
            except ConfigError:
                continue  # other JSON files may live there
            if _matches_model(profile, model):
                candidates.append(profile)
        if not candidates:
            raise ConfigError(
                f"No autoq profile{f' for {model!r}' if model else ''} in {path}; "
                "run `autoq tune` first."
            )
        here = fingerprint(bench=False).fingerprint_id
        for profile in candidates:
            if profile.fingerprint.fingerprint_id == here:
                return profile
        profile = candidates[0]
    else:
        profile = read_profile(path)
    differences = fingerprint_differences(profile)
    if differences:
        message = (
            f"Profile for {profile.model.source} was tuned on device "
            f"{profile.fingerprint.fingerprint_id}, not this one: " + "; ".join(differences)
        )
        if not allow_mismatch:
            raise ProfileMismatchError(
                message + ". Tune this device (`autoq tune`) or pass allow_mismatch=True."
            )
        log.warning("profile_mismatch", differences=differences)
    return profile
