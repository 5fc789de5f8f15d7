"""The provider interface: one chat completion that should return JSON."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

Message = dict[str, str]


@dataclass(frozen=True)
class Completion:
    """Raw text a provider returned, with the facts the caller needs."""

    text: str
    finish_reason: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model: str = ""
    mode: str = ""  # how structure was asked for: json_schema, json_object, text, grammar


class Provider(Protocol):
    """Anything that can answer a list of chat messages with JSON text."""

    name: str
    model: str

    async def complete(
        self, messages: list[Message], schema: dict[str, Any], *, max_tokens: int
    ) -> Completion:
        """Return one completion; raise an LLMError subclass on failure."""
        ...

    async def aclose(self) -> None:
        """Release connections, processes or model memory."""
        ...
