"""OpenAI-compatible generation over the adapters: what ``/v1/models``, ``/v1/chat/completions``
and ``/v1/completions`` call (one call per route, as vLLM's ``OpenAIServingChat`` is for its
router).

A request's ``model`` is an alias (``fingpt-llama``), a loaded version (``fingpt-llama@v1``)
or the router's name (``settings.router_model``): the A/B table chooses the arm, sticky by the
``X-Client-Key`` header or else the body's ``user``. Everything else is the forecast's path:
the :class:`~service.gateway.Gateway` admits, leases the adapter version, maps engine failures
and counts the request (``route`` label ``openai_chat`` / ``openai_completions``); the stall
watch ends a hung engine's requests. Chat messages are rendered with the base's chat template
(``forecast.templates``: the product's renderer for a system and a user message, the shipped
official template for longer conversations); a completion's prompt is passed verbatim, no
special tokens added, as the engine is always called. ``usage`` counts the engine's tokenizer's
tokens of that text and the tokens the engine generated.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from forecast.templates import SPECS, ChatFormat, official_template, render_messages
from service.adapters import AdapterRegistry, LoadedAdapter
from service.engine import EngineClient, EngineInfo, GenerationParams
from service.errors import BadRequest, NotFound
from service.gateway import NO_ADAPTER, Gateway
from service.generation import Answer
from service.openai_schemas import (
    ChatCompletionRequest,
    ChatMessage,
    CompletionRequest,
    Head,
    ModelCard,
    ModelList,
    completion_body,
    usage,
)
from service.prompt_options import ContextCheck
from service.routing import Route, Router
from service.settings import ServiceSettings
from service.telemetry import Telemetry
from service.watchdog import StallWatch

OWNED_BY = "dow30-forecaster"
GenerationRequest = ChatCompletionRequest | CompletionRequest


@dataclass(frozen=True)
class Done:
    """The end of a generation: why it stopped and the tokens it used."""

    finish_reason: str
    usage: dict[str, int]


Event = str | Done  # a text delta, then the end


@dataclass(frozen=True)
class Generation:
    """An admitted request (slot and adapter lease held): exhaust or ``aclose()`` ``events``."""

    chat: bool
    head: Head
    arm: str
    events: AsyncGenerator[Event, None]


@dataclass(frozen=True)
class Prepared:
    prompt: str
    prompt_tokens: int
    params: GenerationParams


class OpenAIServing:
    def __init__(
        self, settings: ServiceSettings, engines: Mapping[str, EngineClient], gateway: Gateway,
        registry: AdapterRegistry, router: Router, context: ContextCheck, telemetry: Telemetry,
        watch: StallWatch, now: Callable[[], dt.datetime],
    ) -> None:
        self._settings = settings
        self._engines = engines  # the app's own map
        self._gateway = gateway
        self._registry = registry
        self._router = router
        self._context = context  # the engines' tokenizers and context lengths
        self._telemetry = telemetry
        self._watch = watch
        self._now = now

    # -- one call per route ---------------------------------------------------------------

    def models(self) -> ModelList:
        """Every alias, every loaded version, and the router's name while it has arms."""
        cards = [self._card(alias, self._registry.resolve(alias)) for alias in sorted(self._registry.aliases)]
        cards += [self._card(a.ref, a) for a in self._registry.loaded() if not a.retired]
        if self._router.table.normalised():
            name = self._settings.router_model
            cards.append(ModelCard(id=name, created=self._epoch(), owned_by=OWNED_BY, root=name, parent=None))
        return ModelList(data=cards)

    async def complete(self, request: GenerationRequest, client_key: str | None) -> tuple[dict[str, Any], str]:
        """The whole answer (``chat.completion`` / ``text_completion``) and the arm."""
        generation = await self.start(request, client_key)
        pieces: list[str] = []
        done = None
        async with contextlib.aclosing(generation.events) as events:
            async for event in events:  # to the end: the lease is released and counted there
                if isinstance(event, Done):
                    done = event
                else:
                    pieces.append(event)
        assert done is not None
        body = completion_body(generation.chat, generation.head, "".join(pieces), done.finish_reason, done.usage)
        return body, generation.arm

    async def start(self, request: GenerationRequest, client_key: str | None) -> Generation:
        """Admitted, leased and checked before it returns: over capacity (503), an unknown
        model (404) or a prompt too long (400) is raised here, before a stream's 200."""
        chat = isinstance(request, ChatCompletionRequest)
        label = route_label(chat)
        try:
            request.refuse_unsupported()
            route = self._route(request.model, client_key or request.user)
        except Exception as exc:
            self._gateway.count(label, (*NO_ADAPTER, "none"), exc)
            raise
        events = self._events(request, chat, route)
        head = await anext(events)
        assert isinstance(head, Head)
        return Generation(chat, head, route.arm, cast(AsyncGenerator[Event, None], events))

    # -- the pipeline ---------------------------------------------------------------------

    def _route(self, model: str, client_key: str | None) -> Route:
        if model == self._settings.router_model:
            return self._gateway.route(None, client_key)  # 503 no_route when it has no arms
        try:
            return self._gateway.route(model, None)
        except NotFound:
            raise NotFound(
                f"The model {model!r} does not exist (GET /v1/models lists the served ones)",
                code="model_not_found", param="model",
            ) from None

    async def _events(
        self, request: GenerationRequest, chat: bool, route: Route
    ) -> AsyncGenerator[Head | Event, None]:
        """The head once admitted and checked, then the text deltas, then :class:`Done`."""
        started = time.perf_counter()
        label = route_label(chat)
        async with self._gateway.lease(route.alias, arm=route.arm, route_label=label) as (adapter, engine):
            prepared = await self._prepare(request, engine.info)
            request_id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
            yield Head(request_id, self._epoch(), request.model, adapter.ref)
            answer = Answer(submitted=started)  # TTFT counted from arrival, admission included
            chunks = engine.generate(prepared.prompt, prepared.params, adapter.engine_lora, request_id)
            async for delta in answer.collect(self._watch.chunks(adapter.base, chunks)):
                yield delta
            self._telemetry.observe_generation(
                (label, adapter.name, adapter.version, route.arm),
                total_s=time.perf_counter() - started, ttft_s=answer.ttft_s,
                generation_s=answer.generation_s, tokens=answer.tokens,
            )
            finish = answer.finish_reason
            if finish not in ("stop", "length"):
                finish = "length" if answer.tokens >= prepared.params.max_tokens else "stop"
            yield Done(finish, usage(prepared.prompt_tokens, answer.tokens))

    async def _prepare(self, request: GenerationRequest, info: EngineInfo) -> Prepared:
        """The prompt text, its tokens and the sampling parameters; 400 when the prompt and
        the completion asked for do not fit the engine's context."""
        if isinstance(request, ChatCompletionRequest):
            prompt, param = render_conversation(request.messages, info.chat_format), "messages"
            stops = (*request.stops, SPECS[info.chat_format].eos)  # the turn ends the answer
        else:
            prompt, param, stops = request.text, "prompt", request.stops
        tokenizer = await self._context.tokenizer(info)
        prompt_tokens = len(tokenizer.encode(prompt, add_special_tokens=False))
        limit = self._context.spec_of(info).max_model_len
        wanted = request.budget()
        if prompt_tokens + (wanted or 1) > limit:
            raise BadRequest(
                f"This model's maximum context length is {limit} tokens. However, you requested "
                f"{prompt_tokens + (wanted or 1)} tokens ({prompt_tokens} in the {param}, "
                f"{wanted or 1} for the completion). Please reduce the length of the {param} or "
                f"the completion.",
                code="context_length_exceeded", param=param,
            )
        s = self._settings
        params = GenerationParams(
            max_tokens=wanted or min(s.max_new_tokens, limit - prompt_tokens),
            temperature=s.temperature if request.temperature is None else request.temperature,
            top_p=1.0 if request.top_p is None else request.top_p,
            seed=request.seed,
            stop=stops,
        )
        return Prepared(prompt, prompt_tokens, params)

    # -- helpers --------------------------------------------------------------------------

    def _card(self, model_id: str, adapter: LoadedAdapter) -> ModelCard:
        manifest = adapter.manifest
        engine = self._engines.get(adapter.base)
        created = manifest.created_at or self._now()
        return ModelCard(
            id=model_id, created=int(created.timestamp()), owned_by=OWNED_BY,
            root=manifest.base_model, parent=manifest.base_model,
            max_model_len=None if engine is None else self._context.spec_of(engine.info).max_model_len,
        )

    def _epoch(self) -> int:
        return int(self._now().timestamp())


def route_label(chat: bool) -> str:
    return "openai_chat" if chat else "openai_completions"


def render_conversation(messages: list[ChatMessage], fmt: ChatFormat) -> str:
    """``messages`` as the base's chat template renders them, ending where the assistant
    starts. A system (or developer) and a user message go through the product's renderer;
    a longer conversation through the official template shipped with it (the two agree:
    ``tests/unit/test_chat_templates.py``)."""
    roles = [m.role for m in messages]
    if roles in (["user"], ["system", "user"], ["developer", "user"]):
        system = messages[0].text if len(messages) == 2 else None
        return render_messages(system, messages[-1].text, fmt)
    if not SPECS[fmt].template:
        raise BadRequest(
            f"the {fmt} chat format takes one system and one user message", param="messages",
            code="unsupported_conversation",
        )
    if roles[-1] == "assistant":
        raise BadRequest("the last message must not be the assistant's", param="messages",
                         code="unsupported_conversation")
    from transformers.utils.chat_template_utils import render_jinja_template

    conversation = [{"role": "system" if m.role == "developer" else m.role, "content": m.text} for m in messages]
    spec = SPECS[fmt]
    rendered: Any = render_jinja_template(  # annotated str; returns (texts, generation indices)
        [conversation], chat_template=official_template(fmt), add_generation_prompt=True,
        bos_token=spec.bos, eos_token=spec.eos,
    )
    return str(rendered[0][0])
