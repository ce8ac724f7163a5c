"""Fixtures for the client tests (helpers live in client_harness.py)."""

from client_harness import fake_service, free_port, serve

__all__ = ["fake_service", "free_port", "serve"]
