"""Where market data comes from, configured by ``FORECAST_*`` environment variables.

Nothing reads the environment at import: build ``DataSettings()`` in the entry point and pass
it to :func:`market_data_from_settings`.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from forecast.providers.base import MarketData
from forecast.providers.snapshot import SnapshotMarketData

if TYPE_CHECKING:
    from forecast.providers.live import RateLimiter


class DataSettings(BaseSettings):
    """Data-source settings. The Finnhub key is a ``SecretStr``: its repr and str are masked."""

    model_config = SettingsConfigDict(env_prefix="FORECAST_", extra="ignore", frozen=True)

    data_source: Literal["snapshot", "live"] = "snapshot"
    snapshot_dir: Path | None = Field(
        default=None, description="Snapshot directory; None means the one shipped in the package."
    )
    finnhub_api_key: SecretStr | None = None
    finnhub_calls_per_minute: float = Field(default=60.0, gt=0)
    finnhub_rate_limit_url: str | None = Field(
        default=None,
        description="Where replicas share one Finnhub rate limit per key: sqlite:///path (the "
        "processes of one host) or postgresql://... (any host). None: each process limits "
        "itself, so N replicas make N times finnhub_calls_per_minute.",
    )
    cache_path: Path = Path("var/cache/market_data.sqlite3")
    cache_ttl_seconds: float = Field(default=6 * 3600.0, gt=0)

    @model_validator(mode="after")
    def _live_needs_a_key(self) -> DataSettings:
        if self.data_source == "live" and not self.api_key():
            raise ValueError("FORECAST_FINNHUB_API_KEY is required when FORECAST_DATA_SOURCE=live")
        return self

    def api_key(self) -> str | None:
        """The Finnhub key in clear, for the client only; never log it."""
        if self.finnhub_api_key is None:
            return None
        return self.finnhub_api_key.get_secret_value().strip() or None

    @property
    def cache_ttl(self) -> dt.timedelta:
        return dt.timedelta(seconds=self.cache_ttl_seconds)


def market_data_from_settings(settings: DataSettings) -> MarketData:
    """The snapshot, or the live Yahoo + Finnhub stack behind the SQLite cache."""
    if settings.data_source == "snapshot":
        return SnapshotMarketData(settings.snapshot_dir)
    # Imported here so snapshot-only processes never import yfinance and finnhub.
    from forecast.providers.cache import CachedMarketData
    from forecast.providers.live import FinnhubProvider, LiveMarketData, YFinancePriceProvider

    key = settings.api_key()
    if key is None:  # the validator guarantees a key; this narrows the type
        raise ValueError("FORECAST_FINNHUB_API_KEY is required when FORECAST_DATA_SOURCE=live")
    finnhub_provider = FinnhubProvider.from_api_key(key, limiter=finnhub_limiter(settings, key))
    live = LiveMarketData(
        prices=YFinancePriceProvider(),
        news=finnhub_provider,
        profiles=finnhub_provider,
        financials=finnhub_provider,
    )
    return CachedMarketData(live, settings.cache_path, settings.cache_ttl, redact=(key,))


def finnhub_limiter(settings: DataSettings, key: str) -> RateLimiter:
    """The bucket shared through ``finnhub_rate_limit_url``, else one of this process."""
    from forecast.providers.live import TokenBucket
    from forecast.providers.ratelimit import SharedTokenBucket, bucket_store

    rate = settings.finnhub_calls_per_minute
    if settings.finnhub_rate_limit_url:
        return SharedTokenBucket(bucket_store(settings.finnhub_rate_limit_url), key, rate)
    return TokenBucket(rate_per_minute=rate)
