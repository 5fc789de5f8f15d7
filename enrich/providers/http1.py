"""POST chat requests over HTTP/1.1 on asyncio itself: no HTTP library, a quarter to a half less CPU per call than aiohttp.

It speaks only what a JSON API call needs: one POST at a time per kept-alive connection (no pipelining),
answers framed by Content-Length, chunked transfer coding or the connection's end, gzip/deflate bodies,
TLS through asyncio (verified as the other clients do). Proxies are not spoken: with a proxy set for the
URL, "auto" sends through aiohttp instead (posters.resolve_kind).
"""

from __future__ import annotations

import asyncio
import re
import ssl
import urllib.parse
import zlib
from typing import Any

from enrich.providers.wire import Headers, HTTPFailure, chat_url, encode_body, read_answer, request_headers, tls_context

MAX_HEAD = 64 * 1024  # status line and headers
MAX_BODY = 64 * 1024 * 1024  # an answer larger than this is not a chat completion
_DIGITS = re.compile("[0-9]+")
_HEX = re.compile(b"[0-9a-fA-F]+")


class _Broken(Exception):
    """The connection failed or the answer was malformed; `answered` is False if no byte of an answer arrived."""

    def __init__(self, message: str, *, answered: bool) -> None:
        super().__init__(message)
        self.answered = answered


class _Conn(asyncio.Protocol):
    """One connection: bytes received so far, and a future woken by every change."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.received = 0  # bytes received since the current request was sent
        self.closed = False
        self.error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport."""
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        """Append and wake the reader."""
        self.buf += data
        self.received += len(data)
        self._wake()

    def eof_received(self) -> bool:
        """The server closed its side: this connection ends."""
        self.closed = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        """Remember why, and wake the reader."""
        self.closed = True
        self.error = exc
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def more(self, timeout: float) -> None:
        """Wait until more bytes arrive or the connection ends; TimeoutError after `timeout` seconds of silence."""
        if self.closed:
            raise _Broken(f"connection closed ({self.error or 'by the server'})", answered=self.received > 0)
        waiter = self._waiter = self.loop.create_future()
        timer = self.loop.call_later(timeout, _expire, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def close(self) -> None:
        """Close the transport (idempotent)."""
        self.closed = True
        if self.transport is not None:
            self.transport.close()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class HTTP1Post:
    """Keep-alive connections to one host, posting JSON to <base_url>/chat/completions."""

    def __init__(self, base_url: str | None, api_key: str, timeout: float) -> None:
        self.url = chat_url(base_url)
        parts = urllib.parse.urlsplit(self.url)
        assert parts.hostname is not None  # chat_url checked it
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        self._ssl = tls_context() if parts.scheme.lower() == "https" else None
        self.timeout = timeout
        host = f"[{self.host}]" if ":" in self.host else self.host
        if parts.port:
            host += f":{parts.port}"
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        fields = {"Host": host, **request_headers(api_key), "Accept-Encoding": "gzip, deflate"}
        self._head = (f"POST {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items())).encode("latin-1")
        self._idle: list[_Conn] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    async def post(self, body: dict[str, Any]) -> tuple[Headers, Any]:
        """(headers, parsed JSON or text) of a 2xx answer; HTTPFailure otherwise."""
        data = encode_body(body)
        return read_answer(*await self._exchange(self._head + b"Content-Length: %d\r\n\r\n" % len(data) + data))

    async def _exchange(self, message: bytes) -> tuple[int, dict[str, str], bytes]:
        """Send on a kept-alive connection; once more on a new one if it had been closed before any answer."""
        conn = self._reuse()
        if conn is not None:
            try:
                return await self._roundtrip(conn, message)
            except _Broken as exc:
                if exc.answered:
                    raise HTTPFailure(None, f"connection failed ({exc})") from exc
        try:
            return await self._roundtrip(await self._connect(), message)
        except _Broken as exc:
            raise HTTPFailure(None, f"connection failed ({exc})") from exc

    def _reuse(self) -> _Conn | None:
        """An idle connection of the running loop that the server has not closed, if any."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # connections belong to the loop that opened them
            self._idle, self._loop = [], loop
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                return conn
        return None

    async def _connect(self) -> _Conn:
        """A new connection (TLS for https), within the timeout."""
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: _Conn(loop), self.host, self.port, ssl=self._ssl,
                                       server_hostname=self.host if self._ssl else None),
                self.timeout,
            )
        except (asyncio.TimeoutError, TimeoutError) as exc:
            raise HTTPFailure(None, "request timed out", timed_out=True) from exc
        except (OSError, ssl.SSLError) as exc:
            raise HTTPFailure(None, f"connection failed ({exc})") from exc
        return conn

    async def _roundtrip(self, conn: _Conn, message: bytes) -> tuple[int, dict[str, str], bytes]:
        """Write the request, read one answer; the connection goes back to the pool if it can carry another."""
        done = False
        try:
            assert conn.transport is not None
            conn.received = 0
            conn.transport.write(message)
            status, headers, raw, keep = await _read_answer(conn, self.timeout)
            done = keep
        except (asyncio.TimeoutError, TimeoutError) as exc:
            raise HTTPFailure(None, "request timed out", timed_out=True) from exc
        except (OSError, ssl.SSLError) as exc:
            raise _Broken(str(exc), answered=conn.received > 0) from exc
        finally:
            if done and not conn.closed:
                self._idle.append(conn)
            else:
                conn.close()
        return status, headers, raw

    async def aclose(self) -> None:
        """Close the idle connections (those in use close when their answer is read)."""
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


async def _read_answer(conn: _Conn, timeout: float) -> tuple[int, dict[str, str], bytes, bool]:
    """(status, lower-case headers, decoded body, reusable) of the next final answer on conn."""
    while True:
        end = await _until(conn, b"\r\n\r\n", 0, MAX_HEAD, timeout)
        status, version, headers = _head(bytes(conn.buf[:end]))
        del conn.buf[: end + 4]
        if not 100 <= status < 200:
            break
    if status in (204, 304):
        body, framed = b"", True
    elif "chunked" in headers.get("transfer-encoding", "").lower():
        body, framed = await _chunked(conn, timeout), True
    elif "content-length" in headers:
        body, framed = await _sized(conn, headers["content-length"], timeout), True
    else:
        body, framed = await _to_close(conn, timeout), False
    keep = framed and not conn.buf and _keeps_alive(version, headers.get("connection", ""))
    return status, headers, _decoded(body, headers.get("content-encoding", "")), keep


async def _until(conn: _Conn, sep: bytes, start: int, limit: int, timeout: float) -> int:
    """Index of sep in the buffer at or after start, waiting for more bytes as needed."""
    while True:
        at = conn.buf.find(sep, start)
        if at >= 0:
            return at
        if len(conn.buf) > limit:
            raise _Broken("the server's answer is malformed (no end of its headers)", answered=True)
        start = max(0, len(conn.buf) - len(sep) + 1)
        await conn.more(timeout)


def _head(raw: bytes) -> tuple[int, str, dict[str, str]]:
    """Status, HTTP version and lower-case headers of an answer's head."""
    lines = raw.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/1.") or not _DIGITS.fullmatch(code):
        raise _Broken(f"the server's answer is not HTTP/1.x ({lines[0][:60]!r})", answered=True)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise _Broken("the server's answer has a malformed header line", answered=True)
        key = name.strip().lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    return int(code), version, headers


async def _sized(conn: _Conn, length: str, timeout: float) -> bytes:
    """A body of Content-Length bytes."""
    if not _DIGITS.fullmatch(length.strip()) or int(length) > MAX_BODY:
        raise _Broken(f"the server's answer has a bad Content-Length ({length[:20]!r})", answered=True)
    size = int(length)
    while len(conn.buf) < size:
        await conn.more(timeout)
    body = bytes(conn.buf[:size])
    del conn.buf[:size]
    return body


async def _chunked(conn: _Conn, timeout: float) -> bytes:
    """A body in chunked transfer coding (trailers are read and dropped)."""
    out = bytearray()
    while True:
        eol = await _until(conn, b"\r\n", 0, 1024, timeout)
        size_text = bytes(conn.buf[:eol]).split(b";", 1)[0].strip()
        if not _HEX.fullmatch(size_text):
            raise _Broken("the server's answer has a malformed chunk size", answered=True)
        size = int(size_text, 16)
        del conn.buf[: eol + 2]
        if size == 0:
            break
        if len(out) + size > MAX_BODY:
            raise _Broken("the server's answer is too large", answered=True)
        while len(conn.buf) < size + 2:
            await conn.more(timeout)
        if conn.buf[size : size + 2] != b"\r\n":
            raise _Broken("the server's answer has a malformed chunk", answered=True)
        out += conn.buf[:size]
        del conn.buf[: size + 2]
    while True:  # trailer lines up to an empty one
        eol = await _until(conn, b"\r\n", 0, MAX_HEAD, timeout)
        del conn.buf[: eol + 2]
        if eol == 0:
            return bytes(out)


async def _to_close(conn: _Conn, timeout: float) -> bytes:
    """A body that ends when the server closes the connection."""
    while not conn.closed:
        if len(conn.buf) > MAX_BODY:
            raise _Broken("the server's answer is too large", answered=True)
        try:
            await conn.more(timeout)
        except _Broken:
            break
    body = bytes(conn.buf)
    conn.buf.clear()
    return body


def _keeps_alive(version: str, connection: str) -> bool:
    """Whether the connection can carry another request after this answer."""
    tokens = {t.strip().lower() for t in connection.split(",")}
    return "keep-alive" in tokens if version == "HTTP/1.0" else "close" not in tokens


def _decoded(body: bytes, encoding: str) -> bytes:
    """The body with its gzip or deflate content coding removed."""
    coding = encoding.strip().lower()
    if not coding or coding == "identity":
        return body
    if coding in ("gzip", "x-gzip"):
        return _inflate(body, 16 + zlib.MAX_WBITS, coding)
    if coding == "deflate":
        try:
            return _inflate(body, zlib.MAX_WBITS, coding)
        except HTTPFailure:  # raw deflate, as some servers send it
            return _inflate(body, -zlib.MAX_WBITS, coding)
    raise HTTPFailure(None, f"the server answered in a content coding that was not asked for ({coding})")


def _inflate(body: bytes, wbits: int, coding: str) -> bytes:
    """Decompress at most MAX_BODY bytes."""
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(body, MAX_BODY)
    except zlib.error as exc:
        raise HTTPFailure(None, f"the server's {coding} body does not decode ({exc})") from exc
    if inflater.unconsumed_tail:
        raise HTTPFailure(None, "the server's answer is too large")
    if not inflater.eof:
        raise HTTPFailure(None, f"the server's {coding} body is cut short")
    return out
