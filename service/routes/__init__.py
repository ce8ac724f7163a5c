"""One router per resource: forecast, batch, adapters, routing, scorecard, health."""
