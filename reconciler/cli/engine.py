"""``autotuner engine sim [flags]``: run the simulated engine in the foreground.

The real engines (vLLM, SGLang, ...) are started by their own commands; only the simulator ships
with the tuner, so ``engine`` has one subcommand today. The flags are the simulator's own parser
(:func:`backends.sim.add_arguments`), so ``autotuner engine sim`` and ``python -m backends.sim``
accept exactly the same command line and ``--help`` shows the same text.
"""

from __future__ import annotations

import argparse

from backends.sim import add_arguments, config_from_args


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "engine",
        help="run a built-in engine in the foreground (the simulated engine: sim)",
        description="Run a built-in engine in the foreground. `sim` is an OpenAI-compatible server "
        "whose timing follows a roofline model of a GPU: its results are simulated, not measured.",
    )
    engines = parser.add_subparsers(dest="engine", metavar="ENGINE")
    engines.required = True
    sim = engines.add_parser(
        "sim",
        help="the simulated engine (vLLM flag names; see docs/sim-engine.md)",
        description="Simulated LLM inference engine with vLLM's flag names. It prints "
        "'listening on http://HOST:PORT' once bound, answers /health with 200 when ready, and "
        "exits 0 on SIGTERM, 1 when the configuration cannot run (e.g. out of memory).",
    )
    add_arguments(sim)
    return parser


def run(args: argparse.Namespace) -> int:
    # imported here: the server pulls in aiohttp's web stack, which other commands do not need
    from backends.sim.server import serve

    return serve(config_from_args(args))
