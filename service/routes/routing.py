"""``/v1/routing`` (admin): the A/B arms, their weights and the shadow arm, changed live."""

from __future__ import annotations

from fastapi import APIRouter

from service.deps import Admin, State
from service.errors import InvalidRequest, NotFound
from service.routes.responses import ADMIN, BODY, errors
from service.routing import Arm, RoutingTable
from service.schemas import ArmOut, RoutingIn, RoutingOut

router = APIRouter(
    prefix="/v1/routing", tags=["routing"], dependencies=Admin, responses=errors(*ADMIN)
)


def routing_out(table: RoutingTable) -> RoutingOut:
    return RoutingOut(
        arms=[ArmOut(name=a.name, adapter=a.alias, weight=a.weight, share=s) for a, s in table.normalised()],
        shadow=table.shadow,
        shadow_fraction=table.shadow_fraction,
        version=table.version,
    )


@router.get("", response_model=RoutingOut)
async def get_routing(state: State) -> RoutingOut:
    return routing_out(state.router.table)


@router.put("", response_model=RoutingOut, responses=errors(*BODY))
async def set_routing(body: RoutingIn, state: State) -> RoutingOut:
    """Replace the table. Every arm's adapter (and the shadow) must be a served alias."""
    for alias in [a.adapter for a in body.arms] + ([body.shadow] if body.shadow else []):
        try:
            state.registry.resolve(alias)
        except NotFound:
            raise InvalidRequest(f"no adapter serves alias {alias!r}", code="unknown_alias") from None
    arms = [Arm(name=a.name, alias=a.adapter, weight=a.weight) for a in body.arms]
    return routing_out(state.router.set(arms, body.shadow, body.shadow_fraction))
