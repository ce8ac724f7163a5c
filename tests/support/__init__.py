"""Helpers shared by tests of more than one layer (imported as ``support``: pytest puts
``tests/`` on ``sys.path`` for ``tests/conftest.py``)."""
