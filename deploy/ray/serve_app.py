"""The forecast service as a Ray Serve application: one engine replica per GPU, scaled on
queue length, with adapters and routing kept consistent across replicas.

    serve run serve_app:build_app engine=vllm            # from deploy/ray/, on a Ray cluster
    serve run serve_app:build_app engine=fake replicas=2 # no model: for tests and dry runs

Each replica runs the whole service app (``service.app.create_app``: the FastAPI ingress)
over its own engines. What must agree between replicas lives in one named Ray actor,
:class:`DesiredState`: which version each alias serves and the A/B routing table, with a
version counter. An admin change (load/promote an adapter, set routing) is applied by the
replica that received it — through the service's own code, so validation and errors are
the same as on one box — and, once it succeeded, published to the actor; every replica
polls the actor and reconciles to the newest state through its own admin API in-process.
A replica started later by the autoscaler catches up the same way. Stickiness needs no
shared state: the arm is a salted hash of the client key over the shared routing table.

Every response carries ``X-Replica`` (which replica served it), so a swap can be seen
reaching all of them. Settings come from ``FORECAST_SERVICE_*`` as on one box; the builder
arguments below override them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Mapping
from typing import Any

import httpx
import ray
from ray import serve
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("ray.serve.dow30")

STATE_ACTOR = "dow30-desired-state"
# Admin calls whose success changes what every replica must serve.
PUBLISHED = {("POST", "/v1/adapters"), ("POST", "/v1/adapters/promote"), ("PUT", "/v1/routing")}
SYNC_TOKEN_HEADER = "x-dow30-replica-sync"  # marks a replica's own reconcile calls
METRICS_PUSH_S = 5.0
METRICS_MAX_AGE_S = 60.0  # a replica silent this long is gone (scaled down or dead)


@ray.remote(num_cpus=0)
class DesiredState:
    """Aliases and routing every replica must serve, and a counter bumped on each change."""

    def __init__(self) -> None:
        self.version = 0
        self.aliases: dict[str, str] = {}  # alias -> name@version
        self.routing: dict[str, Any] | None = None  # the body of PUT /v1/routing
        self.metrics: dict[str, tuple[float, str]] = {}  # replica -> (time, exposition)

    def publish_alias(self, alias: str, ref: str) -> int:
        if self.aliases.get(alias) != ref:
            self.aliases[alias] = ref
            self.version += 1
        return self.version

    def publish_routing(self, routing: dict[str, Any]) -> int:
        if self.routing != routing:
            self.routing = routing
            self.version += 1
        return self.version

    def put_metrics(self, replica: str, text: str, at: float) -> None:
        self.metrics[replica] = (at, text)

    def all_metrics(self, max_age_s: float, now: float) -> dict[str, str]:
        """Each live replica's last exposition (replicas silent for ``max_age_s`` dropped)."""
        self.metrics = {r: (t, m) for r, (t, m) in self.metrics.items() if now - t <= max_age_s}
        return {r: m for r, (_, m) in self.metrics.items()}

    def newer_than(self, seen: int) -> tuple[int, dict[str, str], dict[str, Any] | None] | None:
        if self.version <= seen:
            return None
        return self.version, dict(self.aliases), self.routing


def desired_state() -> Any:
    """The one actor of this Ray namespace (created by the first replica that asks)."""
    return DesiredState.options(  # type: ignore[attr-defined]
        name=STATE_ACTOR, lifetime="detached", get_if_exists=True
    ).remote()


def replica_id() -> str:
    try:
        return str(serve.get_replica_context().replica_id.unique_id)
    except Exception:  # outside a replica (unit use)
        return f"pid-{os.getpid()}"


class ReplicaSync:
    """ASGI middleware: tag responses with the replica, publish successful admin changes."""

    def __init__(self, app: ASGIApp, replica: str, publish: Any, metrics: Any) -> None:
        self.app = app
        self.replica = replica.encode()
        self.publish = publish
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        key = (scope["method"], scope["path"].rstrip("/"))
        own_sync = any(k == SYNC_TOKEN_HEADER.encode() for k, _ in scope["headers"])
        if key == ("GET", "/metrics") and not own_sync:  # own calls read the local registry
            body = (await self.metrics()).encode()
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"text/plain; version=0.0.4; charset=utf-8"),
                (b"x-replica", self.replica)]})  # fmt: skip
            await send({"type": "http.response.body", "body": body})
            return
        watch = key in PUBLISHED and not own_sync
        status = 0
        body = bytearray()

        async def tagged(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-replica", self.replica)]
            elif message["type"] == "http.response.body" and watch:
                body.extend(message.get("body", b""))
            await send(message)

        await self.app(scope, receive, tagged)
        if watch and 200 <= status < 300:
            await self.publish(key, bytes(body))


def merge_expositions(texts: Mapping[str, str]) -> str:
    """One Prometheus text exposition from several, with a ``replica`` label on each sample."""
    from prometheus_client.parser import text_string_to_metric_families

    families: dict[str, tuple[str, str, list[str]]] = {}
    for replica, text in sorted(texts.items()):
        for family in text_string_to_metric_families(text):
            # the parser names a counter family without its _total; the exposition has it
            name = family.name + "_total" if family.type == "counter" else family.name
            kind, help_text, lines = families.setdefault(
                name, (family.type, family.documentation, [])
            )
            for sample in family.samples:
                if sample.name.endswith("_created"):
                    continue  # creation timestamps: per process, meaningless once merged
                labels = {**sample.labels, "replica": replica}
                rendered = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
                lines.append(f"{sample.name}{{{rendered}}} {_number(sample.value)}")
    out = []
    for name, (kind, help_text, lines) in families.items():
        out += [f"# HELP {name} {_escape(help_text)}", f"# TYPE {name} {kind}", *lines]
    return "\n".join(out) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def build_engines(engine: str, settings: Any) -> dict[str, Any]:
    if engine == "fake":
        from service.testing import FakeEngine

        return {e.base: FakeEngine(e.base) for e in settings.engines}
    from service.engine import VLLMEngine

    return {e.base: VLLMEngine.start(e) for e in settings.engines}  # in the serving loop


@serve.deployment(name="Forecaster", max_ongoing_requests=32, health_check_period_s=10)
@serve.ingress()
class Forecaster:
    """One replica: engines, the service app, and a reconcile loop against DesiredState."""

    def __init__(self, engine: str = "vllm", overrides: Mapping[str, Any] | None = None,
                 poll_s: float = 0.5) -> None:  # fmt: skip
        from service.settings import ServiceSettings

        self.engine_kind = engine
        self.settings = ServiceSettings(**dict(overrides or {}))
        self.poll_s = poll_s
        self.replica = replica_id()
        self.state = desired_state()
        self.seen = 0
        self.engines: dict[str, Any] = {}
        self.local: httpx.AsyncClient | None = None
        self.loop_task: asyncio.Task[None] | None = None

    async def __serve_build_asgi_app__(self) -> ASGIApp:
        from forecast.providers.snapshot import SNAPSHOT_LATEST
        from forecast.settings import DataSettings, market_data_from_settings
        from service.app import create_app
        from service.bootstrap import prepare_settings

        data = DataSettings()
        if self.engine_kind == "fake":  # no model to materialize
            if self.settings.default_as_of is None and data.data_source == "snapshot":
                self.settings = self.settings.model_copy(update={"default_as_of": SNAPSHOT_LATEST})
        else:
            self.settings = prepare_settings(self.settings, data, demo_adapters=False)
        self.engines = build_engines(self.engine_kind, self.settings)
        app = create_app(self.settings, self.engines, market_data_from_settings(data))
        app.add_middleware(
            ReplicaSync, replica=self.replica, publish=self.publish, metrics=self.all_metrics
        )
        token = self.settings.admin_token_value() or ""
        self.local = httpx.AsyncClient(  # this replica's own app, in-process
            transport=httpx.ASGITransport(app=app), base_url="http://replica",
            headers={"Authorization": f"Bearer {token}", SYNC_TOKEN_HEADER: "1"},
        )  # fmt: skip
        self.loop_task = asyncio.get_running_loop().create_task(self.reconcile_forever())
        return app

    async def publish(self, key: tuple[str, str], body: bytes) -> None:
        """Record a change this replica made so the others follow."""
        payload = json.loads(body)
        if key == ("PUT", "/v1/routing"):
            routing = {
                "arms": [{k: a[k] for k in ("name", "adapter", "weight")} for a in payload["arms"]],
                "shadow": payload["shadow"],
                "shadow_fraction": payload["shadow_fraction"],
            }
            await self.state.publish_routing.remote(routing)
            return
        for alias in payload.get("aliases", []):
            await self.state.publish_alias.remote(alias, f"{payload['name']}@{payload['version']}")

    async def reconcile_forever(self) -> None:
        last_push = 0.0
        while True:
            try:
                await self.reconcile()
                if time.time() - last_push >= METRICS_PUSH_S:
                    await self.push_metrics()
                    last_push = time.time()
            except Exception:
                log.exception("replica %s: reconcile failed; retrying", self.replica)
            await asyncio.sleep(self.poll_s)

    async def push_metrics(self) -> None:
        if self.local is not None:
            text = (await self.local.get("/metrics")).raise_for_status().text
            await self.state.put_metrics.remote(self.replica, text, time.time())

    async def all_metrics(self) -> str:
        """Every live replica's metrics, each sample labelled with its replica: what the
        proxy's ``/metrics`` answers, so one Prometheus job scrapes the whole deployment."""
        await self.push_metrics()
        texts = await self.state.all_metrics.remote(METRICS_MAX_AGE_S, time.time())
        return merge_expositions(texts)

    async def reconcile(self) -> bool:
        """Apply the newest desired state; True when something was newer."""
        newer = await self.state.newer_than.remote(self.seen)
        if newer is None or self.local is None:
            return False
        version, aliases, routing = newer
        current = (await self.local.get("/v1/adapters")).raise_for_status().json()["aliases"]
        for alias, ref in aliases.items():
            if current.get(alias) == ref:
                continue
            name, _, ver = ref.partition("@")
            body = {"name": name, "version": ver, "promote": True, "alias": alias}
            (await self.local.post("/v1/adapters", json=body)).raise_for_status()
            log.info("replica %s: %s -> %s (state v%d)", self.replica, alias, ref, version)
        if routing is not None:
            (await self.local.put("/v1/routing", json=routing)).raise_for_status()
        self.seen = version
        return True

    async def check_health(self) -> None:
        """Ray restarts a replica whose engines died (readiness says why)."""
        for base, engine in self.engines.items():
            try:
                await engine.health()
            except Exception as exc:
                raise RuntimeError(f"engine {base} unhealthy: {exc}") from exc

    async def __del__(self) -> None:
        if self.loop_task is not None:
            self.loop_task.cancel()
        for engine in self.engines.values():
            await engine.aclose()


def _flag(value: Any) -> bool:
    return str(value).lower() in {"1", "true", "yes", "on"}


def build_app(args: dict[str, Any]) -> Any:
    """Ray Serve application builder (``serve run serve_app:build_app key=value ...``).

    ``engine``: ``vllm`` (default) or ``fake``. ``gpus_per_replica``: default 1 when the
    cluster has GPUs, else 0 (one engine replica per GPU). ``cpus_per_replica``: default 1.
    ``replicas``: a fixed count; otherwise autoscaling between ``min_replicas`` and
    ``max_replicas`` on ``target_ongoing_requests`` per replica (queue length).
    ``settings``: a dict of ServiceSettings overrides (else ``FORECAST_SERVICE_*``).
    """
    gpus = args.get("gpus_per_replica")
    if gpus is None:
        resources = ray.cluster_resources() if ray.is_initialized() else {}  # type: ignore[no-untyped-call]
        gpus = 1 if resources.get("GPU", 0) >= 1 else 0
    options: dict[str, Any] = {
        "ray_actor_options": {
            "num_gpus": float(gpus),
            "num_cpus": float(args.get("cpus_per_replica", 1)),
        },
    }
    if args.get("replicas") is not None:
        options["num_replicas"] = int(args["replicas"])
    else:
        options["autoscaling_config"] = {
            "min_replicas": int(args.get("min_replicas", 1)),
            "max_replicas": int(args.get("max_replicas", 4)),
            "target_ongoing_requests": float(args.get("target_ongoing_requests", 8)),
            "upscale_delay_s": float(args.get("upscale_delay_s", 30)),
            "downscale_delay_s": float(args.get("downscale_delay_s", 300)),
        }
    return Forecaster.options(**options).bind(  # type: ignore[attr-defined]
        engine=str(args.get("engine", "vllm")),
        overrides=args.get("settings") or {},
        poll_s=float(args.get("poll_s", 0.5)),
    )
