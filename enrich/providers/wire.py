"""One chat request over HTTP, whichever client sends it: the answer's headers and body, or an HTTPFailure."""

from __future__ import annotations

import json
import os
import ssl
import urllib.parse
import urllib.request
from collections.abc import Mapping
from importlib import metadata
from typing import Any, Protocol

from enrich.errors import ConfigError

Headers = Mapping[str, str]
DEFAULT_BASE_URL = "https://api.openai.com/v1"  # what the SDK uses when neither the flag nor OPENAI_BASE_URL is set


class HTTPFailure(Exception):
    """One failed HTTP attempt: an error status (with the server's message) or no answer at all."""

    def __init__(
        self,
        status: int | None,
        message: str,
        *,
        headers: Headers | None = None,
        body: Any = None,
        param: str | None = None,
        timed_out: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status  # None: the connection failed or timed out
        self.message = message
        self.headers: Headers = headers if headers is not None else {}
        self.body = body
        self.param = param
        self.timed_out = timed_out

    @classmethod
    def from_answer(cls, status: int, headers: Headers, parsed: Any) -> HTTPFailure:
        """The failure an error answer describes (OpenAI's `{"error": {"message", "param", ...}}` or any body)."""
        error = parsed.get("error", parsed) if isinstance(parsed, dict) else parsed
        message = error.get("message") if isinstance(error, dict) else None
        param = error.get("param") if isinstance(error, dict) else None
        text = message if isinstance(message, str) and message else str(parsed or "").strip()[:500]
        return cls(status, text, headers=headers, body=error, param=param if isinstance(param, str) else None)


class Poster(Protocol):
    """Something that posts a chat request body and returns (headers, parsed JSON or text)."""

    async def post(self, body: dict[str, Any]) -> tuple[Headers, Any]:
        """Send one request; raise HTTPFailure unless the answer is 2xx."""
        ...

    async def aclose(self) -> None:
        """Close the connections."""
        ...


def request_headers(api_key: str) -> dict[str, str]:
    """The headers every request carries."""
    headers = {
        "Authorization": f"Bearer {api_key}",
        "Content-Type": "application/json",
        "Accept": "application/json",
        "User-Agent": f"enrich/{_version()}",
    }
    for name, var in (("OpenAI-Organization", "OPENAI_ORG_ID"), ("OpenAI-Project", "OPENAI_PROJECT_ID")):
        if os.environ.get(var):
            headers[name] = os.environ[var]
    return headers


def tls_context() -> ssl.SSLContext:
    """Verify servers against SSL_CERT_FILE / SSL_CERT_DIR if set, else certifi's CA bundle (as the SDK's httpx does)."""
    cafile, capath = os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")
    if not cafile and not capath:
        try:
            import certifi

            cafile = certifi.where()
        except ImportError:  # pragma: no cover - certifi comes with the SDK
            return ssl.create_default_context()
    try:
        context = ssl.create_default_context(cafile=cafile or None, capath=capath or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"cannot load CA certificates from {cafile or capath}: {exc.strerror or exc}",
            hint="fix or unset SSL_CERT_FILE / SSL_CERT_DIR",
        ) from None
    context.set_alpn_protocols(["http/1.1"])
    return context


def _version() -> str:
    """The installed enrich version, for the User-Agent."""
    try:
        return metadata.version("enrich")
    except metadata.PackageNotFoundError:
        return "dev"


def chat_url(base_url: str | None) -> str:
    """<base>/chat/completions for --base-url, else OPENAI_BASE_URL, else OpenAI's; ConfigError unless http(s) with a host."""
    base = base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
    url = base.rstrip("/") + "/chat/completions"
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"the API base URL {base!r} is not an http:// or https:// URL", hint="check --base-url or OPENAI_BASE_URL")
    return url


def proxy_for(url: str) -> str | None:
    """The proxy HTTP(S)_PROXY / ALL_PROXY name for url, unless NO_PROXY covers its host."""
    parts = urllib.parse.urlsplit(url)
    if urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    proxies = urllib.request.getproxies()
    return proxies.get(parts.scheme.lower()) or proxies.get("all") or None


def env_proxy(url: str) -> str | None:
    """proxy_for(url) for aiohttp, read once (aiohttp's trust_env asks a thread per request); http:// proxies only."""
    proxy = proxy_for(url)
    if proxy and not proxy.lower().startswith(("http://", "https://")):
        scheme = urllib.parse.urlsplit(url).scheme
        raise ConfigError(
            f"the proxy for {scheme} ({proxy.split('://', 1)[0]}://...) is not an http:// proxy, which is all aiohttp supports",
            hint="set ENRICH_HTTP_CLIENT=httpx to send through the openai SDK's httpx client instead",
        )
    return proxy


def parse_body(raw: bytes) -> Any:
    """JSON if the body is JSON, else its text."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


def encode_body(body: dict[str, Any]) -> bytes:
    """A request body as UTF-8 JSON (a lone surrogate is escaped instead: the server decides what it means)."""
    try:
        return json.dumps(body, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return json.dumps(body).encode()


def read_answer(status: int, headers: Headers, raw: bytes) -> tuple[Headers, Any]:
    """(headers, parsed JSON or text) of a 2xx answer; HTTPFailure for any other status."""
    parsed = parse_body(raw)
    if status >= 400:
        raise HTTPFailure.from_answer(status, headers, parsed)
    return headers, parsed
