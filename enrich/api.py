"""The library facade: one function per command, no printing, no CLI framework."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from .check import CheckReport, check_vault
from .checkscan import PARALLEL_MIN_NOTES, check_files, workers
from .config import Settings, find_vault_root, load_settings
from .errors import NoteError, ProviderUnavailable, UsageError
from .journal import UndoReport, undo_last
from .providers import (
    DEFAULT_OPENAI_MODEL, check_api_settings, describe, make_provider, resolve_provider_name, tuned_settings,
)
from .providers.base import Provider
from .roles import RoleTable
from .vault import Vault, VaultNote, iter_note_files, load_note, roles_for, scan_vault, vault_frequencies

if TYPE_CHECKING:  # the pipeline pulls in tiktoken and openai: import it only when running
    from .pipeline import Progress as PipelineProgress
    from .pipeline import RunOptions
    from .planreport import PlanReport
    from .report import NoteResult, RunReport

Progress = Callable[[int, int], None]


def open_vault(path: Path, flags: Mapping[str, Any] | None = None) -> tuple[Vault, Settings, RoleTable]:
    """Find the vault root for a path, load settings and scan every note."""
    root, settings, roles = _settings(path, flags)
    return scan_vault(root, roles), settings, roles


def _settings(path: Path, flags: Mapping[str, Any] | None = None) -> tuple[Path, Settings, RoleTable]:
    """The vault root for a path, its settings and its role table."""
    if not path.exists():
        raise UsageError(f"{path}: no such file or folder")
    root = find_vault_root(path)
    settings = load_settings(root, flags)
    try:
        roles = roles_for(settings.roles, settings.placeholder_patterns)
    except (ValueError, re.error) as exc:  # unknown role or bad regex in config
        raise UsageError(f"invalid [roles] or placeholder_patterns in enrich.toml: {exc}") from exc
    return root, settings, roles


def check(path: Path, progress: Progress | None = None) -> CheckReport:
    """Check a vault for problems; never writes."""
    if path.is_file():
        raise UsageError(f"{path}: `enrich check` takes a vault folder, not a file")
    root, settings, roles = _settings(path)
    files = list(iter_note_files(root))
    n = workers()
    if n > 1 and len(files) >= PARALLEL_MIN_NOTES:  # large vaults: parse in parallel processes
        try:
            return check_files(root, files, roles, settings.min_content_chars, n, progress)
        except OSError:  # the system refused to fork (memory, process limits): check serially
            pass
    vault = scan_vault(root, roles, files)
    return check_vault(vault, roles, min_chars=settings.min_content_chars, progress=progress)


def select_notes(vault: Vault, paths: Sequence[Path], roles: RoleTable) -> list[VaultNote]:
    """The notes named by paths (files, or folders inside the vault), in vault order."""
    if not paths:
        return list(vault.notes)
    by_path = {vn.path.resolve(): vn for vn in vault.notes}
    chosen: dict[Path, VaultNote] = {}
    for p in paths:
        rp = p.resolve()
        if rp.is_dir():
            chosen.update({k: v for k, v in by_path.items() if k == rp or rp in k.parents})
        elif rp in by_path:
            chosen[rp] = by_path[rp]
        else:
            vn = _load_extra(vault, rp, roles)
            if vn is not None:
                chosen[rp] = vn
    return sorted(chosen.values(), key=lambda v: v.rel)


def _load_extra(vault: Vault, path: Path, roles: RoleTable) -> VaultNote | None:
    """Load a note file the vault scan skipped (e.g. a .txt note); record its error if any."""
    try:
        vn = load_note(path, vault.root, roles, vault_frequencies(v.note.text for v in vault.notes))
    except NoteError as exc:
        vault.errors.append(exc)
        return None
    vault.add(vn)
    return vn


def _open_for_run(
    paths: Sequence[Path], flags: Mapping[str, Any], vault_root: Path | None = None
) -> tuple[Vault, Settings, RoleTable, list[VaultNote]]:
    """Open the vault the paths belong to (or vault_root) and select the notes."""
    paths = list(paths) or [Path.cwd()]
    for p in paths:
        if not p.exists():
            raise UsageError(f"{p}: no such file or folder")
    vault, settings, roles = open_vault(vault_root or paths[0], flags)
    return vault, settings, roles, select_notes(vault, paths, roles)


def model_for(settings: Settings) -> tuple[str, Callable[[], Provider], str]:
    """The model name (for provenance and cache keys), a provider factory, and a description.

    Settings are checked at once; an API provider (and the openai SDK, slow to import) is only built when
    the factory is first called, so a run with nothing to ask never pays for it.
    """
    if resolve_provider_name(settings) == "local":
        provider = make_provider(settings)
        return provider.model, lambda: provider, describe(provider)
    check_api_settings(settings)
    model = settings.model or DEFAULT_OPENAI_MODEL
    built: list[Provider] = []

    def factory() -> Provider:
        if not built:
            built.append(make_provider(settings))
        return built[0]

    return model, factory, f"{model} via openai"


def run(
    paths: Sequence[Path],
    flags: Mapping[str, Any] | None = None,
    options: "RunOptions | None" = None,
    progress: "PipelineProgress | None" = None,
    vault_root: Path | None = None,
) -> "RunReport":
    """Enrich notes (or, with options.dry_run, compute diffs without writing); vault_root overrides discovery."""
    from .pipeline import Pipeline, RunOptions, run_sync

    vault, settings, roles, notes = _open_for_run(paths, flags or {}, vault_root)
    settings = tuned_settings(settings)
    model, factory, description = model_for(settings)
    pipe = Pipeline(vault, settings, roles, factory, model, options or RunOptions(), progress)
    pipe.report.provider = description
    report = run_sync(pipe, notes)
    report.results += [_error_result(vault, e) for e in vault.errors if _named(e.path, paths)]
    report.failed += sum(1 for e in vault.errors if _named(e.path, paths))
    return report


def _named(path: Path, paths: Sequence[Path]) -> bool:
    """True when a failing file was among the paths asked for."""
    rp = path.resolve()
    return not paths or any(rp == p.resolve() or p.resolve() in rp.parents for p in paths)


def _error_result(vault: Vault, exc: NoteError) -> "NoteResult":
    """A failed result for a file that could not be read or parsed."""
    from .report import NoteResult

    return NoteResult(str(exc.path), "failed", exc.reason)


def plan(
    paths: Sequence[Path], flags: Mapping[str, Any] | None = None, options: "RunOptions | None" = None
) -> "PlanReport":
    """What `run` would do, with token and cost estimates; no model call, no write."""
    from .pipeline import Pipeline, RunOptions
    from .planreport import PlanReport

    vault, settings, roles, notes = _open_for_run(paths, flags or {})
    try:
        settings = tuned_settings(settings)
        model, _, _ = model_for(settings)
    except ProviderUnavailable:
        model = settings.model or "unknown"
    opts = options or RunOptions()
    pipe = Pipeline(vault, settings, roles, _no_provider, model, RunOptions(stale=opts.stale, force=opts.force, plan_only=True))
    rows = pipe.plan(notes)
    return PlanReport.build(rows, model, settings.max_output_tokens, pipe.report.warnings)


def _no_provider() -> Provider:
    """Planning never calls a model."""
    raise UsageError("internal: plan must not call a model")


def undo(path: Path) -> UndoReport:
    """Restore the files changed by the last applying run."""
    if not path.exists():
        raise UsageError(f"{path}: no such folder")
    return undo_last(find_vault_root(path))
