"""Data providers behind small Protocols: live (yfinance, Finnhub), snapshot, cached."""
