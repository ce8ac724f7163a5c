"""The worker side of folding: vLLM's ``worker_extension_cls``, reached through ``collective_rpc``.

vLLM mixes this class into its worker (``AsyncEngineArgs(worker_extension_cls=...)``, in vLLM
0.20 as in 0.32) and ``collective_rpc("forecast_fold", args=(path,))`` runs the method in the
worker process, between two engine steps: the engine core handles utility calls in its busy
loop, never inside a forward pass. The service also drains the base's requests before it calls
:meth:`FoldWorkerExtension.forecast_fold` (service.adapters), so no request sees a weight half
updated or a version's LoRA computed against the wrong fold.

Exact restoration: before a weight is first changed, a host copy of it is kept (the engine's
pristine weights never change otherwise); un-folding copies it back, so promote / demote /
re-promote cycles return the weights bit for bit (:meth:`forecast_weights_checksum`). Folding
``p`` is ``W = fp32(W_pristine) + s·B·A`` cast to the weight's dtype, computed on the weight's
device in float32. Tensor parallelism 1 only: a sharded layer is refused.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from service.fold import FoldError, read_lora, slice_rows, vllm_target

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Step:
    param: str  # "<module>.weight"
    layer: Any  # vLLM's linear layer (duck-typed: weight, sizes, cpu_linear, quant_method)
    start: int
    stop: int
    a: torch.Tensor  # float32, on the host
    b: torch.Tensor
    scale: float

    def delta(self, device: torch.device) -> torch.Tensor:
        """``scale · B · A`` in float32, computed on ``device``."""
        return self.scale * (self.b.to(device) @ self.a.to(device))


@dataclass
class _FoldState:
    pristine: dict[str, torch.Tensor] = field(default_factory=dict)  # param name -> host copy
    folded: str | None = None  # adapter path folded now
    touched: set[str] = field(default_factory=set)  # params changed from pristine now
    plans: dict[str, list[_Step]] = field(default_factory=dict)  # prepared, by adapter path


# -- a linear layer's weight, live or prepacked ----------------------------------------------
# On a GPU the weight is a live tensor, changed in place (CUDA graphs keep its address). vLLM's
# CPU backend prepacks every linear weight for oneDNN / its own GEMM after loading and leaves an
# empty ``weight``: there the weight is read back through the layer's own GEMM (an identity
# input: exact, each output is one product by 1) and written by re-running the layer's
# post-load step on the new weight, which packs it again.


def _live(layer: Any) -> bool:
    weight = layer.weight
    return isinstance(weight, torch.Tensor) and weight.dim() == 2 and weight.numel() > 0


def _is_linear(layer: Any) -> bool:
    weight = getattr(layer, "weight", None)
    return isinstance(weight, torch.Tensor) and (
        (weight.dim() == 2 and weight.numel() > 0) or callable(getattr(layer, "cpu_linear", None))
    )


def read_weight(layer: Any) -> torch.Tensor:
    """The layer's weight ``(out, in)`` as the engine computes with it."""
    if _live(layer):
        weight: torch.Tensor = layer.weight
        return weight
    inputs = int(getattr(layer, "input_size_per_partition", 0) or layer.input_size)
    eye = torch.eye(inputs, dtype=layer.weight.dtype, device=layer.weight.device)
    with torch.no_grad():
        out: torch.Tensor = layer.cpu_linear(eye, layer.weight, None)
        return out.t().contiguous()


def write_weight(layer: Any, weight: torch.Tensor) -> None:
    """Make ``weight`` the layer's (a prepacked layer is packed again)."""
    if _live(layer):
        layer.weight.copy_(weight, non_blocking=True)
        return
    layer.weight = torch.nn.Parameter(weight.clone(), requires_grad=False)
    layer.quant_method.process_weights_after_loading(layer)


def _layers(model: torch.nn.Module) -> dict[str, Any]:
    """Each linear layer by module name (LoRA wrappers see through to their base layer)."""
    found = {}
    for name, module in model.named_modules():
        layer = getattr(module, "base_layer", module)
        if "lora" not in name and not name.endswith(".base_layer") and _is_linear(layer):
            found[name] = layer
    return found


def plan(model: torch.nn.Module, path: str) -> list[_Step]:
    """Where each module of the adapter at ``path`` goes in ``model``, with its factors."""
    factors = read_lora(Path(path))
    packed = getattr(model, "packed_modules_mapping", {}) or {}
    layers = _layers(model)
    steps = []
    for module in factors.modules:
        target = vllm_target(module, packed)
        if target.module not in layers:
            raise FoldError(f"adapter module {module} has no layer {target.module} in the model")
        layer = layers[target.module]
        if layer.weight.dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise FoldError(f"{target.module} holds {layer.weight.dtype} weights; folding needs unquantized ones")
        sizes = getattr(layer, "output_sizes", None)
        rows = int(getattr(layer, "output_size_per_partition", 0)) or read_weight(layer).shape[0]
        columns = int(getattr(layer, "input_size_per_partition", 0)) or read_weight(layer).shape[1]
        if target.slice_index is not None and (not sizes or sum(sizes) != rows):
            raise FoldError(f"{target.module} is sharded (tensor parallel); folding needs tp=1")
        start, stop = slice_rows(sizes, target.slice_index, rows)
        a, b = factors.modules[module]
        if (b.shape[0], a.shape[1]) != (stop - start, columns) or a.shape[0] != b.shape[1]:
            raise FoldError(
                f"{module}: LoRA {tuple(b.shape)} x {tuple(a.shape)} does not fit rows "
                f"{start}:{stop} of {target.module} ({rows} x {columns})"
            )
        steps.append(_Step(f"{target.module}.weight", layer, start, stop, a, b, factors.scale))
    return steps


class FoldWorkerExtension:
    """Methods vLLM adds to its worker; names carry a ``forecast_`` prefix (vLLM refuses an
    extension attribute the worker already has)."""

    model_runner: Any  # the vLLM worker's

    def _forecast_model(self) -> torch.nn.Module:
        return self.model_runner.get_model()  # type: ignore[no-any-return]

    def _forecast_state(self) -> _FoldState:
        state = self.__dict__.get("_forecast_fold_state")
        if state is None:
            state = self.__dict__["_forecast_fold_state"] = _FoldState()
        return state

    def forecast_prepare_fold(self, path: str) -> int:
        """Check that ``path`` folds into this model and keep the host copies of the weights
        it touches (done before the drain, so the drained window only adds and copies)."""
        state = self._forecast_state()
        steps = plan(self._forecast_model(), path)
        state.plans = {p: v for p, v in state.plans.items() if p == state.folded} | {path: steps}
        for step in steps:
            if step.param not in state.pristine:
                if step.param in state.touched:
                    raise FoldError(f"{step.param} changed without a pristine copy")
                # pinned on a GPU: restoring 14 GB (all linear layers of an 8B model) runs at
                # the bus's speed inside the drained window
                weight = read_weight(step.layer).detach()
                copy = torch.empty(weight.shape, dtype=weight.dtype, pin_memory=weight.is_cuda)
                state.pristine[step.param] = copy.copy_(weight)
        return len(steps)

    def forecast_fold(self, path: str | None) -> str | None:
        """Make the weights ``pristine + adapter(path)`` (``None``: pristine). On any error the
        previous fold is restored and the error raised: the old state keeps serving."""
        state = self._forecast_state()
        previous = state.folded
        model = self._forecast_model()
        try:
            self._forecast_apply(model, path)
        except Exception:
            log.exception("folding %s failed; restoring %s", path, previous)
            self._forecast_apply(model, previous)
            raise
        return previous

    def _forecast_apply(self, model: torch.nn.Module, path: str | None) -> None:
        state = self._forecast_state()
        steps = [] if path is None else state.plans.get(path) or plan(model, path)
        missing = [s.param for s in steps if s.param not in state.pristine]
        if missing:
            raise FoldError(f"fold not prepared: no pristine copy of {missing[0]}")
        by_param: dict[str, list[_Step]] = {}
        for step in steps:
            by_param.setdefault(step.param, []).append(step)
        layers = _layers(model)
        state.folded = None
        with torch.no_grad():
            for param in sorted(state.touched | set(by_param)):
                layer = layers[param.removesuffix(".weight")]
                pristine = state.pristine[param]
                state.touched.add(param)  # before the write: a failed write is undone too
                if _live(layer):  # restore in place, then add on the device
                    weight = layer.weight
                    weight.copy_(pristine, non_blocking=True)
                else:
                    weight = pristine.clone()
                for step in by_param.get(param, []):
                    rows = weight[step.start : step.stop]
                    rows.copy_((rows.to(torch.float32) + step.delta(weight.device)).to(weight.dtype))
                if not _live(layer):
                    write_weight(layer, weight)
            state.touched = set(by_param)
        if torch.cuda.is_available():
            torch.cuda.synchronize()  # the weights are whole before the next step, on any stream
        state.folded = path

    def forecast_weights_checksum(self) -> str:
        """SHA-256 over every base weight's bytes as the engine computes with them (prepacked
        CPU weights read back), name by name; LoRA buffers left out."""
        model = self._forecast_model()
        tensors: dict[str, torch.Tensor] = {
            name: p for name, p in model.named_parameters() if "lora" not in name and p.numel()
        }
        for name, layer in _layers(model).items():
            if not _live(layer):
                tensors[f"{name}.weight"] = read_weight(layer)
        digest = hashlib.sha256()
        for name in sorted(tensors):
            digest.update(name.encode())
            flat = tensors[name].detach().contiguous().view(-1)
            digest.update(flat.view(torch.uint8).cpu().numpy().tobytes())
        return digest.hexdigest()

    def forecast_folded(self) -> str | None:
        return self._forecast_state().folded
