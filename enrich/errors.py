"""Every failure the core raises: one base class, useful attributes, no UI."""

from __future__ import annotations

from pathlib import Path


class EnrichError(Exception):
    """Base of every error `enrich` turns into a one-line user message."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class UsageError(EnrichError):
    """The command line or a setting is wrong; exit code 2."""

    exit_code = 2


class ConfigError(UsageError):
    """A required setting (key, model, base URL) is missing or invalid."""


class NoteError(EnrichError):
    """A problem tied to one note file."""

    kind: str = "note-error"

    def __init__(self, path: Path | str, message: str, *, hint: str | None = None) -> None:
        super().__init__(f"{path}: {message}", hint=hint)
        self.path = Path(path)
        self.reason = message


class NotUtf8Error(NoteError):
    """The file is not valid UTF-8; it is reported and never rewritten."""

    kind = "not-utf8"


class BadFrontmatterError(NoteError):
    """The frontmatter block cannot be parsed as YAML or JSON."""

    kind = "bad-frontmatter"


class UnsafePathError(NoteError):
    """A write would leave the vault (symlink or path traversal)."""

    kind = "unsafe-path"


class UnusableNoteError(NoteError):
    """The note's content cannot be enriched (binary, empty, too short)."""

    kind = "unusable-content"


class PromptError(UsageError):
    """A prompt template is missing or lacks a required variable."""


class LLMError(EnrichError):
    """The model call failed for one note."""


class TransportError(LLMError):
    """The provider could not be reached or kept failing after retries."""


class ProviderRejected(LLMError):
    """The provider refused the request (400/401/403/404): never retried."""

    def __init__(self, message: str, *, status: int | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status


class OutputTruncated(LLMError):
    """The model stopped at max_tokens (finish_reason == "length")."""


class InvalidOutput(LLMError):
    """The model's output stayed invalid after every re-ask."""

    def __init__(self, message: str, *, errors: list[str] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []


class ContextOverflow(LLMError):
    """The prompt does not fit the model's context window."""


class ProviderUnavailable(ConfigError):
    """No provider can be used (no key, no base URL, local extra missing)."""


class FeedError(EnrichError):
    """One feed could not be fetched or parsed."""

    def __init__(self, feed: str, message: str) -> None:
        super().__init__(f"{feed}: {message}")
        self.feed = feed
        self.reason = message
