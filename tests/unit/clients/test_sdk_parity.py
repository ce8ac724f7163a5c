"""The sync and async SDK clients expose the same methods with the same signatures, so one
cannot drift from the other (``AsyncClient.reweight`` once lacked ``keep_others``)."""

from __future__ import annotations

import inspect

from clients.sdk import AsyncClient, Client

# Lifecycle methods that differ by design: close/aclose and the context-manager protocol.
LIFECYCLE = {"close", "aclose"}


def public_methods(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_") and name not in LIFECYCLE
    }


def test_both_clients_have_the_same_methods_and_signatures() -> None:
    sync, async_ = public_methods(Client), public_methods(AsyncClient)
    assert sorted(sync) == sorted(async_)
    for name, signature in sync.items():
        theirs = async_[name]
        assert list(signature.parameters) == list(theirs.parameters), name
        for param, ours in signature.parameters.items():
            other = theirs.parameters[param]
            assert (ours.kind, ours.default, str(ours.annotation)) == (
                other.kind, other.default, str(other.annotation)
            ), f"{name}({param})"
