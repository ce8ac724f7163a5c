"""The OpenAI-compatible API: ``GET /v1/models``, ``POST /v1/chat/completions`` and
``POST /v1/completions``, JSON or streamed (``stream: true``: ``data: {chunk}`` server-sent
events ending ``data: [DONE]``).

Errors on these routes take the OpenAI API's shape, ``{"error": {"message", "type", "param",
"code"}}``, and an invalid request is a 400 (:func:`service.errors.openai_response`), so the
official clients raise their own exceptions (``NotFoundError``, ``BadRequestError``, ...);
the rest of the API keeps its shape. When a streaming client goes away the generation is
closed at once, releasing its adapter lease and admission slot.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.routing import APIRoute

from service.deps import ClientKey, State
from service.errors import openai_error, openai_response
from service.openai_schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    ModelList,
    chunk_body,
    usage_chunk,
)
from service.openai_serving import Done, Generation, GenerationRequest
from service.routes.forecast import ARM_HEADER
from service.routes.responses import errors
from service.state import ServiceState


class OpenAIRoute(APIRoute):
    """A route whose every failure, request validation included, answers in the OpenAI shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def shaped(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:
                return openai_response(exc)

        return shaped


router = APIRouter(prefix="/v1", tags=["openai"], route_class=OpenAIRoute)
ERRORS = errors(400, 404, 413, 503)
STREAM: dict[int | str, dict[str, Any]] = {200: {"content": {"text/event-stream": {}}}}


@router.get("/models", response_model=ModelList)
async def list_models(state: State) -> ModelList:
    """The models a request may name: every alias, every loaded ``name@version`` (``parent``:
    the base model) and, while A/B routing has arms, the router's name."""
    return state.openai.models()


@router.post("/chat/completions", responses={**ERRORS, **STREAM})
async def chat_completions(body: ChatCompletionRequest, state: State, client_key: ClientKey = None) -> Response:
    """A chat completion, rendered with the serving base's chat template."""
    return await _answer(state, body, client_key)


@router.post("/completions", responses={**ERRORS, **STREAM})
async def completions(body: CompletionRequest, state: State, client_key: ClientKey = None) -> Response:
    """A text completion of ``prompt``, passed to the engine verbatim."""
    return await _answer(state, body, client_key)


async def _answer(state: ServiceState, body: GenerationRequest, client_key: str | None) -> Response:
    if body.stream:
        generation = await state.openai.start(body, client_key)  # admitted before the 200
        return StreamingResponse(
            sse(generation, body.include_usage), media_type="text/event-stream",
            headers={ARM_HEADER: generation.arm, "Cache-Control": "no-cache"},
        )
    result, arm = await state.openai.complete(body, client_key)
    return JSONResponse(result, headers={ARM_HEADER: arm})


async def sse(generation: Generation, include_usage: bool) -> AsyncIterator[str]:
    """The generation as OpenAI stream chunks. A failure mid-stream is one ``data:`` line in
    the error shape, then ``[DONE]``; a client that leaves cancels this generator, whose
    ``aclose`` ends the generation there and then."""
    chat, head = generation.chat, generation.head
    try:
        if chat:
            yield _data(chunk_body(chat, head, "", role=True, with_usage=include_usage))
        async for event in generation.events:
            if isinstance(event, Done):
                yield _data(chunk_body(chat, head, None if chat else "", event.finish_reason,
                                       with_usage=include_usage))
                if include_usage:
                    yield _data(usage_chunk(chat, head, event.usage))
            else:
                yield _data(chunk_body(chat, head, event, with_usage=include_usage))
    except Exception as exc:
        yield _data(openai_error(exc)[1])
    finally:
        await generation.events.aclose()
    yield "data: [DONE]\n\n"


def _data(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"
