"""URL datasets: fetched once into a content-addressed cache; failures are clear DatasetErrors.

Two kinds of test: an injected fake fetcher (the cache logic, no sockets), and the real
:class:`UrlFetcher` against an HTTPS server on 127.0.0.1 with a throw-away self-signed certificate
made by the ``openssl`` command (skipped where there is none). No test touches the network.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

import pytest

from backends.workloads import DatasetError, UrlFetcher, build_workload
from backends.workloads.fetch import fetch_cached
from specs.errors import UserError
from specs.model import FileDataset

URL = "https://datasets.example/chat/prompts.jsonl"
CONTENT = b'{"prompt": "first prompt"}\n{"prompt": "second prompt"}\n'
DIGEST = hashlib.sha256(CONTENT).hexdigest()


class FakeFetcher:
    """Serves fixed bytes and counts calls: the cache must call it once per new URL."""

    def __init__(self, body: bytes = CONTENT) -> None:
        self.body = body
        self.calls: list[str] = []

    def __call__(self, url: str, out: BinaryIO, *, max_bytes: int, timeout: float) -> None:
        self.calls.append(url)
        out.write(self.body)


def _dataset(url: str = URL, **fields: Any) -> FileDataset:
    return FileDataset.model_validate({"kind": "jsonl", "url": url, "output": {"mean": 8}, **fields})


def _leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir() if p.name.endswith(".tmp"))


# --------------------------------------------------------------------------------------------- cache logic


def test_first_build_fetches_and_the_second_reads_the_cache(tmp_path: Path) -> None:
    fetcher = FakeFetcher()
    cache = tmp_path / "cache"
    first = build_workload(_dataset(), seed=0, base_dir=tmp_path, cache_dir=cache, fetch=fetcher)
    second = build_workload(_dataset(), seed=0, base_dir=tmp_path, cache_dir=cache, fetch=fetcher)
    assert fetcher.calls == [URL]
    assert [r.prompt for r in first.requests] == ["first prompt", "second prompt"]
    assert first.fingerprint == second.fingerprint
    assert first.name == "prompts.jsonl"
    assert first.source == {"url": URL, "sha256": DIGEST}
    assert (cache / DIGEST).read_bytes() == CONTENT
    index = json.loads((cache / "index.json").read_text())
    assert index["urls"][URL]["sha256"] == DIGEST and index["urls"][URL]["size"] == len(CONTENT)
    assert _leftovers(cache) == []


def test_a_pinned_digest_needs_no_index_and_no_network(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    build_workload(_dataset(), seed=0, base_dir=tmp_path, cache_dir=cache, fetch=FakeFetcher())
    (cache / "index.json").unlink()
    offline = FakeFetcher(b"")
    w = build_workload(_dataset(sha256=DIGEST), seed=0, base_dir=tmp_path, cache_dir=cache, fetch=offline)
    assert offline.calls == [] and len(w.requests) == 2
    # and the URL is remembered again
    assert json.loads((cache / "index.json").read_text())["urls"][URL]["sha256"] == DIGEST


def test_another_url_with_the_same_bytes_shares_the_blob(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    fetcher = FakeFetcher()
    build_workload(_dataset(), seed=0, base_dir=tmp_path, cache_dir=cache, fetch=fetcher)
    build_workload(_dataset(URL + "?mirror=2"), seed=0, base_dir=tmp_path, cache_dir=cache, fetch=fetcher)
    assert len(fetcher.calls) == 2
    assert sorted(p.name for p in cache.iterdir()) == sorted([DIGEST, "index.json"])


def test_sha256_mismatch_stores_nothing(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(DatasetError, match="sha256 mismatch: the spec pins 1111") as info:
        build_workload(
            _dataset(sha256="1" * 64), seed=0, base_dir=tmp_path, cache_dir=cache, fetch=FakeFetcher()
        )
    assert isinstance(info.value, UserError)
    assert URL in str(info.value) and DIGEST in str(info.value)
    assert list(cache.iterdir()) == []


def test_a_corrupt_blob_is_fetched_again(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    fetcher = FakeFetcher()
    build_workload(_dataset(), seed=0, base_dir=tmp_path, cache_dir=cache, fetch=fetcher)
    (cache / DIGEST).write_bytes(b'{"prompt": "tampered"}\n')
    w = build_workload(_dataset(), seed=0, base_dir=tmp_path, cache_dir=cache, fetch=fetcher)
    assert len(fetcher.calls) == 2
    assert [r.prompt for r in w.requests] == ["first prompt", "second prompt"]


def test_an_unreadable_index_is_only_a_cache_miss(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "index.json").write_text("{not json")
    fetcher = FakeFetcher()
    build_workload(_dataset(), seed=0, base_dir=tmp_path, cache_dir=cache, fetch=fetcher)
    assert fetcher.calls == [URL]
    assert json.loads((cache / "index.json").read_text())["version"] == 1


def test_fetcher_errors_become_dataset_errors_and_leave_no_temp_files(tmp_path: Path) -> None:
    cache = tmp_path / "cache"

    def broken(url: str, out: BinaryIO, *, max_bytes: int, timeout: float) -> None:
        out.write(b"partial")
        raise ConnectionResetError("peer reset")

    with pytest.raises(DatasetError, match=re.escape(f"{URL}: download failed: peer reset")):
        build_workload(_dataset(), seed=0, base_dir=tmp_path, cache_dir=cache, fetch=broken)
    assert list(cache.iterdir()) == []


def test_the_size_cap_holds_even_for_a_fetcher_that_ignores_it(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="larger than the 10 byte limit"):
        fetch_cached(URL, tmp_path, fetch=FakeFetcher(), max_bytes=10)


def test_empty_download_is_an_error_and_not_cached(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=re.escape(f"{URL}: the server sent an empty body")):
        build_workload(
            _dataset(), seed=0, base_dir=tmp_path, cache_dir=tmp_path / "c", fetch=FakeFetcher(b"")
        )
    assert list((tmp_path / "c").iterdir()) == []


def test_uncreatable_cache_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(DatasetError, match=r"dataset cache .*cannot create it"):
        build_workload(
            _dataset(), seed=0, base_dir=tmp_path, cache_dir=blocker / "cache", fetch=FakeFetcher()
        )


# --------------------------------------------------------------------------------------------- real HTTPS


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


class _Handler(BaseHTTPRequestHandler):
    routes: ClassVar[dict[str, tuple[int, dict[str, str], bytes]]] = {}
    hits: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.hits.append(self.path)
        status, headers, body = self.routes.get(self.path, (404, {}, b"not here"))
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if "Content-Length" not in headers:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass


@pytest.fixture
def https_server(certificate: tuple[Path, Path]) -> Iterator[str]:
    cert, key = certificate
    _Handler.routes = {}
    _Handler.hits = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_real_https_fetch_is_cached(
    tmp_path: Path, https_server: str, certificate: tuple[Path, Path]
) -> None:
    _Handler.routes["/data.jsonl"] = (200, {}, CONTENT)
    fetcher = UrlFetcher(cafile=str(certificate[0]))
    url = f"{https_server}/data.jsonl"
    cache = tmp_path / "cache"
    first = build_workload(_dataset(url), seed=0, base_dir=tmp_path, cache_dir=cache, fetch=fetcher)
    second = build_workload(_dataset(url), seed=0, base_dir=tmp_path, cache_dir=cache, fetch=fetcher)
    assert _Handler.hits == ["/data.jsonl"]
    assert first.fingerprint == second.fingerprint
    assert [r.prompt for r in first.requests] == ["first prompt", "second prompt"]
    assert (cache / DIGEST).read_bytes() == CONTENT


def test_http_error_status(tmp_path: Path, https_server: str, certificate: tuple[Path, Path]) -> None:
    fetcher = UrlFetcher(cafile=str(certificate[0]))
    with pytest.raises(DatasetError, match=r"missing\.jsonl: HTTP 404") as info:
        build_workload(
            _dataset(f"{https_server}/missing.jsonl"),
            seed=0,
            base_dir=tmp_path,
            cache_dir=tmp_path,
            fetch=fetcher,
        )
    assert isinstance(info.value, UserError)


def test_untrusted_certificate_is_refused(tmp_path: Path, https_server: str) -> None:
    _Handler.routes["/data.jsonl"] = (200, {}, CONTENT)
    with pytest.raises(DatasetError, match=r"cannot fetch: .*CERTIFICATE_VERIFY_FAILED"):
        fetch_cached(f"{https_server}/data.jsonl", tmp_path, fetch=UrlFetcher())


def test_redirect_to_plain_http_is_refused(
    tmp_path: Path, https_server: str, certificate: tuple[Path, Path]
) -> None:
    _Handler.routes["/moved"] = (302, {"Location": "http://127.0.0.1:9/data.jsonl"}, b"")
    with pytest.raises(
        DatasetError, match=re.escape("redirected to http://127.0.0.1:9/data.jsonl, which is not https")
    ):
        fetch_cached(f"{https_server}/moved", tmp_path, fetch=UrlFetcher(cafile=str(certificate[0])))


def test_declared_size_above_the_cap(
    tmp_path: Path, https_server: str, certificate: tuple[Path, Path]
) -> None:
    _Handler.routes["/big"] = (200, {}, b"x" * 100)
    with pytest.raises(DatasetError, match="the dataset is 100 bytes, above the 50 byte limit"):
        fetch_cached(
            f"{https_server}/big", tmp_path, fetch=UrlFetcher(cafile=str(certificate[0])), max_bytes=50
        )


def test_unreachable_host(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on: bind, learn it, close
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(
        DatasetError, match=re.escape(f"127.0.0.1:{port}/d.jsonl: cannot fetch: ") + ".*refused"
    ):
        build_workload(
            _dataset(f"https://127.0.0.1:{port}/d.jsonl"),
            seed=0,
            base_dir=tmp_path,
            cache_dir=tmp_path,
            fetch=UrlFetcher(),
        )


def test_the_fetcher_itself_refuses_plain_http(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="only https:// dataset URLs"):
        fetch_cached("http://127.0.0.1:9/x", tmp_path, fetch=UrlFetcher())
