"""Typed errors of the domain core. Layers above map them to HTTP statuses."""

from __future__ import annotations


class ForecastError(Exception):
    """Base class for every error the domain core raises on purpose."""


class UnknownTickerError(ForecastError):
    """The ticker is not known to the provider (or not a Dow 30 member on that date)."""


class NoDataError(ForecastError):
    """The provider knows the ticker but has no data for the requested window."""


class ProviderError(ForecastError):
    """A data provider failed (network, server error, bad answer)."""


class ProviderAuthError(ProviderError):
    """The provider refused our credentials (HTTP 401/403). Never retried."""


class RateLimitedError(ProviderError):
    """The provider answered HTTP 429 and retries were exhausted."""


class AnswerParseError(ForecastError):
    """A model answer does not follow the FinGPT answer format."""


class PromptParseError(ForecastError):
    """A rendered prompt text does not follow the FinGPT prompt format."""
