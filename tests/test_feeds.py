"""`enrich ingest`: feeds into notes, against a local HTTP server on 127.0.0.1 (never the internet)."""

from __future__ import annotations

import gzip
import json
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

import enrich.feeds as feeds_mod
from enrich.cli_ingest import register
from enrich.errors import UsageError
from enrich.feedio import _net_reason, decode_body, normalize_url
from enrich.feedlist import read_sources
from enrich.feeds import IngestOptions, IngestReport, ingest
from enrich.journal import undo_last
from enrich.notes import parse_note
from enrich.roles import default_roles
from enrich.template import Entry, NameAllocator, render_note, slugify, yaml_scalar

ROOT = Path(__file__).resolve().parents[1]
FEEDS = ROOT / "fixtures" / "feeds"
SHARED = ROOT.parent / "shared"
NAME = re.compile(r"^\d{8}-rss-[a-z0-9_-]+-\d{3,}-[\w-]+\.md$")
ROLES = ["source", "content", "key_points", "thoughts", "related"]
runner = CliRunner()


# ---------------------------------------------------------------- local server


@dataclass
class Reply:
    """One scripted HTTP answer."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


class FeedServer:
    """A threaded HTTP server on 127.0.0.1 serving routes; records every request's path and headers."""

    def __init__(self) -> None:
        self.routes: dict[str, Callable[[dict[str, str]], Reply]] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                headers = {k.lower(): v for k, v in self.headers.items()}
                server.requests.append((self.path, headers))
                route = server.routes.get(self.path)
                reply = route(headers) if route else Reply(404, b"not found")
                time.sleep(reply.delay)
                try:
                    self.send_response(reply.status)
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                except OSError:
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        """Absolute URL of a path on this server."""
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def file(self, path: str, name: str, ctype: str = "application/rss+xml", *, etag: str | None = None,
             modified: str | None = None, gzipped: bool = False) -> None:
        """Serve a fixture file, with optional validators (answering 304) and gzip encoding."""
        body = (FEEDS / name).read_bytes()

        def route(h: dict[str, str]) -> Reply:
            if (etag and h.get("if-none-match") == etag) or (modified and h.get("if-modified-since") == modified):
                return Reply(304)
            headers = {"Content-Type": ctype, **({"ETag": etag} if etag else {})}
            headers.update({"Last-Modified": modified} if modified else {})
            if gzipped:
                return Reply(200, gzip.compress(body), {**headers, "Content-Encoding": "gzip"})
            return Reply(200, body, headers)

        self.routes[path] = route

    def paths(self, prefix: str) -> list[dict[str, str]]:
        """Headers of the requests made to one path."""
        return [h for p, h in self.requests if p == prefix]


@pytest.fixture
def server() -> Iterator[FeedServer]:
    """The feed server, with the fixture feeds mounted."""
    srv = FeedServer()
    srv.file("/rss", "rss2.xml", etag='"v1"')
    srv.file("/atom", "atom.xml", "application/atom+xml", modified="Wed, 04 Mar 2026 12:00:00 GMT")
    srv.file("/rdf", "rdf.xml", "application/rdf+xml")
    srv.file("/malformed", "malformed.xml")
    srv.file("/gb", "gb2312.xml", "application/xml")
    srv.file("/latin-gz", "latin1.xml", "text/xml; charset=ISO-8859-1", gzipped=True)
    srv.file("/gzipbody", "gzipbody.xml")
    srv.file("/hostile", "hostile.xml")
    srv.file("/html", "not-a-feed.html", "text/html")
    srv.routes["/old-rdf"] = lambda h: Reply(301, b"", {"Location": "/rdf"})
    srv.routes["/slow"] = lambda h: Reply(200, (FEEDS / "rss2.xml").read_bytes(), delay=3)
    srv.thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


@pytest.fixture
def vault(tmp_path: Path) -> Path:
    """An empty vault (an Obsidian folder)."""
    root = tmp_path / "vault"
    (root / ".obsidian").mkdir(parents=True)
    return root


def run(srv: FeedServer, vault: Path, *paths: str, **opts: Any) -> IngestReport:
    """Ingest server paths into the vault with a fixed date."""
    events: list[tuple[str, str]] = []
    report = ingest([srv.url(p) for p in paths], vault, IngestOptions(today=date(2026, 3, 8), **opts),
                    lambda k, m: events.append((k, m)))
    return report


def notes(vault: Path) -> list[Path]:
    """Note files under the vault's inbox."""
    return sorted((vault / "inbox").glob("*.md")) if (vault / "inbox").is_dir() else []


def refused_url() -> str:
    """A 127.0.0.1 URL nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/feed"


# ---------------------------------------------------------------- ingest over HTTP


def test_rss_atom_rdf_become_notes_in_the_vault_format(server: FeedServer, vault: Path) -> None:
    report = run(server, vault, "/rss", "/atom", "/rdf")
    assert not report.failed and not report.warnings
    assert len(report.created) == 4 + 2 + 2
    roles = default_roles()
    for path in notes(vault):
        assert NAME.match(path.name), path.name
        note = parse_note(path.read_bytes(), path, roles)
        assert note.frontmatter is not None and note.frontmatter.error is None
        assert [s.role for s in note.sections if s.level == 2] == ROLES
        for role in ("key_points", "related"):
            sec = note.section(role)
            assert sec is not None and roles.is_placeholder(note.body(sec))
        meta = note.meta
        assert list(meta)[:9] == ["id", "title", "created", "tags", "source", "source_url", "source_type", "published",
                                  "content_length"]
        assert meta["id"] == path.stem and meta["tags"][0] == "rss" and meta["tags"][-1] == "auto-import"
        assert "utm_" not in meta["source_url"] and "#" not in meta["source_url"]
        assert not meta["source_url"].endswith("/")
    small = next(p for p in notes(vault) if "small-notes" in p.name).read_text(encoding="utf-8")
    assert 'source_url: "https://blog.example.com/posts/small-notes"' in small
    assert "[Linking](https://blog.example.com/posts/linking/)" in small  # relative to the entry's link
    assert "script" not in small and "steal" not in small and "javascript" not in small
    assert "#### Why small notes" in small and "![graph of notes](https://blog.example.com/img/graph.png)" in small
    attention = next(p for p in notes(vault) if "attention" in p.name).read_text(encoding="utf-8")
    assert "title: \"Attention: A Budget, Not A Resource\"" in attention
    assert 'source_url: "https://blog.example.com/posts/attention-budget?id=7"' in attention
    ua = server.paths("/rss")[0]
    assert ua["user-agent"].startswith("enrich/") and "gzip" in ua["accept-encoding"]


def test_second_ingest_creates_nothing_and_sends_validators(server: FeedServer, vault: Path) -> None:
    run(server, vault, "/rss", "/atom", "/rdf")
    before = {p.name for p in notes(vault)}
    state = json.loads((vault / ".enrich" / "feeds.json").read_text(encoding="utf-8"))
    rss_state = state["feeds"][server.url("/rss")]
    assert rss_state["etag"] == '"v1"' and "guid:example-blog-0001" in rss_state["seen"]
    assert state["feeds"][server.url("/atom")]["last_modified"] == "Wed, 04 Mar 2026 12:00:00 GMT"
    again = run(server, vault, "/rss", "/atom", "/rdf")
    assert again.created == [] and not again.failed
    assert {p.name for p in notes(vault)} == before
    assert server.paths("/rss")[-1]["if-none-match"] == '"v1"'
    assert server.paths("/atom")[-1]["if-modified-since"] == "Wed, 04 Mar 2026 12:00:00 GMT"
    status = {f["feed"]: f["status"] for f in again.feeds}
    assert status == {"example_blog": "not-modified", "atom_research_notes": "not-modified", "rdf_site_summary": "ok"}
    assert [s["reason"] for s in again.skipped] == ["already in the vault or seen before"] * 2
    assert not list((vault / ".enrich").glob("*.enrich-tmp"))


def test_entries_already_in_the_vault_are_skipped(server: FeedServer, vault: Path) -> None:
    (vault / "old.md").write_text(
        '---\ntitle: Old: broken YAML\n'
        'source_url: "HTTPS://blog.example.com/posts/writing-is-thinking/?utm_source=x#top"\n---\n# Old\n',
        encoding="utf-8")
    report = run(server, vault, "/rss")
    assert [c["url"] for c in report.created if "writing" in c["url"]] == []
    assert any(s["url"].endswith("/writing-is-thinking") for s in report.skipped)


def test_gzip_encoding_charsets_and_redirect(server: FeedServer, vault: Path) -> None:
    report = run(server, vault, "/latin-gz", "/gb", "/old-rdf")
    assert not report.failed
    titles = {c["title"] for c in report.created}
    assert {"Crème brûlée à la française", "标签与词表", "First RDF item", "Second RDF item"} <= titles
    cn = next(p for p in notes(vault) if "标签与词表" in p.name).read_text(encoding="utf-8")
    assert "一个好的标签体系需要一个受控的词表" in cn and 'source: "中文科技博客"' in cn
    fr = next(p for p in notes(vault) if "creme" in p.name).read_text(encoding="utf-8")
    assert "La crème brûlée est un dessert français" in fr


def test_failing_feeds_are_reported_and_the_others_go_on(server: FeedServer, vault: Path) -> None:
    urls = [server.url("/missing"), refused_url(), server.url("/slow"), server.url("/html"), server.url("/rdf")]
    report = ingest(urls, vault, IngestOptions(timeout=1, today=date(2026, 3, 8)))
    reasons = {f["feed"]: f["reason"] for f in report.failed}
    assert reasons[urls[0]] == "HTTP 404 Not Found"
    assert reasons[urls[1]] == "connection refused"
    assert reasons[urls[2]] == "timed out after 1s"
    assert reasons[urls[3]].startswith("not a readable feed")
    assert len(report.created) == 2


def test_malformed_feed_keeps_the_entries_it_could_read(server: FeedServer, vault: Path) -> None:
    report = run(server, vault, "/malformed")
    assert len(report.created) == 2 and not report.failed
    assert any("malformed feed" in w for w in report.warnings)


def test_hostile_titles_stay_inside_the_vault_and_valid_yaml(server: FeedServer, vault: Path) -> None:
    report = run(server, vault, "/hostile")
    assert len(report.created) == 6
    inbox = (vault / "inbox").resolve()
    roles = default_roles()
    for path in notes(vault):
        assert path.resolve().parent == inbox and NAME.match(path.name)
        assert len(path.name.encode("utf-8")) <= 255 and "\x00" not in path.name
        note = parse_note(path.read_bytes(), path, roles)
        assert note.frontmatter is not None and note.frontmatter.error is None
        assert [s.role for s in note.sections if s.level == 2] == ROLES
    titles = {parse_note(p.read_bytes()).meta["title"] for p in notes(vault)}
    assert {"yes", "Key: value # not a comment", "## 关键观点", "CON", 'a/b\\c:d*e?f"g<h>i|j'} <= titles
    long = next(t for t in titles if t.startswith("../"))
    assert len(long) == 300
    assert sorted(os.listdir(vault)) == [".enrich", ".obsidian", "inbox"]


def test_gzip_bytes_body_is_never_written(server: FeedServer, vault: Path) -> None:
    report = run(server, vault, "/gzipbody")
    assert [c["title"] for c in report.created] == ["A readable post"]
    assert [s["reason"] for s in report.skipped] == ["binary or compressed content, not written"]
    for path in notes(vault):
        text = path.read_text(encoding="utf-8")
        assert "\x1f" not in text and "\ufffd" not in text and "\x08" not in text


def test_dry_run_writes_nothing(server: FeedServer, vault: Path) -> None:
    report = run(server, vault, "/rss", "/atom", dry_run=True)
    assert report.dry_run and len(report.created) == 6
    assert sorted(os.listdir(vault)) == [".obsidian"]


def test_limit_takes_the_newest_and_leaves_the_rest_for_later(server: FeedServer, vault: Path) -> None:
    first = run(server, vault, "/rss", limit=1)
    assert [c["title"] for c in first.created] == ["写作即思考：为什么要用自己的话"]
    assert any("over --limit 1" in s["reason"] for s in first.skipped)
    state = json.loads((vault / ".enrich" / "feeds.json").read_text(encoding="utf-8"))
    assert "etag" not in state["feeds"][server.url("/rss")]  # or the next run would get a 304 and lose them
    second = run(server, vault, "/rss")
    assert len(second.created) == 3


def test_undo_removes_the_created_notes(server: FeedServer, vault: Path) -> None:
    report = run(server, vault, "/rdf")
    undone = undo_last(vault)
    assert sorted(undone.removed) == sorted(c["path"] for c in report.created)
    assert notes(vault) == []


def test_a_failed_write_leaves_no_half_written_note(server: FeedServer, vault: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    real_fsync = os.fsync

    def flaky_fsync(fd: int) -> None:
        if "attention-a-budget" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", flaky_fsync)
    report = run(server, vault, "/rss")
    assert len(report.failed) == 1 and report.failed[0]["reason"] == "No space left on device"
    assert "attention-a-budget" in report.failed[0]["entry"]
    assert len(report.created) == 3
    assert not [p for p in (vault / "inbox").iterdir() if "attention" in p.name or p.name.endswith(".enrich-tmp")]
    state = json.loads((vault / ".enrich" / "feeds.json").read_text(encoding="utf-8"))
    assert "etag" not in state["feeds"][server.url("/rss")]


# ---------------------------------------------------------------- sources, full text


def test_json_feed_list_and_opml(vault: Path) -> None:
    specs = read_sources([str(FEEDS / "feeds.json")])
    assert [(s.feed_id, s.category) for s in specs] == [("example_blog", "engineering"), ("atom_research", "ai_research")]
    opml = read_sources([str(FEEDS / "subscriptions.opml")])
    assert [(s.feed_id, s.category) for s in opml] == [("rdf_site", "Research"), ("atom_research_notes", "ai_research"),
                                                       ("example_blog", None)]
    report = ingest([str(FEEDS / "feeds.json")], vault, IngestOptions(today=date(2026, 3, 8)))
    assert len(report.created) == 6 and not report.failed
    note = parse_note(next(p for p in notes(vault) if "graph-aware" in p.name).read_bytes())
    assert note.meta["tags"] == ["rss", "ai_research", "auto-import"] and note.meta["source"] == "Atom Research Notes"
    assert all(p.name.startswith(("20260308-rss-example_blog-", "20260308-rss-atom_research-")) for p in notes(vault))


def test_bad_sources_are_usage_errors(tmp_path: Path, vault: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"feeds": [{"title": "no url"}]}', encoding="utf-8")
    for source, message in ((str(tmp_path / "nope.xml"), "no such file"), ("ftp://x.org/feed", "only http"),
                            (str(bad), "has no \"url\"")):
        with pytest.raises(UsageError, match=message):
            ingest([source], vault)


def test_full_text_replaces_a_summary_with_the_article(server: FeedServer, vault: Path) -> None:
    pytest.importorskip("trafilatura")
    para = "The complete article explains the whole method step by step, with the numbers and the caveats. "
    page = f"<html><head><title>A</title><script>x()</script></head><body><nav>Menu</nav><article><h1>Full</h1>" \
           f"<p>{para * 6}</p><p>{para * 4}</p></article><footer>Footer</footer></body></html>"
    server.routes["/article"] = lambda h: Reply(200, gzip.compress(page.encode()), {"Content-Type": "text/html",
                                                                                  "Content-Encoding": "gzip"})
    server.routes["/gzip-page"] = lambda h: Reply(200, gzip.compress(gzip.compress(b"\x00\x01" * 400)),
                                                  {"Content-Type": "text/html", "Content-Encoding": "gzip"})
    feed = f"""<?xml version="1.0"?><rss version="2.0"><channel><title>Summaries</title><link>{server.url('/')}</link>
<item><title>Has a full page</title><link>{server.url('/article')}</link><description>Only a summary.</description></item>
<item><title>Binary page</title><link>{server.url('/gzip-page')}</link><description>Short summary.</description></item>
</channel></rss>"""
    server.routes["/summaries"] = lambda h: Reply(200, feed.encode(), {"Content-Type": "application/rss+xml"})
    report = run(server, vault, "/summaries", full_text=True)
    assert len(report.created) == 2 and not report.failed
    full = next(p for p in notes(vault) if "has-a-full-page" in p.name).read_text(encoding="utf-8")
    assert "The complete article explains" in full and "x()" not in full and "Only a summary." not in full
    binary = next(p for p in notes(vault) if "binary-page" in p.name).read_text(encoding="utf-8")
    assert "Short summary." in binary
    assert any("full text not used" in w for w in report.warnings)


def test_full_text_without_trafilatura_is_a_one_line_usage_error(vault: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "trafilatura", None)
    with pytest.raises(UsageError) as info:
        ingest([str(FEEDS / "rdf.xml")], vault, IngestOptions(full_text=True))
    assert str(info.value) == "--full-text needs trafilatura (pip install 'enrich[fulltext]')"
    result = runner.invoke(app(), ["ingest", str(FEEDS / "rdf.xml"), "--vault", str(vault), "--full-text"])
    assert result.exit_code == 2 and "pip install 'enrich[fulltext]'" in result.stderr
    assert not (vault / "inbox").exists()


# ---------------------------------------------------------------- helpers


@pytest.mark.parametrize("raw, expected", [
    ("HTTPS://Example.COM:443/a/b/?utm_source=x&id=3&fbclid=z#frag", "https://example.com/a/b?id=3"),
    ("http://x.com:80/", "http://x.com"),
    ("http://x.com:8080/p?123&ref=hn&gclid=1&mc_cid=2&mc_eid=3&source=rss", "http://x.com:8080/p?123"),
    ("https://a.com/p?q=a+b%2F&UTM_Medium=e", "https://a.com/p?q=a+b%2F"),
    ("https://a.com/a b", "https://a.com/a%20b"),
    ("https://a.com/中文/", "https://a.com/中文"),
])
def test_normalize_url(raw: str, expected: str) -> None:
    assert normalize_url(raw) == expected


def test_slugs_and_per_day_counters_never_collide() -> None:
    assert slugify("Pareto Optimal Benchmarking of AI Models on ARM") == "pareto-optimal-benchmarking-of"
    assert slugify("写作即思考：为什么要用自己的话") == "写作即思考-为什么要用自己的话"
    assert slugify("../../etc/passwd\x00") == "etc-passwd" and slugify("!!!") == "untitled"
    assert slugify("Crème Brûlée") == "creme-brulee" and slugify("がぎ") == "がぎ"
    names = NameAllocator([
        "20260308-rss-blog-001-a.md", "20260308-rss-blog-007-top-100-tools.md",
        "20260308-rss-blog-1771783441140-old-style.md", "20260307-rss-blog-041-b.md", "20260308-rss-blog2-050-x.md",
    ])
    day = date(2026, 3, 8)
    assert names.allocate(day, "blog", "New") == "20260308-rss-blog-008-new.md"
    assert names.allocate(day, "blog", "New") == "20260308-rss-blog-009-new.md"
    assert names.allocate(date(2026, 3, 9), "blog", "X") == "20260309-rss-blog-001-x.md"
    assert names.allocate(day, "other", "Y") == "20260308-rss-other-001-y.md"


@pytest.mark.parametrize("value", ["A: B", "yes", "No", "- x", "#tag", "[x]", "{a}", "0o17", "1e3", "12", "~", "null",
                                   "'q'", '"dq"', "a #b", "100%", "@at", "`tick`", "😀 emoji", "tab\tx", "é", "x:"])
def test_yaml_scalar_reads_back_identically(value: str) -> None:
    import yaml
    assert yaml.safe_load(f"k: {yaml_scalar(value)}") == {"k": value}


def test_english_template_and_vault_sample_layout() -> None:
    entry = Entry(feed_id="blog", source="Blog", category="AI Research", title="T", url="https://x.com/a",
                  content="Body text.")
    en = render_note(entry, "20260308-rss-blog-001-t", date(2026, 3, 8), "en")
    note = parse_note(en.encode())
    assert [s.title for s in note.sections] == ["Source", "Content", "Key points", "Thoughts", "Related"]
    assert [s.role for s in note.sections] == ROLES and note.meta["tags"] == ["rss", "ai-research", "auto-import"]
    zh = render_note(entry, "20260308-rss-blog-001-t", date(2026, 3, 8), "zh")
    sample = sorted((SHARED / "vault-sample").glob("20260222-rss-*.md"))
    if not sample:
        pytest.skip("shared vault-sample not available")

    def shape(text: str) -> list[str]:
        """Heading lines, frontmatter keys, source labels, the comment and the footer's start."""
        out = []
        for ln in text.splitlines():
            if ln.startswith("## ") or ln in ("---",) or ln.startswith("<!--"):
                out.append(ln)
            elif ln.startswith(("# ", "*RSS")):
                out.append(ln[:2])
            elif ln.startswith(("- **", "id:", "title:", "tags:", "source")):
                out.append(ln.split(":")[0])
        return out

    expected = shape(sample[0].read_text(encoding="utf-8"))
    got = shape(zh)
    assert got == expected


def test_net_reasons_and_decoding() -> None:
    assert _net_reason(socket.gaierror(-2, "Name or service not known"), 5) == "cannot resolve the host name (DNS)"
    assert _net_reason(TimeoutError(), 2.5) == "timed out after 2.5s"
    assert decode_body(gzip.compress(b"<rss/>")) == b"<rss/>"
    with pytest.raises(ValueError, match="corrupt"):
        decode_body(b"\x1f\x8b\x08garbage")


# ---------------------------------------------------------------- CLI


def app() -> typer.Typer:
    """The real CLI when `ingest` is wired into it, else a test app with it registered."""
    from enrich.cli import cli

    if any((c.name or getattr(c.callback, "__name__", "")) == "ingest" for c in cli.registered_commands):
        return cli
    test_app = typer.Typer(add_completion=False)

    @test_app.callback()
    def _root() -> None:
        """Test app."""

    register(test_app)
    return test_app


def test_cli_json_and_exit_codes(server: FeedServer, vault: Path) -> None:
    result = runner.invoke(app(), ["ingest", server.url("/rdf"), server.url("/missing"), "--vault", str(vault), "--json"])
    assert result.exit_code == 1, result.output
    data = json.loads(result.stdout)
    assert {"created", "skipped", "failed", "feeds", "warnings", "dry_run"} <= set(data)
    assert len(data["created"]) == 2
    assert data["failed"] == [{"feed": server.url("/missing"), "reason": "HTTP 404 Not Found"}]
    assert f"failed: {server.url('/missing')}: HTTP 404 Not Found" in result.stderr
    again = runner.invoke(app(), ["ingest", server.url("/rdf"), "--vault", str(vault)])
    assert again.exit_code == 0 and "0 created" in again.stdout


def test_cli_usage_errors_exit_2_without_traceback(vault: Path) -> None:
    for args in (["ingest", "does-not-exist.xml", "--vault", str(vault)],
                 ["ingest", str(FEEDS / "rdf.xml"), "--vault", str(vault), "--limit", "0"],
                 ["ingest", str(FEEDS / "rdf.xml"), "--vault", str(vault), "--folder", "../outside"],
                 ["ingest", str(FEEDS / "rdf.xml"), "--vault", str(vault), "--lang", "fr"]):
        result = runner.invoke(app(), args)
        assert result.exit_code == 2, (args, result.output)
        assert "Traceback" not in result.output
    assert not (vault.parent / "outside").exists()


def test_cli_dry_run_human_output(vault: Path) -> None:
    result = runner.invoke(app(), ["ingest", str(FEEDS / "rdf.xml"), "--vault", str(vault), "--dry-run", "--lang", "en"])
    assert result.exit_code == 0
    assert "would create inbox/" in result.stdout and "dry run: nothing written" in result.stdout
    assert not (vault / "inbox").exists()


def test_cli_enrich_runs_the_pipeline_on_the_new_notes(vault: Path, fake_openai: Any) -> None:
    args = ["ingest", str(FEEDS / "rss2.xml"), "--vault", str(vault), "--enrich", "--json",
            "--base-url", fake_openai.url, "--model", "fake-model"]
    result = runner.invoke(app(), args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)["enrich"]
    created = notes(vault)
    assert report["notes_total"] == len(created) and report["enriched"] >= 2
    assert report["llm_calls"] == report["enriched"] == len(fake_openai.chats)
    statuses = {n["path"].rsplit("/", 1)[-1]: n["status"] for n in report["notes"]}
    for path in created:
        text = path.read_text(encoding="utf-8")
        assert ("enriched:" in text) == (statuses[path.name] == "enriched")


def test_cli_enrich_without_a_model_fails_before_writing(vault: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import enrich.providers as providers

    monkeypatch.setattr(providers, "local_available", lambda: False)
    for name in ("OPENAI_API_KEY", "ENRICH_PROVIDER", "ENRICH_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    result = runner.invoke(app(), ["ingest", str(FEEDS / "rdf.xml"), "--vault", str(vault), "--enrich"])
    assert result.exit_code == 2 and "no model configured" in result.stderr
    assert not (vault / "inbox").exists()


def test_module_sizes() -> None:
    for name in ("feeds", "feedio", "feedlist", "htmlmd", "template", "cli_ingest"):
        assert len((ROOT / "enrich" / f"{name}.py").read_text(encoding="utf-8").splitlines()) < 400, name
    assert feeds_mod.ingest is ingest
