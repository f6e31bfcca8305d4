"""Turn a spec's dataset into a :class:`Workload`: the one entry point of this package.

The build runs before any engine starts (the runner builds the workload first), so every problem
with a dataset (missing file, bad bytes, a row without a prompt, an unreachable URL) stops the
experiment as a :class:`DatasetError` while nothing is running yet.

Order of the steps for file datasets, and why:

1. read the bytes (local path, or URL through the content-addressed cache) and check a ``sha256``
   pin if the spec has one;
2. decode and parse every row, with located errors;
3. drop duplicate prompts (first occurrence wins), so a sample never holds the same prompt twice;
4. sample ``sample`` rows by seed (:meth:`random.Random.sample`, in the drawn order, which also
   shuffles them); without ``sample`` the file order is kept;
5. give each request its output length: the row's own (``outputField``, or the ShareGPT reply),
   else a draw from ``output``.

Every random choice comes from a :class:`random.Random` seeded with a string derived from the seed
and the purpose, so each choice is reproducible on its own.
"""

from __future__ import annotations

import hashlib
import random
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from backends.workloads.fetch import MAX_BYTES, Fetcher, UrlFetcher, fetch_cached
from backends.workloads.files import Row, decode_utf8, parse
from backends.workloads.lengths import describe, draw_length
from backends.workloads.model import RequestSpec, Workload, WorkloadStats, fingerprint
from backends.workloads.synthetic import build_synthetic
from specs.errors import DatasetError, OutsideRoots, TooLarge, UnsafePath
from specs.model import FileDataset, SyntheticDataset
from specs.paths import inside_roots, read_regular


def build_workload(
    dataset: SyntheticDataset | FileDataset,
    *,
    seed: int,
    base_dir: Path,
    cache_dir: Path,
    fetch: Fetcher | Callable[..., None] | None = None,
    roots: Sequence[Path] | None = None,
) -> Workload:
    """Build the requests of ``dataset`` for ``seed``.

    ``base_dir`` resolves relative dataset paths (the spec repository's root); ``cache_dir`` holds
    fetched URL datasets; ``fetch`` replaces the network (default: :class:`UrlFetcher`).
    ``roots``: the folders a dataset file must lie in once its symlinks are resolved (the
    checkout and the operator's ``dataRoots``, docs/security.md); None only where the operator
    named the file themselves (``autotuner bench --dataset``). Either way only a regular file is
    read, with a byte cap, so ``/dev/zero`` or a ``/proc`` file is refused.
    Raises :class:`DatasetError` for every problem with the data.
    """
    definition = canonical_definition(dataset)
    if isinstance(dataset, SyntheticDataset):
        requests = build_synthetic(dataset, seed)
        parts = [
            f"synthetic: {len(requests)} prompts",
            f"input {describe(dataset.input)}",
            f"output {describe(dataset.output)}",
        ]
        if dataset.shared_prefix:
            parts.append(f"shared prefix {dataset.shared_prefix}")
        parts.append(f"seed {seed}")
        return Workload(
            kind="synthetic",
            name="synthetic",
            requests=requests,
            fingerprint=fingerprint(definition, requests),
            description=", ".join(parts),
            stats=WorkloadStats.of(requests),
        )
    return _build_file(
        dataset, definition, seed=seed, base_dir=base_dir, cache_dir=cache_dir, fetch=fetch, roots=roots
    )


def canonical_definition(dataset: SyntheticDataset | FileDataset) -> dict[str, Any]:
    """The dataset as written, with defaults filled and length distributions resolved, so that
    ``{stddev: 8}`` and ``{stddev: 8, distribution: normal}`` name the same workload."""
    data = dataset.model_dump(mode="json", by_alias=True)
    for key in ("input", "output"):
        dist = getattr(dataset, key, None)
        if dist is not None:
            data[key]["distribution"] = dist.kind
    return data


def _build_file(
    dataset: FileDataset,
    definition: dict[str, Any],
    *,
    seed: int,
    base_dir: Path,
    cache_dir: Path,
    fetch: Fetcher | Callable[..., None] | None,
    roots: Sequence[Path] | None,
) -> Workload:
    if dataset.url is not None:
        label = dataset.url
        fetched = fetch_cached(dataset.url, cache_dir, fetch=fetch or UrlFetcher(), sha256=dataset.sha256)
        data, digest = fetched.data, fetched.sha256
        name = Path(urllib.parse.urlsplit(dataset.url).path).name or dataset.url
        source = {"url": dataset.url, "sha256": digest}
    else:
        assert dataset.path is not None  # the schema demands exactly one of path / url
        label = dataset.path
        data = _read_local(dataset.path, base_dir, roots)
        digest = hashlib.sha256(data).hexdigest()
        if dataset.sha256 is not None and digest != dataset.sha256:
            raise DatasetError(
                f"{label}: sha256 mismatch: the spec pins {dataset.sha256} but the file has {digest}",
                hint="the file changed; update 'sha256' if the new content is intended",
            )
        name = Path(dataset.path).name
        source = {"path": dataset.path, "sha256": digest}

    text = decode_utf8(data, label)
    parsed = parse(dataset.kind, text, label, dataset.prompt_field, dataset.output_field)
    rows = parsed.rows
    read = len(rows)
    duplicates = 0
    if dataset.dedup:
        unique: dict[str, Row] = {}
        for row in rows:
            unique.setdefault(row.prompt, row)
        duplicates = read - len(unique)
        rows = list(unique.values())

    notes = [f"{read} rows"]
    if parsed.skipped:
        reasons = ", ".join(f"{reason}: {n}" for reason, n in sorted(parsed.skipped.items()))
        notes.append(f"{sum(parsed.skipped.values())} skipped ({reasons})")
    if duplicates:
        notes.append(f"{duplicates} duplicate prompts removed")
    if not rows:
        raise DatasetError(
            f"{label}: no usable prompts ({'; '.join(notes)})", hint="check the file and 'promptField'"
        )

    if dataset.sample is not None:
        if dataset.sample < len(rows):
            picker = random.Random(f"autotuner:{seed}:sample")
            rows = [rows[i] for i in picker.sample(range(len(rows)), dataset.sample)]
            notes.append(f"sampled {len(rows)} (seed {seed})")
        else:
            notes.append(f"sample {dataset.sample} >= {len(rows)} available: all used")

    requests = _with_output_lengths(rows, dataset, seed, label)
    notes.append(_output_origin(dataset))
    return Workload(
        kind=dataset.kind,
        name=name,
        requests=requests,
        fingerprint=fingerprint(definition, requests),
        description=f"{dataset.kind} {label}: " + ", ".join(notes),
        stats=WorkloadStats.of(requests),
        source=source,
    )


def _read_local(path_text: str, base_dir: Path, roots: Sequence[Path] | None) -> bytes:
    path = Path(path_text)
    resolved = path if path.is_absolute() else base_dir / path
    # the message names the path as the spec wrote it, never where a symlink led (that would
    # tell a spec's author about the host's files)
    where = path_text if path.is_absolute() else f"{path_text} (looked for {resolved})"
    try:
        if roots is not None:
            resolved = inside_roots(path, roots, base=base_dir)
        return read_regular(resolved, MAX_BYTES, follow=True)
    except UnsafePath as exc:
        if isinstance(exc, OutsideRoots):
            message = (
                "resolves outside the folders a spec may read "
                "(the repository, and dataRoots of the operator policy)"
            )
        elif isinstance(exc, TooLarge):
            message = f"larger than the {MAX_BYTES:,} byte limit"
        else:
            message = "not a regular file (a device, pipe, socket or symlink), so it is not read"
        raise DatasetError(
            f"dataset {where}: {message}",
            hint="commit the dataset file into the repository and give its path relative to the root",
        ) from None
    except IsADirectoryError:
        raise DatasetError(f"dataset {where} is a folder, not a file") from None
    except FileNotFoundError:
        raise DatasetError(
            f"dataset file not found: {where}",
            hint="paths are relative to the root of the spec repository",
        ) from None
    except PermissionError:
        raise DatasetError(f"dataset {where}: permission denied") from None
    except OSError as exc:
        raise DatasetError(f"dataset {where}: cannot read: {exc.strerror or exc}") from None


def _with_output_lengths(rows: list[Row], dataset: FileDataset, seed: int, label: str) -> list[RequestSpec]:
    rng = random.Random(f"autotuner:{seed}:output-lengths")
    requests = []
    for row in rows:
        max_tokens = row.output_tokens
        if max_tokens is None:
            if dataset.output is None:
                raise DatasetError(
                    f"{label}: {row.where}: the row gives no output length and the dataset has no 'output'",
                    hint="add 'output: {mean: 256}' to the dataset, or 'outputField' naming a column of "
                    "max output tokens",
                )
            max_tokens = draw_length(dataset.output, rng)
        requests.append(RequestSpec(prompt=row.prompt, max_tokens=max_tokens))
    return requests


def _output_origin(dataset: FileDataset) -> str:
    own = f"field {dataset.output_field!r}" if dataset.output_field else None
    if dataset.kind == "sharegpt":
        own = f"{own} or the reply's words" if own else "the reply's words"
    fallback = f"output {describe(dataset.output)}" if dataset.output else None
    if own and fallback:
        return f"output length from {own}, else {fallback}"
    return f"output length from {own}" if own else f"{fallback}"
