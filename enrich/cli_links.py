"""Commands for links and tags users can trust: `links`, `tags`, `eval` (call register(cli))."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, NoReturn, Optional

import typer
from rich.table import Table

from .errors import EnrichError, UsageError

if TYPE_CHECKING:
    from .vault import Vault

VaultArg = typer.Argument(None, help="Vault folder (default: current folder).", show_default=False)
JsonOpt = typer.Option(False, "--json", help="Print machine-readable JSON on stdout.")
DryRunOpt = typer.Option(False, "--dry-run", help="Show what would change; write nothing.")


def _base() -> ModuleType:
    """The main CLI module (imported late: cli.py imports this module)."""
    from . import cli as base

    return base


def _fail(exc: EnrichError) -> NoReturn:
    """One-line error on stderr, exit with the error's code."""
    from .cli import fail

    fail(exc)


def _open(vault: Optional[Path]) -> "Vault":
    """Scan the vault a path belongs to."""
    from .api import open_vault

    path = vault or Path.cwd()
    if path.is_file():
        raise UsageError(f"{path}: takes a vault folder, not a file")
    return open_vault(path)[0]


def links(
    vault: Optional[Path] = VaultArg,
    fix: bool = typer.Option(False, "--fix", help="Rewrite dangling links to the note they meant, when confident."),
    dry_run: bool = DryRunOpt,
    as_json: bool = JsonOpt,
) -> None:
    """List dangling links and the note each one meant; --fix rewrites the confident ones (undo restores).

    Exit 1 while dangling links remain. Example: enrich links ~/vault --fix --dry-run
    """
    from .linkfix import fix_links

    try:
        report = fix_links(_open(vault), fix=fix, dry_run=dry_run)
    except EnrichError as exc:
        _fail(exc)
    base = _base()
    if as_json:
        base.print_json(report.to_json())
    else:
        _print_links(base, report)
    raise typer.Exit(1 if report.remaining else 0)


def _print_links(base: Any, report: Any) -> None:
    """Human output of `enrich links`."""
    verb = "would fix" if report.dry_run or not report.fix else "fixed"
    for d in report.links:
        where = f"{d.path}:{d.line}: {d.text}"
        if d.new_text is not None:
            base.out.print(f"{where} -> {d.new_text} ({d.match.reason}, {d.match.score:.2f})", markup=False)
        else:
            base.out.print(f"{where}: {d.why_not}", markup=False, style="dim")
    for path, reason in report.skipped:
        base.err.print(f"left alone {path}: {reason}", markup=False)
    fixable = sum(1 for d in report.links if d.new_text is not None)
    summary = f"{len(report.links)} dangling link(s); {verb if report.fix else 'can fix'} {fixable}"
    base.err.print(f"{summary}; {len(report.remaining)} remain", markup=False)


def tags(
    vault: Optional[Path] = VaultArg,
    merge: bool = typer.Option(False, "--merge", help="Rewrite variants to the most-used spelling and remember them."),
    dry_run: bool = DryRunOpt,
    as_json: bool = JsonOpt,
) -> None:
    """List near-duplicate tags (case, separator, plural variants); --merge unifies them (undo restores).

    Exit 1 while near-duplicates remain. Example: enrich tags ~/vault --merge --dry-run
    """
    from .tags import TagMergeReport, TagVocabulary, merge_vault_tags

    try:
        v = _open(vault)
        vocab = TagVocabulary.load(v)
        report = merge_vault_tags(v, vocab, dry_run=dry_run) if merge else TagMergeReport(vocab.near_duplicates())
    except EnrichError as exc:
        _fail(exc)
    base = _base()
    if as_json:
        base.print_json(report.to_json())
    else:
        _print_tags(base, report, merge)
    remain = report.groups and (not merge or dry_run or report.skipped)
    raise typer.Exit(1 if remain else 0)


def _print_tags(base: Any, report: Any, merge: bool) -> None:
    """Human output of `enrich tags`."""
    if not report.groups:
        base.out.print("no near-duplicate tags", markup=False)
        return
    table = Table(title=f"{len(report.groups)} near-duplicate tag group(s)")
    table.add_column("canonical")
    table.add_column("variants (notes)")
    table.add_column("notes", justify="right")
    for g in report.groups:
        table.add_row(g.canonical, ", ".join(f"{s} ({n})" for s, n in g.spellings.items() if s != g.canonical),
                      str(g.total))
    base.out.print(table)
    for path, reason in report.skipped:
        base.err.print(f"left alone {path}: {reason}", markup=False)
    if merge:
        verb = "would rewrite" if report.dry_run else "rewrote"
        base.err.print(f"{verb} tags in {len(report.changed)} note(s)", markup=False)


def evaluate(
    golden: Optional[Path] = typer.Option(None, "--golden", help="Golden folder (default: fixtures/golden)."),
    k: int = typer.Option(15, "--k", min=1, help="Candidates per note."),
    as_json: bool = JsonOpt,
) -> None:
    """Measure candidate recall@K, link validity and tag reuse on a golden set. Makes no LLM call.

    Exit 1 when a candidate does not resolve. Example: enrich eval --k 15 --json
    """
    from .evaluate import default_golden, run_eval

    try:
        report = run_eval(golden or default_golden(), k)
    except EnrichError as exc:
        _fail(exc)
    base = _base()
    if as_json:
        base.print_json(report.to_json())
    else:
        table = Table(title=f"golden set: {report.notes} notes, K={report.k}")
        table.add_column("metric")
        table.add_column("value", justify="right")
        for name, value in report.summary().items():
            table.add_row(name, f"{value:.3f}" if isinstance(value, float) else str(value))
        base.out.print(table)
    raise typer.Exit(0 if report.link_validity == 1.0 else 1)


def register(cli: typer.Typer) -> None:
    """Add the `links`, `tags` and `eval` commands to a Typer app."""
    cli.command("links")(links)
    cli.command("tags")(tags)
    cli.command("eval")(evaluate)
