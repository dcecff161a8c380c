"""`load_profile`: the profile tuned for this device and model, refusing one tuned elsewhere."""

from __future__ import annotations

from pathlib import Path

from autoq._logging import get_logger
from autoq.errors import ConfigError, ProfileMismatchError
from autoq.profile._io import UnreadableProfile, parse_profile, read_profile
from autoq.profile._model import Profile

__all__ = ["fingerprint_differences", "load_profile", "matches_model"]

log = get_logger("autoq.profile")


def fingerprint_differences(profile: Profile) -> list[str]:
    """``field: profile value != this device's value`` for every difference that makes
    the profile another device class's (`autoq.device.class_differences`); empty when
    the fingerprint ids match or the devices are of one class."""
    return _differences(profile)[0]


def _differences(profile: Profile) -> tuple[list[str], list[str]]:
    """``(refusing, noted)`` differences between the profile's device and this one."""
    from autoq.device import class_differences, fingerprint

    here = fingerprint(bench=False)
    if here.fingerprint_id == profile.fingerprint.fingerprint_id:
        return [], []
    return class_differences(profile.fingerprint.identity, here.identity)


def matches_model(profile: Profile, model: str) -> bool:
    """Whether ``model`` names the profile's model.

    Accepted: the stored source itself (absolute folder, hub id or ``zoo:NAME``), a path
    that resolves to the stored folder, the zoo name without ``zoo:``, the folder's or hub
    repository's last name (``sd3`` for ``/models/sd3``), or the model's content hash.
    """
    source = profile.model.source
    if model in (source, profile.model.content_hash):
        return True
    short = source.removeprefix("zoo:").rstrip("/").rsplit("/", 1)[-1]
    if model == short:
        return True
    if Path(source).is_absolute():
        try:
            return Path(model).expanduser().resolve() == Path(source).resolve()
        except (OSError, RuntimeError):  # an unresolvable name simply does not match
            return False
    return False


def _describe(profile: Profile) -> str:
    return f"{profile.model.source} (hash {profile.model.content_hash})"


def _pick(folder: Path, model: str | None, here: str) -> Profile:
    """The profile in ``folder`` for ``model`` (and this device when one is)."""
    candidates: list[tuple[Path, Profile]] = []
    skipped: list[str] = []
    for file in sorted(folder.glob("*.json")):
        try:
            profile = parse_profile(file)
        except UnreadableProfile as exc:
            skipped.append(f"{file.name}: {exc}")
            continue
        if model is not None and not matches_model(profile, model):
            skipped.append(f"{file.name}: a profile of {profile.model.source}")
            continue
        candidates.append((file, profile))
    wanted = f" for model {model!r}" if model is not None else ""
    if not candidates:
        if not skipped:
            raise ConfigError(f"No autoq profile{wanted} in {folder}; run `autoq tune` first.")
        raise ConfigError(
            f"No usable autoq profile{wanted} in {folder}; skipped "
            + "; ".join(skipped)
            + ". Fix or remove those files, choose another model, or run `autoq tune`."
        )
    models = {p.model.content_hash: p for _, p in candidates}
    if len(models) > 1:
        listed = ", ".join(
            f"{_describe(p)} in {f.name}"
            for f, p in sorted(candidates, key=lambda fp: fp[1].model.source)
        )
        raise ConfigError(
            f"{folder} holds profiles of {len(models)} models{wanted}: {listed}; choose one "
            "with model=... (`--model` on the command line): its source, folder name or hash."
        )
    # One model: prefer this device's profiles, then the newest.
    ranked = sorted(
        (p for _, p in candidates),
        key=lambda p: (p.fingerprint.fingerprint_id == here, p.created),
        reverse=True,
    )
    return ranked[0]


def load_profile(
    path: str | Path, model: str | None = None, *, allow_mismatch: bool = False
) -> Profile:
    """Load the profile at ``path``, or the one in directory ``path`` tuned on this device.

    A directory may hold profiles of many models and devices. Files that are not usable
    profiles are skipped (the error says why when none is left); among one model's
    profiles, this device's newest wins.

    Args:
        path: A profile JSON file, or a directory of them (e.g. ``profiles/``).
        model: The model wanted: its stored source (absolute folder, hub id or
            ``zoo:NAME``), a path to that folder, its last name (``shapes``, ``sd3``) or
            its content hash. Required when a directory holds several models.
        allow_mismatch: Accept a profile from another device class, with a warning.
            One tuned on a machine of the same class (same CPU or GPUs, memory within
            2%, torch and diffusers MAJOR.MINOR; the kernel release and other versions
            may differ) is accepted without it, and the differences are logged.

    Raises:
        ProfileMismatchError: The profile was tuned on another device class; lists the
            differences.
        ConfigError: Unreadable or invalid file (named); no usable profile in the directory
            (each skipped file with its reason); several models and no ``model``; a file
            whose model is not ``model``.
    """
    from autoq.device import fingerprint

    path = Path(path)
    if path.is_dir():
        profile = _pick(path, model, fingerprint(bench=False).fingerprint_id)
    else:
        profile = read_profile(path)
        if model is not None and not matches_model(profile, model):
            raise ConfigError(
                f"Profile {path} is for {_describe(profile)}, not {model!r}; "
                "pass that model's profile or its folder."
            )
    differences, noted = _differences(profile)
    if noted and not differences:
        # Machines of one kind: the profile holds here (a fleet shares one tune).
        log.info(
            "profile_from_like_device", tuned_on=profile.fingerprint.fingerprint_id, noted=noted
        )
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
