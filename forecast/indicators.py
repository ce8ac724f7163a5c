"""Technical indicators for the optional prompt section: SMA, EMA, RSI and MACD.

Computed from daily adjusted closes that end on or before the prompt's ``as_of``.
"""

from __future__ import annotations

import pandas as pd


def sma(closes: pd.Series, window: int) -> float:
    return float(closes.rolling(window).mean().iloc[-1])


def ema(closes: pd.Series, span: int) -> float:
    return float(closes.ewm(span=span, adjust=False).mean().iloc[-1])


def rsi(closes: pd.Series, window: int = 14) -> float:
    """Wilder's relative strength index, 0..100."""
    delta = closes.diff()
    gain = delta.clip(lower=0).ewm(alpha=1 / window, adjust=False).mean()
    loss = (-delta.clip(upper=0)).ewm(alpha=1 / window, adjust=False).mean()
    last_loss = float(loss.iloc[-1])
    if last_loss == 0.0:
        return 100.0
    return float(100 - 100 / (1 + float(gain.iloc[-1]) / last_loss))


def macd(closes: pd.Series, fast: int = 12, slow: int = 26, signal: int = 9) -> tuple[float, float]:
    """MACD line and its signal line."""
    line = closes.ewm(span=fast, adjust=False).mean() - closes.ewm(span=slow, adjust=False).mean()
    return float(line.iloc[-1]), float(line.ewm(span=signal, adjust=False).mean().iloc[-1])


def render_indicators(closes: pd.Series) -> str | None:
    """The ``[Technical Indicators]`` section body, or None with under 30 closes."""
    if len(closes) < 30:
        return None
    line, sig = macd(closes)
    return "\n".join([
        f"SMA20: {sma(closes, 20):.2f}",
        f"EMA20: {ema(closes, 20):.2f}",
        f"RSI14: {rsi(closes):.2f}",
        f"MACD(12,26,9): {line:.2f} (signal {sig:.2f})",
    ])
