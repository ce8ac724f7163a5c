"""Weekly-return bins of the FinGPT-Forecaster labels: ``U1..U5, U5+`` and ``D1..D5, D5+``.

``U3`` means "up by 2-3%": the return r satisfies 2% < r <= 3% (a zero return counts as
``U1``, the first up bin). Bin midpoints, in percent, are what MSE is computed on: ``U3`` is
+2.5, ``U5+`` +5.5, ``D1`` -0.5.
"""

from __future__ import annotations

import math
import re
from enum import StrEnum


class Bin(StrEnum):
    D5_PLUS = "D5+"
    D5 = "D5"
    D4 = "D4"
    D3 = "D3"
    D2 = "D2"
    D1 = "D1"
    U1 = "U1"
    U2 = "U2"
    U3 = "U3"
    U4 = "U4"
    U5 = "U5"
    U5_PLUS = "U5+"

    @property
    def is_up(self) -> bool:
        return self.value.startswith("U")

    @property
    def magnitude(self) -> int:
        """1..5 for the bounded bins, 6 for the open ``5+`` bins."""
        return 6 if self.value.endswith("+") else int(self.value[1:])

    @property
    def midpoint(self) -> float:
        """Bin midpoint in percent (``U5+`` → 5.5, ``D2`` → -1.5)."""
        sign = 1.0 if self.is_up else -1.0
        return sign * (self.magnitude - 0.5)

    @property
    def percent_range(self) -> tuple[float, float | None]:
        """Absolute percent range ``(low, high)``; ``high`` is None for the open bins."""
        m = self.magnitude
        return (5.0, None) if m == 6 else (float(m - 1), float(m))

    def phrase(self) -> str:
        """``up by 2-3%`` / ``down by more than 5%``: the label phrase of FinGPT prompts."""
        direction = "up" if self.is_up else "down"
        low, high = self.percent_range
        if high is None:
            return f"{direction} by more than 5%"
        return f"{direction} by {int(low)}-{int(high)}%"


def bin_of_return(ret: float) -> Bin:
    """The bin of a fractional weekly return (0.025 → ``U3``)."""
    if math.isnan(ret):
        raise ValueError("return is NaN")
    up = ret >= 0
    magnitude = max(1, math.ceil(round(abs(ret) * 100, 10)))
    letter = "U" if up else "D"
    return Bin(f"{letter}{magnitude}" if magnitude <= 5 else f"{letter}5+")


_PHRASE = re.compile(
    r"(?P<dir>up|down|increase|decrease)\s*(?:by)?\s*"
    r"(?:(?P<low>\d+)\s*[-–~to ]+\s*(?P<high>\d+)\s*%|more\s+than\s+(?P<more>\d+)\s*%)",
    re.IGNORECASE,
)


def bin_of_phrase(text: str) -> Bin:
    """Parse ``up by 2-3%`` / ``Down by more than 5%`` (case and spacing tolerant)."""
    m = _PHRASE.search(text)
    if m is None:
        raise ValueError(f"not a bin phrase: {text!r}")
    up = m.group("dir").lower() in ("up", "increase")
    letter = "U" if up else "D"
    if m.group("more") is not None:
        if int(m.group("more")) != 5:
            raise ValueError(f"open bin must be 'more than 5%': {text!r}")
        return Bin(f"{letter}5+")
    low, high = int(m.group("low")), int(m.group("high"))
    if high != low + 1 or not 1 <= high <= 5:
        raise ValueError(f"not a 1-percent bin: {text!r}")
    return Bin(f"{letter}{high}")
