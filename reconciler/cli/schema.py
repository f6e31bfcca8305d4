"""``autotuner schema``: the spec's JSON Schema, for editor completion."""

from __future__ import annotations

import argparse
import json

from specs.model import TuningSpec


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    return sub.add_parser(
        "schema",
        help="print the TuningSpec JSON Schema",
        description="Print the JSON Schema of a TuningSpec (point your editor's YAML plugin at it).",
    )


def run(args: argparse.Namespace) -> int:
    schema = TuningSpec.model_json_schema(by_alias=True, mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "autotuner TuningSpec (apiVersion autotuner/v1)"
    print(json.dumps(schema, indent=2, sort_keys=False))
    return 0
