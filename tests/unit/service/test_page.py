"""The page and its JSON: served by the service itself, everything from its own origin (no
CDN, no third-party host), shipped as package data; the universe of the chosen date; the
adapters' read-only view."""

from __future__ import annotations

import datetime as dt
import re
import tomllib
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from service.routes.page import ASSETS, WEB
from service.testing import error_of

REPO = Path(__file__).resolve().parents[3]
URL = re.compile(r"\b(?:https?:)?//[\w.-]+", re.IGNORECASE)  # absolute or protocol-relative


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.refs += [v for k, v in attrs if k in ("src", "href", "action") and v]


async def test_page_and_assets_are_served_from_this_origin_only(serve: Any) -> None:
    async with serve() as client:
        root = await client.get("/")
        assert root.status_code == 307 and root.headers["location"] == "/page/"
        page = await client.get("/page/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in page.headers["content-security-policy"]
        links = Links()
        links.feed(page.text)
        loaded = [r for r in links.refs if not r.startswith(("#", "data:"))]
        assert sorted(loaded) == ["/page/page.css", "/page/page.js"]
        # The icon is empty inline data: the browser asks for no /favicon.ico.
        assert [r for r in links.refs if r.startswith("data:")] == ["data:,"]
        texts = [page.text]
        for ref in loaded:
            r = await client.get(ref)
            assert r.status_code == 200, ref
            assert r.headers["content-type"].startswith(("text/css", "text/javascript"))
            texts.append(r.text)
        missing = await client.get("/page/../settings.py")
        unknown = await client.get("/page/secrets.json")
    for text in texts:
        assert URL.findall(text) == []  # no other host, absolute or protocol-relative
        assert "url(" not in text and "@import" not in text  # the style sheet loads nothing
    # The script's requests are same-origin paths of the service's own API.
    assert texts[-1].count("fetch(") == 1  # inside api(), the one request helper
    requested = re.findall(r"api\([`\"](/[^`\"$?]*)", texts[-1])
    assert sorted(set(requested)) == ["/v1/adapters/", "/v1/forecast", "/v1/page/adapters", "/v1/universe"]
    assert missing.status_code == 404
    assert unknown.status_code == 404 and error_of(unknown)["code"] == "not_found"


def test_every_page_asset_ships_as_package_data() -> None:
    shipped = {p.name for p in Path(str(WEB)).iterdir() if p.is_file()}
    assert shipped == set(ASSETS)
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["service"]
    assert any(Path(f"web/{name}").match(p) for p in patterns for name in shipped)
    assert all(any(Path(f"web/{name}").match(p) for p in patterns) for name in shipped)


async def test_universe_follows_the_index_changes_of_the_chosen_date(serve: Any) -> None:
    async with serve(now=dt.datetime(2024, 3, 1, 12, tzinfo=dt.UTC)) as client:
        default = (await client.get("/v1/universe")).json()
        before_change = (await client.get("/v1/universe", params={"as_of": "2024-01-05"})).json()
        future = await client.get("/v1/universe", params={"as_of": "2024-03-02"})
        before = await client.get("/v1/universe", params={"as_of": "2019-01-01"})
        bad = await client.get("/v1/universe", params={"as_of": "yesterday"})
    assert default["as_of"] == default["today"] == "2024-03-01"
    assert len(default["members"]) == 30
    assert "AMZN" in default["members"] and "WBA" not in default["members"]  # 2024-02-26
    assert before_change["as_of"] == "2024-01-05" and before_change["today"] == "2024-03-01"
    assert "WBA" in before_change["members"] and "AMZN" not in before_change["members"]
    assert future.status_code == 422 and error_of(future)["code"] == "future_date"
    assert before.status_code == 422 and error_of(before)["code"] == "no_data"
    assert bad.status_code == 422


async def test_adapters_view_shows_versions_evaluation_and_the_split(serve: Any) -> None:
    async with serve() as client:
        view = (await client.get("/v1/page/adapters")).json()
    by_name = {a["name"]: a for a in view["adapters"]}
    assert set(by_name) == {"fingpt-llama", "fingpt-deepseek"}
    llama = by_name["fingpt-llama"]
    assert llama["version"] == "v1" and llama["aliases"] == ["fingpt-llama"]
    assert llama["base"] == "llama" and llama["evaluation"] == {"binary_accuracy": 0.5}
    arms = {a["adapter"]: a["share"] for a in view["routing"]["arms"]}
    assert arms == {"fingpt-llama": 0.5, "fingpt-deepseek": 0.5}
