"""``python -m service`` as shipped (``service.main.main``: settings from the environment, the
real vLLM engines, ``serve``, ``close_engines``), with one gate added for tests that signal the
process while a forecast is in flight:

    python tests/integration/reliability/gated_service.py GATE_DIR [python -m service args]

The first chunk of every adapter generation (the forecasts; readiness probes run without an
adapter and pass) waits until ``GATE_DIR/release`` exists; ``GATE_DIR/held`` is written when a
generation is waiting. The engine keeps generating meanwhile; only the hand-over waits.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from service.engine import Chunk, GenerationParams, LoraRef, VLLMEngine
from service.main import main


def install_gate(gate_dir: Path) -> None:
    generate = VLLMEngine.generate

    async def gated(
        self: VLLMEngine, prompt: str, params: GenerationParams, lora: LoraRef | None,
        request_id: str,
    ) -> AsyncIterator[Chunk]:
        first = lora is not None
        async for chunk in generate(self, prompt, params, lora, request_id):
            if first:
                first = False
                (gate_dir / "held").write_text(request_id)
                while not (gate_dir / "release").exists():
                    await asyncio.sleep(0.02)
            yield chunk

    VLLMEngine.generate = gated  # type: ignore[method-assign]


if __name__ == "__main__":
    install_gate(Path(sys.argv[1]))
    main(sys.argv[2:])
