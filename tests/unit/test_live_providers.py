"""Live providers fed recorded HTTP responses (``tests/fixtures/api_samples``) through the
real clients: a fake transport adapter is mounted on the ``finnhub.Client``'s requests session,
and a requests session with one is passed to ``yf.Ticker(session=...)``, so the libraries' own
URL building, cookie/crumb, timezone lookup, parsing and error paths all run.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import finnhub
import pandas as pd
import pytest
import requests
import yfinance as yf
from requests.adapters import BaseAdapter

from forecast.errors import (
    NoDataError,
    ProviderAuthError,
    ProviderError,
    RateLimitedError,
    UnknownTickerError,
)
from forecast.providers.base import PRICE_COLUMNS
from forecast.providers.live import (
    Backoff,
    FinnhubProvider,
    TokenBucket,
    YFinancePriceProvider,
    pivot_quarterly_series,
)
from forecast.providers.snapshot import SnapshotMarketData

# yfinance itself still calls pandas APIs that pandas 3 deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword:Warning")

D = dt.date
SAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "api_samples"
API_KEY = "fh-test-key-0123456789"


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network access in a unit test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    # curl_cffi (yfinance's default backend) does not use Python sockets: block it as well.
    from curl_cffi import requests as curl_requests

    monkeypatch.setattr(curl_requests.Session, "request", refuse)


Route = tuple[int, bytes]


class RecordedTransport(BaseAdapter):
    """Answers each request from ``route(url) -> (status, body)`` and records the URLs."""

    def __init__(self, route: Callable[[str], Route | Exception]) -> None:
        super().__init__()
        self.route = route
        self.urls: list[str] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        url = str(request.url)
        self.urls.append(url)
        answer = self.route(url)
        if isinstance(answer, Exception):
            raise answer
        status, body = answer
        response = requests.Response()
        response.status_code = status
        response._content = body
        response.headers["Content-Type"] = "application/json" if body else "text/plain"
        response.url = url
        response.request = request
        response.encoding = "utf-8"
        return response

    def close(self) -> None:
        """Nothing to release."""


def _session(transport: RecordedTransport) -> requests.Session:
    session = requests.Session()
    session.mount("https://", transport)
    session.mount("http://", transport)
    return session


# -- Finnhub -----------------------------------------------------------------------------------

FINNHUB_OK: dict[tuple[str, str], Route] = {
    ("/api/v1/company-news", "AAPL"): (200, sample("finnhub_company_news_AAPL.json")),
    ("/api/v1/stock/profile2", "AAPL"): (200, sample("finnhub_profile2_AAPL.json")),
    ("/api/v1/stock/profile2", "ZZZZ"): (200, sample("finnhub_profile2_unknown_symbol.json")),
    ("/api/v1/stock/metric", "AAPL"): (200, sample("finnhub_metric_all_AAPL.json")),
}


class FinnhubStub:
    """A real finnhub.Client over a recorded transport; ``answers`` queues override routes."""

    def __init__(self) -> None:
        self.answers: list[Route | Exception] = []
        self.transport = RecordedTransport(self._route)
        self.client = finnhub.Client(api_key=API_KEY)
        self.client._session.mount("https://", self.transport)
        self.sleeps: list[float] = []
        self.provider = FinnhubProvider(
            self.client,
            limiter=TokenBucket(rate_per_minute=6000, clock=lambda: 0.0, sleep=self.sleeps.append),
            backoff=Backoff(retries=3, base_seconds=1.0),
            sleep=self.sleeps.append,
        )

    def _route(self, url: str) -> Route | Exception:
        if self.answers:
            return self.answers.pop(0)
        parsed = urlparse(url)
        path = parsed.path.replace("//", "/")  # the client joins API_URL + "/" + "/stock/..."
        return FINNHUB_OK.get((path, parse_qs(parsed.query)["symbol"][0]), (404, b""))


@pytest.fixture
def fh() -> FinnhubStub:
    return FinnhubStub()


def test_company_news_through_the_real_client(fh: FinnhubStub) -> None:
    fetched = fh.provider.company_news("AAPL", D(2026, 5, 16), D(2026, 5, 23))
    items = fetched.value
    assert fetched.source == "finnhub" and not fetched.stale
    assert len(items) == 246
    assert [i.published for i in items] == sorted(i.published for i in items)
    assert all(i.published.tzinfo == dt.UTC for i in items)
    assert items[0].published == dt.datetime(2026, 5, 18, 11, 0, tzinfo=dt.UTC)
    raw = json.loads(sample("finnhub_company_news_AAPL.json"))
    newest = max(raw, key=lambda r: r["datetime"])
    assert items[-1].headline == newest["headline"] and items[-1].summary == newest["summary"]
    narrow = fh.provider.company_news("AAPL", D(2026, 5, 20), D(2026, 5, 21)).value
    assert narrow and {i.published.date() for i in narrow} == {D(2026, 5, 20), D(2026, 5, 21)}
    query = parse_qs(urlparse(fh.transport.urls[0]).query)
    assert query["from"] == ["2026-05-16"] and query["to"] == ["2026-05-23"]
    assert query["token"] == [API_KEY]  # the real client sent it: the key went through


def test_profile2_maps_fields(fh: FinnhubStub) -> None:
    profile = fh.provider.profile("aapl").value
    assert profile.ticker == "AAPL" and profile.name == "Apple Inc"
    assert profile.industry == "Technology" and profile.ipo == "1980-12-12"
    assert profile.market_cap == pytest.approx(4535749.272209372)
    assert profile.shares_outstanding == pytest.approx(14687.36)
    assert (profile.currency, profile.country) == ("USD", "US")
    assert profile.exchange == "NASDAQ NMS - GLOBAL MARKET"


def test_profile2_empty_body_is_unknown_ticker(fh: FinnhubStub) -> None:
    with pytest.raises(UnknownTickerError, match="ZZZZ"):
        fh.provider.profile("ZZZZ")


def test_basic_financials_pivots_quarterly_series(fh: FinnhubStub) -> None:
    reports = fh.provider.basic_financials("AAPL").value
    raw = json.loads(sample("finnhub_metric_all_AAPL.json"))["series"]["quarterly"]
    periods = [r.period for r in reports]
    assert periods == sorted(set(periods))
    assert periods[-1] == D(2026, 3, 28)
    latest = reports[-1].metrics
    expected = {
        m: pts[0]["v"] for m, pts in raw.items() if pts and pts[0]["period"] == "2026-03-28"
    }
    assert latest == expected
    assert list(latest) == list(expected)  # provider's metric order
    assert fh.transport.urls[0].count("metric=all") == 1


def test_pivot_skips_nulls_and_orders_periods() -> None:
    reports = pivot_quarterly_series(
        {
            "peTTM": [{"period": "2024-06-30", "v": 30.5}, {"period": "2024-03-31", "v": None}],
            "eps": [{"period": "2024-03-31", "v": 1}],
        }
    )
    assert [(r.period, r.metrics) for r in reports] == [
        (D(2024, 3, 31), {"eps": 1}),
        (D(2024, 6, 30), {"peTTM": 30.5}),
    ]


@pytest.mark.parametrize(
    ("status", "body", "text"),
    [
        (401, sample("finnhub_error_401_invalid_api_key.json"), "Invalid API key"),
        (403, sample("finnhub_error_403_no_access.json"), "don't have access"),
    ],
)
def test_auth_errors_are_not_retried_and_hide_the_key(
    fh: FinnhubStub, status: int, body: bytes, text: str
) -> None:
    fh.answers = [(status, body)] * 5
    with pytest.raises(ProviderAuthError) as caught:
        fh.provider.profile("AAPL")
    assert f"HTTP {status}" in str(caught.value) and text in str(caught.value)
    assert API_KEY not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert len(fh.transport.urls) == 1 and fh.sleeps == []


def test_429_is_retried_with_exponential_backoff(fh: FinnhubStub) -> None:
    fh.answers = [(429, b""), (429, b"")]
    profile = fh.provider.profile("AAPL").value
    assert profile.name == "Apple Inc"
    assert fh.sleeps == [1.0, 2.0]
    assert len(fh.transport.urls) == 3


def test_429_until_retries_run_out_is_rate_limited(fh: FinnhubStub) -> None:
    fh.answers = [(429, b"")] * 10
    with pytest.raises(RateLimitedError, match="after 4 attempts") as caught:
        fh.provider.company_news("AAPL", D(2026, 5, 16), D(2026, 5, 23))
    assert fh.sleeps == [1.0, 2.0, 4.0]
    assert API_KEY not in str(caught.value)


def test_network_errors_never_leak_the_key(fh: FinnhubStub) -> None:
    url = f"https://api.finnhub.io/api/v1/stock/profile2?symbol=AAPL&token={API_KEY}"
    fh.answers = [requests.ConnectionError(f"Max retries exceeded with url: {url}")] * 10
    with pytest.raises(ProviderError) as caught:
        fh.provider.profile("AAPL")
    assert not isinstance(caught.value, RateLimitedError)
    assert API_KEY not in str(caught.value) and "token=***" in str(caught.value)


def test_other_http_errors_are_provider_errors(fh: FinnhubStub) -> None:
    fh.answers = [(400, b'{"error":"Wrong symbol"}')]
    with pytest.raises(ProviderError, match="HTTP 400: Wrong symbol"):
        fh.provider.basic_financials("AAPL")
    assert fh.sleeps == []


def test_token_bucket_spaces_calls() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    bucket = TokenBucket(rate_per_minute=60, burst=2, clock=lambda: now[0], sleep=sleep)
    assert [bucket.acquire() for _ in range(4)] == [0.0, 0.0, 1.0, 1.0]
    now[0] += 10.0  # refills to the burst size, not beyond
    assert [bucket.acquire() for _ in range(3)] == [0.0, 0.0, 1.0]
    assert slept == [1.0, 1.0, 1.0]


def test_finnhub_calls_go_through_the_limiter(fh: FinnhubStub) -> None:
    fh.provider.limiter = TokenBucket(60, burst=1, clock=lambda: 0.0, sleep=fh.sleeps.append)
    fh.answers = [(429, b"")]
    fh.provider.profile("AAPL")
    assert fh.sleeps == [1.0, 1.0]  # backoff after the 429, then the wait for a second token


# -- Yahoo Finance -----------------------------------------------------------------------------

YAHOO_CHARTS = {
    "AAPL": "yahoo_chart_AAPL_1d_2020-08-31_2020-11-07_split_div.json",
    "MSFT": "yahoo_chart_MSFT_1d_2021-02-01_2022-01-31_div.json",
    "NVDA": "yahoo_chart_NVDA_1d_2021-02-01_2022-01-31_split.json",
    "IBM": "yahoo_chart_IBM_1d_5d.json",
}
# A second MSFT recording, asked for by its window (period1 on or after 2026-01-01).
MSFT_2026 = "yahoo_chart_MSFT_1d_2026-08-28_2026-09-25.json"


def _yahoo_route(url: str) -> Route | Exception:
    parsed = urlparse(url)
    if parsed.netloc == "fc.yahoo.com":
        return (404, b"")  # no consent cookie; yfinance carries on without it
    if parsed.path.endswith("/v1/test/getcrumb"):
        return (200, b"")
    if parsed.path.startswith("/v8/finance/chart/"):
        symbol = parsed.path.rsplit("/", 1)[-1]
        if symbol == "MMM":
            return (429, b"")
        if symbol == "CAT":
            return requests.ConnectionError("Connection reset by peer")
        period1 = int(parse_qs(parsed.query).get("period1", ["0"])[0])
        if symbol == "MSFT" and period1 >= 1767225600:
            return (200, sample(MSFT_2026))
        if symbol in YAHOO_CHARTS:
            return (200, sample(YAHOO_CHARTS[symbol]))
        return (404, sample("yahoo_chart_unknown_symbol.json"))
    return (404, b"")  # anything else (e.g. quoteSummary) was not recorded


@pytest.fixture(scope="module", autouse=True)
def _yfinance_cache_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> None:
    yf.set_tz_cache_location(str(tmp_path_factory.mktemp("yfinance-cache")))


@pytest.fixture
def yahoo() -> tuple[YFinancePriceProvider, list[float], RecordedTransport]:
    transport = RecordedTransport(_yahoo_route)
    sleeps: list[float] = []
    provider = YFinancePriceProvider(
        session=_session(transport), backoff=Backoff(retries=2), sleep=sleeps.append
    )
    return provider, sleeps, transport


def _snapshot_bars(ticker: str, start: dt.date, end: dt.date) -> pd.DataFrame:
    return SnapshotMarketData().daily_bars(ticker, start, end).value


def _dividend_factor(bars: pd.DataFrame, ex_day: str) -> float:
    """Adj Close/Close on the day before ``ex_day`` over that on ``ex_day``: 1 - dividend/close."""
    ratio = bars["Adj Close"] / bars["Close"]
    position = bars.index.get_loc(pd.Timestamp(ex_day))
    assert isinstance(position, int)
    return float(ratio.iloc[position - 1] / ratio.iloc[position])


def test_yahoo_bars_with_split_and_dividend(yahoo: Any) -> None:
    provider, _, transport = yahoo
    fetched = provider.daily_bars("AAPL", D(2020, 8, 31), D(2020, 11, 7))
    bars = fetched.value
    assert fetched.source == "yfinance"
    assert tuple(bars.columns) == PRICE_COLUMNS
    assert isinstance(bars.index, pd.DatetimeIndex) and bars.index.tz is None
    assert bars.index.name == "Date" and len(bars) == 49
    assert (bars.index[0], bars.index[-1]) == (
        pd.Timestamp("2020-08-31"),
        pd.Timestamp("2020-11-06"),
    )
    assert bars["Volume"].dtype == "int64"
    # Close is split-adjusted (the 4:1 split took effect on 2020-08-31): it matches the snapshot.
    snapshot = _snapshot_bars("AAPL", D(2020, 8, 31), D(2020, 11, 7))
    pd.testing.assert_index_equal(bars.index, snapshot.index)  # same shape as the snapshot's
    assert bars.dtypes.equals(snapshot.dtypes)
    assert (bars["Close"] / snapshot["Close"] - 1).abs().max() < 1e-6
    # Adj Close also takes out the 0.205 dividend going ex on 2020-11-06.
    close_before = float(bars.loc["2020-11-05", "Close"])
    assert _dividend_factor(bars, "2020-11-06") == pytest.approx(1 - 0.205 / close_before, rel=1e-4)
    assert (bars["Adj Close"] < bars["Close"]).all()
    assert any("/v8/finance/chart/AAPL" in url and "period1=" in url for url in transport.urls)


def test_yahoo_dividends_each_step_adj_close(yahoo: Any) -> None:
    provider, _, _ = yahoo
    bars = provider.daily_bars("MSFT", D(2021, 2, 1), D(2022, 1, 31)).value
    assert len(bars) == 252
    for ex_day, amount in [("2021-02-17", 0.56), ("2021-05-19", 0.56), ("2021-08-18", 0.56)]:
        close_before = float(bars["Close"].iloc[bars.index.get_loc(pd.Timestamp(ex_day)) - 1])
        assert _dividend_factor(bars, ex_day) == pytest.approx(1 - amount / close_before, rel=1e-4)


def test_yahoo_window_without_events_keeps_adj_close_equal_to_close(yahoo: Any) -> None:
    provider, _, transport = yahoo
    bars = provider.daily_bars("MSFT", D(2026, 8, 28), D(2026, 9, 26)).value
    assert len(bars) == 20  # 2026-09-07 (Labor Day) is not a trading day
    assert (bars.index[0], bars.index[-1]) == (pd.Timestamp("2026-08-28"), pd.Timestamp("2026-09-25"))
    assert pd.Timestamp("2026-09-07") not in bars.index
    assert (bars["Adj Close"] == bars["Close"]).all()  # no dividend or split in the window
    assert (bars["Low"] <= bars["Close"]).all() and (bars["Close"] <= bars["High"]).all()
    assert any("/v8/finance/chart/MSFT" in url and "period1=" in url for url in transport.urls)


def test_yahoo_split_is_already_in_close(yahoo: Any) -> None:
    provider, _, _ = yahoo
    bars = provider.daily_bars("NVDA", D(2021, 2, 1), D(2022, 1, 31)).value
    jump = float(bars.loc["2021-07-20", "Close"] / bars.loc["2021-07-19", "Close"])
    assert 0.9 < jump < 1.1  # no 4x step at the 4:1 split
    assert _dividend_factor(bars, "2021-07-20") == pytest.approx(1.0, abs=1e-3)
    # Recorded after the 10:1 split of 2024, so it is a tenth of the 2024 snapshot.
    snapshot = _snapshot_bars("NVDA", D(2021, 2, 1), D(2022, 1, 31))
    assert (bars["Close"] * 10 / snapshot["Close"] - 1).abs().max() < 1e-5


def test_yahoo_unknown_symbol(yahoo: Any) -> None:
    provider, _, _ = yahoo
    # yfinance takes a different path the first two times (a quoteSummary fallback): try 3.
    for _ in range(3):
        with pytest.raises(UnknownTickerError, match="SI"):
            provider.daily_bars("SI", D(2020, 1, 1), D(2020, 1, 3))


def test_yahoo_window_without_bars_is_no_data(yahoo: Any) -> None:
    provider, _, _ = yahoo
    with pytest.raises(NoDataError):
        provider.daily_bars("IBM", D(2026, 10, 5), D(2026, 10, 10))


def test_yahoo_rate_limit_is_retried_then_raised(yahoo: Any) -> None:
    provider, sleeps, _ = yahoo
    with pytest.raises(RateLimitedError, match="after 3 attempts"):
        provider.daily_bars("MMM", D(2024, 1, 2), D(2024, 1, 9))
    assert sleeps == [1.0, 2.0]


def test_yahoo_network_errors_are_retried_then_provider_errors(yahoo: Any) -> None:
    provider, sleeps, _ = yahoo
    with pytest.raises(ProviderError, match="ConnectionError") as caught:
        provider.daily_bars("CAT", D(2024, 1, 2), D(2024, 1, 9))
    assert not isinstance(caught.value, RateLimitedError) and sleeps == [1.0, 2.0]


def test_urllib3_debug_log_never_shows_the_key(fh: FinnhubStub, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    url = f"/api/v1/stock/profile2?symbol=AAPL&token={API_KEY}"
    caplog.set_level(logging.DEBUG, logger="urllib3")
    # The records urllib3 writes for a request and for a retry of it (same format strings).
    logging.getLogger("urllib3.connectionpool").debug(
        '%s://%s:%s "%s %s %s" %s %s', "https", "finnhub.io", 443, "GET", url, "HTTP/1.1", 200, 512
    )
    logging.getLogger("urllib3.util.retry").debug("Incremented Retry for (url='%s'): %r", url, 3)
    logging.getLogger("urllib3.connectionpool").debug("echo %s", f"key {API_KEY} in a header")
    assert len(caplog.records) == 3
    assert API_KEY not in caplog.text
    assert "GET /api/v1/stock/profile2?symbol=AAPL&token=*** HTTP/1.1" in caplog.text
    assert "key *** in a header" in caplog.text
