"""The error answers each route documents in the OpenAPI schema, all in the one error shape.

Routes list every status they can answer (fuzzing holds them to it), so a client generated
from the schema knows each error's body: ``{"error": {"type", "message", "code"}}``.
"""

from __future__ import annotations

from typing import Any

from service.schemas import ErrorResponse

DESCRIPTIONS = {
    400: "Malformed body (not UTF-8 text).",
    401: "Admin route without a valid bearer token.",
    403: "Admin routes disabled (no token configured), or a path outside the adapter root.",
    404: "Unknown ticker (or not a Dow 30 member on that date), adapter, version or alias.",
    409: "Conflicts with the current state (e.g. the version still serves an alias).",
    413: "Body over the size limit.",
    422: "Invalid body or parameters; a future date; no data for that date; bad adapter.",
    503: "Not ready, over capacity, engine restarting or data provider down (Retry-After).",
}
BODY = (400, 413, 422)  # any route that reads a JSON body
ADMIN = (401, 403)


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: {"model": ErrorResponse, "description": DESCRIPTIONS[s]} for s in statuses}
