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


def main() -> None:
    """Console entry point: an `AutoqError` becomes one line on stderr and exit code 1."""
    try:
        app()
    except AutoqError as exc:
        if _state["debug"]:
            raise
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
