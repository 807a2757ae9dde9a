"""The FastAPI application: routers are combined here."""

from fastapi import FastAPI

from diffleet_api.routers import health


def create_app() -> FastAPI:
    app = FastAPI(title="diffleet", version="0.1.0")
    app.include_router(health.router)
    return app
