"""Terminal display for runs: progress on stderr, diffs and tables on stdout (rich)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from . import tokens
from .planreport import PlanReport
from .report import NoteResult, RunReport

SMALL_MODEL_NOTE = "the bundled model is small (135M) and meant for trying the tool offline; use an API model for real work"


class RunProgress:
    """A progress callback: a rich bar on a terminal, plain lines otherwise."""

    def __init__(self, err: Console, quiet: bool = False) -> None:
        self.err = err
        self.quiet = quiet
        self.bar: Progress | None = None
        self.task: Any = None

    def __call__(self, event: str, result: NoteResult | None, report: RunReport) -> None:
        """Handle one pipeline event."""
        if event == "start":
            self._start(report)
        elif event == "note" and result is not None:
            self._note(result, report)

    def _start(self, report: RunReport) -> None:
        """Say which model is used, then start the bar."""
        self.err.print(f"model: {report.provider or report.model}", markup=False)
        if "bundled" in report.provider:
            self.err.print(f"note: {SMALL_MODEL_NOTE}", markup=False)
        for w in report.warnings:
            self.err.print(f"warning: {w}", markup=False)
        if self.err.is_terminal and not self.quiet:
            self.bar = Progress(
                TextColumn("[bold]enrich"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
                TimeElapsedColumn(), TimeRemainingColumn(), console=self.err, transient=False,
            )
            self.bar.start()
            self.task = self.bar.add_task("notes", total=report.notes_total, stats="", completed=len(report.results))

    def _note(self, r: NoteResult, report: RunReport) -> None:
        """Advance the bar, or print one plain line per finished note."""
        cost = tokens.cost(report.model, report.prompt_tokens, report.completion_tokens)
        stats = (
            f"failed {report.failed} · tokens {report.prompt_tokens + report.completion_tokens:,}"
            + (f" · ${cost:.4f}" if cost else "")
        )
        if self.bar is not None:
            self.bar.update(self.task, completed=len(report.results), stats=stats)
            if r.status == "failed":
                self.bar.console.print(f"[red]failed[/] {r.path}: {r.reason}", highlight=False)
        elif not self.quiet and (r.status != "skipped"):
            self.err.print(f"[{len(report.results)}/{report.notes_total}] {r.status} {r.path}"
                           + (f": {r.reason}" if r.reason else ""), markup=False, highlight=False)

    def stop(self) -> None:
        """Stop the bar."""
        if self.bar is not None:
            self.bar.stop()


def print_diff(out: Console, diff: str) -> None:
    """Print a unified diff with colours."""
    for line in diff.splitlines():
        style = "green" if line.startswith("+") else "red" if line.startswith("-") else "cyan" if line.startswith("@@") else None
        if line.startswith(("+++", "---")):
            style = "bold"
        out.print(Text(line, style=style or ""), soft_wrap=True)


def run_table(report: RunReport) -> Table:
    """The summary table printed after a run."""
    title = "dry run (nothing written)" if report.dry_run else "run"
    t = Table(title=f"enrich {title}: {report.model}")
    t.add_column("what")
    t.add_column("value", justify="right")
    cost = f"${report.cost_usd:.4f}" if report.cost_usd is not None else "n/a"
    for k, v in (
        ("notes", report.notes_total), ("enriched" if not report.dry_run else "would change", report.enriched),
        ("skipped", report.skipped), ("failed", report.failed), ("llm calls", report.llm_calls),
        ("cached results", report.cached), ("prompt tokens", report.prompt_tokens),
        ("completion tokens", report.completion_tokens), ("cost", cost), ("seconds", f"{report.elapsed_s:.1f}"),
    ):
        t.add_row(k, str(v))
    if report.new_tags:
        t.add_row("new tags", ", ".join(report.new_tags))
    return t


def plan_table(rep: PlanReport) -> Table:
    """The table printed by `enrich plan`."""
    t = Table(title=f"plan for {rep.model}: {rep.to_enrich} of {len(rep.rows)} notes to enrich")
    t.add_column("note")
    t.add_column("status")
    t.add_column("why")
    t.add_column("tokens", justify="right")
    for r in rep.rows:
        t.add_row(r.path, r.status, r.reason, str(r.prompt_tokens or ""), style=None if r.prompt_tokens else "dim")
    cost = f"${rep.cost_usd:.4f}" if rep.cost_usd is not None else "unknown price"
    t.caption = f"estimate: {rep.prompt_tokens:,} prompt + ~{rep.completion_tokens:,} completion tokens, {cost}"
    return t
