"""What a run reports: each note's result and the run's totals (shared by the pipeline, the batch path and the display)."""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, field
from typing import Any

from .vault import VaultNote


@dataclass
class NoteResult:
    """The outcome for one note."""

    path: str
    status: str  # enriched, would-enrich, planned, skipped, failed, interrupted
    reason: str = ""
    diff: str = ""
    new_tags: list[str] = field(default_factory=list)
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False
    repaired: bool = False


@dataclass
class RunReport:
    """Totals for a run, and every note's result."""

    model: str
    provider: str = ""
    notes_total: int = 0
    enriched: int = 0
    skipped: int = 0
    failed: int = 0
    llm_calls: int = 0
    cached: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated_prompt_tokens: int | None = 0  # None: not counted (a run with no token limit counts nothing)
    cost_usd: float | None = None
    elapsed_s: float = 0.0
    dry_run: bool = False
    interrupted: bool = False
    left: int = 0  # notes not finished because the run was interrupted
    rate_limited: int = 0  # answers with HTTP 429
    new_tags: list[str] = field(default_factory=list)
    results: list[NoteResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def add(self, r: NoteResult) -> None:
        """Count one note's result."""
        self.results.append(r)
        if r.status in ("enriched", "would-enrich"):
            self.enriched += 1
        elif r.status == "failed":
            self.failed += 1
        elif r.status == "skipped":
            self.skipped += 1
        elif r.status == "interrupted":
            self.left += 1
        self.llm_calls += r.calls
        self.cached += int(r.cached)
        self.prompt_tokens += r.prompt_tokens
        self.completion_tokens += r.completion_tokens
        self.new_tags += [t for t in r.new_tags if t not in self.new_tags]

    def to_json(self) -> dict[str, Any]:
        """The --json summary."""
        data = {k: v for k, v in asdict(self).items() if k != "results"}
        data["failures"] = [{"path": r.path, "reason": r.reason} for r in self.results if r.status == "failed"]
        data["notes"] = [
            {"path": r.path, "status": r.status, "reason": r.reason, "cached": r.cached, "new_tags": r.new_tags}
            for r in self.results
        ]
        return data


def note_diff(vn: VaultNote, new_text: str) -> str:
    """Unified diff between the note on disk (decoded) and its new text."""
    old = vn.raw.decode("utf-8-sig", errors="replace")
    return "".join(
        difflib.unified_diff(
            old.splitlines(keepends=True), new_text.splitlines(keepends=True), f"a/{vn.rel}", f"b/{vn.rel}"
        )
    )
