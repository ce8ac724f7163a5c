"""The Llama-2 rendering of the official FinGPT rows round-trips byte for byte."""

import json

import pytest

from forecast.dataset import OFFICIAL_FILE, SNAPSHOT, TEACHER_GLOB
from forecast.prompt import OFFICIAL_DEFECT, Instruction, parse_user, render_user
from forecast.templates import ChatFormat, parse_llama2, render_chat

OFFICIAL = [json.loads(line) for line in (SNAPSHOT / "fingpt" / OFFICIAL_FILE).read_text().splitlines()]
TEACHER = [
    json.loads(line)
    for path in sorted((SNAPSHOT / "fingpt").glob(TEACHER_GLOB))
    for line in path.read_text().splitlines()
]


def test_snapshot_has_the_official_rows():
    assert len(OFFICIAL) == 180
    assert len(TEACHER) == 84


@pytest.mark.parametrize("i", range(len(OFFICIAL)))
def test_official_prompt_round_trips_except_the_known_defect(i):
    original = OFFICIAL[i]["prompt"]
    assert "cryptocurrency price movement" in original
    prompt = parse_llama2(original)
    rendered = render_chat(prompt, ChatFormat.LLAMA2)
    assert rendered == original.replace(*OFFICIAL_DEFECT)
    assert "cryptocurrency" not in rendered
    assert prompt.ticker == OFFICIAL[i]["symbol"]
    assert f"{prompt.as_of} to {prompt.target_end}" == OFFICIAL[i]["period"]


def test_teacher_prompts_round_trip_and_carry_their_label():
    for row in TEACHER:
        prompt = parse_user(row["prompt"], with_system=False)
        assert render_user(prompt) == row["prompt"]
        assert prompt.instruction is Instruction.EXPLAIN
        assert prompt.assumed_bin is not None


def test_parsed_prompt_keeps_structure():
    prompt = parse_llama2(OFFICIAL[0]["prompt"])
    assert prompt.ticker == "AXP"
    assert prompt.profile.name == "American Express Co"
    assert [w.start.isoformat() for w in prompt.weeks] == ["2024-02-11", "2024-02-18"]
    assert len(prompt.weeks[0].news) == 5
    assert prompt.financials is not None and prompt.financials.metrics["bookValue"] == 28057
    assert prompt.weeks[1].end_price == pytest.approx(213.90)


def test_three_chat_formats_wrap_the_same_user_message():
    prompt = parse_llama2(OFFICIAL[0]["prompt"])
    user = render_user(prompt)
    l2 = render_chat(prompt, ChatFormat.LLAMA2)
    l3 = render_chat(prompt, ChatFormat.LLAMA3)
    r1 = render_chat(prompt, ChatFormat.DEEPSEEK_R1)
    assert l2.startswith("[INST]<<SYS>>\n") and l2.endswith(user + "[/INST]")
    assert l3.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n")
    assert l3.endswith(user + "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
    assert r1.startswith("<｜begin▁of▁sentence｜>You are a seasoned stock market analyst.")
    assert r1.endswith("<｜User｜>" + user + "<｜Assistant｜><think>\n")  # the official template opens the think block


def test_a_profile_without_share_count_says_no_market_cap_and_round_trips():
    prompt = parse_llama2(OFFICIAL[0]["prompt"])
    unknown = prompt.model_copy(update={"profile": prompt.profile.model_copy(
        update={"market_cap": None, "shares_outstanding": None, "currency": ""}
    )})
    user = render_user(unknown)
    assert "market capitalization" not in user and "key players in the market.\n\n" in user
    assert parse_user(user) == unknown
