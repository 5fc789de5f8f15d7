"""HTTP1Post, the hand-written HTTP/1.1 client: framing, keep-alive, content codings and failures.

Every test talks to `RawServer`, a scripted TCP server on 127.0.0.1 that reads whole requests and writes back
raw bytes, so that answers can be malformed, cut short or never sent on purpose.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import threading
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pytest

from enrich.errors import ConfigError
from enrich.providers.http1 import HTTP1Post
from enrich.providers.wire import Headers, HTTPFailure

pytestmark = pytest.mark.timeout(20)  # a hang is a failure, not a stuck test run

CLOSE = "close"  # step: close the connection
HANG = "hang"  # step: send nothing more; wait until the client closes the connection
Step = bytes | float | str  # bytes are sent, a float sleeps that many seconds
Answer = Sequence[Step]

BODY: dict[str, Any] = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}
OK: dict[str, Any] = {"object": "chat.completion", "choices": []}


class RawServer:
    """Accept connections on 127.0.0.1 and play one scripted answer per request, in the order requests arrive.

    Each connection is served by its own thread until the client closes it, a CLOSE or HANG step ends it,
    or the script runs out (then the connection is closed without an answer).
    """

    def __init__(self, answers: Sequence[Answer]) -> None:
        self.answers = list(answers)
        self.requests: list[bytes] = []  # raw requests, head and body
        self.accepts = 0  # distinct connections
        self.client_closed = threading.Event()  # set when a HANG step saw the client close
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        threading.Thread(target=self._accept, daemon=True).start()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop accepting and end every connection (wakes blocked threads)."""
        for sock in [self._listener, *self._conns]:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.accepts += 1
                self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            while True:
                request = _read_request(conn)
                if request is None:
                    return
                with self._lock:
                    index = len(self.requests)
                    self.requests.append(request)
                answer = self.answers[index] if index < len(self.answers) else [CLOSE]
                for step in answer:
                    if isinstance(step, bytes):
                        conn.sendall(step)
                    elif isinstance(step, float):
                        time.sleep(step)
                    elif step == CLOSE:
                        return
                    elif step == HANG:
                        while conn.recv(65536):
                            pass
                        self.client_closed.set()
                        return
        except OSError:
            return
        finally:
            conn.close()


def _read_request(conn: socket.socket) -> bytes | None:
    """One whole request (head up to CRLFCRLF, then Content-Length bytes); None if the client closed first."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        body += chunk
    return head + b"\r\n\r\n" + body


def _parse_request(raw: bytes) -> tuple[str, dict[str, str], bytes]:
    """Request line, headers (names as sent) and body of a recorded request."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return lines[0], headers, body


def _answer(body: bytes, *head: str, status: str = "200 OK", version: str = "HTTP/1.1", length: bool = True) -> bytes:
    """Raw answer bytes: status line, the given header lines (plus Content-Length unless told not), body."""
    lines = [f"{version} {status}", *head] + ([f"Content-Length: {len(body)}"] if length else [])
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _json(obj: Any = None, *head: str, status: str = "200 OK") -> bytes:
    """A Content-Length JSON answer."""
    return _answer(json.dumps(OK if obj is None else obj).encode(), "Content-Type: application/json", *head, status=status)


def _run(post: HTTP1Post, *bodies: dict[str, Any]) -> list[tuple[Headers, Any]]:
    """Post each body in turn in one event loop, then close the client."""

    async def go() -> list[tuple[Headers, Any]]:
        try:
            return [await post.post(body) for body in bodies]
        finally:
            await post.aclose()

    return asyncio.run(go())


def _failure(post: HTTP1Post, *bodies: dict[str, Any]) -> HTTPFailure:
    """The HTTPFailure that posting the bodies raises (any other exception type fails the test)."""
    with pytest.raises(HTTPFailure) as info:
        _run(post, *bodies)
    return info.value


def test_a_content_length_json_answer_and_the_request_sent() -> None:
    answer = _json({"id": "x", "object": "chat.completion"}, "X-RateLimit-Limit-Requests: 500")
    body = {"model": "fake-model", "messages": [{"role": "user", "content": "café ✓"}]}
    with RawServer([[answer]]) as server:
        [(headers, parsed)] = _run(HTTP1Post(server.url, "sk-test", 2.0), body)
        assert parsed == {"id": "x", "object": "chat.completion"}
        assert headers["x-ratelimit-limit-requests"] == "500" and headers["content-type"] == "application/json"
        line, sent, data = _parse_request(server.requests[0])
        assert line == "POST /v1/chat/completions HTTP/1.1"
        assert sent["Host"] == f"127.0.0.1:{server.port}"
        assert sent["Authorization"] == "Bearer sk-test" and sent["Content-Type"] == "application/json"
        assert int(sent["Content-Length"]) == len(data)
        assert json.loads(data) == body
        assert "café ✓".encode() in data and b"\\u" not in data  # UTF-8, not \u-escaped


def test_sequential_posts_reuse_one_kept_alive_connection() -> None:
    with RawServer([[_json()], [_json()], [_json()]]) as server:
        post = HTTP1Post(server.url, "k", 2.0)
        answers = _run(post, BODY, BODY, BODY)
        assert [parsed for _, parsed in answers] == [OK, OK, OK]
        assert server.accepts == 1 and len(server.requests) == 3 and post._idle == []  # aclose emptied the pool


def test_an_idle_connection_the_server_closed_is_replaced() -> None:
    """The server answers, then closes; the second post goes out on a new connection without an error."""
    with RawServer([[_json(), CLOSE], [_json()]]) as server:
        answers = _run(HTTP1Post(server.url, "k", 2.0), BODY, BODY)
        assert [parsed for _, parsed in answers] == [OK, OK]
        assert server.accepts == 2 and len(server.requests) == 2


def test_a_reused_connection_closed_before_any_answer_is_retried_once() -> None:
    """The kept-alive connection takes the second request and closes without a byte: sent again, on a new one."""
    with RawServer([[_json()], [CLOSE], [_json({"again": True})]]) as server:
        answers = _run(HTTP1Post(server.url, "k", 2.0), BODY, BODY)
        assert [parsed for _, parsed in answers] == [OK, {"again": True}]
        assert server.accepts == 2 and len(server.requests) == 3


def test_the_retry_is_only_once_and_a_fresh_connection_is_not_retried() -> None:
    with RawServer([[_json()], [CLOSE], [CLOSE], [_json()]]) as server:
        fail = _failure(HTTP1Post(server.url, "k", 2.0), BODY, BODY)
        assert fail.status is None and not fail.timed_out
        assert server.accepts == 2 and len(server.requests) == 3
    with RawServer([[CLOSE], [_json()]]) as server:
        fail = _failure(HTTP1Post(server.url, "k", 2.0), BODY)
        assert fail.status is None and not fail.timed_out
        assert server.accepts == 1 and len(server.requests) == 1


def test_a_connection_close_answer_is_not_reused() -> None:
    """The server keeps the socket open: only the client's reading of `Connection: close` makes it reconnect."""
    with RawServer([[_json(None, "Connection: close")], [_json()]]) as server:
        answers = _run(HTTP1Post(server.url, "k", 2.0), BODY, BODY)
        assert [parsed for _, parsed in answers] == [OK, OK]
        assert server.accepts == 2


def test_http_1_0_answers_close_delimited_and_kept_alive() -> None:
    close_delimited = _answer(json.dumps({"n": 1}).encode(), "Content-Type: application/json", version="HTTP/1.0", length=False)
    kept = _answer(json.dumps({"n": 2}).encode(), "Connection: Keep-Alive", version="HTTP/1.0")
    with RawServer([[close_delimited, 0.05, CLOSE], [kept], [_json()]]) as server:
        answers = _run(HTTP1Post(server.url, "k", 2.0), BODY, BODY, BODY)
        assert [parsed for _, parsed in answers] == [{"n": 1}, {"n": 2}, OK]
        assert server.accepts == 2  # the first connection ended with its body; the keep-alive one is reused
    plain_1_0 = _answer(b"{}", version="HTTP/1.0")  # HTTP/1.0 without keep-alive: not reused
    with RawServer([[plain_1_0], [_json()]]) as server:
        _run(HTTP1Post(server.url, "k", 2.0), BODY, BODY)
        assert server.accepts == 2


def test_a_chunked_answer_with_an_extension_and_a_trailer() -> None:
    data = json.dumps({"id": "chunked", "text": "é" * 40}).encode()
    parts = [data[:7], data[7:30], data[30:]]
    head = _answer(b"", "Content-Type: application/json", "Transfer-Encoding: chunked", length=False)
    chunks: list[Step] = [head]
    for i, part in enumerate(parts):
        ext = ";foo=bar" if i == 1 else ""
        chunks += [b"%x%s\r\n" % (len(part), ext.encode()) + part + b"\r\n", 0.01]
    chunks.append(b"0\r\nX-Trailer: yes\r\n\r\n")
    with RawServer([chunks, [_json()]]) as server:
        answers = _run(HTTP1Post(server.url, "k", 2.0), BODY, BODY)
        assert answers[0][1] == {"id": "chunked", "text": "é" * 40} and answers[1][1] == OK
        assert server.accepts == 1  # the trailer was read to its end: the connection carried the next request


@pytest.mark.parametrize(
    ("coding", "wbits"),
    [("gzip", 16 + zlib.MAX_WBITS), ("deflate", zlib.MAX_WBITS), ("deflate", -zlib.MAX_WBITS)],
    ids=["gzip", "deflate-zlib", "deflate-raw"],  # raw deflate, as some servers send it
)
def test_gzip_and_deflate_bodies_are_decoded(coding: str, wbits: int) -> None:
    packer = zlib.compressobj(wbits=wbits)
    packed = packer.compress(json.dumps(OK).encode()) + packer.flush()
    with RawServer([[_answer(packed, f"Content-Encoding: {coding}")]]) as server:
        [(headers, parsed)] = _run(HTTP1Post(server.url, "k", 2.0), BODY)
        assert parsed == OK and headers["content-encoding"] == coding
        assert b"Accept-Encoding: gzip, deflate\r\n" in server.requests[0]


def test_an_unknown_content_encoding_is_a_failure() -> None:
    with RawServer([[_answer(b"\x0b\x02\x80{}\x03", "Content-Encoding: br")]]) as server:
        fail = _failure(HTTP1Post(server.url, "k", 2.0), BODY)
        assert fail.status is None and "br" in fail.message


def test_a_gzip_body_that_does_not_decode_is_a_failure() -> None:
    with RawServer([[_answer(b"not gzip at all", "Content-Encoding: gzip")]]) as server:
        assert _failure(HTTP1Post(server.url, "k", 2.0), BODY).status is None


def test_error_statuses_raise_http_failure_with_the_servers_message() -> None:
    limited = _json({"error": {"message": "slow down", "type": "rate_limit"}}, "Retry-After: 2", status="429 Too Many Requests")
    broken = _answer(b"internal oops", "Content-Type: text/plain", status="500 Internal Server Error")
    with RawServer([[limited], [broken]]) as server:
        fail = _failure(HTTP1Post(server.url, "k", 2.0), BODY)
        assert (fail.status, fail.message, fail.headers["retry-after"]) == (429, "slow down", "2")
        assert not fail.timed_out
        fail = _failure(HTTP1Post(server.url, "k", 2.0), BODY)
        assert (fail.status, fail.message) == (500, "internal oops")


def test_a_server_that_never_answers_times_out() -> None:
    with RawServer([[HANG]]) as server:
        start = time.monotonic()
        fail = _failure(HTTP1Post(server.url, "k", 0.3), BODY)
        assert fail.timed_out and fail.status is None
        assert time.monotonic() - start < 1.5
        assert server.client_closed.wait(1.0)  # the timed-out connection was closed


def test_a_refused_connection_is_a_failure_without_status() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    fail = _failure(HTTP1Post(f"http://127.0.0.1:{port}/v1", "k", 1.0), BODY)
    assert fail.status is None and not fail.timed_out and "connection failed" in fail.message


@pytest.mark.parametrize(
    "answer",
    [
        b"garbage\r\n\r\n",
        b"HTTP/1.1 OK 200\r\nContent-Length: 2\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nContent-Type application/json\r\nContent-Length: 2\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: two\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nContent-Length: -2\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (70 * 1024),  # headers that never end
    ],
    ids=["status-line", "status-code", "header-without-colon", "chunk-size", "length-word", "length-negative",
         "length-twice", "endless-head"],
)
def test_malformed_answers_are_http_failures(answer: bytes) -> None:
    with RawServer([[answer, HANG]]) as server:
        fail = _failure(HTTP1Post(server.url, "k", 2.0), BODY)
        assert fail.status is None and not fail.timed_out
        assert server.accepts == 1 and len(server.requests) == 1  # a malformed answer is not retried


def test_a_connection_closed_in_the_middle_of_a_body_is_a_failure() -> None:
    cut = _answer(b"", "Content-Length: 100", length=False) + b'{"partial": '
    with RawServer([[cut, 0.05, CLOSE], [_json()]]) as server:
        fail = _failure(HTTP1Post(server.url, "k", 2.0), BODY)
        assert fail.status is None and not fail.timed_out
        assert server.accepts == 1 and len(server.requests) == 1


def test_an_interim_1xx_answer_is_skipped() -> None:
    with RawServer([[b"HTTP/1.1 100 Continue\r\n\r\n", 0.01, _json({"final": True})], [_json()]]) as server:
        answers = _run(HTTP1Post(server.url, "k", 2.0), BODY, BODY)
        assert answers[0][1] == {"final": True} and answers[1][1] == OK and server.accepts == 1


def test_a_204_answer_has_no_body_and_keeps_the_connection() -> None:
    """The server keeps the socket open after the 204: reading a body to the connection's end would time out."""
    with RawServer([[b"HTTP/1.1 204 No Content\r\nX-Id: 1\r\n\r\n"], [_json()]]) as server:
        answers = _run(HTTP1Post(server.url, "k", 2.0), BODY, BODY)
        assert answers[0] == ({"x-id": "1"}, "") and answers[1][1] == OK
        assert server.accepts == 1


@pytest.mark.parametrize("base", ["ftp://x/v1", "localhost:8080/v1", "http:///v1"])
def test_a_base_url_that_is_not_http_is_a_config_error(base: str) -> None:
    with pytest.raises(ConfigError, match="not an http:// or https:// URL"):
        HTTP1Post(base, "k", 1.0)


def test_the_url_host_and_path_come_from_the_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://localhost:8080/v1/")
    post = HTTP1Post(None, "k", 1.0)
    assert (post.url, post.host, post.port) == ("http://localhost:8080/v1/chat/completions", "localhost", 8080)
    assert post._head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost:8080\r\n")
    post = HTTP1Post("https://[::1]/api/v1", "k", 1.0)
    assert (post.host, post.port) == ("::1", 443) and post._ssl is not None
    assert post._head.startswith(b"POST /api/v1/chat/completions HTTP/1.1\r\nHost: [::1]\r\n")


def test_cancelling_a_post_in_flight_closes_its_connection() -> None:
    with RawServer([[HANG], [_json()]]) as server:
        post = HTTP1Post(server.url, "k", 5.0)

        async def go() -> tuple[int, bool, Any]:
            try:
                task = asyncio.create_task(post.post(BODY))
                for _ in range(200):  # until the server has the whole request
                    if server.requests:
                        break
                    await asyncio.sleep(0.01)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                idle = len(post._idle)
                closed = await asyncio.to_thread(server.client_closed.wait, 1.0)
                _, parsed = await post.post(BODY)
                return idle, closed, parsed
            finally:
                await post.aclose()

        idle, closed, parsed = asyncio.run(go())
        assert idle == 0 and closed  # not pooled, and the server saw the connection end
        assert parsed == OK and server.accepts == 2


# Found while writing these tests (each failed before its fix in http1.py).


@pytest.mark.parametrize(
    "cut",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n",
    ],
    ids=["after-the-head", "after-a-chunk"],
)
def test_a_reused_connection_closed_after_the_answer_began_is_not_retried(cut: bytes) -> None:
    with RawServer([[_json()], [cut, 0.05, CLOSE], [_json({"duplicate": True})]]) as server:
        fail = _failure(HTTP1Post(server.url, "k", 2.0), BODY, BODY)
        assert fail.status is None
        assert len(server.requests) == 2  # the second request was received once, not sent twice


def test_a_negative_chunk_size_is_a_failure() -> None:
    answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-7\r\n" + json.dumps(OK).encode() + b"XX0\r\n\r\n"
    with RawServer([[answer, HANG]]) as server:
        assert _failure(HTTP1Post(server.url, "k", 2.0), BODY).status is None


@pytest.mark.parametrize(
    "answer",
    [b"HTTP/1.1 2\xb200 OK\r\nContent-Length: 2\r\n\r\n{}", b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\n{}"],
    ids=["status-code", "content-length"],
)
def test_superscript_digits_in_the_head_are_a_failure(answer: bytes) -> None:
    with RawServer([[answer, HANG]]) as server:
        assert _failure(HTTP1Post(server.url, "k", 2.0), BODY).status is None


def test_a_truncated_gzip_body_is_a_failure() -> None:
    packed = gzip.compress(json.dumps({"text": "x" * 200}).encode())[:-12]
    with RawServer([[_answer(packed, "Content-Encoding: gzip")]]) as server:
        assert _failure(HTTP1Post(server.url, "k", 2.0), BODY).status is None


def _self_signed(folder: Path) -> tuple[str, str]:
    """A certificate for 127.0.0.1 and its key, made with the openssl command (skip without it)."""
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("no openssl command to make a test certificate")
    cert, key = str(folder / "cert.pem"), str(folder / "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    return cert, key


def test_https_is_verified_against_ssl_cert_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ssl

    from fakeserver import FakeOpenAI

    cert, key = _self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = FakeOpenAI().start(tls=context)
    try:
        monkeypatch.delenv("SSL_CERT_DIR", raising=False)
        monkeypatch.setenv("SSL_CERT_FILE", cert)
        post = HTTP1Post(server.url, "k", 2.0)

        async def twice() -> list[Any]:
            try:
                return [(await post.post(BODY))[1]["object"] for _ in range(2)]
            finally:
                await post.aclose()

        assert asyncio.run(twice()) == ["chat.completion"] * 2  # the second over the same TLS connection
        (tmp_path / "other").mkdir()
        monkeypatch.setenv("SSL_CERT_FILE", _self_signed(tmp_path / "other")[0])  # did not sign the server's certificate
        fail = _failure(HTTP1Post(server.url, "k", 2.0), BODY)
        assert fail.status is None and "certificate" in fail.message.lower()
        assert len(server.chats) == 2
    finally:
        server.stop()
