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
