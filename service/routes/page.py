"""The page a person uses (``/page/``): pick a ticker, a date, past weeks and basic
financials, read the forecast; compare adapters' scorecards, speed against accuracy, and the
live A/B split. Plain HTML, CSS and JavaScript shipped in ``service/web`` (package data), no
third-party origin: the Content-Security-Policy lets the page load from this service only.

``GET /v1/page/adapters`` is the page's read-only view of the served adapters and the A/B
split: what ``/metrics`` already publishes (versions, aliases, arm weights) plus each
version's held-out evaluation from its manifest; the admin routes stay admin-only.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter, Path
from fastapi.responses import RedirectResponse, Response

from service.deps import State
from service.errors import NotFound
from service.routes.responses import errors
from service.routes.routing import routing_out
from service.schemas import AdapterSummary, PageAdapters

router = APIRouter(tags=["page"])

WEB = files("service") / "web"
ASSETS = {"index.html": "text/html", "page.js": "text/javascript", "page.css": "text/css"}
HEADERS = {
    # Everything from this origin; no inline script. The chart is SVG markup the script
    # builds, which needs neither.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


def asset(name: str) -> Response:
    if name not in ASSETS:
        raise NotFound(f"no page asset {name!r}", code="not_found")
    body = (WEB / name).read_bytes()
    return Response(body, media_type=f"{ASSETS[name]}; charset=utf-8", headers=HEADERS)


@router.get("/", include_in_schema=False)
async def root() -> RedirectResponse:
    return RedirectResponse("/page/")


@router.get("/page", include_in_schema=False)
async def page_no_slash() -> RedirectResponse:
    return RedirectResponse("/page/")


@router.get("/page/", include_in_schema=False)
async def page() -> Response:
    return asset("index.html")


@router.get("/page/{name}", include_in_schema=False)
async def page_asset(name: str = Path(max_length=64)) -> Response:
    return asset(name)


@router.get("/v1/page/adapters", response_model=PageAdapters, responses=errors())
async def adapters(state: State) -> PageAdapters:
    """Every loaded adapter version (aliases it serves, held-out evaluation) and the A/B arms
    with their shares; scorecards are at ``/v1/adapters/{name}/scorecard``."""
    reg = state.registry
    summaries = []
    for a in sorted(reg.loaded(), key=lambda a: (a.name, a.version)):
        m = a.manifest
        numbers = {
            k: float(v) for k, v in m.metrics.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }  # fmt: skip
        summaries.append(AdapterSummary(
            name=a.name, version=a.version, base=m.served_base, base_model=m.base_model,
            aliases=reg.aliases_of(a.ref), evaluation=numbers,
        ))  # fmt: skip
    return PageAdapters(adapters=summaries, routing=routing_out(state.router.table))
