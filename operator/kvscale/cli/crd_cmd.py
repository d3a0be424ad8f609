"""`kvscale crd`: print the generated LLMDeployment CRD (or its field reference)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from kvscale.api.crd import render_crd_yaml
from kvscale.api.docs import render_api_docs


def run(args: argparse.Namespace) -> int:
    sys.stdout.write(render_api_docs() if args.docs else render_crd_yaml())
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "crd",
        help="print the LLMDeployment CustomResourceDefinition generated from the API models",
        description=(
            "Print the CRD YAML (the files in crds/ and charts/kvscale/crds/ must equal it)."
        ),
    )
    parser.add_argument(
        "--docs", action="store_true", help="print the Markdown field reference instead"
    )
    parser.set_defaults(func=run)
