"""DirectPost, the default HTTP path: proxies and TLS from the environment, error answers as HTTPFailure."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_direct_post_reads_the_proxy_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from enrich.providers.direct import DirectPost, env_proxy

    for var in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    assert env_proxy("https://api.openai.com/v1/chat/completions") is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.local:3128")
    monkeypatch.setenv("NO_PROXY", "localhost,internal.example")
    assert env_proxy("https://api.openai.com/v1/chat/completions") == "http://proxy.local:3128"
    assert env_proxy("https://internal.example:8443/v1/chat/completions") is None
    assert env_proxy("http://api.openai.com/v1/chat/completions") is None  # only HTTPS_PROXY is set
    post = DirectPost(None, "k", 5)
    assert post.url == "https://api.openai.com/v1/chat/completions" and post.proxy == "http://proxy.local:3128"
    monkeypatch.setenv("OPENAI_BASE_URL", "http://localhost:8080/v1/")
    assert DirectPost(None, "k", 5).url == "http://localhost:8080/v1/chat/completions"


def test_http_failure_from_an_openai_error_body() -> None:
    from enrich.providers.wire import HTTPFailure

    body = {"error": {"message": "Unsupported parameter: 'max_tokens'", "param": "max_tokens", "type": "invalid_request_error"}}
    fail = HTTPFailure.from_answer(400, {"x": "1"}, body)
    assert (fail.status, fail.message, fail.param) == (400, "Unsupported parameter: 'max_tokens'", "max_tokens")
    assert fail.body == body["error"] and fail.headers == {"x": "1"}
    assert HTTPFailure.from_answer(502, {}, "").message == "" and HTTPFailure.from_answer(500, {}, {"detail": "x"}).param is None


def test_direct_post_verifies_https_with_certifi_or_ssl_cert_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import ssl

    import certifi

    from enrich.errors import ConfigError
    from enrich.providers.direct import DirectPost, tls_context

    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    assert DirectPost("http://127.0.0.1:9/v1", "k", 5)._ssl is None
    context = DirectPost("https://api.example.com/v1", "k", 5)._ssl
    assert isinstance(context, ssl.SSLContext) and context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.cert_store_stats()["x509_ca"] == ssl.create_default_context(cafile=certifi.where()).cert_store_stats()["x509_ca"]
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigError, match="cannot load CA certificates from .*missing.pem") as info:
        tls_context()
    assert "SSL_CERT_FILE" in (info.value.hint or "")


def test_all_proxy_is_used_and_a_socks_proxy_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from enrich.errors import ConfigError
    from enrich.providers.direct import env_proxy

    for var in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "no_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("ALL_PROXY", "http://user:secret@proxy.local:3128")
    assert env_proxy("https://api.openai.com/v1/chat/completions") == "http://user:secret@proxy.local:3128"
    monkeypatch.setenv("ALL_PROXY", "socks5://user:secret@proxy.local:1080")
    with pytest.raises(ConfigError, match="not an http:// proxy") as info:
        env_proxy("https://api.openai.com/v1/chat/completions")
    assert "secret" not in str(info.value) and "ENRICH_HTTP_CLIENT=httpx" in (info.value.hint or "")



def test_requests_go_through_the_http_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """A forward proxy on 127.0.0.1 sees the chat request and relays it to the fake server."""
    import asyncio
    import threading
    import urllib.request
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from typing import Any

    from fakeserver import FakeOpenAI

    from enrich.providers.direct import DirectPost

    seen: list[str] = []

    class Proxy(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            seen.append(self.path)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            headers = {k: v for k, v in self.headers.items() if k.lower() in ("authorization", "content-type")}
            req = urllib.request.Request(self.path, data=body, headers=headers, method="POST")
            with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req) as answer:
                data = answer.read()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    proxy = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    for var in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "http_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.server_address[1]}")
    try:
        with FakeOpenAI() as server:
            post = DirectPost(server.url, "k", 5)

            async def go() -> Any:
                try:
                    return await post.post({"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]})
                finally:
                    await post.aclose()

            headers, body = asyncio.run(go())
            assert seen == [f"{server.url}/chat/completions"] and len(server.chats) == 1
            assert body["object"] == "chat.completion"
    finally:
        proxy.shutdown()


def test_a_base_url_that_is_not_http_is_a_config_error() -> None:
    from enrich.errors import ConfigError
    from enrich.providers.direct import DirectPost

    for bad in ("localhost:8080/v1", "ftp://example.com/v1"):
        with pytest.raises(ConfigError, match="not an http:// or https:// URL"):
            DirectPost(bad, "k", 5)


def test_text_with_a_lone_surrogate_is_sent_escaped() -> None:
    import asyncio

    from fakeserver import FakeOpenAI

    from enrich.providers.direct import DirectPost

    with FakeOpenAI() as server:
        post = DirectPost(server.url, "k", 5)

        async def go() -> None:
            try:
                await post.post({"model": "fake-model", "messages": [{"role": "user", "content": "bad \udc80 byte"}]})
            finally:
                await post.aclose()

        asyncio.run(go())
        assert b"\\udc80" in server.requests[0].raw

