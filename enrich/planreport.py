"""`enrich plan`: what a run would do and what it would cost, without calling a model."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from . import tokens
from .plan import Decision
from .prepare import Request
from .vault import VaultNote

# A typical answer (3-5 bullets, tags, ids) is far below max_tokens; estimate with this share.
EXPECTED_OUTPUT_SHARE = 0.5


@dataclass(frozen=True)
class PlanRow:
    """One note in the plan."""

    path: str
    status: str
    reason: str
    prompt_tokens: int = 0
    truncated: bool = False


@dataclass
class PlanReport:
    """The plan: rows, counts and an estimate."""

    model: str
    rows: list[PlanRow] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def to_enrich(self) -> int:
        """Notes that would get a model call (or a cached result)."""
        return sum(1 for r in self.rows if r.prompt_tokens)

    @classmethod
    def build(
        cls, rows: Sequence[tuple[VaultNote, Request | None, Decision]], model: str, max_output: int, warnings: list[str]
    ) -> "PlanReport":
        """Turn planner decisions into a report with token and cost estimates."""
        rep = cls(model, warnings=list(warnings))
        for vn, req, d in rows:
            rep.rows.append(PlanRow(vn.rel, d.status, d.reason, (req.prompt_tokens or 0) if req else 0, bool(req and req.truncated)))
        rep.prompt_tokens = sum(r.prompt_tokens for r in rep.rows)
        rep.completion_tokens = int(rep.to_enrich * max_output * EXPECTED_OUTPUT_SHARE)
        rep.cost_usd = tokens.cost(model, rep.prompt_tokens, rep.completion_tokens)
        return rep

    def counts(self) -> dict[str, int]:
        """Notes per status."""
        return dict(Counter(r.status for r in self.rows))

    def to_json(self) -> dict[str, Any]:
        """The --json shape."""
        return {
            "model": self.model,
            "notes": [asdict(r) for r in self.rows],
            "summary": {
                "notes_total": len(self.rows),
                "to_enrich": self.to_enrich,
                "by_status": self.counts(),
                "estimated_prompt_tokens": self.prompt_tokens,
                "estimated_completion_tokens": self.completion_tokens,
                "estimated_cost_usd": self.cost_usd,
            },
            "warnings": self.warnings,
        }
