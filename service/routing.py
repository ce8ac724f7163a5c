"""A/B routing: weighted arms over adapter aliases, sticky by client key, an optional shadow.

A client key (the ``X-Client-Key`` header) is hashed with a salt to a point ``u`` in [0, 1);
the arm is the one whose slice of the cumulative normalised weights holds ``u``. The same
key therefore lands on the same arm for as long as the weights stay, and across restarts
and replicas (the hash is not Python's randomised ``hash``). Requests without a key draw
``u`` from an injected ``random.Random``. The table is replaced as a whole (one assignment),
so a request never sees half of a re-weighting.

Weights are finite, in [0, 1e6] and not all zero; the arm names ``direct`` and ``shadow`` are
reserved, being the labels of explicit-adapter requests and shadow copies
(``service.settings.routing_problem``, checked here live and by the settings at start-up).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from service.errors import InvalidRequest, Unavailable
from service.settings import routing_problem
from service.telemetry import Telemetry


@dataclass(frozen=True)
class Arm:
    name: str
    alias: str
    weight: float


@dataclass(frozen=True)
class RoutingTable:
    arms: tuple[Arm, ...] = ()
    shadow: str | None = None
    shadow_fraction: float = 1.0
    version: int = 0

    def normalised(self) -> list[tuple[Arm, float]]:
        # Scaled by the largest weight first, so that the sum cannot overflow.
        top = max((a.weight for a in self.arms), default=0.0)
        if not top > 0:
            return []
        scaled = [a.weight / top for a in self.arms]
        total = sum(scaled)
        return [(a, w / total) for a, w in zip(self.arms, scaled, strict=True)]


@dataclass(frozen=True)
class Route:
    arm: str
    alias: str
    shadow: str | None = None  # alias that also gets this request, answer logged only


def unit_hash(salt: str, key: str) -> float:
    """A stable point in [0, 1) for ``key``."""
    digest = hashlib.sha256(f"{salt}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def pick(table: RoutingTable, u: float) -> Arm:
    edge = 0.0
    weighted = table.normalised()
    for arm, share in weighted:
        edge += share
        if u < edge:
            return arm
    # u just under 1.0 with float rounding: the last arm that has a share
    return next(arm for arm, share in reversed(weighted) if share > 0)


class Router:
    def __init__(self, telemetry: Telemetry, *, salt: str, rng: random.Random | None = None) -> None:
        self._telemetry = telemetry
        self._salt = salt
        self._rng = rng or random.Random()
        self._table = RoutingTable()

    @property
    def table(self) -> RoutingTable:
        return self._table

    def set(
        self, arms: list[Arm], shadow: str | None = None, shadow_fraction: float = 1.0
    ) -> RoutingTable:
        names = [a.name for a in arms]
        if len(set(names)) != len(names):
            raise InvalidRequest("arm names must be unique", code="invalid_routing")
        problem = routing_problem({a.name: a.weight for a in arms})
        if problem is not None:
            raise InvalidRequest(problem, code="invalid_routing")
        if not 0.0 <= shadow_fraction <= 1.0:
            raise InvalidRequest("shadow_fraction must be in [0, 1]", code="invalid_routing")
        table = RoutingTable(tuple(arms), shadow, shadow_fraction, self._table.version + 1)
        self._table = table
        self._telemetry.set_weights((a.name, a.alias, share) for a, share in table.normalised())
        return table

    def choose(self, client_key: str | None) -> Route:
        table = self._table  # one read: a concurrent set() cannot tear this request's view
        if not table.normalised():
            raise Unavailable("no routing arms configured and no adapter named", code="no_route")
        if client_key:
            u = unit_hash(self._salt, client_key)
            u_shadow = unit_hash(self._salt + ":shadow", client_key)
        else:
            u, u_shadow = self._rng.random(), self._rng.random()
        arm = pick(table, u)
        shadow = None
        if table.shadow is not None and table.shadow != arm.alias and u_shadow < table.shadow_fraction:
            shadow = table.shadow
        return Route(arm=arm.name, alias=arm.alias, shadow=shadow)
