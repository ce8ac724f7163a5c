"""Domain-core demo: build prompts from the bundled snapshot and score GPT-4 and the baselines.

    python -m forecast.demo [--tickers AAPL MSFT KO] [--format llama3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from collections.abc import Sequence

from forecast.answer import parse_answer
from forecast.bins import Bin
from forecast.dataset import official_rows
from forecast.metrics import Score, naive_baselines, score
from forecast.providers.base import MarketData
from forecast.providers.snapshot import SNAPSHOT_LATEST, SnapshotMarketData
from forecast.templates import ChatFormat, render_chat
from forecast.universe import members
from forecast.windows import build_prompt, weekly_labels

# The official split trains on 2023-05 .. 2024-02 and tests from 2024-02-25 on.
TRAIN_START, TEST_START = dt.date(2023, 5, 1), dt.date(2024, 2, 25)


def official_scorecard(market: MarketData) -> dict[str, Score]:
    """GPT-4's own answers on the 180 official test rows, next to the three naive baselines."""
    rows = official_rows()
    labels = [r.label for r in rows if r.label is not None]
    gpt4 = [parse_answer(r.answer or "").prediction for r in rows]
    train_labels: list[Bin] = []
    for ticker in members(TEST_START - dt.timedelta(days=1)):
        train_labels += [b for _, b in weekly_labels(market, ticker, TRAIN_START, TEST_START)]
    return {"gpt4": score(gpt4, labels)} | naive_baselines(labels, [r.last_week for r in rows], train_labels)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tickers", nargs="+", default=["AAPL", "MSFT", "KO"])
    ap.add_argument("--historical", type=dt.date.fromisoformat, default=dt.date(2023, 11, 5))
    ap.add_argument(
        "--latest", type=dt.date.fromisoformat, default=SNAPSHOT_LATEST,
        help="the snapshot's most recent week with news (its 'this week'; live data: today)",
    )
    ap.add_argument("--format", choices=[f.value for f in ChatFormat], default=ChatFormat.LLAMA3.value)
    ap.add_argument("--json", action="store_true", help="print the scorecard as JSON only")
    args = ap.parse_args(argv)
    market = SnapshotMarketData()

    if not args.json:
        for label, day in (("this week (snapshot)", args.latest), ("historical week", args.historical)):
            print(f"== {label}: forecasts as of {day} ==")
            for ticker in args.tickers:
                built = build_prompt(market, ticker, day)
                print(
                    f"  {ticker}: as_of={built.prompt.as_of} weeks={len(built.prompt.weeks)} "
                    f"news={sum(len(w.news) for w in built.prompt.weeks)} "
                    f"label={built.label.value if built.label else 'open'} "
                    f"build={built.build_seconds * 1000:.1f} ms"
                )
        example = build_prompt(market, args.tickers[0], args.historical)
        print(f"\n== one prompt, {args.format} format ==")
        print(render_chat(example.prompt, ChatFormat(args.format)))

    card = official_scorecard(market)
    if args.json:
        print(json.dumps({k: v.as_dict() for k, v in card.items()}, indent=2))
        return 0
    print("\n== official FinGPT Dow30 test rows (2024-02-25 .. 2024-04-07) ==")
    print(f"  {'predictor':<16}{'n':>5}{'binary acc':>12}{'MSE':>8}")
    for name, s in card.items():
        print(f"  {name:<16}{s.n:>5}{s.binary_accuracy:>12.3f}{s.mse:>8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
