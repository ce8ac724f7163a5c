"""The scorer reports GPT-4's own accuracy/MSE on the 180 official rows and the baselines."""

import pytest

from forecast.demo import official_scorecard
from forecast.providers.snapshot import SnapshotMarketData


def test_official_scorecard():
    card = official_scorecard(SnapshotMarketData())
    assert set(card) == {"gpt4", "majority_bin", "always_up_0_1", "momentum"}
    assert all(s.n == 180 for s in card.values())
    # GPT-4's answers in the official split were written knowing the realized week.
    assert card["gpt4"].binary_accuracy == 1.0 and card["gpt4"].mse == 0.0
    # 93 of the 180 test weeks went up (U bins), so "always up 0-1%" scores 93/180.
    assert card["always_up_0_1"].binary_accuracy == pytest.approx(93 / 180)
    for name in ("majority_bin", "always_up_0_1", "momentum"):
        assert 0.3 < card[name].binary_accuracy < 0.7
        assert card[name].mse > 1.0
