"""The forecast service: FastAPI over vLLM engines, with adapter hot-swap, A/B routing,
Prometheus metrics and a forecast log scored against realized returns.

Build it with :func:`service.app.create_app`; run it with ``python -m service``.
"""
