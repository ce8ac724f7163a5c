"""A small server-sent-events decoder (the WHATWG ``text/event-stream`` rules we need).

Fed one line at a time (``httpx.Response.iter_lines`` already splits on CR, LF and CRLF), it
returns a :class:`~clients.models.StreamEvent` each time a blank line ends an event.
Comments (``:``) and ``retry:`` are skipped; several ``data:`` lines join with newlines;
data that is JSON is decoded.
"""

from __future__ import annotations

import json

from clients.models import StreamEvent


class SSEDecoder:
    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None

    def feed(self, line: str) -> StreamEvent | None:
        """The finished event when ``line`` is the blank line that ends one, else None."""
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            self._id = value
        return None

    def flush(self) -> StreamEvent | None:
        """An event left without its closing blank line when the stream ended."""
        return self._dispatch()

    def _dispatch(self) -> StreamEvent | None:
        if not self._data and not self._event:
            return None
        raw = "\n".join(self._data)
        try:
            data = json.loads(raw) if raw else None
        except ValueError:
            data = raw
        event = StreamEvent(event=self._event or "message", data=data, id=self._id)
        self._event, self._data = "", []
        return event
