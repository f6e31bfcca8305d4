"""URL datasets: fetched once into a content-addressed cache.

Layout of ``cache_dir``::

    <sha256>          the bytes of one fetched dataset, named by their sha256
    index.json        {"version": 1, "urls": {url: {"sha256": ..., "size": ..., "fetchedAt": ...}}}

Why content-addressed: two URLs serving the same bytes share one blob, a ``sha256`` pin in the spec
finds its blob without any index and without the network, and a blob can be checked against its
own name on every use (a corrupted blob is fetched again instead of measured). The index maps a URL
to the digest it served last, so the second build of a spec does not touch the network.

The download goes to an unnamed temporary file (gone by itself if the process dies) and is hashed
before anything is stored; blob and index are then written with :mod:`core.atomic` (temp file,
fsync, rename, fsync the folder). Two processes updating the index at once lose at most one entry
(last writer wins), which costs one extra fetch, never a wrong file.

The network part is injectable (:class:`Fetcher`), after httpx's transports: the default
:class:`UrlFetcher` uses urllib over HTTPS only (redirects to anything else are refused), with a
timeout and a size cap; tests pass a fake or point :class:`UrlFetcher` at a local HTTPS server with
its own certificate (``cafile``). There is no plain-HTTP switch at all: the spec accepts only
``https://`` URLs and so does the fetcher.
"""

from __future__ import annotations

import hashlib
import json
import logging
import ssl
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from core.atomic import write_bytes, write_json
from core.clock import now
from specs.errors import DatasetError

log = logging.getLogger(__name__)

#: Largest dataset we fetch or read (1 GiB): the rows are held in memory.
MAX_BYTES = 1 << 30
DEFAULT_TIMEOUT_S = 60.0
INDEX = "index.json"
_CHUNK = 1 << 20


class Fetcher(Protocol):
    """Writes the body of ``url`` to ``out``.

    Contract: raise :class:`DatasetError` with a message naming the URL on any failure (HTTP
    error, unreachable host, TLS failure, timeout, body above ``max_bytes``); never write more than
    ``max_bytes``. The caller owns ``out``, hashes what was written and makes it durable.
    """

    def __call__(self, url: str, out: BinaryIO, *, max_bytes: int, timeout: float) -> None: ...


class _HttpsOnlyRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        if urllib.parse.urlsplit(newurl).scheme != "https":
            raise DatasetError(f"{req.full_url}: redirected to {newurl}, which is not https://; refusing")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


@dataclass(frozen=True)
class UrlFetcher:
    """The real fetcher: urllib, HTTPS only, certificate verified.

    ``cafile`` trusts an extra certificate authority (a private mirror, or a test server's
    self-signed certificate) on top of nothing else: when given, only that CA is trusted.
    """

    cafile: str | None = None
    user_agent: str = "autotuner-dataset-fetch/1"

    def __call__(self, url: str, out: BinaryIO, *, max_bytes: int, timeout: float) -> None:
        if urllib.parse.urlsplit(url).scheme != "https":
            raise DatasetError(f"{url}: only https:// dataset URLs are fetched")
        context = ssl.create_default_context(cafile=self.cafile)
        opener = urllib.request.build_opener(
            urllib.request.HTTPSHandler(context=context), _HttpsOnlyRedirects()
        )
        request = urllib.request.Request(url, headers={"User-Agent": self.user_agent})
        deadline = time.monotonic() + timeout
        try:
            with opener.open(request, timeout=timeout) as response:
                declared = response.headers.get("Content-Length")
                if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                    raise DatasetError(
                        f"{url}: the dataset is {int(declared):,} bytes, above the {max_bytes:,} byte limit"
                    )
                written = 0
                while chunk := response.read(_CHUNK):
                    written += len(chunk)
                    if written > max_bytes:
                        raise DatasetError(f"{url}: the dataset is larger than the {max_bytes:,} byte limit")
                    if time.monotonic() > deadline:
                        raise DatasetError(f"{url}: download took longer than {timeout:g} s")
                    out.write(chunk)
        except urllib.error.HTTPError as exc:
            exc.close()  # it holds the response body open
            raise DatasetError(
                f"{url}: HTTP {exc.code} {exc.reason}", hint="check the URL; the server refused it"
            ) from None
        except urllib.error.URLError as exc:
            raise DatasetError(
                f"{url}: cannot fetch: {exc.reason}",
                hint="check the host name and that it is reachable from the daemon",
            ) from None
        except TimeoutError:
            raise DatasetError(f"{url}: no answer within {timeout:g} s") from None
        except OSError as exc:  # connection reset mid-body, TLS errors after the handshake
            raise DatasetError(f"{url}: download failed: {exc}") from None


@dataclass(frozen=True)
class Fetched:
    data: bytes
    sha256: str
    #: False when the bytes came from the cache
    fetched: bool
    path: Path


def fetch_cached(
    url: str,
    cache_dir: Path,
    *,
    fetch: Fetcher,
    sha256: str | None = None,
    max_bytes: int = MAX_BYTES,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> Fetched:
    """The bytes of ``url``: from the cache when it has them, else fetched once and cached."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetError(f"dataset cache {cache_dir}: cannot create it: {exc.strerror}") from None

    candidates = [sha256] if sha256 else []
    known = _load_index(cache_dir).get(url, {}).get("sha256")
    if isinstance(known, str) and (sha256 is None or known == sha256):
        candidates.append(known)
    for digest in dict.fromkeys(candidates):
        data = _read_blob(cache_dir, digest)
        if data is not None:
            if known != digest:
                _remember(cache_dir, url, digest, len(data))
            return Fetched(data, digest, False, cache_dir / digest)

    log.info("fetching dataset %s into %s", url, cache_dir)
    with tempfile.TemporaryFile(dir=cache_dir) as handle:
        try:
            fetch(url, handle, max_bytes=max_bytes, timeout=timeout)
        except OSError as exc:  # a custom fetcher that broke the contract; still the user's URL
            raise DatasetError(f"{url}: download failed: {exc}") from None
        handle.flush()
        handle.seek(0)
        data = handle.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise DatasetError(f"{url}: the dataset is larger than the {max_bytes:,} byte limit")
        if not data:  # not cached: an empty body is more likely a passing server fault than a dataset
            raise DatasetError(f"{url}: the server sent an empty body")
        digest = hashlib.sha256(data).hexdigest()
        if sha256 is not None and digest != sha256:
            raise DatasetError(
                f"{url}: sha256 mismatch: the spec pins {sha256} but the server sent {digest}",
                hint="the file at the URL changed; update 'sha256' if the new content is intended",
            )
    target = cache_dir / digest
    if not target.exists():
        write_bytes(target, data)
    _remember(cache_dir, url, digest, len(data))
    return Fetched(data, digest, True, target)


def _read_blob(cache_dir: Path, digest: str) -> bytes | None:
    path = cache_dir / digest
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    if hashlib.sha256(data).hexdigest() != digest:
        log.warning("dataset cache blob %s is corrupt; fetching again", path)
        path.unlink(missing_ok=True)
        return None
    return data


def _load_index(cache_dir: Path) -> dict[str, dict[str, Any]]:
    try:
        raw = json.loads((cache_dir / INDEX).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        # a cache index is never worth failing for: the blobs are still addressable by digest
        log.warning("dataset cache index %s is unreadable; starting a new one", cache_dir / INDEX)
        return {}
    urls = raw.get("urls") if isinstance(raw, dict) else None
    return urls if isinstance(urls, dict) else {}


def _remember(cache_dir: Path, url: str, digest: str, size: int) -> None:
    urls = _load_index(cache_dir)
    urls[url] = {"sha256": digest, "size": size, "fetchedAt": now()}
    write_json(cache_dir / INDEX, {"version": 1, "urls": urls})
