"""clients/models.py mirrors service/schemas.py field for field (clients may not import the
service, so this test is where the two are held together)."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

import clients.models as client
import service.schemas as server

PAIRS = [
    (server.ForecastResponse, client.Forecast),
    (server.Prediction, client.Prediction),
    (server.Latency, client.Latency),
    (server.Freshness, client.Freshness),
    (server.PromptOptions, client.PromptOptions),
    (server.PromptOptionsIn, client.PromptOptions),  # the SDK's argument is the request's fields
    (server.BatchResponse, client.BatchResult),
    (server.BatchItemError, client.BatchItemError),
    (server.AdapterVersionOut, client.AdapterVersion),
    (server.AdapterList, client.AdapterList),
    (server.ArmOut, client.RoutingArm),
    (server.RoutingOut, client.Routing),
    (server.ScorecardOut, client.ScorecardRow),
    (server.ScorecardResponse, client.Scorecard),
    (server.ConfidenceInterval, client.ConfidenceInterval),
    (server.AccuracyComparison, client.AccuracyComparison),
]


@pytest.mark.parametrize(("theirs", "ours"), PAIRS, ids=[o.__name__ for _, o in PAIRS])
def test_client_model_has_exactly_the_service_fields(
    theirs: type[BaseModel], ours: type[BaseModel]
) -> None:
    assert set(ours.model_fields) == set(theirs.model_fields)
