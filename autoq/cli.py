"""The `autoq` command line: parse, call the public Python API, format. No logic of its own."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from autoq.errors import AutoqError

app = typer.Typer(
    help="Measure, tune and serve quantized diffusers pipelines for this device.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
_state = {"debug": False}


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    log_json: bool | None = typer.Option(
        None, "--log-json/--log-console", help="Log format (default: JSON unless a terminal)."
    ),
) -> None:
    from autoq._logging import configure

    _state["debug"] = debug
    configure(json=log_json)


def _flatten(prefix: str, value: Any) -> list[tuple[str, str]]:
    if isinstance(value, dict):
        rows: list[tuple[str, str]] = []
        for key, item in value.items():
            rows.extend(_flatten(f"{prefix}.{key}" if prefix else key, item))
        return rows
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return [row for i, item in enumerate(value) for row in _flatten(f"{prefix}[{i}]", item)]
    if isinstance(value, list | tuple):
        return [(prefix, ", ".join(map(str, value)) or "-")]
    if isinstance(value, int) and prefix.endswith("_bytes"):
        return [(prefix, f"{value / 2**30:.1f} GiB")]
    if isinstance(value, float):
        return [(prefix, f"{value:,.1f}")]
    return [(prefix, "-" if value is None else str(value))]


@app.command()
def fingerprint(
    as_json: bool = typer.Option(False, "--json", help="Print the fingerprint as JSON."),
    no_bench: bool = typer.Option(False, "--no-bench", help="Skip the speed measurements."),
) -> None:
    """Identify this device and measure its compute and memory speed."""
    from autoq.device import fingerprint as collect

    fp = collect(bench=not no_bench)
    if as_json:
        typer.echo(fp.model_dump_json(indent=2))
        return
    data = fp.model_dump(mode="json")
    table = Table(title=f"Device fingerprint {fp.fingerprint_id}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for section in ("identity", "measurements"):
        for key, value in _flatten("", data.get(section) or {}):
            table.add_row(f"{section}.{key}", value)
    console.print(table)


@app.command()
def backends(
    as_json: bool = typer.Option(False, "--json", help="Print the probe results as JSON."),
    device: str = typer.Option("cpu", help="Torch device to probe, e.g. cpu or cuda:0."),
    refresh: bool = typer.Option(False, help="Probe again instead of using the cache."),
) -> None:
    """List every precision and whether it really runs on this device (probed, cached)."""
    from autoq.backends import get_precision, probe_all

    results = probe_all(device, refresh=refresh)
    if as_json:
        typer.echo(json.dumps([r.model_dump() for r in results], indent=2))
        return
    table = Table(title=f"Precisions on {device}")
    for column in ("precision", "backend", "layers", "usable", "error", "bytes"):
        table.add_column(column, no_wrap=True)
    for r in results:
        spec = get_precision(r.precision)
        table.add_row(
            r.precision,
            r.backend,
            "all" if spec.is_float_cast else "+".join(spec.layers),
            "[green]yes[/]" if r.usable else "[red]no[/]",
            "-" if r.rel_error is None else f"{r.rel_error:.4f}",
            "-" if r.bytes_ratio is None else f"{r.bytes_ratio:.2f}x",
        )
    console.print(table)
    console.print("error: relative output error vs fp32; bytes: weight bytes vs fp32 (probe net)")
    for r in results:
        if not r.usable:
            console.print(f"[red]{r.precision}[/] unusable: {r.reason}", highlight=False)


@app.command()
def tune(
    model: str | None = typer.Option(
        None, help="Hub id, pipeline folder or zoo:NAME (default: the embedded shapes model)."
    ),
    scorer: str | None = typer.Option(None, help="CLIPModel folder or hub id for CLIP scores."),
    max_memory: str | None = typer.Option(None, help="Peak memory limit, e.g. 6GB or 512MiB."),
    max_latency: float | None = typer.Option(None, help="Latency limit per image, seconds."),
    min_clip_score: float | None = typer.Option(None, help="Absolute CLIP-score floor."),
    max_clip_drop: float | None = typer.Option(
        None, help="Largest CLIP-score drop vs the fp32 reference, in percent."
    ),
    trials: int = typer.Option(30, help="Trials in the study (a re-run resumes up to this)."),
    timeout: float | None = typer.Option(None, help="Stop starting trials after SECONDS."),
    sampler: str = typer.Option(
        "tpe", help="tpe (grouped multivariate), nsga2, random or grid; see README."
    ),
    storage: str | None = typer.Option(
        None, help="Optuna storage URL (default: SQLite in the profiles dir)."
    ),
    study: str | None = typer.Option(None, help="Study name (default: <model>-<fingerprint>)."),
    prompts: str | None = typer.Option(None, help="Text file, one prompt per line."),
    n_prompts: int = typer.Option(6, help="Images every trial is screened on (one per prompt)."),
    eval_images: int = typer.Option(
        16, help="Images of the full set that plans near the front are raced to."
    ),
    profiles_dir: str = typer.Option("profiles", help="Where profiles and studies are written."),
    tiers: int = typer.Option(4, help="Most tiers in the profile."),
    seed: int = typer.Option(0, help="Sampler and generation seed."),
    steps: str | None = typer.Option(None, help="Denoising-step range LOW:HIGH (default 10:30)."),
    step_size: int = typer.Option(1, help="Step-count granularity."),
    precisions: str | None = typer.Option(
        None, help="Comma-separated precisions to search (default: all usable here)."
    ),
    schedulers: str | None = typer.Option(None, help="Comma-separated: default,dpmpp,euler,ddim."),
    protect: bool = typer.Option(True, help="Offer per-component norm/io/embedding protection."),
    height: int | None = typer.Option(
        None, help="Image height to tune at, with --width (default: the model's own size)."
    ),
    width: int | None = typer.Option(None, help="Image width to tune at, with --height."),
    guidance_scale: float | None = typer.Option(
        None, help="Classifier-free guidance scale of every generation (default: the model's)."
    ),
    device: str | None = typer.Option(None, help="cpu or cuda[:N] (default: cuda if present)."),
    html: bool = typer.Option(True, "--report/--no-report", help="Also write the HTML report."),
) -> None:
    """Search per-component precision, steps and scheduler; write a profile of tiers.

    SIGINT (Ctrl-C) and SIGTERM write the profile from the trials done and exit 130 / 143;
    a re-run resumes the study.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from autoq.tune import TuneConfig, parse_size, read_prompts
    from autoq.tune import tune as run_tune

    config = TuneConfig.create(
        model=model,
        scorer=scorer,
        max_memory_bytes=parse_size(max_memory) if max_memory is not None else None,
        max_latency_s=max_latency,
        min_clip_score=min_clip_score,
        max_clip_drop_pct=max_clip_drop,
        trials=trials,
        timeout_s=timeout,
        sampler=sampler,
        storage=storage,
        study_name=study,
        prompts=read_prompts(prompts) if prompts is not None else None,
        n_prompts=n_prompts,
        eval_images=eval_images,
        profiles_dir=profiles_dir,
        tiers=tiers,
        seed=seed,
        steps=_range(steps) if steps is not None else None,
        step_size=step_size,
        precisions=_csv(precisions),
        schedulers=_csv(schedulers),
        protect=protect,
        height=height,
        width=width,
        guidance_scale=guidance_scale,
        device=device,
    )
    err = Console(stderr=True)
    progress = Progress(
        TextColumn("[bold]tune[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[best]}"),
        TimeElapsedColumn(),
        console=err,
    )
    task = progress.add_task("tune", total=config.trials, best="measuring reference...")

    calls = {"n": 0}

    def on_trial(done: int, wanted: int, best: float | None) -> None:
        calls["n"] += 1
        if calls["n"] == 1:  # the model loaded: input errors are past, show the bar
            progress.start()
            label = "measuring reference..."
        elif best is None:
            label = "no feasible trial yet"
        else:
            label = f"best feasible CLIP {best:.2f}"
        progress.update(task, completed=done, total=wanted, best=label)

    try:
        result = run_tune(config, on_trial=on_trial)
    except KeyboardInterrupt as stop:  # before any trial could make a profile
        progress.stop()
        err.print("interrupted before a profile could be written; re-run to resume.")
        raise typer.Exit(_signal_exit(getattr(stop, "signal_name", "SIGINT"))) from None
    finally:
        progress.stop()
    _print_tiers(result.profile)
    if html:
        from autoq.profile import write_report

        err.print(f"report: {write_report(result.profile, result.path)}", highlight=False)
    typer.echo(str(result.path))
    if result.interrupted:
        err.print("interrupted: the profile holds the trials done so far; re-run to resume.")
        raise typer.Exit(_signal_exit(result.signal_name or "SIGINT"))


def _signal_exit(signal_name: str) -> int:
    """The shell's exit status for a process stopped by ``signal_name``: 128 + number."""
    import signal

    return 128 + int(signal.Signals[signal_name])


def _csv(text: str | None) -> tuple[str, ...] | None:
    return tuple(p.strip() for p in text.split(",") if p.strip()) if text else None


def _range(text: str) -> tuple[int, int]:
    from autoq.errors import ConfigError

    low, sep, high = text.partition(":")
    try:
        return (int(low), int(high)) if sep else (int(low), int(low))
    except ValueError:
        raise ConfigError(f"Expected a step range such as 10:30, but got {text!r}.") from None


def _print_tiers(profile: Any) -> None:
    table = Table(title=f"{profile.model.source} on {profile.fingerprint.fingerprint_id}")
    rows = [tier.summary() for tier in [profile.reference, *profile.tiers]]
    for column in rows[0]:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row.values())
    console.print(table)
    for line in profile.notes():
        console.print(line, highlight=False)


profile_app = typer.Typer(help="Inspect and export tuned profiles.", no_args_is_help=True)
app.add_typer(profile_app, name="profile")


@profile_app.command("show")
def profile_show(path: str = typer.Argument(..., help="Profile JSON file.")) -> None:
    """Print a profile's tiers as a table."""
    from autoq.profile import read_profile

    _print_tiers(read_profile(path))


@profile_app.command("export")
def profile_export(
    storage: str = typer.Option(..., help="Optuna storage URL of the study."),
    study: str = typer.Option(..., help="Study name."),
    profiles_dir: str = typer.Option("profiles", help="Where to write the profile."),
) -> None:
    """Write the profile of a (distributed) study from its storage."""
    from pathlib import Path

    from autoq.tune import export_profile

    result = export_profile(storage, study, Path(profiles_dir))
    _print_tiers(result.profile)
    typer.echo(str(result.path))


@app.command()
def report(
    path: str = typer.Argument(..., help="Profile JSON file."),
    out: str | None = typer.Option(None, help="HTML file (default: beside the profile)."),
) -> None:
    """Write a self-contained HTML report: Pareto front, tier images, metrics."""
    from autoq.profile import read_profile, write_report

    written = write_report(read_profile(path), path, out)
    typer.echo(str(written))


@app.command()
def serve(
    profile: str = typer.Option(..., help="Profile file, or a directory to pick from."),
    host: str = typer.Option("127.0.0.1", help="Bind address (non-loopback needs a key)."),
    port: int = typer.Option(8000, help="TCP port."),
    max_queue: int = typer.Option(8, help="Requests waiting beyond those generating."),
    slo: float | None = typer.Option(None, help="Latency objective per request, seconds."),
    workers: int = typer.Option(1, help="Generations running at once."),
    api_key_env: str | None = typer.Option(
        None, help="Environment variable holding the API key clients must send."
    ),
    device: str | None = typer.Option(None, help="cpu or cuda[:N] (default: cuda if present)."),
) -> None:
    """Serve the adaptive runtime over HTTP (POST /generate, /tiers, /metrics, /docs)."""
    import ipaddress
    import os

    import uvicorn

    from autoq.errors import ConfigError
    from autoq.serve import create_app

    api_key = None
    if api_key_env is not None:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise ConfigError(f"--api-key-env names {api_key_env}, but it is unset or empty.")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        raise ConfigError(f"--host must be an IP address or localhost, but got {host!r}.") from None
    if not loopback and api_key is None:
        raise ConfigError(
            f"Refusing to listen on {host} without an API key; "
            "set one with --api-key-env VAR, or bind 127.0.0.1."
        )
    application = create_app(
        profile, max_queue=max_queue, slo_s=slo, workers=workers, api_key=api_key, device=device
    )
    uvicorn.run(application, host=host, port=port, log_level="warning")


def main() -> None:
    """Console entry point: an `AutoqError` becomes one line on stderr and exit code 1;
    Ctrl-C exits 130 without a traceback."""
    try:
        app()
    except AutoqError as exc:
        if _state["debug"]:
            raise
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
