"""The OpenAPI document is generated from the structs and lists exactly what is served."""

from __future__ import annotations

import pytest

from bastion.schema import ROUTES
from tests.e2e.conftest import Gateway

pytestmark = pytest.mark.e2e


def test_openapi_lists_exactly_the_served_routes(gateway: Gateway) -> None:
    doc = gateway.raw("GET", "/openapi.json").body
    assert doc["openapi"].startswith("3.1")
    declared = {(r.path, r.method.lower()) for r in ROUTES} | {("/healthz", "get")}
    documented = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert documented == declared
    place = doc["components"]["schemas"]["PlaceOrder"]
    assert place["additionalProperties"] is False
    assert set(place["required"]) == {"client_order_id", "symbol", "side", "type", "quantity"}


def test_every_documented_route_answers_and_others_do_not(gateway: Gateway) -> None:
    for route in ROUTES:
        path = (
            route.path.replace("{id}", "ord_" + "z" * 24).replace("{symbol}", "GOOG").replace("{index}", "0")
        )
        query = {"ledger_proof": "?tree_size=1", "ledger_consistency": "?first=1&second=1"}.get(
            route.name, ""
        )
        response = gateway.raw(route.method, path + query)
        # It exists: the firewall (415 for a missing JSON body) or authentication (401) answers.
        assert response.status in (401, 415), (route.name, response.status)
    for method, path in (
        ("GET", "/v2/orders"),
        ("POST", "/v1/account"),
        ("GET", "/admin"),
        ("PATCH", "/v1/orders"),
    ):
        assert gateway.raw(method, path).status in (404, 405)
