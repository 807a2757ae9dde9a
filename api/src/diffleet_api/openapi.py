"""Writes the API's OpenAPI document (committed as api/openapi.json; `make openapi`)."""

import argparse
import json
from pathlib import Path
from typing import Any

from diffleet_api.app import create_app


def document() -> dict[str, Any]:
    spec: dict[str, Any] = create_app().openapi()
    return spec


def render() -> str:
    return json.dumps(document(), indent=2, sort_keys=True) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description="Write the OpenAPI document of diffleet's API")
    parser.add_argument("output", type=Path, nargs="?", default=Path("api/openapi.json"))
    args = parser.parse_args()
    args.output.write_text(render())


if __name__ == "__main__":
    main()
