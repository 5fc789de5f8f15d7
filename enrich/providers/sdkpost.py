"""POST chat requests through the openai SDK (its httpx client or its aiohttp transport), failures as HTTPFailure."""

from __future__ import annotations

from typing import Any

import openai

from enrich.errors import ConfigError
from enrich.providers.wire import Headers, HTTPFailure

RAW_HEADER = {"X-Stainless-Raw-Response": "true"}  # what .with_raw_response sets: keep the headers


def _transport(kind: str, timeout: float) -> Any:
    """The SDK's aiohttp transport for "aiohttp", else None for the SDK's default httpx client."""
    if kind != "aiohttp":
        return None
    factory = getattr(openai, "DefaultAioHttpClient", None)
    try:
        return factory(timeout=timeout) if factory is not None else None
    except RuntimeError:  # the SDK says aiohttp is not installed
        raise ConfigError(
            "http_client = aiohttp needs the aiohttp package", hint="pip install 'openai[aiohttp]', or set ENRICH_HTTP_CLIENT=auto"
        ) from None


def failure(exc: openai.APIError) -> HTTPFailure:
    """The HTTPFailure an SDK error describes."""
    if isinstance(exc, openai.APITimeoutError):
        return HTTPFailure(None, "request timed out", timed_out=True)
    if isinstance(exc, openai.APIStatusError):  # its body is the answer's error object, or its text
        fail = HTTPFailure.from_answer(exc.status_code, exc.response.headers, exc.body)
        fail.message = fail.message or exc.message  # an empty answer: the SDK's "Error code: N"
        return fail
    if isinstance(exc, openai.APIConnectionError):
        return HTTPFailure(None, f"connection failed ({exc.__cause__ or exc})")
    return HTTPFailure(getattr(exc, "status_code", 0) or 0, exc.message)  # e.g. an answer the SDK cannot read


class SDKPost:
    """The SDK's low-level post: it skips the per-call parameter transform and response model of create()."""

    def __init__(self, base_url: str | None, api_key: str, timeout: float, kind: str) -> None:
        self.client = openai.AsyncOpenAI(
            base_url=base_url, api_key=api_key, max_retries=0, timeout=timeout, http_client=_transport(kind, timeout)
        )

    async def post(self, body: dict[str, Any]) -> tuple[Headers, Any]:
        """(headers, parsed JSON) of a 2xx answer; HTTPFailure otherwise."""
        try:
            raw: Any = await self.client.post("/chat/completions", body=body, cast_to=object, options={"headers": RAW_HEADER})
        except openai.APIError as exc:
            raise failure(exc) from exc
        return raw.headers, raw.parse()

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self.client.close()
