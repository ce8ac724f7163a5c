"""Teacher answers for training rows, from any OpenAI-compatible endpoint or the bundled GPT-4
answers.

The teacher sees the EXPLAIN form of a prompt (the realized bin is given) and writes the
three-section answer the student will learn after the PREDICT form. Endpoint answers are
cached on disk under a hash of the exact request, so a rerun costs nothing. With no endpoint
configured (offline, CI) the bundled GPT-4 answers serve, for the weeks they cover.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

import httpx
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from tqdm import tqdm

from forecast.dataset import Row, official_rows, teacher_rows
from forecast.prompt import SYSTEM_PROMPT, ForecastPrompt, Instruction, render_user


class TeacherSettings(BaseSettings):
    """``TEACHER_BASE_URL`` (the API root, as OpenAI clients take it: ``https://host/v1``),
    ``TEACHER_MODEL``, ``TEACHER_API_KEY`` (sent as ``Authorization: Bearer``),
    ``TEACHER_MAX_TOKENS`` (unset: the endpoint's default)."""

    model_config = SettingsConfigDict(env_prefix="TEACHER_", extra="ignore", frozen=True)

    base_url: str | None = None  # None: the bundled GPT-4 answers
    model: str = "gpt-4"
    api_key: SecretStr | None = None
    temperature: float = 0.0
    max_tokens: int | None = Field(default=None, ge=1)
    timeout_seconds: float = 120.0
    cache_dir: Path = Path("var/cache/teacher")


class TeacherError(RuntimeError):
    """The teacher has no answer for a prompt (bundled) or the endpoint failed."""


class Teacher(Protocol):
    def answer(self, prompt: ForecastPrompt) -> str:
        """The teacher's answer to an EXPLAIN prompt."""
        ...


def explain_form(row: Row) -> ForecastPrompt:
    if row.label is None:
        raise ValueError(f"row {row.key} has no label: its week has not closed")
    return row.prompt.model_copy(
        update={"instruction": Instruction.EXPLAIN, "assumed_bin": row.label}
    )


class EndpointTeacher:
    """``POST {base_url}/chat/completions`` with a disk cache keyed by the request."""

    def __init__(
        self, client: httpx.Client, model: str, cache_dir: Path, temperature: float = 0.0,
        max_tokens: int | None = None,
    ):
        self.client = client
        self.model = model
        self.cache_dir = cache_dir
        self.temperature = temperature
        self.max_tokens = max_tokens

    @classmethod
    def from_settings(
        cls, settings: TeacherSettings, transport: httpx.BaseTransport | None = None
    ) -> EndpointTeacher:
        if settings.base_url is None:
            raise ValueError("TEACHER_BASE_URL is not set")
        headers = {}
        if settings.api_key is not None:
            headers["Authorization"] = f"Bearer {settings.api_key.get_secret_value()}"
        client = httpx.Client(
            base_url=settings.base_url.rstrip("/") + "/", headers=headers,
            timeout=settings.timeout_seconds, transport=transport,
        )
        return cls(client, settings.model, settings.cache_dir, settings.temperature, settings.max_tokens)

    def request_body(self, prompt: ForecastPrompt) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "temperature": self.temperature,
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": render_user(prompt)},
            ],
        }
        if self.max_tokens is not None:  # only when set: the cache keys of earlier runs stay
            body["max_tokens"] = self.max_tokens
        return body

    def cache_path(self, body: dict[str, Any]) -> Path:
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        return self.cache_dir / f"{digest}.json"

    def answer(self, prompt: ForecastPrompt) -> str:
        body = self.request_body(prompt)
        path = self.cache_path(body)
        if path.exists():
            return str(json.loads(path.read_text())["answer"])
        try:
            response = self.client.post("chat/completions", json=body)
            response.raise_for_status()
            text = response.json()["choices"][0]["message"]["content"]
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"no answer text in the response ({text!r})")
        except (httpx.HTTPError, KeyError, IndexError, TypeError, ValueError) as exc:
            raise TeacherError(f"teacher endpoint failed for {prompt.ticker}@{prompt.as_of}: {exc}") from exc
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"request": body, "answer": text}))
        tmp.replace(path)  # atomic: a killed run never leaves half a cache entry
        return text


class BundledTeacher:
    """The GPT-4 answers shipped with the FinGPT snapshot, looked up by ticker and week."""

    def __init__(self, rows: Iterable[Row] | None = None):
        rows = [*teacher_rows(), *official_rows()] if rows is None else rows
        self.answers = {(r.ticker, r.as_of): r.answer for r in rows if r.answer is not None}

    def answer(self, prompt: ForecastPrompt) -> str:
        found = self.answers.get((prompt.ticker, prompt.as_of))
        if found is None:
            raise TeacherError(f"no bundled teacher answer for {prompt.ticker}@{prompt.as_of}")
        return found


def teacher_from_settings(
    settings: TeacherSettings, transport: httpx.BaseTransport | None = None
) -> Teacher:
    if settings.base_url is None:
        return BundledTeacher()
    return EndpointTeacher.from_settings(settings, transport)


def answer_rows(rows: Iterable[Row], teacher: Teacher) -> tuple[list[Row], list[str]]:
    """Rows with a teacher answer added; keys of the rows the teacher could not answer."""
    answered, missing = [], []
    todo = [r for r in rows if r.label is not None]
    for row in tqdm(todo, desc="teacher answers", unit="row", disable=len(todo) < 10):
        if row.answer is not None:
            answered.append(row)
            continue
        try:
            text = teacher.answer(explain_form(row))
        except TeacherError:
            missing.append(row.key)
            continue
        answered.append(row.model_copy(update={"answer": text, "source": "teacher"}))
    return answered, missing
