"""``autotuner daemon``: the long-running reconciler (what systemd runs)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from specs.policy import Policy

from specs.errors import ConfigError


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"AUTOTUNER_{name}", default)


def parse_labels(text: str | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in (text or "").split(","):
        if part.strip():
            key, sep, value = part.partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"bad label {part!r}: use key=value[,key=value]")
            out[key.strip()] = value.strip()
    return out


def add_policy(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--policy",
        default=_env("POLICY"),
        metavar="FILE",
        help="operator policy: engines, images, env, dataset roots, limits a spec may use "
        "(docs/security.md; default: the safe defaults) [AUTOTUNER_POLICY]",
    )


def load_policy_arg(path: str | None) -> Policy:
    """The policy of ``--policy``; an unreadable or invalid file is a :class:`ConfigError`."""
    from specs.errors import UserError
    from specs.policy import load_policy

    try:
        return load_policy(path)
    except UserError as exc:
        raise ConfigError(f"invalid operator policy: {exc}") from None


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--repo", default=_env("REPO"), help="specs repository: a path or URL [AUTOTUNER_REPO]")
    p.add_argument(
        "--branch",
        default=_env("BRANCH"),
        help="spec branch [AUTOTUNER_BRANCH; default: the branch the remote's HEAD names]",
    )
    p.add_argument(
        "--results-branch",
        default=_env("RESULTS_BRANCH"),
        help="push results to this branch instead of the spec branch [AUTOTUNER_RESULTS_BRANCH]",
    )
    p.add_argument(
        "--state-dir",
        default=_env("STATE_DIR", ".autotuner-state"),
        help="working clone, engine logs, pid files, caches [AUTOTUNER_STATE_DIR]",
    )
    p.add_argument(
        "--site-dir", default=_env("SITE_DIR"), help="build the report site here [AUTOTUNER_SITE_DIR]"
    )
    p.add_argument(
        "--site-branch",
        default=_env("SITE_BRANCH"),
        metavar="NAME",
        help="also commit the built site to this orphan branch and push it, for GitHub/GitLab Pages "
        "(built in STATE_DIR/site unless --site-dir) [AUTOTUNER_SITE_BRANCH]",
    )
    p.add_argument(
        "--labels",
        default=_env("LABELS"),
        help="this host's labels for spec placement, k=v,k=v [AUTOTUNER_LABELS]",
    )
    p.add_argument(
        "--max-parallel",
        type=int,
        default=_env("MAX_PARALLEL", "4"),
        help="studies at once [AUTOTUNER_MAX_PARALLEL, 4]",
    )
    p.add_argument(
        "--fake-gpus", default=_env("FAKE_GPUS"), help="fake GPU inventory, e.g. 4xH100 [AUTOTUNER_FAKE_GPUS]"
    )
    add_policy(p)
    p.add_argument(
        "--no-push",
        action="store_true",
        default=_env("NO_PUSH") == "1",
        help="commit results locally without pushing [AUTOTUNER_NO_PUSH=1]",
    )


def check_branches(args: argparse.Namespace) -> str | None:
    """The site branch holds only the site: it cannot be the spec or results branch."""
    site = args.site_branch
    if site and site in (args.branch, args.results_branch):
        return f"--site-branch {site} is also the spec or results branch; give the site its own branch"
    return None


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "daemon",
        help="the long-running reconciler (systemd runs this)",
        description="Watch a specs repository, run studies for new or changed specs, and commit results "
        "back. Settings come from flags, then AUTOTUNER_* environment variables.",
    )
    add_common(p)
    p.add_argument(
        "--interval",
        type=float,
        default=_env("INTERVAL", "60"),
        help="seconds between fetches, with 10%% jitter [AUTOTUNER_INTERVAL, 60]",
    )
    return p


def run(args: argparse.Namespace) -> int:
    import logging

    from reconciler.cli._common import fail
    from reconciler.daemon import DaemonConfig, run_daemon
    from reconciler.logs import setup_logging

    if not args.repo:
        fail("no repository: give --repo PATH_OR_URL or set AUTOTUNER_REPO")
        return 2
    try:
        setup_logging(logging.DEBUG if args.verbose else None)
        labels = parse_labels(args.labels)
        policy = load_policy_arg(args.policy)
    except (ValueError, ConfigError) as exc:
        fail(str(exc))
        return 2
    if args.interval <= 0 or args.max_parallel < 1:
        fail("--interval must be > 0 and --max-parallel >= 1")
        return 2
    problem = check_branches(args)
    if problem:
        fail(problem)
        return 2
    cfg = DaemonConfig(
        repo=args.repo,
        branch=args.branch,
        results_branch=args.results_branch,
        interval=args.interval,
        state_dir=Path(args.state_dir),
        site_dir=Path(args.site_dir) if args.site_dir else None,
        site_branch=args.site_branch,
        labels=labels,
        max_parallel=args.max_parallel,
        fake_gpus=args.fake_gpus,
        push=not args.no_push,
        policy=policy,
    )
    return run_daemon(cfg)
