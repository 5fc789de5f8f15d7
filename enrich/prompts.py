"""Prompt templates: files with `{{variables}}`, checked before anything is sent."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Mapping

from .errors import PromptError
from .providers.base import Message

_VAR = re.compile(r"\{\{\s*([a-z_][a-z0-9_]*)\s*\}\}")
REQUIRED = {"user": {"title", "content", "candidates", "vocabulary"}, "system": set()}
LANGS = ("zh", "en")


@dataclass(frozen=True)
class PromptSet:
    """A system and a user template for one language, with a version hash."""

    lang: str
    system: str
    user: str
    version: str

    def variables(self) -> set[str]:
        """Every variable the two templates use."""
        return set(self._variables)

    @cached_property
    def _variables(self) -> frozenset[str]:
        """Every variable the two templates use (found once)."""
        return frozenset(_VAR.findall(self.system)) | frozenset(_VAR.findall(self.user))

    @cached_property
    def _pieces(self) -> tuple[list[str], list[str]]:
        """Each template split at its variables: text at even positions, variable names at odd ones."""
        return _VAR.split(self.system), _VAR.split(self.user)

    @cached_property
    def user_skeleton(self) -> tuple[str, tuple[str, ...]]:
        """The user template with its variables taken out, and those variables in order (for token counts)."""
        return _VAR.sub("", self.user), tuple(m.group(1) for m in _VAR.finditer(self.user))

    @cached_property
    def example_points(self) -> tuple[str, ...]:
        """Key points of the example answer in the system prompt (a model must not copy them)."""
        return self._example("key_points")

    @cached_property
    def example_tags(self) -> tuple[str, ...]:
        """Tags of the example answer in the system prompt (kept only when the note is about them)."""
        return self._example("tags")

    def _example(self, key: str) -> tuple[str, ...]:
        """The strings under `key` in the example answer (a line of JSON) of the system prompt."""
        for line in self.system.splitlines():
            if line.lstrip().startswith('{"key_points"'):
                try:
                    values = json.loads(line).get(key) or []
                except (ValueError, AttributeError):
                    return ()
                return tuple(v for v in values if isinstance(v, str))
        return ()

    def render(self, values: Mapping[str, str]) -> list[Message]:
        """Fill both templates; raise PromptError when a variable is missing."""
        if not self._variables.issubset(values):
            missing = sorted(self._variables.difference(values))
            raise PromptError(f"prompt ({self.lang}) needs values for: {', '.join(missing)}")
        system, user = self._pieces
        return [{"role": "system", "content": _fill(system, values)}, {"role": "user", "content": _fill(user, values)}]


def _fill(pieces: list[str], values: Mapping[str, str]) -> str:
    """Join a template's pieces with each variable's value (values are never read as templates: braces stay)."""
    return "".join([values[p] if i % 2 else p for i, p in enumerate(pieces)])


def _read(folder: Path | None, name: str) -> str:
    """Read one template from the user's folder or from the bundled prompts."""
    if folder is not None:
        path = folder / name
        try:
            return path.read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise PromptError(f"{path}: prompt file not found", hint=f"--prompts DIR must hold {name}") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise PromptError(f"{path}: cannot read prompt: {exc}") from exc
    return bundled_prompts().joinpath(name).read_text(encoding="utf-8")


def bundled_prompts() -> Traversable:
    """The project's `prompts/` folder: beside the package in a checkout, packaged in a wheel."""
    checkout = Path(__file__).resolve().parent.parent / "prompts"
    if (checkout / "user.en.md").is_file():
        return checkout
    return resources.files("enrich.prompt_templates")


def load_prompts(lang: str, folder: Path | None = None) -> PromptSet:
    """Load and validate the templates for a language (zh or en)."""
    if lang not in LANGS:
        raise PromptError(f"no prompts for language {lang!r}; use one of {', '.join(LANGS)}")
    system = _read(folder, f"system.{lang}.md")
    user = _read(folder, f"user.{lang}.md")
    for kind, text in (("system", system), ("user", user)):
        absent = REQUIRED[kind] - set(_VAR.findall(text))
        if absent:
            raise PromptError(f"prompt {kind}.{lang}.md lacks required variable(s): {', '.join(sorted(absent))}")
    digest = hashlib.sha256(f"{system}\0{user}".encode()).hexdigest()[:12]
    return PromptSet(lang, system, user, f"{lang}-{digest}")
