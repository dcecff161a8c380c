"""The `autoq` command line: parse, call the public Python API, format. No logic of its own."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from autoq.errors import AutoqError

app = typer.Typer(
    help="Measure, tune and serve quantized diffusers pipelines for this device.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
PIPED_WIDTH = 1000
"""Columns of a console that is not a terminal (CI logs, a file, ``| less``): a table takes
the width its content needs instead of wrapping at 80. ``COLUMNS`` still rules."""


def _console(*, stderr: bool = False) -> Console:
    console = Console(stderr=stderr)
    if console.is_terminal or "COLUMNS" in os.environ:
        return console
    return Console(stderr=stderr, width=PIPED_WIDTH)


console = _console()
err_console = _console(stderr=True)
"""Everything the CLI writes to stderr goes through this console: log lines and progress
bars share it, so log lines print above a live bar instead of into it."""
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
    configure(json=log_json, console=err_console)


def _safe(text: object) -> Text:
    """Profile text for the terminal: no rich markup, control characters shown escaped."""
    raw = str(text)
    return Text("".join(c if c.isprintable() else repr(c)[1:-1] for c in raw))


def _table_rows(section: str, data: dict[str, Any]) -> list[tuple[str, str]]:
    from autoq._dicts import flatten

    rows = []
    for key, value in flatten(data, section).items():
        if isinstance(value, list | tuple):
            shown = ", ".join(map(str, value)) or "-"
        elif isinstance(value, int) and not isinstance(value, bool) and key.endswith("_bytes"):
            shown = f"{value / 2**30:.1f} GiB"
        elif isinstance(value, float):
            shown = f"{value:,.1f}"
        else:
            shown = "-" if value is None else str(value)
        rows.append((key, shown))
    return rows


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
        for key, value in _table_rows(section, data.get(section) or {}):
            table.add_row(key, value)
    console.print(table)


@app.command()
def backends(
    as_json: bool = typer.Option(False, "--json", help="Print the probe results as JSON."),
    device: str = typer.Option("cpu", help="Torch device to probe, e.g. cpu or cuda:0."),
    refresh: bool = typer.Option(False, help="Probe again instead of using the cache."),
) -> None:
    """List every precision and executor and whether it really runs on this device
    (probed, cached)."""
    from autoq.backends import get_precision, probe_all
    from autoq.execution import EXECUTORS, probe_executors

    results = probe_all(device, refresh=refresh)
    executors = probe_executors(device, refresh=refresh)
    if as_json:
        body = {
            "precisions": [r.model_dump() for r in results],
            "executors": [r.model_dump() for r in executors],
        }
        typer.echo(json.dumps(body, indent=2))
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
    runs = Table(title=f"Executors on {device}")
    for column in ("executor", "usable", "error", "first call"):
        runs.add_column(column, no_wrap=True)
    for e in executors:
        runs.add_row(
            e.executor,
            "[green]yes[/]" if e.usable else "[red]no[/]",
            "-" if e.rel_error is None else f"{e.rel_error:.4f}",
            "-" if e.build_s is None else f"{e.build_s:.1f} s",
        )
    console.print(runs)
    console.print("error: output error vs eager fp32; first call: seconds to compile or convert")
    for name, executor in EXECUTORS.items():
        runs_on = executor.precisions
        stored = "any storage" if runs_on is None else "/".join(runs_on)
        console.print(f"  {name}: {executor.description}; runs on {stored}", highlight=False)
    for r in results:
        if not r.usable:
            console.print(f"[red]{r.precision}[/] unusable: {r.reason}", highlight=False)
    for e in executors:
        if not e.usable:
            console.print(f"[red]{e.executor}[/] unusable: {e.reason}", highlight=False)


@app.command()
def tune(
    model: str | None = typer.Option(
        None, help="Hub id, pipeline folder or zoo:NAME (default: the embedded shapes model)."
    ),
    scorer: str | None = typer.Option(None, help="CLIPModel folder or hub id for CLIP scores."),
    max_memory_bytes: str | None = typer.Option(
        None, "--max-memory", help="Peak memory limit, e.g. 6GB or 512MiB."
    ),
    max_latency_s: float | None = typer.Option(
        None, "--max-latency", help="Latency limit per image, seconds."
    ),
    min_clip_score: float | None = typer.Option(None, help="Absolute CLIP-score floor."),
    max_clip_drop_pct: float | None = typer.Option(
        None, "--max-clip-drop", help="Largest CLIP-score drop vs the fp32 reference, in percent."
    ),
    trials: int = typer.Option(30, help="Trials in the study (a re-run resumes up to this)."),
    timeout_s: float | None = typer.Option(
        None,
        "--timeout",
        help="Time budget of the whole tune, SECONDS (default: 10 minutes; 0: none): the "
        "search gets half of it, racing, timing and step curves the rest; what does not fit "
        "is left out (the profile says what) and a re-run finishes it.",
    ),
    sampler: str = typer.Option(
        "gp-tpe",
        help="gp-tpe (a Gaussian process and grouped multivariate TPE in turn), tpe, gp, "
        "nsga2, random or grid.",
    ),
    storage: str | None = typer.Option(
        None, help="Optuna storage URL (default: SQLite in the profiles dir)."
    ),
    study_name: str | None = typer.Option(
        None, "--study", help="Study name (default: <model>-<fingerprint>)."
    ),
    prompts: str | None = typer.Option(None, help="Text file, one prompt per line."),
    n_prompts: int = typer.Option(6, help="Images every trial is screened on (one per prompt)."),
    eval_images: int = typer.Option(
        32, help="Images of the full set that plans near the front are raced to."
    ),
    profiles_dir: str = typer.Option("profiles", help="Where profiles and studies are written."),
    tiers: int = typer.Option(4, help="Most tiers in the profile."),
    seed: int = typer.Option(0, help="Sampler and generation seed."),
    steps: str | None = typer.Option(None, help="Denoising-step range LOW:HIGH (default 5:30)."),
    step_size: int | None = typer.Option(
        None, help="Step-count granularity (default: 4+ equal steps over the range, 5 for 5:30)."
    ),
    precisions: str | None = typer.Option(
        None, help="Comma-separated precisions to search (default: all usable here)."
    ),
    schedulers: str | None = typer.Option(None, help="Comma-separated: default,dpmpp,euler,ddim."),
    protect: bool = typer.Option(True, help="Offer per-component norm/io/embedding protection."),
    executions: str | None = typer.Option(
        None,
        help="Comma-separated executors to search per component, e.g. compile,openvino "
        "(default: openvino,openvino_int8 on CPU, compile on CUDA; eager: none; "
        "`autoq backends` lists them).",
    ),
    memory_tools: str | None = typer.Option(
        None, help="Comma-separated memory tools to search on/off: vae_tiling,vae_slicing."
    ),
    max_batch: int = typer.Option(
        8,
        help="Largest batch each tier is timed at for its batch curve (1, 2, 4, ... while "
        "memory and the budget allow; 1: none).",
    ),
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
    """Search per-component precision and execution, steps and scheduler; write a
    profile of tiers.

    SIGINT (Ctrl-C) and SIGTERM write the profile from the trials done and exit 130 / 143;
    a re-run resumes the study.
    """
    options = dict(locals())  # every option but --report is a `TuneConfig` field
    del options["html"]
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from autoq.tune import TuneConfig
    from autoq.tune import tune as run_tune

    config = TuneConfig.create(**_tune_config_values(dict(options)))
    err = err_console
    progress = Progress(
        TextColumn("[bold]tune[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[best]}"),
        TimeElapsedColumn(),
        console=err,
    )
    task = progress.add_task("tune", total=None, best="loading...")
    started = {"bar": False}

    def show() -> None:
        if not started["bar"]:  # the model loaded: input errors are past, show the bar
            progress.start()
            started["bar"] = True

    def on_trial(done: int, wanted: int, best: float | None) -> None:
        show()
        label = "no feasible trial yet" if best is None else f"best feasible CLIP {best:.2f}"
        progress.update(task, completed=done, total=wanted, best=label)

    def on_phase(phase: str, done: int, total: int) -> None:
        if phase == "load":
            return
        show()
        if phase != "search":  # the search's bar is on_trial's, with the best CLIP
            progress.update(task, completed=done, total=total or None, best=f"{phase}...")

    try:
        result = run_tune(config, on_trial=on_trial, on_phase=on_phase)
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


def _tune_config_values(options: dict[str, Any]) -> dict[str, Any]:
    """`autoq tune`'s options as `TuneConfig` fields: each option is the field of its
    name, the ones given as text parsed (sizes, step ranges, lists, the prompts file)."""
    from autoq.tune import DEFAULT_TIMEOUT_S, parse_size, read_prompts

    parsers: dict[str, Callable[[Any], Any]] = {
        "max_memory_bytes": parse_size,
        "prompts": read_prompts,
        "steps": _range,
        "precisions": _csv,
        "schedulers": _csv,
        "executions": _csv,
        "memory_tools": _csv,
    }
    values = {  # an option not given leaves the field at its default
        name: parsers.get(name, _same)(value) if value is not None else None
        for name, value in options.items()
    }
    values = {name: value for name, value in values.items() if value is not None}
    values["timeout_s"] = _time_budget(options["timeout_s"], DEFAULT_TIMEOUT_S)
    return values


def _same(value: Any) -> Any:
    return value


def _csv(text: str | None) -> tuple[str, ...] | None:
    return tuple(p.strip() for p in text.split(",") if p.strip()) if text else None


def _time_budget(seconds: float | None, default: float) -> float | None:
    """``--timeout``: ``default`` when not given, none for 0."""
    from autoq.errors import ConfigError

    if seconds is not None and not seconds >= 0:
        raise ConfigError(f"--timeout takes seconds >= 0 (0: no time budget), but got {seconds:g}.")
    return default if seconds is None else seconds or None


def _range(text: str) -> tuple[int, int]:
    from autoq.errors import ConfigError

    low, sep, high = text.partition(":")
    try:
        return (int(low), int(high)) if sep else (int(low), int(low))
    except ValueError:
        raise ConfigError(f"Expected a step range such as 10:30, but got {text!r}.") from None


def _print_tiers(profile: Any) -> None:
    table = Table(title=_safe(f"{profile.model.source} on {profile.fingerprint.fingerprint_id}"))
    rows = [tier.summary() for tier in [profile.reference, *profile.tiers]]
    for column in rows[0]:
        table.add_column(_safe(column), overflow="fold")
    for row in rows:
        table.add_row(*(_safe(value) for value in row.values()))
    console.print(table)
    for line in profile.notes():
        console.print(line, highlight=False)


def _print_profile_details(profile: Any) -> None:
    """What `autoq profile show` adds to the tier table: intervals, cheapest resource,
    step curves, trials that were not measured, and how busy the machine was."""
    from autoq.profile import conditions_text, tier_details, ties_text, unmeasured_trials

    rows = [tier_details(tier) for tier in [profile.reference, *profile.tiers]]
    details = Table(title="Tier details")
    for column in rows[0]:
        details.add_column(column, overflow="fold")
    for row in rows:
        details.add_row(*(_safe(cell) for cell in row.values()))
    console.print(details)
    if ties_text(profile):
        console.print(_safe(ties_text(profile)))
    failures = unmeasured_trials(profile)
    if failures:
        failed = Table(title="Trials not measured")
        for column in ("trial", "state", "plan", "reason"):
            failed.add_column(column, overflow="fold")
        for failure in failures:
            failed.add_row(*(_safe(cell) for cell in failure))
        console.print(failed)
    size = f"{profile.width}x{profile.height}" if profile.height and profile.width else "default"
    console.print(
        _safe(
            f"size {size}, guidance {profile.guidance_scale}; "
            f"machine during the tune: {conditions_text(profile)}"
        )
    )


profile_app = typer.Typer(help="Inspect and export tuned profiles.", no_args_is_help=True)
app.add_typer(profile_app, name="profile")


@profile_app.command("show")
def profile_show(path: str = typer.Argument(..., help="Profile JSON file.")) -> None:
    """Print a profile's tiers, their quality intervals and step curves, and failed trials."""
    from autoq.profile import read_profile

    profile = read_profile(path)
    _print_tiers(profile)
    _print_profile_details(profile)


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
def export(
    profile: str = typer.Argument(..., help="Profile file, or a directory to pick from."),
    tier: str = typer.Option(..., help="Tier to export (see `autoq profile show`)."),
    out: str = typer.Option(..., help="Folder to write (new or empty)."),
    model: str | None = typer.Option(
        None, help="Load the weights from here instead of the profile's source."
    ),
    device: str | None = typer.Option(
        None, help="Device the export will load on (default: cuda if present, else cpu)."
    ),
) -> None:
    """Write a tier as a folder plain diffusers loads, and print the exact load call."""
    from autoq.profile import TIER_FILE, export_tier

    result = export_tier(profile, tier, out, model=model, device=device)
    typer.echo(
        f"exported tier {result.tier!r} to {result.folder} ({result.steps} steps, "
        f"torch_dtype={result.load.torch_dtype}; details in {TIER_FILE}); load it with:",
        err=True,
    )
    typer.echo(result.code, nl=False)


@app.command()
def serve(
    profile: str = typer.Option(..., help="Profile file, or a directory to pick from."),
    model: str | None = typer.Option(
        None, help="With a directory of several models' profiles: the model (source or hash)."
    ),
    host: str = typer.Option("127.0.0.1", help="Bind address (non-loopback needs a key)."),
    port: int = typer.Option(8000, help="TCP port."),
    max_queue: int = typer.Option(8, help="Requests waiting beyond those generating."),
    slo: float | None = typer.Option(None, help="Latency objective per request, seconds."),
    workers: int = typer.Option(1, help="Generations running at once."),
    max_batch: int = typer.Option(
        1, help="Compatible requests run as one pipeline call, each with its own seed."
    ),
    api_key_env: str | None = typer.Option(
        None, help="Environment variable holding the API key clients must send."
    ),
    device: str | None = typer.Option(None, help="cpu or cuda[:N] (default: cuda if present)."),
    allow_mismatch: bool = typer.Option(
        False, "--allow-mismatch", help="Serve a profile tuned on another device (warned)."
    ),
    warm_all: bool = typer.Option(
        False, "--warm-all", help="Generate once on every tier before /readyz says ready."
    ),
    max_connections: int = typer.Option(64, help="Open connections beyond this get 503."),
    header_timeout: float = typer.Option(10.0, help="Seconds to receive a request's headers."),
    body_timeout: float = typer.Option(10.0, help="Seconds to receive a request's body."),
    drain_timeout: int = typer.Option(
        30, help="On SIGTERM/SIGINT, seconds to let in-flight requests finish."
    ),
    tier: list[str] | None = typer.Option(
        None,
        help="Serve only this tier (repeatable): its components are built at start and "
        "the model's full-precision weights it does not use are released.",
    ),
    worker_process: bool = typer.Option(
        True,
        "--worker-process/--in-process",
        help="Generate in a worker process, where the HTTP front end cannot slow it.",
    ),
) -> None:
    """Serve the adaptive runtime over HTTP (POST /generate, /tiers, /metrics, /docs)."""
    import ipaddress
    import os

    from autoq.errors import ConfigError
    from autoq.serve import create_app, run_server

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
    if allow_mismatch:
        typer.echo(
            "WARNING: --allow-mismatch: the profile may have been tuned on another device; "
            "its latencies and memory figures may not hold here.",
            err=True,
        )
    application = create_app(
        profile,
        max_queue=max_queue,
        slo_s=slo,
        workers=workers,
        api_key=api_key,
        device=device,
        model=model,
        allow_mismatch=allow_mismatch,
        warm_all=warm_all,
        body_timeout_s=body_timeout,
        max_batch=max_batch,
        tiers=tier or None,
        worker_process=worker_process,
    )
    run_server(
        application,
        host=host,
        port=port,
        header_timeout_s=header_timeout,
        max_connections=max_connections,
        drain_s=drain_timeout,
    )


def _one_line(text: str) -> str:
    """An error message as one printable line (library messages span lines; SQLAlchemy
    appends a "Background on this error" link; profile text may hold control codes)."""
    lines = [line.strip() for line in text.splitlines()]
    kept = [line for line in lines if line and not line.startswith("(Background on this error")]
    joined = " ".join(kept)
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in joined)


def _message(exc: BaseException) -> str:
    if isinstance(exc, AutoqError):
        return str(exc)
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        return (
            f"{exc.strerror or exc}{where}; check the path, its permissions and free space "
            "(--debug shows the traceback)."
        )
    return (
        f"unexpected {type(exc).__name__}: {exc}; this is a bug in autoq or a library it "
        "uses: re-run with --debug for the traceback and report it."
    )


def main() -> None:
    """Console entry point: any failure becomes one line on stderr (what went wrong and
    what to do) and exit code 1; ``--debug`` shows the full traceback instead. Ctrl-C
    exits 130 without a traceback."""
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:
        if _state["debug"]:
            raise
        typer.echo(f"error: {_one_line(_message(exc))}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
