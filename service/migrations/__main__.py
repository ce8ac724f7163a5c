"""``python -m service.migrations [--url URL] ARGS``: Alembic's command line over the forecast
log's migrations, e.g. ``revision -m "add x" --autogenerate`` or ``current``. The database is
``--url``, else ``FORECAST_SERVICE_DB_URL``, else the shipped SQLite file."""

from __future__ import annotations

import sys

from alembic.config import CommandLine

from service.migrations import config
from service.settings import ServiceSettings


def main(argv: list[str]) -> None:
    url = None
    if argv[:1] == ["--url"]:
        url, argv = argv[1], argv[2:]
    cli = CommandLine(prog="python -m service.migrations")
    options = cli.parser.parse_args(argv)
    if not hasattr(options, "cmd"):
        cli.parser.error("too few arguments")
    cfg = config()
    cfg.attributes["url"] = url or ServiceSettings().db_url
    cli.run_cmd(cfg, options)


if __name__ == "__main__":
    main(sys.argv[1:])
