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
    param: str
    weight: torch.Tensor
    start: int
    stop: int
    a: torch.Tensor  # float32, on the host
    b: torch.Tensor
    scale: float

    def delta(self) -> torch.Tensor:
        """``scale · B · A`` in float32, computed on the weight's device."""
        device = self.weight.device
        return self.scale * (self.b.to(device) @ self.a.to(device))


@dataclass
class _FoldState:
    pristine: dict[str, torch.Tensor] = field(default_factory=dict)  # param name -> host copy
    folded: str | None = None  # adapter path folded now
    touched: set[str] = field(default_factory=set)  # params changed from pristine now
    plans: dict[str, list[_Step]] = field(default_factory=dict)  # prepared, by adapter path


def _weights(model: torch.nn.Module) -> dict[str, tuple[torch.Tensor, list[int] | None]]:
    """Each linear layer's weight by module name (LoRA wrappers see through to their base)."""
    found = {}
    for name, module in model.named_modules():
        layer = getattr(module, "base_layer", module)
        weight = getattr(layer, "weight", None)
        if isinstance(weight, torch.Tensor) and weight.dim() == 2 and "lora" not in name:
            found[name] = (weight, getattr(layer, "output_sizes", None))
    return found


def plan(model: torch.nn.Module, path: str) -> list[_Step]:
    """Where each module of the adapter at ``path`` goes in ``model``, with its delta."""
    factors = read_lora(Path(path))
    packed = getattr(model, "packed_modules_mapping", {}) or {}
    weights = _weights(model)
    steps = []
    for module in factors.modules:
        target = vllm_target(module, packed)
        if target.module not in weights:
            raise FoldError(f"adapter module {module} has no layer {target.module} in the model")
        weight, sizes = weights[target.module]
        if target.slice_index is not None and (not sizes or sum(sizes) != weight.shape[0]):
            raise FoldError(f"{target.module} is sharded (tensor parallel); folding needs tp=1")
        start, stop = slice_rows(sizes, target.slice_index, weight.shape[0])
        a, b = factors.modules[module]
        if (b.shape[0], a.shape[1]) != (stop - start, weight.shape[1]) or a.shape[0] != b.shape[1]:
            raise FoldError(
                f"{module}: LoRA {tuple(b.shape)} x {tuple(a.shape)} does not fit rows "
                f"{start}:{stop} of {target.module} {tuple(weight.shape)}"
            )
        steps.append(_Step(f"{target.module}.weight", weight, start, stop, a, b, factors.scale))
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
                copy = torch.empty(step.weight.shape, dtype=step.weight.dtype, pin_memory=step.weight.is_cuda)
                state.pristine[step.param] = copy.copy_(step.weight.detach())
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
        weights = {name: w for name, (w, _) in _weights(model).items()}
        with torch.no_grad():
            for param in sorted(state.touched):
                weights[param.removesuffix(".weight")].copy_(state.pristine[param], non_blocking=True)
            state.touched.clear()
            state.folded = None
            for step in steps:  # the weights are pristine here: read them on their device
                rows = step.weight[step.start : step.stop]
                folded = rows.to(torch.float32) + step.delta()
                state.touched.add(step.param)  # before the write: a failed write is undone too
                rows.copy_(folded.to(step.weight.dtype))
        if torch.cuda.is_available():
            torch.cuda.synchronize()  # the weights are whole before the next step, on any stream
        state.folded = path

    def forecast_weights_checksum(self) -> str:
        """SHA-256 over every base weight's bytes (LoRA buffers left out), name by name."""
        digest = hashlib.sha256()
        for name, param in sorted(self._forecast_model().named_parameters()):
            if "lora" in name:
                continue
            digest.update(name.encode())
            flat = param.detach().contiguous().view(-1)
            digest.update(flat.view(torch.uint8).cpu().numpy().tobytes())
        return digest.hexdigest()

    def forecast_folded(self) -> str | None:
        return self._forecast_state().folded
