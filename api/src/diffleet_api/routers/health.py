"""Liveness and readiness probes."""

from fastapi import APIRouter
from pydantic import BaseModel

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str


@router.get("/healthz")
def healthz() -> Health:
    """The process is alive."""
    return Health(status="ok")
