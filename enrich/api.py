"""The library facade: one function per command, no printing, no CLI framework."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

from .check import CheckReport, check_vault
from .config import Settings, find_vault_root, load_settings
from .errors import UsageError
from .roles import RoleTable
from .vault import Vault, roles_for, scan_vault

Progress = Callable[[int, int], None]


def open_vault(path: Path, flags: Mapping[str, Any] | None = None) -> tuple[Vault, Settings, RoleTable]:
    """Find the vault root for a path, load settings and scan every note."""
    if not path.exists():
        raise UsageError(f"{path}: no such file or folder")
    root = find_vault_root(path)
    settings = load_settings(root, flags)
    try:
        roles = roles_for(settings.roles, settings.placeholder_patterns)
    except (ValueError, Exception) as exc:  # bad regex or unknown role in config
        raise UsageError(f"invalid [roles] or placeholder_patterns in enrich.toml: {exc}") from exc
    return scan_vault(root, roles), settings, roles


def check(path: Path, progress: Progress | None = None) -> CheckReport:
    """Check a vault for problems; never writes."""
    if path.is_file():
        raise UsageError(f"{path}: `enrich check` takes a vault folder, not a file")
    vault, settings, roles = open_vault(path)
    return check_vault(vault, roles, min_chars=settings.min_content_chars, progress=progress)
