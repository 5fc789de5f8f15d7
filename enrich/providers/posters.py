"""Which HTTP client posts the chat calls: enrich's own (asyncio), aiohttp, or the openai SDK's clients."""

from __future__ import annotations

import importlib.util

from enrich.errors import ConfigError
from enrich.providers.wire import Poster, chat_url, proxy_for


def _has_aiohttp() -> bool:
    """True when the aiohttp package can be imported."""
    return importlib.util.find_spec("aiohttp") is not None


def resolve_kind(kind: str, base_url: str | None) -> str:
    """Resolve "auto": enrich's own HTTP/1.1 client, unless a proxy is set for the URL (then aiohttp, else httpx)."""
    if kind == "direct" and not _has_aiohttp():
        raise ConfigError(
            "http_client = direct needs the aiohttp package", hint="pip install aiohttp, or set ENRICH_HTTP_CLIENT=auto"
        )
    if kind == "auto":
        if not _proxied(base_url):
            return "asyncio"
        return "direct" if _has_aiohttp() else "httpx"
    return kind


def _proxied(base_url: str | None) -> bool:
    """True if HTTP(S)_PROXY / ALL_PROXY (and not NO_PROXY) apply to the chat URL."""
    return proxy_for(chat_url(base_url)) is not None


def make_poster(kind: str, base_url: str | None, api_key: str, timeout: float) -> Poster:
    """HTTP1Post for "asyncio", DirectPost for "direct"; the SDK (imported only then) for "aiohttp" and "httpx"."""
    if kind == "asyncio":
        from enrich.providers.http1 import HTTP1Post

        return HTTP1Post(base_url, api_key, timeout)
    if kind == "direct":
        from enrich.providers.direct import DirectPost

        return DirectPost(base_url, api_key, timeout)
    from enrich.providers.sdkpost import SDKPost

    return SDKPost(base_url, api_key, timeout, kind)
