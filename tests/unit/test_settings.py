"""DataSettings from FORECAST_* variables and the MarketData factory."""

from __future__ import annotations

import datetime as dt
import socket
from pathlib import Path

import pytest
from pydantic import ValidationError

from forecast.providers.cache import CachedMarketData
from forecast.providers.snapshot import SnapshotMarketData
from forecast.settings import DataSettings, market_data_from_settings

API_KEY = "fh-settings-secret-7"


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network access in a unit test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    for name in (
        "DATA_SOURCE",
        "FINNHUB_API_KEY",
        "CACHE_PATH",
        "CACHE_TTL_SECONDS",
        "SNAPSHOT_DIR",
    ):
        monkeypatch.delenv(f"FORECAST_{name}", raising=False)


def test_defaults_use_the_shipped_snapshot() -> None:
    settings = DataSettings()
    assert settings.data_source == "snapshot" and settings.finnhub_api_key is None
    market = market_data_from_settings(settings)
    assert isinstance(market, SnapshotMarketData)
    assert market.profiles.profile("AAPL").value.name


def test_reads_prefixed_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FORECAST_CACHE_TTL_SECONDS", "90")
    monkeypatch.setenv("FORECAST_CACHE_PATH", str(tmp_path / "c.sqlite3"))
    monkeypatch.setenv("FORECAST_FINNHUB_API_KEY", API_KEY)
    settings = DataSettings()
    assert settings.cache_ttl == dt.timedelta(seconds=90)
    assert settings.cache_path == tmp_path / "c.sqlite3"
    assert settings.api_key() == API_KEY


def test_key_is_never_in_repr_or_str() -> None:
    settings = DataSettings(finnhub_api_key=API_KEY)  # type: ignore[arg-type]
    assert API_KEY not in repr(settings) and API_KEY not in str(settings)
    assert API_KEY not in settings.model_dump_json()


def test_live_requires_a_key() -> None:
    with pytest.raises(ValidationError, match="FORECAST_FINNHUB_API_KEY is required"):
        DataSettings(data_source="live")
    with pytest.raises(ValidationError):
        DataSettings(data_source="live", finnhub_api_key="  ")  # type: ignore[arg-type]


def test_live_factory_builds_the_cached_stack(tmp_path: Path) -> None:
    settings = DataSettings(
        data_source="live",
        finnhub_api_key=API_KEY,  # type: ignore[arg-type]
        cache_path=tmp_path / "cache.sqlite3",
        cache_ttl_seconds=60,
    )
    market = market_data_from_settings(settings)
    assert isinstance(market, CachedMarketData)
    assert market.ttl == dt.timedelta(seconds=60)
    assert (tmp_path / "cache.sqlite3").exists()
    market.close()


def test_snapshot_dir_is_injectable(tmp_path: Path) -> None:
    (tmp_path / "prices").mkdir()
    (tmp_path / "prices" / "ABC.csv").write_text("Date,Open,High,Low,Close,Adj Close,Volume\n")
    market = market_data_from_settings(DataSettings(snapshot_dir=tmp_path))
    assert isinstance(market, SnapshotMarketData) and market.tickers == ("ABC",)
