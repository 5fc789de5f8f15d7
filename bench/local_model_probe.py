"""Probe the bundled SmolLM2-135M through LocalProvider on real vault notes.

Runs the same validated call the pipeline uses (enrich.llm.call_validated: one
grammar-constrained call, up to N re-asks listing the validation errors) and
reports the first-try valid rate, the valid rate within the re-asks, seconds
per note and the most common validation errors.

    python bench/local_model_probe.py --notes 8
    python bench/local_model_probe.py --notes 34 --prompt tiny --temperature 0.1
    python bench/local_model_probe.py --notes 8 --no-tighten --out /tmp/raw.jsonl

Findings are written up by hand in bench/LOCAL_MODEL_NOTES.md.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from enrich.errors import LLMError
from enrich.llm import call_validated
from enrich.notes import parse_note
from enrich.prompts import load_prompts
from enrich.providers import grammar, local
from enrich.providers.base import Completion, Message
from enrich.providers.local import DEFAULT_SAMPLING, LocalProvider
from enrich.schema import output_spec

ROOT = Path(__file__).resolve().parent.parent
VAULT = Path("/work/shared/vault-sample")
CJK = re.compile(r"[\u4e00-\u9fff]")
WORD = re.compile(r"[a-z0-9]+|[\u4e00-\u9fff]", re.IGNORECASE)

# A shorter, English-only system prompt for the tiny model: fewer rules, one example.
TINY_SYSTEM = """You write a JSON summary of one note.
key_points: 3 or 4 short plain English sentences about the article.
tags: 1 to 4 lowercase-kebab words, reuse the vocabulary when it fits.
related: ids from the candidate list that share the topic, or [].

Example:
{"key_points": ["Small daily notes add up to a useful archive.", "Linking new notes to old ones builds a network of ideas.", "Writing in your own words shows what you understood."], "tags": ["note-taking", "zettelkasten"], "related": ["004-linking"]}"""

# Extractive variant: copying is what a 135M model does well, so ask for copied sentences.
# Static parts first (prefix cache), the article last (closest to the answer), no example.
EXTRACT_SYSTEM = """You pick the key sentences of an article.
Answer with JSON:
"key_points": 3 or 4 important sentences copied from the article,
"tags": 1 to 4 lowercase-kebab topic words,
"related": ids of candidate notes about the same topic, or []."""

EXTRACT_USER = """Candidate notes (id: title):
{{candidates}}

Tag words: {{vocabulary}}

Title: {{title}}
Article:
{{content}}"""

TINY_USER = """Title: {{title}}

<<<ARTICLE
{{content}}
ARTICLE>>>

Vocabulary: {{vocabulary}}

Candidates (id: title):
{{candidates}}"""


_BANNED = r'"\x00-\x1F\x5B-\x5D<>`'
POINT_PATTERNS = {
    "default": grammar.KEY_POINT_PATTERN,
    "no-letter-first": r"^[^-*+#> " + _BANNED + r"][^" + _BANNED + r"]{7,159}$",
    "letter-first": r"^[A-Za-z0-9\u4e00-\u9fff][^" + _BANNED + r"]{7,159}$",
    "ascii": r"^[A-Za-z0-9][ !#-;=?-Z^_a-z{-~]{7,159}$",
    "ascii-sentence": r"^[A-Z][ !#-;=?-Z^_a-z{-~]{6,158}[.!?]$",
}
SPACES = {"default": None, "pretty": '( " " | "\\n" " "? " "? " "? " "? " "? " "? )?'}
EXAMPLE_RE = re.compile(r"\n*(Example answer:|示例回答：|Example:)\n.*\Z", re.DOTALL)


BENCH_PROMPTS = {"tiny": (TINY_SYSTEM, TINY_USER), "extract": (EXTRACT_SYSTEM, EXTRACT_USER)}


@dataclass
class VaultNote:
    """What the probe needs from one note."""

    id: str
    title: str
    content: str
    tags: list[str]


@dataclass
class Outcome:
    """The result of one note."""

    id: str
    lang: str
    valid: bool
    calls: int
    seconds: float
    prompt_tokens: int = 0
    completion_tokens: int = 0
    errors: list[str] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)
    points: list[str] = field(default_factory=list)
    example_copies: int = 0
    overlap: float = 0.0


class Recorder:
    """A provider wrapper that keeps every raw answer and token count."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.model = inner.model
        self.answers: list[str] = []
        self.prompt_tokens = 0
        self.completion_tokens = 0

    async def complete(self, messages: list[Message], schema: dict[str, Any], *, max_tokens: int) -> Completion:
        """Forward one call and record its answer."""
        done: Completion = await self.inner.complete(messages, schema, max_tokens=max_tokens)
        self.answers.append(done.text)
        self.prompt_tokens += done.prompt_tokens
        self.completion_tokens += done.completion_tokens
        return done

    async def aclose(self) -> None:
        """Nothing to release here; the inner provider is closed by the caller."""


def load_vault(folder: Path) -> list[VaultNote]:
    """Parse every note of the sample vault."""
    notes = []
    for path in sorted(folder.glob("*.md")):
        note = parse_note(path.read_bytes(), path)
        tags = note.meta.get("tags") or []
        tags = [str(t) for t in tags] if isinstance(tags, list) else [str(tags)]
        notes.append(VaultNote(note.id, note.display_title, note.content_text(), tags))
    return notes


def vocabulary(notes: list[VaultNote], limit: int = 20) -> str:
    """The most used slug-like tags of the vault, most used first."""
    counts = collections.Counter(t for n in notes for t in n.tags if re.fullmatch(r"[a-z0-9-]+", t))
    return ", ".join(t for t, _ in counts.most_common(limit))


def _words(text: str) -> set[str]:
    """Lowercased words and single CJK characters."""
    return {w.lower() for w in WORD.findall(text)}


def candidates(note: VaultNote, notes: list[VaultNote], k: int) -> list[VaultNote]:
    """The k other notes with the largest word overlap (a stand-in for BM25)."""
    mine = _words(note.title + " " + note.content[:2000])
    others = [n for n in notes if n.id != note.id]
    others.sort(key=lambda n: -len(mine & _words(n.title + " " + n.content[:2000])))
    return others[:k]


def truncate(provider: LocalProvider, text: str, max_tokens: int) -> str:
    """Cut text to about max_tokens model tokens (binary search on characters)."""
    if provider.count_tokens(text) <= max_tokens:
        return text
    lo, hi = 0, len(text)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if provider.count_tokens(text[:mid]) <= max_tokens else (lo, mid - 1)
    return text[:lo].rstrip() + " ..."


def note_lang(note: VaultNote, choice: str) -> str:
    """The prompt language: fixed, or zh when the article is mostly Chinese."""
    if choice != "auto":
        return choice
    return "zh" if len(CJK.findall(note.content)) > 0.3 * max(1, len(note.content)) else "en"


def build_messages(args: argparse.Namespace, lang: str, values: dict[str, str]) -> list[Message]:
    """Render the real prompt files or the tiny variant (optionally without the example)."""

    def fill(template: str) -> str:
        """Substitute {{name}} variables."""
        return re.sub(r"\{\{(\w+)\}\}", lambda m: values[m.group(1)], template)

    if args.prompt in BENCH_PROMPTS:
        system, user = BENCH_PROMPTS[args.prompt]
        msgs = [{"role": "system", "content": system}, {"role": "user", "content": fill(user)}]
    else:
        msgs = load_prompts(lang, ROOT / "prompts").render(values)
    if args.no_example:
        msgs[0]["content"] = EXAMPLE_RE.sub("", msgs[0]["content"])
    return msgs


def example_points(messages: list[Message]) -> set[str]:
    """The key points of the one-shot example in the system prompt, if any."""
    found = re.search(r'"key_points":\s*\[(.*?)\]', messages[0]["content"])
    return set(re.findall(r'"([^"]+)"', found.group(1))) if found else set()


def overlap(points: list[str], article: str) -> float:
    """Share of the answer's words (4+ letters, or CJK chars) that occur in the article."""
    source = _words(article)
    words = [w for p in points for w in _words(p) if len(w) >= 4 or CJK.match(w)]
    return sum(w in source for w in words) / len(words) if words else 0.0


async def probe_note(args: argparse.Namespace, provider: LocalProvider, note: VaultNote, notes: list[VaultNote], vocab: str) -> Outcome:
    """Run one validated call for one note and time it."""
    cands = candidates(note, notes, args.candidates)
    lang = note_lang(note, args.lang)
    values = {
        "title": note.title,
        "content": truncate(provider, note.content, args.max_input_tokens),
        "vocabulary": vocab,
        "candidates": "\n".join(f"{c.id}: {c.title}" for c in cands),
        "max_new_tags": "2",
    }
    messages = build_messages(args, lang, values)
    spec = output_spec([c.id for c in cands], note.id)
    rec = Recorder(provider)
    start = time.perf_counter()
    points: list[str] = []
    try:
        result = await call_validated(rec, messages, spec, max_tokens=args.max_tokens, max_reasks=args.reasks)
        valid, calls, errors, points = True, result.calls, [], list(result.value.key_points)
    except LLMError as exc:
        valid, calls = False, len(rec.answers)
        errors = list(getattr(exc, "errors", [])) or [str(exc)]
    seconds = time.perf_counter() - start
    copies = len(set(points) & example_points(messages))
    return Outcome(
        note.id, lang, valid, calls, seconds, rec.prompt_tokens, rec.completion_tokens, errors,
        rec.answers, points, copies, overlap(points, note.title + " " + values["content"]),
    )


def error_kind(error: str) -> str:
    """Fold one error message into a category for the summary."""
    text = re.sub(r"\d+", "N", error)
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", text)
    return text[:90]


def summarise(outcomes: list[Outcome], total_seconds: float) -> dict[str, Any]:
    """Aggregate rates, timings and error kinds."""
    n = len(outcomes) or 1
    first = sum(1 for o in outcomes if o.valid and o.calls == 1)
    kinds = collections.Counter(error_kind(e) for o in outcomes for e in o.errors)
    valid = [o for o in outcomes if o.valid] or outcomes
    points = [p for o in valid for p in o.points]
    return {
        "notes": len(outcomes),
        "valid_first_try": round(first / n, 3),
        "valid_within_reasks": round(sum(o.valid for o in outcomes) / n, 3),
        "calls_per_note": round(sum(o.calls for o in outcomes) / n, 2),
        "seconds_per_note": round(sum(o.seconds for o in outcomes) / n, 2),
        "seconds_per_call": round(sum(o.seconds for o in outcomes) / max(1, sum(o.calls for o in outcomes)), 2),
        "completion_tokens_per_call": round(sum(o.completion_tokens for o in outcomes) / max(1, sum(o.calls for o in outcomes)), 1),
        "prompt_tokens_per_call": round(sum(o.prompt_tokens for o in outcomes) / max(1, sum(o.calls for o in outcomes)), 1),
        "tokens_per_second": round(sum(o.completion_tokens for o in outcomes) / max(0.1, sum(o.seconds for o in outcomes)), 1),
        "notes_copying_example": sum(1 for o in outcomes if o.example_copies),
        "points_with_cjk": round(sum(bool(CJK.search(p)) for p in points) / max(1, len(points)), 2),
        "mean_overlap_with_article": round(sum(o.overlap for o in valid) / max(1, len(valid)), 2),
        "wall_seconds": round(total_seconds, 1),
        "load_average": os.getloadavg(),
        "final_errors": kinds.most_common(8),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--notes", type=int, default=8, help="how many notes to probe (default 8)")
    p.add_argument("--offset", type=int, default=0, help="skip this many notes first")
    p.add_argument("--stride", type=int, default=1, help="take every k-th note (spread over the vault)")
    p.add_argument("--vault", type=Path, default=VAULT)
    p.add_argument("--prompt", choices=["real", "tiny", "extract"], default="real", help="prompts/*.md or a bench variant")
    p.add_argument("--lang", choices=["auto", "en", "zh"], default="en", help="prompt language for --prompt real")
    p.add_argument("--max-input-tokens", type=int, default=500, help="article budget in model tokens (default 500)")
    p.add_argument("--max-tokens", type=int, default=local.SUGGESTED_MAX_TOKENS, help="answer budget")
    p.add_argument("--reasks", type=int, default=2)
    p.add_argument("--candidates", type=int, default=8)
    p.add_argument("--no-tighten", action="store_true", help="send the schema as is (no local_schema)")
    p.add_argument("--no-example", action="store_true", help="drop the one-shot example from the system prompt")
    p.add_argument("--point-pattern", choices=sorted(POINT_PATTERNS), default="default", help="key point grammar")
    p.add_argument("--generative", action="store_true", help="free-text key points (no sentence choice)")
    p.add_argument("--space", choices=sorted(SPACES), default="default", help="grammar whitespace rule")
    p.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: all cores)")
    p.add_argument("--seed", type=int, default=42)
    for key, value in DEFAULT_SAMPLING.items():
        p.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=value)
    p.add_argument("--out", type=Path, help="write one JSON line per note (raw answers included)")
    p.add_argument("-v", "--verbose", action="store_true", help="print every raw answer")
    return p.parse_args(argv)


def make_provider(args: argparse.Namespace) -> LocalProvider:
    """Build the provider with the sampling options from the command line."""
    sampling = {k: getattr(args, k) for k in DEFAULT_SAMPLING}
    grammar.KEY_POINT_PATTERN = POINT_PATTERNS[args.point_pattern]  # type: ignore[misc]  # read at call time
    grammar.GRAMMAR_SPACE = SPACES[args.space]
    return LocalProvider(
        seed=args.seed, sampling=sampling, tighten_schema=not args.no_tighten,
        extractive=not args.generative, n_threads=args.threads,
    )


def report(o: Outcome, verbose: bool) -> None:
    """Print one line per note (and the raw answers with -v)."""
    status = "ok " if o.valid else "BAD"
    print(f"{status} {o.calls} call(s) {o.seconds:5.1f}s {o.completion_tokens:4d} tok {o.lang} {o.id[:60]}", flush=True)
    if verbose:
        for point in o.points:
            print(f"      - {point}")
    if not o.valid:
        for answer in o.answers:
            print(f"      > {answer[:400]}")
        for err in o.errors[:4]:
            print(f"      ! {err[:160]}")


async def main(argv: list[str] | None = None) -> int:
    """Probe the notes and print a JSON summary."""
    args = parse_args(argv)
    notes = load_vault(args.vault)
    chosen = notes[args.offset :: args.stride][: args.notes]
    provider = make_provider(args)
    t0 = time.perf_counter()
    await provider.load()
    print(f"model {provider.describe()} loaded in {time.perf_counter() - t0:.2f}s", flush=True)
    vocab = vocabulary(notes)
    outcomes = []
    start = time.perf_counter()
    for note in chosen:
        outcome = await probe_note(args, provider, note, notes, vocab)
        report(outcome, args.verbose)
        outcomes.append(outcome)
    summary = summarise(outcomes, time.perf_counter() - start)
    settings = {k: v for k, v in vars(args).items() if k not in ("vault", "out", "verbose")}
    print(json.dumps({"settings": settings}, ensure_ascii=False, default=str))
    print(json.dumps(summary, ensure_ascii=False, default=str, indent=1))
    if args.out:
        with args.out.open("w", encoding="utf-8") as fh:
            for o in outcomes:
                fh.write(json.dumps(asdict(o), ensure_ascii=False) + "\n")
    await provider.aclose()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
