"""Offline evaluation on a golden vault: candidate recall@K, link validity, tag reuse. No LLM."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from .errors import UsageError
from .related import CandidateIndex
from .tags import TagVocabulary
from .vault import Vault, VaultNote, scan_vault

GOLDEN_FILE = "golden.json"
Progress = Callable[[int, int], None]


def default_golden() -> Path:
    """fixtures/golden of the source checkout."""
    return Path(__file__).resolve().parents[1] / "fixtures" / "golden"


@dataclass
class EvalReport:
    """Retrieval and tag metrics on one golden set."""

    notes: int
    k: int
    recall_at_k: float = 0.0
    recall_at_5: float = 0.0
    mrr: float = 0.0
    link_validity: float = 1.0
    candidates_checked: int = 0
    invalid: list[str] = field(default_factory=list)
    tag_reuse_rate: float = 0.0
    new_tag_rate: float = 0.0
    tag_recall: float = 0.0
    per_note: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, float | int]:
        """The headline numbers."""
        return {
            f"recall@{self.k}": self.recall_at_k, "recall@5": self.recall_at_5, "mrr": self.mrr, "link validity": self.link_validity,
            "candidates checked": self.candidates_checked, "tag reuse rate": self.tag_reuse_rate,
            "new-tag rate": self.new_tag_rate, "expected-tag recall": self.tag_recall,
        }

    def to_json(self) -> dict[str, Any]:
        """Machine-readable report."""
        keys = {k: re.sub(r"[^a-z0-9]+", "_", k.replace("@", "_at_")) for k in self.summary()}
        return {"notes": self.notes, "k": self.k, **{keys[k]: v for k, v in self.summary().items()},
                "invalid": self.invalid, "per_note": self.per_note}


def load_golden(folder: Path) -> tuple[Vault, dict[str, Any]]:
    """Scan a golden vault and read its golden.json."""
    path = folder / GOLDEN_FILE
    if not path.is_file():
        raise UsageError(f"{folder}: no {GOLDEN_FILE} (a golden set is a vault folder with a {GOLDEN_FILE})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: cannot read: {exc}") from exc
    return scan_vault(folder), data


def _note(vault: Vault, note_id: str) -> VaultNote:
    """A golden note by id, or a usage error."""
    vn = vault.get(note_id)
    if vn is None:
        raise UsageError(f"{GOLDEN_FILE}: no note {note_id!r} in the golden vault")
    return vn


def recall(index: CandidateIndex, vault: Vault, expected: Mapping[str, list[str]], k: int) -> tuple[float, float, list[dict[str, Any]]]:
    """Mean recall@k and MRR of the expected related ids, with per-note detail."""
    rows: list[dict[str, Any]] = []
    for note_id, want in sorted(expected.items()):
        got = [c.id for c in index.candidates(_note(vault, note_id), k)]
        hits = [w for w in want if w in got]
        first = min((got.index(h) + 1 for h in hits), default=0)
        rows.append({"id": note_id, "expected": want, "found": hits, "missed": [w for w in want if w not in got],
                     "recall": len(hits) / len(want) if want else 1.0, "rr": 1 / first if first else 0.0})
    n = max(len(rows), 1)
    return sum(r["recall"] for r in rows) / n, sum(r["rr"] for r in rows) / n, rows


def validity(index: CandidateIndex, vault: Vault, k: int) -> tuple[float, int, list[str]]:
    """Share of candidates (for every note) that resolve to another note not already linked."""
    total, bad = 0, []
    for vn in vault.notes:
        linked = {id(hit) for ln in vn.links if ln.target and (hit := vault.resolve(ln.target)) is not None}
        for c in index.candidates(vn, k):
            total += 1
            hit = vault.resolve(c.id)
            if hit is None or hit is vn or id(hit) in linked:
                bad.append(f"{vn.id} -> {c.id}")
    return (1.0 - len(bad) / total) if total else 1.0, total, bad


def tag_metrics(vault: Vault, cases: Mapping[str, Mapping[str, list[str]]], max_new: int = 2) -> tuple[float, float, float]:
    """Tag reuse rate, new-tag rate (of tags added by merge) and recall of the expected tags."""
    vocab = TagVocabulary.load(vault)
    added = reused = created = expected_n = expected_hit = 0
    for note_id, case in sorted(cases.items()):
        vn = _note(vault, note_id)
        proposed = list(case.get("proposed", [])) or list(case.get("expected", []))
        final, new = vocab.merge(vn.tags, proposed, max_new)
        extra = final[len(vn.tags):]
        added += len(extra)
        created += len(new)
        reused += len(extra) - len(new)
        want = list(case.get("expected", []))
        expected_n += len(want)
        expected_hit += sum(1 for t in want if t in final)
    return reused / max(added, 1), created / max(added, 1), expected_hit / max(expected_n, 1)


def run_eval(folder: Path, k: int = 15) -> EvalReport:
    """Evaluate candidate retrieval and tag merging on a golden folder."""
    if not folder.is_dir():
        raise UsageError(f"{folder}: no such golden folder")
    vault, golden = load_golden(folder)
    index = CandidateIndex(vault)
    report = EvalReport(len(vault.notes), k)
    expected = golden.get("related", {})
    report.recall_at_k, report.mrr, report.per_note = recall(index, vault, expected, k)
    report.recall_at_5 = recall(index, vault, expected, min(5, k))[0]
    report.link_validity, report.candidates_checked, report.invalid = validity(index, vault, k)
    tag_cases = golden.get("tags", {})
    if tag_cases:
        report.tag_reuse_rate, report.new_tag_rate, report.tag_recall = tag_metrics(vault, tag_cases)
    return report
