"""The web console: static files (no build step) served at /console/ to anyone. The app
shell holds no data; every call it makes goes to the /v1 routes with the credential the
user typed, which the page keeps in memory only. Every response here carries a
Content-Security-Policy that allows scripts and styles from this origin alone (no
`unsafe-inline`), and images from here, data:/blob: URLs (previews, painted masks) and
the S3 origins that presigned output URLs point at."""

from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Path
from fastapi.responses import RedirectResponse, Response

from diffleet_api.deps import RuntimeDep
from diffleet_api.errors import NotFoundError
from diffleet_api.runtime import Runtime

router = APIRouter(prefix="/console", include_in_schema=False)

ASSETS = files("diffleet_api") / "console"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
AssetPath = Annotated[str, Path(max_length=200, pattern=r"^[a-z0-9_-]+(/[a-z0-9_-]+)*\.[a-z]+$")]


def image_origins(runtime: Runtime) -> str:
    """The origins of presigned GET URLs for the outputs and uploads buckets (path-style
    on a local S3 server, one host per bucket on AWS). Signing is local: no request."""
    buckets = runtime.platform.buckets
    origins = set()
    for bucket in (buckets.outputs, buckets.uploads):
        url = runtime.s3.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": "console"}, ExpiresIn=10
        )
        parts = urlsplit(url)
        origins.add(f"{parts.scheme}://{parts.netloc}")
    return " ".join(sorted(origins))


def security_headers(runtime: Runtime) -> dict[str, str]:
    policy = "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            f"img-src 'self' data: blob: {image_origins(runtime)}",
            "connect-src 'self'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )
    return {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        # Revalidated each load, so that a new release's files are never mixed with old.
        "Cache-Control": "no-cache",
    }


def asset(relative: str) -> Traversable:
    found = ASSETS
    for part in relative.split("/"):
        found = found / part
    if not found.is_file() or f".{relative.rsplit('.', 1)[-1]}" not in MEDIA_TYPES:
        raise NotFoundError(f"no console file {relative!r}")
    return found


@router.get("")
async def console_root() -> RedirectResponse:
    return RedirectResponse("/console/", status_code=308)


@router.get("/")
async def console_shell(runtime: RuntimeDep) -> Response:
    """The app shell: the same page for every route of the console (hash routing)."""
    return Response(
        asset("index.html").read_bytes(),
        media_type=MEDIA_TYPES[".html"],
        headers=security_headers(runtime),
    )


@router.get("/{relative:path}")
async def console_asset(relative: AssetPath, runtime: RuntimeDep) -> Response:
    found = asset(relative)
    return Response(
        found.read_bytes(),
        media_type=MEDIA_TYPES[f".{relative.rsplit('.', 1)[-1]}"],
        headers=security_headers(runtime),
    )
