"""Entry point of `diffleet-api`: serves the FastAPI app with uvicorn."""

import argparse

import uvicorn

from diffleet_api.app import create_app


def main() -> None:
    parser = argparse.ArgumentParser(prog="diffleet-api", description="Serves the diffleet API.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    uvicorn.run(create_app(), host=args.host, port=args.port)
