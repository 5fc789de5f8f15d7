"""The command line: each command parses options, calls one core function, prints."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, NoReturn, Optional

import typer
from rich.console import Console
from rich.table import Table

from . import api as core
from .errors import EnrichError

cli = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Enrich a Markdown vault with an LLM: key points, tags and related links.",
    pretty_exceptions_enable=False,
)
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False)


def fail(exc: EnrichError) -> NoReturn:
    """Print one line to stderr and exit with the error's code."""
    err.print(f"[bold red]error:[/] {exc}", markup=True, highlight=False)
    raise typer.Exit(exc.exit_code)


def print_json(data: Any) -> None:
    """Print machine output on stdout."""
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")


@cli.callback()
def _root(
    version: bool = typer.Option(False, "--version", help="Show the version and exit.", is_eager=True),
) -> None:
    """Enrich a Markdown vault with an LLM: key points, tags and related links."""
    if version:
        from importlib.metadata import version as pkg_version

        out.print(f"enrich {pkg_version('enrich')}", markup=False)
        raise typer.Exit(0)


VaultArg = typer.Argument(None, help="Vault folder (default: current folder).", show_default=False)
JsonOpt = typer.Option(False, "--json", help="Print machine-readable JSON on stdout.")


@cli.command()
def check(vault: Optional[Path] = VaultArg, as_json: bool = JsonOpt) -> None:
    """Find placeholders, mojibake, unusable content, dangling links and broken files. Never writes.

    Example: enrich check ~/vault --json
    """
    try:
        report = core.check(vault or Path.cwd())
    except EnrichError as exc:
        fail(exc)
    if as_json:
        print_json(report.to_json())
    else:
        for p in report.problems:
            out.print(f"{p.path}: {p.kind}: {p.detail}", markup=False)
        table = Table(title=f"{report.notes} notes checked")
        table.add_column("problem")
        table.add_column("count", justify="right")
        for kind, n in report.summary()["by_kind"].items():
            table.add_row(kind, str(n), style=None if n else "dim")
        out.print(table)
    raise typer.Exit(1 if report.problems else 0)


def main() -> None:
    """Console-script entry point."""
    try:
        cli()
    except EnrichError as exc:  # pragma: no cover - commands catch their own
        err.print(f"error: {exc}", markup=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted", markup=False)
        sys.exit(130)
