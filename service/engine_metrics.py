"""vLLM's own ``vllm:*`` metrics, per engine, next to the ``forecast_*`` ones on ``/metrics``.

vLLM's ``PrometheusStatLogger`` registers its metrics on prometheus_client's process-global
registry, labelled ``model_name`` (the served model) and ``engine`` (a data-parallel index,
``"0"`` here), and unregisters every ``vllm:*`` collector there when the next one starts. With
two engines in one process (llama and deepseek) the second would silently take the first's
place, and both would claim ``engine="0"`` for the same tiny model.

So each :class:`~service.engine.VLLMEngine` gets vLLM's logger re-pointed at a private
``CollectorRegistry`` (:func:`prometheus_logger_class`: the logger's metric classes, which
vLLM itself swaps for Ray, with that registry as their default), and :class:`EngineMetrics`
reads every engine's registry at scrape time: one family per name, ``engine`` relabelled to
the base (``llama``, ``deepseek``), ``model_name`` to the engine's model id. Both bounded.

``vllm:lora_requests_info`` is left out: vLLM keeps one series per combination of running and
waiting adapter names, a set that grows with every hot-swap (``forecast_adapter_loaded`` and
``forecast_inflight_requests`` say the same, per version).

vLLM 0.20 (the GPU image) and 0.32 (CPU) share the logger's shape: ``_gauge_cls``,
``_counter_cls``, ``_histogram_cls`` and helper classes with the same attributes. A vLLM
without them gets no logger from here (a warning says so) and keeps its default one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

PREFIX = "vllm:"
# Label values that grow with every adapter swap (see the module docstring).
LEFT_OUT = frozenset({"vllm:lora_requests_info"})
_METRIC_CLASSES = ("_gauge_cls", "_counter_cls", "_histogram_cls")
# Helper classes of vLLM's logger that create metrics of their own (absent ones are skipped).
_HELPERS = ("_spec_decoding_cls", "_kv_connector_cls", "_ec_connector_cls", "_perf_metrics_cls")


@runtime_checkable
class ExportsMetrics(Protocol):
    """An engine whose vLLM metrics live on its own registry."""

    @property
    def metrics_registry(self) -> CollectorRegistry | None: ...


def _on_registry(cls: type, registry: CollectorRegistry) -> type:
    """``cls`` (a prometheus_client metric class) registering on ``registry`` by default.
    Children made by ``labels()`` are built from the same class and never register."""

    parent_init: Callable[..., None] = cls.__init__  # type: ignore[misc]

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("registry", registry)
        parent_init(self, *args, **kwargs)

    return type(cls.__name__, (cls,), {"__init__": __init__, "__module__": __name__})


def _with_metric_classes(cls: type, registry: CollectorRegistry) -> type:
    overrides = {
        name: _on_registry(getattr(cls, name), registry)
        for name in _METRIC_CLASSES
        if hasattr(cls, name)
    }
    return type(cls.__name__, (cls,), {**overrides, "__module__": __name__})


def prometheus_logger_class(registry: CollectorRegistry) -> type | None:
    """vLLM's ``PrometheusStatLogger`` recording on ``registry``; None (and a warning) when
    this vLLM's logger does not have the expected shape."""
    try:
        from vllm.v1.metrics.loggers import PrometheusStatLogger
    except ImportError as exc:
        log.warning("vLLM metrics not exported: no PrometheusStatLogger (%s)", exc)
        return None
    if not all(hasattr(PrometheusStatLogger, name) for name in _METRIC_CLASSES):
        log.warning("vLLM metrics not exported: this vLLM's PrometheusStatLogger has no %s",
                    "/".join(_METRIC_CLASSES))
        return None
    cls = _with_metric_classes(PrometheusStatLogger, registry)
    for name in _HELPERS:
        helper = getattr(PrometheusStatLogger, name, None)
        if isinstance(helper, type):
            setattr(cls, name, _with_metric_classes(helper, registry))
    return cls


class _Engine(Protocol):
    """What :class:`EngineMetrics` reads of an engine besides its registry."""

    @property
    def info(self) -> Any: ...


def engine_label(base: str, index: str) -> str:
    """The ``engine`` label: the base, with vLLM's data-parallel index when it is not 0."""
    return base if index in ("", "0") else f"{base}-{index}"


class EngineMetrics(Collector):
    """Every engine's ``vllm:*`` families at scrape time, merged by name and relabelled."""

    def __init__(self, engines: Callable[[], Mapping[str, _Engine]]) -> None:
        self._engines = engines  # read at each scrape: a restarted engine brings a new registry

    def describe(self) -> Iterable[Metric]:
        return []  # no collect() at registration, when engines may still be starting

    def collect(self) -> Iterable[Metric]:
        merged: dict[str, Metric] = {}
        for base, engine in sorted(self._engines().items()):
            registry = engine.metrics_registry if isinstance(engine, ExportsMetrics) else None
            if registry is None:
                continue
            model = str(engine.info.model_id)
            for family in registry.collect():
                if not family.name.startswith(PREFIX) or family.name in LEFT_OUT:
                    continue
                out = merged.setdefault(
                    family.name, Metric(family.name, family.documentation, family.type)
                )
                for sample in family.samples:
                    labels = dict(sample.labels)
                    if "engine" in labels:
                        labels["engine"] = engine_label(base, labels["engine"])
                    if "model_name" in labels:
                        labels["model_name"] = model
                    out.samples.append(sample._replace(labels=labels))
        yield from merged.values()
