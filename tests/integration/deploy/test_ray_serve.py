"""The service on a local Ray cluster with 2 Serve replicas (FakeEngines, no GPU): requests
go through Ray Serve's HTTP proxy; a hot-swap and a re-weight made on one replica reach
every replica; a client key keeps its arm whichever replica serves it."""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.ci import require_module
from support.http import free_port

ray = require_module("ray", "Ray Serve is the `ray` extra: pip install -e '.[ray]'")
serve = require_module("ray.serve", "the `ray` extra")

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

RAY_DIR = Path(__file__).resolve().parents[3] / "deploy" / "ray"
TOKEN = "ray-test-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DEADLINE_S = 60.0  # waiting for replicas to converge; generous, never asserted on


@pytest.fixture(scope="module")
def proxy_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from service.testing import write_stub_adapter

    tmp = tmp_path_factory.mktemp("ray")
    root = tmp / "adapters"
    write_stub_adapter(root, "fingpt-llama", "v1", "llama")
    write_stub_adapter(root, "fingpt-llama", "v2", "llama")
    write_stub_adapter(root, "fingpt-deepseek", "v1", "deepseek")
    sys.path.insert(0, str(RAY_DIR))
    import serve_app

    port = free_port()
    ray.init(
        num_cpus=2, include_dashboard=False, namespace=f"dow30-test-{uuid.uuid4().hex[:8]}",
        runtime_env={"working_dir": str(RAY_DIR), "env_vars": {"TOKENIZERS_PARALLELISM": "false"}},
        logging_level="ERROR", log_to_driver=False,
    )  # fmt: skip
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        app = serve_app.build_app(
            {
                "engine": "fake",
                "replicas": 2,
                "cpus_per_replica": 0.5,
                "gpus_per_replica": 0,
                "poll_s": 0.2,
                "settings": {
                    "admin_token": TOKEN,
                    "adapter_root": str(root),
                    "db_url": f"sqlite:///{tmp / 'forecasts.sqlite3'}",
                    "preload": ["fingpt-llama@v1", "fingpt-deepseek@v1"],
                    "routing": {"fingpt-llama": 0.5, "fingpt-deepseek": 0.5},
                    "max_new_tokens": 32,
                },
            }
        )
        serve.run(app, name="dow30", route_prefix="/")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()
        sys.path.remove(str(RAY_DIR))


def _forecast(client: httpx.Client, **body: Any) -> tuple[str, dict[str, Any]]:
    key = body.pop("client_key", None)
    headers = {"X-Client-Key": key} if key else {}
    r = client.post("/v1/forecast", json={"ticker": "AAPL", **body}, headers=headers)
    assert r.status_code == 200, r.text
    return r.headers["x-replica"], r.json()


def _until_every_replica(client: httpx.Client, replicas: set[str], seen: Any) -> dict[str, Any]:
    """Send requests until each replica has answered with ``seen(response) == True``."""
    done: dict[str, Any] = {}
    deadline = time.monotonic() + DEADLINE_S
    while set(done) != replicas:
        assert time.monotonic() < deadline, f"replicas converged: {sorted(done)} of {replicas}"
        replica, body = _forecast(client, adapter="fingpt-llama")
        if seen(body):
            done[replica] = body
        elif replica in done:
            raise AssertionError(f"replica {replica} went back: {body['adapter']}")
    return done


def test_two_replicas_serve_sticky_and_converge_after_swap_and_reweight(proxy_url: str) -> None:
    with httpx.Client(base_url=proxy_url, timeout=30) as c:
        assert c.get("/healthz").status_code == 200
        # Both replicas answer through the proxy, both on v1.
        served = [_forecast(c, adapter="fingpt-llama") for _ in range(40)]
        replicas = {r for r, _ in served}
        assert len(replicas) == 2, replicas
        assert {b["adapter"] for _, b in served} == {"fingpt-llama@v1"}

        # A client key keeps its arm whichever replica serves it.
        sticky = [_forecast(c, client_key="sticky-user") for _ in range(16)]
        assert len({b["arm"] for _, b in sticky}) == 1
        by_key = {f"user-{i}": _forecast(c, client_key=f"user-{i}")[1]["arm"] for i in range(12)}
        again = {k: _forecast(c, client_key=k)[1]["arm"] for k in by_key}
        assert again == by_key

        # Hot-swap on whichever replica gets the admin call; every replica follows.
        swap = c.post("/v1/adapters", json={"name": "fingpt-llama", "version": "v2"}, headers=AUTH)
        assert swap.status_code == 201, swap.text
        assert swap.json()["aliases"] == ["fingpt-llama"]
        done = _until_every_replica(c, replicas, lambda b: b["adapter"] == "fingpt-llama@v2")
        assert set(done) == replicas

        # A re-weight (all traffic to the llama arm) reaches every replica too.
        arms = [{"name": "fingpt-llama", "adapter": "fingpt-llama", "weight": 1.0},
                {"name": "fingpt-deepseek", "adapter": "fingpt-deepseek", "weight": 0.0}]  # fmt: skip
        put = c.put("/v1/routing", json={"arms": arms}, headers=AUTH)
        assert put.status_code == 200, put.text
        deadline = time.monotonic() + DEADLINE_S
        converged: set[str] = set()
        while converged != replicas:
            assert time.monotonic() < deadline, f"routing converged on {converged}"
            r = c.get("/v1/routing", headers=AUTH)
            shares = {a["name"]: a["share"] for a in r.json()["arms"]}
            if shares == {"fingpt-llama": 1.0, "fingpt-deepseek": 0.0}:
                converged.add(r.headers["x-replica"])
        assert {_forecast(c, client_key=f"k{i}")[1]["arm"] for i in range(12)} == {"fingpt-llama"}

        # One scrape of the proxy's /metrics covers every replica, each sample labelled.
        deadline = time.monotonic() + DEADLINE_S
        while True:
            text = c.get("/metrics").text
            labelled = {r for r in replicas if f'replica="{r}"' in text}
            if labelled == replicas:
                break
            assert time.monotonic() < deadline, f"metrics of {labelled} only"
            time.sleep(1)
        assert 'forecast_forecasts_total{adapter="fingpt-llama",arm="direct",replica=' in text


def _built(args: dict[str, Any]) -> Any:
    sys.path.insert(0, str(RAY_DIR))
    try:
        import serve_app

        return serve_app.build_app(args)
    finally:
        sys.path.remove(str(RAY_DIR))


def _deployed(bound: Any) -> dict[str, Any]:
    """What Serve would deploy for a bound application, in the manifest's own terms."""
    deployment = bound._bound_deployment
    config, actor = deployment._deployment_config, deployment.ray_actor_options
    scaling = config.autoscaling_config
    kwargs = deployment._replica_config.init_kwargs
    return {
        "engine": kwargs["engine"], "gpus_per_replica": actor["num_gpus"],
        "cpus_per_replica": actor["num_cpus"], "min_replicas": scaling.min_replicas,
        "max_replicas": scaling.max_replicas, "target_ongoing_requests": scaling.target_ongoing_requests,
        "upscale_delay_s": scaling.upscale_delay_s, "downscale_delay_s": scaling.downscale_delay_s,
    }


def test_every_builder_arg_flows_through() -> None:
    """Non-default values (none equals the builder's default) reach the deployment: a builder
    that dropped one arg and used its default fails here."""
    args = {"engine": "fake", "gpus_per_replica": 0.5, "cpus_per_replica": 3, "min_replicas": 2,
            "max_replicas": 7, "target_ongoing_requests": 3, "upscale_delay_s": 11,
            "downscale_delay_s": 123, "poll_s": 0.25, "settings": {"max_new_tokens": 17}}
    bound = _built(args)
    assert _deployed(bound) == {k: v for k, v in args.items() if k not in ("poll_s", "settings")}
    kwargs = bound._bound_deployment._replica_config.init_kwargs
    assert kwargs["poll_s"] == 0.25 and kwargs["overrides"] == {"max_new_tokens": 17}
    fixed = _built({**args, "replicas": 5})._bound_deployment._deployment_config
    assert fixed.num_replicas == 5 and fixed.autoscaling_config is None


def test_rayservice_manifest_matches_the_app_builder() -> None:
    import yaml

    docs = list(yaml.safe_load_all((RAY_DIR.parent / "k8s" / "rayservice.yaml").read_text()))
    service = next(d for d in docs if d["kind"] == "RayService")
    assert service["apiVersion"] == "ray.io/v1"
    serve_config = yaml.safe_load(service["spec"]["serveConfigV2"])
    app = serve_config["applications"][0]
    assert app["import_path"] == "serve_app:build_app"
    # every arg the manifest sets is the one deployed (the builder's handling of non-default
    # values is proven above, so equal-to-default values here are no blind spot)
    assert _deployed(_built(app["args"])) == app["args"]
    assert app["args"]["gpus_per_replica"] == 1  # one engine replica per GPU
    workers = service["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    assert (
        workers["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    )
    assert service["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParams"]["num-gpus"] == "0"
