"""POST chat requests with aiohttp itself: the SDK's URL, headers and error types, a quarter of its CPU per call."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Mapping
from typing import Any

import aiohttp
import openai

try:  # the openai SDK builds its errors on httpx (httpx2 in its newer releases)
    import httpx2 as httpx  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # pragma: no cover - depends on the installed SDK
    import httpx  # type: ignore[no-redef,import-not-found,unused-ignore]

_DECODED = ("content-encoding", "content-length", "transfer-encoding")  # aiohttp has already undone these


class DirectPost:
    """One keep-alive aiohttp session posting JSON to <base_url>/chat/completions.

    Measured against the fake server (bench/bench_http_client.py) a call costs about 0.55 ms of client CPU
    against 2.25 ms through the SDK (request options, httpx objects and their aiohttp adapter). Errors are
    raised as the SDK's own exception types, so retries and error messages do not depend on the path taken.
    """

    def __init__(self, client: openai.AsyncOpenAI, timeout: float) -> None:
        self._client = client
        self.url = str(client.base_url).rstrip("/") + "/chat/completions"
        headers = {**client.default_headers, **client.auth_headers}
        self._headers = {k: v for k, v in headers.items() if isinstance(v, str)}  # unset ones are openai.Omit
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout)
        self.proxy = env_proxy(self.url)
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _open(self) -> aiohttp.ClientSession:
        """The session of the running event loop (a new loop gets a new session)."""
        loop = asyncio.get_running_loop()
        if self._session is None or self._loop is not loop or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers=self._headers,
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(limit=0),  # the pipeline bounds concurrency
            )
            self._loop = loop
        return self._session

    async def post(self, body: dict[str, Any]) -> tuple[Mapping[str, str], Any]:
        """(headers, parsed JSON or text) of a 2xx answer; openai.APIError subclasses otherwise."""
        data = json.dumps(body, ensure_ascii=False).encode()
        try:
            async with self._open().post(self.url, data=data, proxy=self.proxy) as resp:
                raw = await resp.read()
                status, headers = resp.status, resp.headers
        except asyncio.TimeoutError as exc:
            raise openai.APITimeoutError(request=self._request()) from exc
        except aiohttp.ClientError as exc:
            raise openai.APIConnectionError(request=self._request()) from exc
        if status >= 400:
            kept = [(k, v) for k, v in headers.items() if k.lower() not in _DECODED]
            response = httpx.Response(status, headers=kept, content=raw, request=self._request())
            raise self._client._make_status_error_from_response(response)  # the SDK's own message and subclass
        return headers, _parse(raw)

    def _request(self) -> Any:
        """An httpx request naming the URL, which the SDK's exceptions carry."""
        return httpx.Request("POST", self.url)

    async def aclose(self) -> None:
        """Close the session's connections."""
        if self._session is not None and not self._session.closed:
            if self._loop is asyncio.get_running_loop():
                await self._session.close()
            else:  # its loop is gone: nothing can be awaited on it any more
                self._session.detach()
        self._session = None


def env_proxy(url: str) -> str | None:
    """The proxy HTTP(S)_PROXY / NO_PROXY name for url, read once (aiohttp's trust_env asks a thread per request)."""
    scheme, _, rest = url.partition("://")
    host = rest.split("/", 1)[0].rsplit("@", 1)[-1]
    if urllib.request.proxy_bypass(host.split(":", 1)[0] if not host.startswith("[") else host):
        return None
    return urllib.request.getproxies().get(scheme.lower())


def _parse(raw: bytes) -> Any:
    """JSON if the body is JSON, else its text."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")

