"""The `enrich ingest` command: feeds into notes (wired into the CLI by `register`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from .errors import EnrichError


def register(cli: typer.Typer) -> None:
    """Add the `ingest` command to the CLI app."""
    cli.command("ingest")(ingest)


def ingest(
    sources: list[str] = typer.Argument(..., help="Feed URLs, feed files, OPML files or JSON feed lists.", show_default=False),
    vault: Optional[Path] = typer.Option(None, "--vault", help="Vault folder (default: the vault around the current folder)."),
    folder: str = typer.Option("inbox", "--folder", help="Folder inside the vault for the new notes."),
    enrich: bool = typer.Option(False, "--enrich", help="Then run the LLM enrichment (`enrich run`) on the new notes."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be created; write nothing (not even feed state)."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="At most N new notes per feed (the newest)."),
    full_text: bool = typer.Option(
        False, "--full-text", help="Fetch the article page when the feed gives only a summary (pip install 'enrich\\[fulltext]')."
    ),
    lang: Optional[str] = typer.Option(None, "--lang", help="Headings language: zh, en or auto (the vault's own; zh if unsure)."),
    timeout: float = typer.Option(20.0, "--timeout", min=1, help="Seconds allowed per download."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="With --enrich: model name (env ENRICH_MODEL)."),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="With --enrich: OpenAI-compatible endpoint."),
    provider: Optional[str] = typer.Option(None, "--provider", help="With --enrich: openai or local."),
    api_key_env: Optional[str] = typer.Option(None, "--api-key-env", help="With --enrich: env var holding the key."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON on stdout."),
) -> None:
    """Turn new feed entries into notes in the vault's format (deduplicated, polite, undoable).

    Sources: http(s) feed URLs, RSS/Atom/RDF files, OPML files, or a JSON list
    {"feeds": [{"id", "title", "url", "category"}]}. Entries already in the vault (same
    GUID or link) are skipped; `enrich undo` removes the notes of the last ingest.

    Example: enrich ingest https://karpathy.bearblog.dev/feed/ feeds.json --vault ~/vault --limit 5
    """
    from .cli import err, fail, out, print_json
    from .config import find_vault_root, load_settings
    from .feeds import IngestOptions
    from .feeds import ingest as run_ingest

    def progress(kind: str, message: str) -> None:
        """Warnings and failures on stderr as they happen; per-feed lines unless --json."""
        if kind == "warning":
            err.print(f"warning: {message}", markup=False, highlight=False)
        elif kind == "failed":
            err.print(f"failed: {message}", markup=False, highlight=False)
        elif kind == "feed" and not as_json:
            err.print(message, markup=False, highlight=False, style="dim")

    try:
        root = vault.expanduser().resolve() if vault is not None else find_vault_root(Path.cwd())
        flags = {k: v for k, v in {"lang": lang, "model": model, "base_url": base_url, "provider": provider,
                                   "api_key_env": api_key_env}.items() if v is not None}
        settings = load_settings(root, flags)
        if enrich and not dry_run:  # fail before writing anything when no model could enrich the notes
            from .providers import resolve_provider_name

            resolve_provider_name(settings)
        opts = IngestOptions(folder=folder, dry_run=dry_run, limit=limit, full_text=full_text,
                             lang=settings.lang, timeout=timeout)
        report = run_ingest(sources, root, opts, progress)
        enriched = _enrich_new(report.paths, flags, as_json, root) if enrich and report.paths else None
    except EnrichError as exc:
        fail(exc)
    except Exception as exc:  # never a traceback: one line, exit 1
        fail(EnrichError(f"ingest stopped: {type(exc).__name__}: {exc}"))
    if as_json:
        print_json({**report.to_json(), **({"enrich": enriched} if enriched is not None else {})})
    else:
        verb = "would create" if dry_run else "created"
        for c in report.created:
            out.print(f"{verb} {c['path']}", markup=False, highlight=False)
        seen = sum(1 for s in report.skipped if s["reason"].startswith("already"))
        out.print(
            f"{len(report.created)} {verb}, {len(report.skipped)} skipped ({seen} already known), "
            f"{len(report.failed)} failed, from {len(report.feeds)} feed(s)"
            + (" (dry run: nothing written)" if dry_run else ""),
            markup=False, highlight=False,
        )
        if enrich and dry_run:
            err.print("note: --enrich does nothing in a dry run", markup=False)
    failed_enrich = bool(enriched and enriched.get("failed"))
    raise typer.Exit(1 if report.failed or failed_enrich else 0)


def _enrich_new(paths: list[Path], flags: dict[str, Any], as_json: bool, root: Path) -> dict[str, Any]:
    """Run the enrichment pipeline on the notes ingest just created; return its JSON report."""
    from .api import run
    from .cli import err, out
    from .display import RunProgress, run_table

    progress = RunProgress(err, quiet=as_json)
    try:
        report = run(paths, flags, None, progress, vault_root=root)
    finally:
        progress.stop()
    if not as_json:
        for r in report.results:
            if r.status == "failed":
                err.print(f"failed: {r.path}: {r.reason}", markup=False, highlight=False)
        out.print(run_table(report))
    data: dict[str, Any] = report.to_json()
    return data
