"""`enrich run --batch`, `enrich batch status` and `enrich batch collect` (the Batch API)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Optional

import typer

from .cli import BaseUrlOpt, JsonOpt, KeyEnvOpt, ModelOpt, VaultArg, err, fail, out, print_json
from .errors import EnrichError

if TYPE_CHECKING:  # the batch core pulls in openai: import it only when a batch command runs
    from .pipeline import RunOptions

batch_app = typer.Typer(no_args_is_help=True, help="Follow and collect Batch API submissions (made with `enrich run --batch`).")
IdArg = typer.Argument(None, help="Batch id (default: the newest submitted from this vault).", show_default=False)


def register(cli: typer.Typer) -> None:
    """Add the `batch` command group to the CLI."""
    cli.add_typer(batch_app, name="batch")


def _core() -> ModuleType:
    """The batch core, imported on first use so other commands start without openai."""
    from . import batch

    return batch


def _given(**kw: Any) -> dict[str, Any]:
    """Flags given on the command line."""
    return {k: v for k, v in kw.items() if v is not None}


def submit(paths: list[Path], flags: dict[str, Any], options: RunOptions, as_json: bool) -> None:
    """`enrich run --batch`: submit, print the batch id (stdout) and what to do next (stderr)."""
    try:
        res = _core().submit(paths, flags, options)
    except EnrichError as exc:
        fail(exc)
    if as_json:
        print_json(asdict(res))
    elif res.batch_id is None:
        err.print(f"nothing to submit ({res.cached} cached, {res.skipped} skipped, {res.failed} failed)", markup=False)
    else:
        out.print(res.batch_id, markup=False)
        err.print(f"submitted {res.requests} request(s) as batch {res.batch_id} ({res.status}); "
                  f"follow with `enrich batch status`, apply with `enrich batch collect`", markup=False)
    raise typer.Exit(1 if res.failed else 0)


@batch_app.command("status")
def status(
    vault: Optional[Path] = VaultArg,
    batch_id: Optional[str] = IdArg,
    base_url: Optional[str] = BaseUrlOpt,
    api_key_env: Optional[str] = KeyEnvOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Show a batch's status and request counts.

    Example: enrich batch status ~/vault
    """
    try:
        st = _core().status(vault or Path.cwd(), batch_id, _given(base_url=base_url, api_key_env=api_key_env))
    except EnrichError as exc:
        fail(exc)
    if as_json:
        print_json(asdict(st))
    else:
        done = " (collected)" if st.collected else ""
        out.print(f"{st.id}: {st.status}{done}: {st.completed} completed, {st.failed} failed of {st.total}", markup=False)


@batch_app.command("collect")
def collect(
    vault: Optional[Path] = VaultArg,
    batch_id: Optional[str] = IdArg,
    no_retry: bool = typer.Option(False, "--no-retry", help="Report failed or invalid items instead of calling again."),
    model: Optional[str] = ModelOpt,
    base_url: Optional[str] = BaseUrlOpt,
    api_key_env: Optional[str] = KeyEnvOpt,
    concurrency: Optional[int] = typer.Option(None, "--concurrency", "-j", help="Retried calls in flight at once."),
    time_limit: Optional[float] = typer.Option(None, "--time-limit", help="Stop retrying after this many seconds."),
    as_json: bool = JsonOpt,
) -> None:
    """Download a finished batch and apply it like `enrich run` (validate, cache, rewrite, journal).

    Example: enrich batch collect ~/vault
    """
    from .display import RunProgress, run_table

    flags = _given(model=model, base_url=base_url, api_key_env=api_key_env, concurrency=concurrency, time_limit=time_limit)
    progress = RunProgress(err, quiet=as_json)
    try:
        res = _core().collect(vault or Path.cwd(), batch_id, flags, retry=not no_retry, progress=progress)
    except EnrichError as exc:
        progress.stop()
        fail(exc)
    progress.stop()
    report = res.report
    if as_json:
        print_json({"batch_id": res.batch_id, "status": res.status, "from_batch": res.from_batch,
                    "invalid": [{"path": p, "reason": r} for p, r in res.invalid], "changed": res.changed,
                    **report.to_json()})
    else:
        for r in report.results:
            if r.status == "failed":
                err.print(f"failed: {r.path}: {r.reason}", markup=False, highlight=False)
        err.print(f"batch {res.batch_id} ({res.status}): {res.from_batch} valid answer(s), {len(res.invalid)} invalid, "
                  f"{len(res.changed)} note(s) changed since submission; {report.llm_calls} call(s) made", markup=False)
        out.print(run_table(report))
    if report.interrupted:
        err.print(f"interrupted: {report.enriched} notes written, {report.left} left; run again to continue", markup=False)
        raise typer.Exit(130)
    raise typer.Exit(1 if report.failed else 0)
