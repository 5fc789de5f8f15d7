"""Section roles from heading names, and placeholder detection, both from data files."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from importlib import resources
from typing import Callable, Iterable, Mapping

SOURCE, CONTENT, KEY_POINTS, THOUGHTS, RELATED = "source", "content", "key_points", "thoughts", "related"
ROLES = (SOURCE, CONTENT, KEY_POINTS, THOUGHTS, RELATED)
MANAGED = (KEY_POINTS, RELATED)

_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_LIST_MARK = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")


def _load_toml(name: str) -> dict[str, object]:
    """Load one bundled TOML data file."""
    with resources.files("enrich.data").joinpath(name).open("rb") as fh:
        return tomllib.load(fh)


def normalise_heading(text: str) -> str:
    """Fold a heading for lookup: trim, casefold, drop trailing colons and emphasis."""
    t = text.strip().strip("*_").strip()
    return t.rstrip(":：").strip().casefold()


@dataclass(frozen=True)
class RoleTable:
    """Maps heading text to roles and knows which lines are template placeholders."""

    names: Mapping[str, str]
    headings: Mapping[str, Mapping[str, str]]
    placeholder_patterns: tuple[re.Pattern[str], ...] = field(default_factory=tuple)

    def role_of(self, heading: str) -> str | None:
        """Return the role of a heading, or None for sections the tool does not know."""
        return self.names.get(normalise_heading(heading))

    def heading_for(self, role: str, lang: str) -> str:
        """Return the heading text the tool writes for a role in a language."""
        table = self.headings.get(lang) or self.headings["en"]
        return table[role]

    def with_overrides(self, extra: Mapping[str, str]) -> "RoleTable":
        """Return a table with user heading -> role entries added (config [roles])."""
        bad = [r for r in extra.values() if r not in ROLES]
        if bad:
            raise ValueError(f"unknown section role(s) {bad}; use one of {', '.join(ROLES)}")
        names = dict(self.names)
        names.update({normalise_heading(k): v for k, v in extra.items()})
        return RoleTable(names, self.headings, self.placeholder_patterns)

    def is_placeholder_line(self, line: str) -> bool:
        """True when one stripped line is blank or a known template line."""
        text = _LIST_MARK.sub("", line.strip(), count=1).strip()
        return not text or self._template_line(text)

    @cached_property
    def _template_line(self) -> Callable[[str], bool]:
        """Whether a line matches a placeholder pattern: one alternation of them all, when they combine safely."""
        pats = self.placeholder_patterns
        if not pats:
            return lambda text: False
        plain = all(p.flags == re.UNICODE and not re.search(r"\\[1-9]|\(\?P=|\(\?[aiLmsux]", p.pattern) for p in pats)
        try:
            one = re.compile("|".join(f"(?:{p.pattern})" for p in pats)) if plain else None
        except re.error:
            one = None
        if one is None:  # flags or back-references: each pattern on its own
            return lambda text: any(p.match(text) for p in pats)
        return lambda text: one.match(text) is not None

    def is_placeholder(self, body: str) -> bool:
        """True when a managed section holds nothing but template lines and comments."""
        return all(self.is_placeholder_line(line) for line in _COMMENT.sub("", body).splitlines())


@lru_cache(maxsize=1)
def default_roles() -> RoleTable:
    """Return the bundled role table and placeholder patterns."""
    data = _load_toml("roles.toml")
    names = {normalise_heading(k): str(v) for k, v in dict(data["roles"]).items()}  # type: ignore[call-overload]
    headings = {lang: dict(t) for lang, t in dict(data["headings"]).items()}  # type: ignore[call-overload]
    patterns = compile_patterns(_load_toml("placeholders.toml")["patterns"])  # type: ignore[arg-type]
    return RoleTable(names, headings, patterns)


def compile_patterns(patterns: Iterable[str]) -> tuple[re.Pattern[str], ...]:
    """Compile placeholder regexes."""
    return tuple(re.compile(p) for p in patterns)
