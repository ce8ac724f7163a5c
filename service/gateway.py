"""What every generation shares, in one place (as vLLM's ``OpenAIServing`` base is for its
handlers): the route to an adapter, a slot from admission, a lease on the adapter version,
engine failures mapped to the service's errors, and each request counted by outcome.

::

    async with gateway.lease(alias, arm=arm, route_label="forecast") as (adapter, engine):
        ...  # generate with ``adapter.engine_lora`` on ``engine``
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from service.adapters import AdapterRegistry, LoadedAdapter
from service.admission import Admission
from service.engine import EngineClient
from service.errors import engine_error_of, service_error_of
from service.routing import Route, Router
from service.settings import DIRECT_ARM, ServiceSettings
from service.telemetry import Telemetry

NO_ADAPTER = ("none", "none")  # the labels of a request refused before it held an adapter


class Gateway:
    def __init__(
        self,
        settings: ServiceSettings,
        engines: Mapping[str, EngineClient],
        registry: AdapterRegistry,
        router: Router,
        telemetry: Telemetry,
    ) -> None:
        self._engines = engines  # the app's own map: a restarted engine is seen at once
        self._registry = registry
        self._router = router
        self._telemetry = telemetry
        self.admission = Admission(
            settings.max_inflight, settings.max_queued, settings.queue_timeout_s,
            settings.retry_after_s,
        )

    def route(self, adapter: str | None, client_key: str | None) -> Route:
        """Where a request goes: the adapter it names (arm ``direct``), else the router's
        choice. 404 now for an alias no version serves, rather than mid-stream."""
        route = Route(arm=DIRECT_ARM, alias=adapter) if adapter else self._router.choose(client_key)
        self._registry.resolve(route.alias)
        return route

    @asynccontextmanager
    async def lease(
        self, alias: str, *, arm: str, route_label: str
    ) -> AsyncIterator[tuple[LoadedAdapter, EngineClient]]:
        """The version serving ``alias`` and its engine for the body of the ``async with``.

        A slot first (possibly after queueing), then the adapter lease: a queued request holds
        no adapter version, so a swap never waits on the queue. An engine failure in the body
        leaves as the service error it maps to; every exit but cancellation is counted."""
        labels = (*NO_ADAPTER, arm)
        try:
            async with self.admission.slot(), self._registry.acquire(alias) as adapter:
                labels = (adapter.name, adapter.version, arm)
                yield adapter, self._engines[adapter.base]
        except Exception as exc:
            mapped = engine_error_of(exc)
            self.count(route_label, labels, mapped)
            if mapped is exc:
                raise
            raise mapped from exc
        self.count(route_label, labels, None)

    def count(self, route_label: str, labels: tuple[str, str, str], error: Exception | None) -> None:
        """One request on ``route_label`` by outcome: 200, or the status ``error`` answers with."""
        status = "200" if error is None else str(service_error_of(error).status)
        self._telemetry.requests.labels(route_label, *labels, status).inc()
