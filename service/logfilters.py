"""Secrets kept out of the access log: the values of ``token``, ``api_key``/``apikey`` and
``key`` query parameters are masked before uvicorn's access logger formats a request line.

The admin token belongs in the ``Authorization`` header, but a client may still send it as
``?token=``; uvicorn logs the path with its query string, so without this filter the token
would be written to the log in clear.
"""

from __future__ import annotations

import logging
import re

ACCESS_LOGGER = "uvicorn.access"
SENSITIVE_PARAM = re.compile(r"(?i)(^|[?&;])((?:token|api_?key|apikey|key)=)[^&;#\s]*")


def redact_query(text: str) -> str:
    """``text`` (a path with its query string) with sensitive parameter values masked."""
    return SENSITIVE_PARAM.sub(r"\1\2***", text)


class RedactQuery(logging.Filter):
    """Masks sensitive query values in a record's string arguments and message. The
    arguments keep their shape: uvicorn's ``AccessFormatter`` unpacks them."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact_query(a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = redact_query(record.msg)
        return True


def redact_access_log(logger: logging.Logger | None = None) -> None:
    """Install :class:`RedactQuery` on uvicorn's access logger (once)."""
    logger = logger or logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(f, RedactQuery) for f in logger.filters):
        logger.addFilter(RedactQuery())
