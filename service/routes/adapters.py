"""``/v1/adapters`` (admin): list, load a version, promote it to an alias, unload."""

from __future__ import annotations

from fastapi import APIRouter, status

from service.adapters import AdapterRegistry, LoadedAdapter
from service.deps import Admin, State
from service.errors import InvalidRequest
from service.routes.responses import ADMIN, BODY, errors
from service.schemas import AdapterList, AdapterVersionOut, LoadAdapterRequest, PromoteRequest

router = APIRouter(
    prefix="/v1/adapters", tags=["adapters"], dependencies=Admin, responses=errors(*ADMIN)
)


def version_out(registry: AdapterRegistry, a: LoadedAdapter, loaded: bool = True) -> AdapterVersionOut:
    m = a.manifest
    return AdapterVersionOut(
        name=a.name, version=a.version, base=m.served_base, base_model=m.base_model,
        chat_format=str(m.chat_format), lora_id=a.lora.lora_id, lora_rank=m.lora.r,
        loaded=loaded, retiring=a.retired, inflight=a.inflight,
        served_as="folded" if a.engine_lora is None else "lora" if a.engine_lora == a.lora else "difference",
        path=f"{a.name}/{a.version}", aliases=registry.aliases_of(a.ref), metrics=m.metrics,
    )


@router.get("", response_model=AdapterList)
async def list_adapters(state: State) -> AdapterList:
    reg = state.registry
    return AdapterList(
        adapters=[version_out(reg, a) for a in reg.loaded()],
        aliases=reg.aliases,
        available=reg.available(),
    )


@router.post(
    "", response_model=AdapterVersionOut, status_code=status.HTTP_201_CREATED,
    responses=errors(*BODY, 404, 503),
)
async def load_adapter(body: LoadAdapterRequest, state: State) -> AdapterVersionOut:
    """Load a version from the adapter root (manifest validated, base must match an engine).
    With ``promote`` (default) it then serves ``alias`` (default: its name): the old version
    finishes its in-flight requests and is unloaded. A failed load changes nothing."""
    adapter = await state.registry.load(body.name, body.version, promote=body.promote, alias=body.alias)
    return version_out(state.registry, adapter)


@router.post("/promote", response_model=AdapterVersionOut, responses=errors(*BODY, 404))
async def promote(body: PromoteRequest, state: State) -> AdapterVersionOut:
    """Point ``alias`` at a loaded ``name@version`` in one step."""
    if "@" not in body.adapter:
        raise InvalidRequest("adapter must be name@version", code="invalid_request")
    adapter = await state.registry.promote(body.alias, body.adapter)
    return version_out(state.registry, adapter)


@router.delete(
    "/{name}/versions/{version}", response_model=AdapterVersionOut, responses=errors(404, 409, 422)
)
async def unload(name: str, version: str, state: State) -> AdapterVersionOut:
    """Unload a version that serves no alias, after its in-flight requests finish."""
    adapter = await state.registry.unload(f"{name}@{version}")
    return version_out(state.registry, adapter, loaded=False)
