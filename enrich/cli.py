"""The command line: each command parses options, calls one core function, prints."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable, NoReturn, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from . import api as core
from .errors import EnrichError

cli = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Enrich a Markdown vault with an LLM: key points, tags and related links.",
    pretty_exceptions_enable=False,
)
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def fail(exc: EnrichError) -> NoReturn:
    """Print one line to stderr and exit with the error's code."""
    err.print(Text.assemble(("error: ", "bold red"), str(exc)))
    raise typer.Exit(exc.exit_code)


def _item_encoder() -> Callable[[Any], str]:
    """JSON for one item, as json.dumps writes it; flat string mappings (check's problems) take a short cut."""
    general = json.JSONEncoder(ensure_ascii=False).encode
    quote = json.encoder.encode_basestring

    def encode(item: Any) -> str:
        if type(item) is dict and all(type(k) is str and type(v) is str for k, v in item.items()):
            return "{" + ", ".join(f"{quote(k)}: {quote(v)}" for k, v in item.items()) + "}"
        return general(item)

    return encode


def print_json(data: Any) -> None:
    """Print machine output on stdout: one line per item of a top-level list (C encoder, fast for big reports)."""
    if not isinstance(data, dict):
        sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")
        return
    encode = _item_encoder()
    parts = []
    for key, value in data.items():
        head = f"  {encode(key)}: "
        if isinstance(value, list) and value:
            items = ",\n".join("    " + encode(item) for item in value)
            parts.append(f"{head}[\n{items}\n  ]")
        else:
            parts.append(head + encode(value))
    sys.stdout.write("{\n" + ",\n".join(parts) + "\n}\n")


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
        if report.problems:  # plain lines: rich would spend seconds on a large vault's thousands of them
            out.file.write("".join(f"{p.path}: {p.kind}: {p.detail}\n" for p in report.problems))
            out.file.flush()
        table = Table(title=f"{report.notes} notes checked")
        table.add_column("problem")
        table.add_column("count", justify="right")
        for kind, n in report.summary()["by_kind"].items():
            table.add_row(kind, str(n), style=None if n else "dim")
        out.print(table)
    raise typer.Exit(1 if report.problems else 0)


def _flags(**kw: Any) -> dict[str, Any]:
    """Settings given on the command line (None = not given)."""
    return {k: v for k, v in kw.items() if v is not None}


PathsArg = typer.Argument(None, help="Vault folder or note files (default: current folder).", show_default=False)
ModelOpt = typer.Option(None, "--model", "-m", help="Model name (env ENRICH_MODEL).")
BaseUrlOpt = typer.Option(None, "--base-url", help="OpenAI-compatible endpoint (env ENRICH_BASE_URL).")
ProviderOpt = typer.Option(None, "--provider", help="openai or local (default: openai if a key/URL is set, else local).")
KeyEnvOpt = typer.Option(None, "--api-key-env", help="Name of the env var holding the API key (default OPENAI_API_KEY).")
LangOpt = typer.Option(None, "--lang", help="zh, en or auto (the language of the note's headings).")
StaleOpt = typer.Option(False, "--stale", help="Also re-enrich notes whose content, prompt or model changed.")
ForceOpt = typer.Option(False, "--force", help="Re-enrich everything, including sections edited by hand.")
PromptsOpt = typer.Option(None, "--prompts", help="Folder with your own system.{zh,en}.md and user.{zh,en}.md.")
MaxInOpt = typer.Option(None, "--max-input-tokens", help="Article budget in tokens (default 3000).")


@cli.command()
def run(
    paths: Optional[list[Path]] = PathsArg,
    dry_run: bool = typer.Option(False, "--dry-run", help="Call the model, show diffs, write nothing."),
    stale: bool = StaleOpt,
    force: bool = ForceOpt,
    model: Optional[str] = ModelOpt,
    base_url: Optional[str] = BaseUrlOpt,
    provider: Optional[str] = ProviderOpt,
    api_key_env: Optional[str] = KeyEnvOpt,
    lang: Optional[str] = LangOpt,
    concurrency: Optional[int] = typer.Option(None, "--concurrency", "-j", help="Notes in flight at once (default 8)."),
    max_input_tokens: Optional[int] = MaxInOpt,
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", help="Max completion tokens per call (default 700)."),
    max_reasks: Optional[int] = typer.Option(None, "--max-reasks", help="Re-asks on invalid output (default 2)."),
    max_new_tags: Optional[int] = typer.Option(None, "--max-new-tags", help="New tags allowed per note (default 2)."),
    prompts: Optional[Path] = PromptsOpt,
    time_limit: Optional[float] = typer.Option(None, "--time-limit", help="Stop the batch after this many seconds."),
    rpm: Optional[int] = typer.Option(None, "--rpm", help="Requests per minute allowed (default: learnt from the server)."),
    tpm: Optional[int] = typer.Option(None, "--tpm", help="Tokens per minute allowed (default: learnt from the server)."),
    batch: bool = typer.Option(False, "--batch", help="Submit through the Batch API; collect with `enrich batch collect`."),
    as_json: bool = JsonOpt,
) -> None:
    """Write key points, tags and related links into notes that need them (one validated LLM call per note).

    Example: enrich run ~/vault --dry-run   then   enrich run ~/vault
    """
    from .display import RunProgress, print_diff, run_table
    from .pipeline import RunOptions

    flags = _flags(
        model=model, base_url=base_url, provider=provider, api_key_env=api_key_env, lang=lang,
        concurrency=concurrency, max_input_tokens=max_input_tokens, max_output_tokens=max_tokens,
        max_reasks=max_reasks, max_new_tags=max_new_tags, prompts_dir=prompts, time_limit=time_limit,
        rpm=rpm, tpm=tpm,
    )
    if batch:
        from .cli_batch import submit

        submit(paths or [], flags, RunOptions(stale=stale, force=force), as_json)
        return
    progress = RunProgress(err, quiet=as_json)
    try:
        report = core.run(paths or [], flags, RunOptions(dry_run=dry_run, stale=stale, force=force), progress)
    except EnrichError as exc:
        progress.stop()
        fail(exc)
    progress.stop()
    if as_json:
        print_json(report.to_json())
    else:
        for r in report.results:
            if r.diff:
                print_diff(out, r.diff)
        for r in report.results:
            if r.status == "failed":
                err.print(f"failed: {r.path}: {r.reason}", markup=False, highlight=False)
        out.print(run_table(report))
    if report.interrupted:
        err.print(f"interrupted: {report.enriched} notes written, {report.left} left; run again to continue", markup=False)
        raise typer.Exit(130)
    raise typer.Exit(1 if report.failed else 0)


@cli.command()
def plan(
    paths: Optional[list[Path]] = PathsArg,
    stale: bool = StaleOpt,
    force: bool = ForceOpt,
    model: Optional[str] = ModelOpt,
    base_url: Optional[str] = BaseUrlOpt,
    provider: Optional[str] = ProviderOpt,
    api_key_env: Optional[str] = KeyEnvOpt,
    lang: Optional[str] = LangOpt,
    max_input_tokens: Optional[int] = MaxInOpt,
    prompts: Optional[Path] = PromptsOpt,
    as_json: bool = JsonOpt,
) -> None:
    """List what `enrich run` would do and why, with a token and cost estimate. Makes no LLM call.

    Example: enrich plan ~/vault --model gpt-4o-mini
    """
    from .display import plan_table
    from .pipeline import RunOptions

    flags = _flags(model=model, base_url=base_url, provider=provider, api_key_env=api_key_env, lang=lang,
                   max_input_tokens=max_input_tokens, prompts_dir=prompts)
    try:
        rep = core.plan(paths or [], flags, RunOptions(stale=stale, force=force))
    except EnrichError as exc:
        fail(exc)
    if as_json:
        print_json(rep.to_json())
    else:
        for w in rep.warnings:
            err.print(f"warning: {w}", markup=False)
        out.print(plan_table(rep))


@cli.command()
def undo(vault: Optional[Path] = VaultArg, as_json: bool = JsonOpt) -> None:
    """Restore every file the last applying run changed (files edited since are left alone).

    Example: enrich undo ~/vault
    """
    try:
        rep = core.undo(vault or Path.cwd())
    except EnrichError as exc:
        fail(exc)
    if as_json:
        print_json({"run": rep.run, "restored": rep.restored, "removed": rep.removed,
                    "skipped": [{"path": p, "reason": r} for p, r in rep.skipped]})
    else:
        for p in rep.restored:
            out.print(f"restored {p}", markup=False)
        for p in rep.removed:
            out.print(f"removed {p}", markup=False)
        for p, r in rep.skipped:
            err.print(f"left alone {p}: {r}", markup=False)
    raise typer.Exit(1 if rep.skipped else 0)


def _register_commands() -> None:
    """Add the command groups that live in their own modules."""
    from . import cli_batch, cli_ingest, cli_links

    cli_ingest.register(cli)
    cli_links.register(cli)
    cli_batch.register(cli)


_register_commands()


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
