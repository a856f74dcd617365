"""Write the service's OpenAPI document to openapi.yaml at the repository root.

    python -m scripts.export_openapi            # write openapi.yaml
    python -m scripts.export_openapi --check    # exit 1 if openapi.yaml is out of date

tests/service/test_openapi.py fails while the committed file differs from what the app
generates; run this script after changing a route or a schema.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from service.app import create_app

OPENAPI_YAML = Path(__file__).resolve().parent.parent / "openapi.yaml"


def generate() -> dict[str, Any]:
    """The OpenAPI document of the app as FastAPI generates it."""
    return create_app().openapi()


def render(schema: dict[str, Any]) -> str:
    return yaml.safe_dump(schema, sort_keys=False, allow_unicode=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=OPENAPI_YAML)
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 if the file differs from the app's schema")
    args = parser.parse_args(argv)
    schema = generate()
    if args.check:
        current = yaml.safe_load(args.output.read_text()) if args.output.exists() else None
        if current != schema:
            print(f"{args.output} is out of date: run python -m scripts.export_openapi",
                  file=sys.stderr)
            return 1
        return 0
    args.output.write_text(render(schema))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
