"""The vault: scan a folder of notes, repair what can be repaired in memory, index ids and links."""

from __future__ import annotations

import gc
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Generic, Iterable, Iterator, Mapping, TypeVar

from . import charfreq, mojibake, repair
from .errors import NoteError
from .fsio import read_bytes
from .frontmatter import as_str_list
from .links import Link, find_links, is_attachment, link_key
from .notes import Note, decode, parse_text
from .roles import RoleTable, compile_patterns, default_roles

NOTE_SUFFIXES = (".md", ".markdown")
T = TypeVar("T")
SKIP_DIRS = {".obsidian", ".enrich", ".git", ".trash", "node_modules", "__pycache__"}


@dataclass
class VaultNote:
    """One note file of the vault, parsed (after in-memory repair when needed)."""

    path: Path
    rel: str
    raw: bytes
    note: Note
    repaired: bool = False
    links: list[Link] = field(default_factory=list)

    @cached_property
    def id(self) -> str:
        """The note's id: its file stem."""
        return self.path.stem

    @property
    def tags(self) -> list[str]:
        """Frontmatter tags, without a leading '#'."""
        return [t.lstrip("#") for t in as_str_list(self.note.meta.get("tags"))]

    @property
    def aliases(self) -> list[str]:
        """Frontmatter aliases."""
        return as_str_list(self.note.meta.get("aliases") or self.note.meta.get("alias"))

    @property
    def title(self) -> str:
        """The note's display title."""
        return self.note.display_title


def roles_for(settings_roles: Mapping[str, str] | None = None, patterns: Iterable[str] = ()) -> RoleTable:
    """Return the default role table with the user's overrides applied."""
    table = default_roles()
    if settings_roles:
        table = table.with_overrides(settings_roles)
    extra = tuple(patterns)
    if extra:
        table = RoleTable(table.names, table.headings, table.placeholder_patterns + compile_patterns(extra))
    return table


def iter_note_files(root: Path) -> Iterator[Path]:
    """Yield note files under root in a stable order, skipping hidden and tool folders."""
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
        base = Path(folder)
        for name in sorted(files):
            if name.endswith(NOTE_SUFFIXES) and not name.startswith("."):
                yield base / name


def read_note_text(path: Path) -> tuple[bytes, str, bool]:
    """Read a note file and decode it; raise NoteError / NotUtf8Error."""
    try:
        raw = read_bytes(path)
    except OSError as exc:
        raise NoteError(path, f"cannot read: {exc.strerror}") from exc
    text, bom = decode(raw, path)
    return raw, text, bom


def load_note(path: Path, root: Path, roles: RoleTable, freq: Mapping[str, float] | None = None) -> VaultNote:
    """Read, repair (in memory) and parse one note; raise a NoteError subclass when unusable."""
    return _build(path, root, roles, *read_note_text(path), freq)


def _build(
    path: Path, root: Path, roles: RoleTable, raw: bytes, text: str, bom: bool, freq: Mapping[str, float] | None,
    *, clean: bool = False,
) -> VaultNote:
    """Parse decoded text into a VaultNote, repairing mojibake first (clean: already known not to be)."""
    repaired = False
    if not clean and mojibake.looks_mojibake(text):
        fixed = repair.fix_mojibake(text, freq)
        if fixed is not None:
            text, repaired = fixed.text, True
    note = parse_text(text, path, bom=bom, roles=roles)
    note.meta  # noqa: B018 - surface BadFrontmatterError at load time, not mid-run
    return VaultNote(path, relative_path(path, root), raw, note, repaired, find_links(note.text))


def vault_frequencies(texts: Iterable[str]) -> dict[str, float]:
    """Character frequencies for mojibake scoring: bundled table plus the vault's own notes."""
    return with_default_frequencies(charfreq.char_frequencies(texts))


def with_default_frequencies(counted: Mapping[str, float]) -> dict[str, float]:
    """The bundled table plus a vault's own frequencies, at equal weight."""
    freq = dict(charfreq.load_default_freq())
    for ch, n in counted.items():
        freq[ch] = freq.get(ch, 0.0) + n
    return freq


def relative_path(path: Path, root: Path) -> str:
    """Return the posix path of a note relative to the vault root (or its name)."""
    text, prefix = str(path), str(root) + os.sep
    if text.startswith(prefix) and ".." not in text:  # the scan's own paths: plain string work
        return text[len(prefix) :].replace(os.sep, "/")
    try:
        return path.relative_to(root).as_posix()  # the scan's own paths: no syscall
    except ValueError:
        pass
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.name


class LinkIndex(Generic[T]):
    """Obsidian-style lookup of link targets: vault path, then file name, then alias."""

    def __init__(self) -> None:
        self._by_name: dict[str, list[T]] = {}
        self._by_path: dict[str, T] = {}
        self._by_alias: dict[str, list[T]] = {}

    def add(self, item: T, note_id: str, rel: str, suffix: str, aliases: Iterable[str] = ()) -> None:
        """Index one note under its file stem, its path without suffix and its aliases."""
        self._by_name.setdefault(note_id.casefold(), []).append(item)
        self._by_path[rel[: len(rel) - len(suffix)].casefold()] = item
        for alias in aliases:
            self._by_alias.setdefault(alias.casefold(), []).append(item)

    def resolve(self, target: str) -> T | None:
        """The note a link target means, or None."""
        key = link_key(target)
        if not key:
            return None
        if "/" in key:
            hit = self._by_path.get(key.lstrip("/"))
            if hit is not None:
                return hit
            key = key.rsplit("/", 1)[-1]
        names = self._by_name.get(key) or self._by_alias.get(key)
        return names[0] if names else None

    def named(self, note_id: str) -> T | None:
        """The first note with this file stem."""
        hits = self._by_name.get(note_id.casefold())
        return hits[0] if hits else None


class Vault:
    """All notes of a vault, with Obsidian-style link resolution."""

    def __init__(self, root: Path, notes: list[VaultNote], errors: list[NoteError]) -> None:
        self.root = root
        self.notes = notes
        self.errors = errors
        self._index: LinkIndex[VaultNote] = LinkIndex()
        for vn in notes:
            self._index.add(vn, vn.id, vn.rel, vn.path.suffix, vn.aliases)

    def add(self, vn: VaultNote) -> None:
        """Add a note loaded outside the scan (an explicitly named file)."""
        self.notes.append(vn)
        self._index.add(vn, vn.id, vn.rel, vn.path.suffix)

    def resolve(self, target: str) -> VaultNote | None:
        """Resolve a link target like Obsidian: path, then file name, then alias."""
        return self._index.resolve(target)

    def get(self, note_id: str) -> VaultNote | None:
        """Return the note with this file stem (first one if several)."""
        return self._index.named(note_id)

    def dangling(self, vn: VaultNote) -> list[Link]:
        """Return the note's links that resolve to no note (attachments excluded)."""
        return [
            ln for ln in vn.links
            if ln.target and not is_attachment(ln.target) and self.resolve(ln.target) is None
        ]

    def all_tags(self) -> dict[str, int]:
        """Return every tag in the vault with the number of notes using it."""
        counts: dict[str, int] = {}
        for vn in self.notes:
            for tag in dict.fromkeys(vn.tags):
                counts[tag] = counts.get(tag, 0) + 1
        return counts


@contextmanager
def no_gc_pauses() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many acyclic objects (a scan: ~15% faster)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@contextmanager
def young_gc_threshold(allocations: int) -> Iterator[None]:
    """Collect the youngest generation after this many net allocations instead of 700 (restored after).

    A run keeps its vault, index and requests for its whole length and makes few cycles: with the default, ~150
    collections and a full one walk that heap again and again (about 7% of a run's CPU).
    """
    old = gc.get_threshold()
    gc.set_threshold(max(allocations, old[0]), *old[1:])
    try:
        yield
    finally:
        gc.set_threshold(*old)


def scan_vault(root: Path, roles: RoleTable | None = None, files: Iterable[Path] | None = None) -> Vault:
    """Load every note under root (or the given files); collect per-file errors, never stop."""
    with no_gc_pauses():
        return _scan(root, roles or default_roles(), files)


def _scan(root: Path, roles: RoleTable, files: Iterable[Path] | None) -> Vault:
    """scan_vault's body."""
    notes: list[VaultNote] = []
    errors: list[NoteError] = []
    deferred: list[tuple[Path, bytes, str, bool]] = []
    for path in files if files is not None else iter_note_files(root):
        try:
            raw, text, bom = read_note_text(path)
            if mojibake.looks_mojibake(text):
                deferred.append((path, raw, text, bom))
            else:
                notes.append(_build(path, root, roles, raw, text, bom, None, clean=True))
        except NoteError as exc:
            errors.append(exc)
    if deferred:
        freq = vault_frequencies(vn.note.text for vn in notes)
        for path, raw, text, bom in deferred:
            try:
                notes.append(_build(path, root, roles, raw, text, bom, freq))
            except NoteError as exc:
                errors.append(exc)
        notes.sort(key=lambda v: v.rel)
    return Vault(root, notes, errors)
