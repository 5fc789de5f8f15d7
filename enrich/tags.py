"""Tag vocabulary: fold spelling variants, map proposed tags to the vault's own, merge near-duplicates."""

from __future__ import annotations

import json
import re
import tomllib
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable, Mapping, Sequence

from .errors import ConfigError, EnrichError
from .fsio import atomic_write
from .journal import Journal
from .notes import set_meta
from .schema import TAG_RE
from .vault import Vault, VaultNote

ALIASES_FILE = Path(".enrich") / "tags.toml"
Progress = Callable[[int, int], None]

_SEPARATORS = re.compile(r"[\s_/.]+")
_DASHES = re.compile(r"-{2,}")
_KEEP_S = frozenset({"news", "series", "species", "lens", "chaos", "canvas", "atlas", "alias", "bias", "gas",
                     "plus", "yes", "ios", "macos", "kubernetes", "windows", "less", "thanks"})


def normalise_tag(tag: str) -> str:
    """Case-fold, strip '#', turn separators (_ space / .) into '-': `AI_Research` -> `ai-research`."""
    t = unicodedata.normalize("NFKC", tag).strip().lstrip("#").strip().casefold()
    return _DASHES.sub("-", _SEPARATORS.sub("-", t)).strip("-")


def singular(word: str) -> str:
    """Fold a simple English plural to its singular (for matching only)."""
    if not word.isascii() or len(word) <= 3 or word in _KEEP_S or word.endswith(("ss", "us", "is", "ics")):
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "xes", "sses")):
        return word[:-2]
    return word[:-1] if word.endswith("s") else word


@lru_cache(maxsize=65536)
def fold_tag(tag: str) -> str:
    """The matching key of a tag: normalised, every word singular."""
    return "-".join(singular(w) for w in normalise_tag(tag).split("-"))


def is_slug(tag: str) -> bool:
    """True when a tag is a lowercase-kebab slug the model may produce."""
    return bool(TAG_RE.match(tag)) and len(tag) <= 40


def load_aliases(root: Path) -> dict[str, str]:
    """Read `variant = canonical` pairs from <vault>/.enrich/tags.toml ([aliases] table or top level)."""
    path = root / ALIASES_FILE
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read tag aliases: {exc}") from exc
    table = data.get("aliases", data)
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [aliases] must be a table of \"variant\" = \"canonical\"")
    return {str(k): str(v) for k, v in table.items() if isinstance(v, str) and v.strip()}


@dataclass
class TagGroup:
    """Spellings of one tag in the vault: the canonical one and how often each is used."""

    canonical: str
    spellings: dict[str, int]

    @property
    def total(self) -> int:
        """Notes using any spelling."""
        return sum(self.spellings.values())

    @property
    def variants(self) -> list[str]:
        """Spellings other than the canonical one."""
        return [s for s in self.spellings if s != self.canonical]


class TagVocabulary:
    """The vault's tags, grouped by spelling variant, with user aliases from tags.toml."""

    def __init__(self, vault: Vault, aliases: Mapping[str, str] | None = None) -> None:
        self.vault = vault
        self.aliases = {fold_tag(k): v.strip().lstrip("#") for k, v in (aliases or {}).items() if fold_tag(k)}
        self.groups: dict[str, TagGroup] = {}
        for tag, n in sorted(vault.all_tags().items()):
            key = self.key(tag)
            if key:
                self.groups.setdefault(key, TagGroup("", {})).spellings[tag] = n
        targets = {self.key(v): v for v in self.aliases.values()}
        for key, group in self.groups.items():
            group.canonical = targets.get(key) or _most_used(group.spellings)

    @classmethod
    def load(cls, vault: Vault) -> "TagVocabulary":
        """The vocabulary of a vault, with aliases from <vault>/.enrich/tags.toml if present."""
        return cls(vault, load_aliases(vault.root))

    def key(self, tag: str) -> str:
        """The group key of a tag: its fold, after following aliases."""
        key, seen = fold_tag(tag), set()
        while key in self.aliases and key not in seen:
            seen.add(key)
            key = fold_tag(self.aliases[key])
        return key

    def top(self, n: int = 40) -> list[str]:
        """Most-used tags first, as slugs the model may return (merge maps them back)."""
        ranked = sorted(self.groups.values(), key=lambda g: (-g.total, g.canonical))
        out = [normalise_tag(g.canonical) for g in ranked if is_slug(normalise_tag(g.canonical))]
        return list(dict.fromkeys(out))[:n]

    def canonical(self, tag: str) -> str | None:
        """The existing vault tag this one matches (alias, normalised or plural form), or None."""
        key = self.key(tag)
        if key in self.groups:
            return self.groups[key].canonical
        return next((v for v in self.aliases.values() if self.key(v) == key), None) if key else None

    def merge(self, existing: list[str], proposed: list[str], max_new: int = 2) -> tuple[list[str], list[str]]:
        """Return (final tags, new tags): existing kept in order, proposals mapped to vault tags, few new ones."""
        final = list(dict.fromkeys(existing))
        seen = {self.key(t) for t in final}
        new: list[str] = []
        for tag in proposed:
            chosen = self.canonical(tag) or normalise_tag(tag)
            key = self.key(chosen)
            if not key or key in seen or (key not in self.groups and not is_slug(chosen)):
                continue
            is_new = key not in self.groups
            if is_new and len(new) >= max_new:
                continue
            final.append(chosen)
            seen.add(key)
            if is_new:
                new.append(chosen)
        return final, new

    def learn(self, tags: list[str]) -> None:
        """Add tags created during a run so later notes reuse their spelling."""
        for tag in tags:
            key = self.key(tag)
            if key and key not in self.groups:
                self.groups[key] = TagGroup(tag, {tag: 0})

    def copied_examples(self, proposed: list[str], examples: Sequence[str], text: str) -> list[str]:
        """Proposed tags that only echo the prompt's example: not used in the vault and not about the text.

        Small models copy the example answer's tags onto every note. Such a tag is kept when the vault
        already uses it (before this run) or when each of its words (3+ letters) occurs in the note's text.
        """
        folded = {self.key(t) for t in examples}
        haystack = text.casefold()
        out = []
        for tag in proposed:
            key = self.key(tag)
            if key not in folded or (key in self.groups and self.groups[key].total > 0):
                continue
            words = [w for w in normalise_tag(tag).split("-") if len(w) >= 3]
            if not words or not all(w in haystack for w in words):
                out.append(tag)
        return out

    def near_duplicates(self) -> list[TagGroup]:
        """Groups with more than one spelling, largest first."""
        groups = [g for g in self.groups.values() if g.variants]
        return sorted(groups, key=lambda g: (-g.total, g.canonical))


def _most_used(spellings: Mapping[str, int]) -> str:
    """The most used spelling; ties go to a slug spelling, then alphabetical order."""
    return min(spellings, key=lambda s: (-spellings[s], not is_slug(s), s))


# ---------------------------------------------------------------- merging near-duplicates across the vault


@dataclass
class TagMergeReport:
    """What `enrich tags --merge` changed (or would change, in a dry run)."""

    groups: list[TagGroup]
    changed: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    aliases_written: dict[str, str] = field(default_factory=dict)
    dry_run: bool = False

    def to_json(self) -> dict[str, object]:
        """Machine-readable report."""
        return {
            "groups": [{"canonical": g.canonical, "spellings": g.spellings, "total": g.total} for g in self.groups],
            "changed": self.changed,
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
            "aliases": self.aliases_written,
            "dry_run": self.dry_run,
        }


def mapping_of(groups: list[TagGroup]) -> dict[str, str]:
    """variant spelling -> canonical spelling for every near-duplicate group."""
    return {v: g.canonical for g in groups for v in g.variants}


def rewritten_tags(tags: list[str], mapping: Mapping[str, str]) -> list[str]:
    """A tag list with variants replaced by their canonical spelling, duplicates dropped."""
    return list(dict.fromkeys(mapping.get(t, t) for t in tags))


def _skip_reason(vn: VaultNote) -> str | None:
    """Why a note's tags cannot be rewritten safely, or None."""
    if vn.repaired:
        return "holds mojibake repaired in memory only (run `enrich run` on it first)"
    if not isinstance(vn.note.meta.get("tags"), list):
        return "frontmatter tags is not a list"
    return None


def merge_vault_tags(vault: Vault, vocab: TagVocabulary, *, dry_run: bool = False,
                     progress: Progress | None = None) -> TagMergeReport:
    """Rewrite near-duplicate tags to their canonical spelling (atomic, journaled) and record aliases."""
    groups = vocab.near_duplicates()
    report = TagMergeReport(groups, dry_run=dry_run)
    mapping = mapping_of(groups)
    if not mapping:
        return report
    journal = None if dry_run else Journal(vault.root, "tags --merge")
    for i, vn in enumerate(vault.notes):
        if progress:
            progress(i + 1, len(vault.notes))
        if not any(t in mapping for t in vn.tags):
            continue
        reason = _skip_reason(vn)
        if reason:
            report.skipped.append((vn.rel, reason))
            continue
        new = set_meta(vn.note, "tags", rewritten_tags(vn.tags, mapping)).render()
        if journal is not None:
            _write(vault.root, vn, new, journal)
        report.changed.append(vn.rel)
    report.aliases_written = mapping
    if journal is not None:
        save_aliases(vault.root, {**load_aliases(vault.root), **mapping}, journal)
    return report


def _write(root: Path, vn: VaultNote, new: bytes, journal: Journal) -> None:
    """Write one note if it did not change on disk since the scan."""
    if vn.path.read_bytes() != vn.raw:
        raise EnrichError(f"{vn.rel}: changed on disk during the run; nothing more written (enrich undo reverts)")
    journal.record(vn.path, vn.raw, new)
    atomic_write(vn.path, new, root)


def render_aliases(aliases: Mapping[str, str]) -> str:
    """The text of a tags.toml file."""
    lines = ["# Tag aliases: variant = canonical. `enrich` maps variants to the canonical tag.", "[aliases]"]
    lines += [f"{json.dumps(k, ensure_ascii=False)} = {json.dumps(v, ensure_ascii=False)}" for k, v in sorted(aliases.items())]
    return "\n".join(lines) + "\n"


def save_aliases(root: Path, aliases: Mapping[str, str], journal: Journal | None = None) -> Path:
    """Write <vault>/.enrich/tags.toml atomically (journaled when a journal is given)."""
    path = root / ALIASES_FILE
    data = render_aliases(aliases).encode("utf-8")
    if journal is not None:
        journal.record(path, path.read_bytes() if path.is_file() else None, data)
    atomic_write(path, data, root)
    return path
