"""Acceptance (issue 6): the edge profile (deploy/nginx) in front of Bastion on loopback.
Legitimate signed traffic passes ModSecurity + CRS untouched at paranoia levels 1 and 2;
attacks are stopped at the edge or, failing that, by Bastion itself; the client's claimed
X-Forwarded-For is never believed."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.e2e.conftest import Gateway, Key, cli, cli_json, free_port, quieten_fraud, serve, stop
from tests.e2e.edge import nginx_edge

pytestmark = pytest.mark.e2e
_ids = itertools.count()


@dataclass
class Edge:
    bastion: Gateway
    front: Gateway  # the same keys, talking to nginx


@pytest.fixture(scope="module", params=[1, 2], ids=["paranoia-1", "paranoia-2"])
def edge(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Edge]:
    home = tmp_path_factory.mktemp("edge-home")
    cli(home, "init")
    port = free_port()
    config = home / "bastion.toml"
    text = config.read_text().replace("port = 8443", f"port = {port}")
    text = quieten_fraud(text)  # it sends the same order again and again: that is not the edge's test
    config.write_text(text.replace("trusted_proxies = []", 'trusted_proxies = ["127.0.0.1/32"]'))
    cli(home, "accounts", "create", "edge")
    data = cli_json(
        home, "keys", "create", "--account", "edge", "--scopes", "read,trade,cancel", "--generate"
    )
    keys = {"bot": Key(data["key_id"], Path(data["private_key_path"]))}
    bastion = serve(home, port, keys)
    front_port = free_port()
    try:
        with nginx_edge(
            tmp_path_factory.mktemp("nginx"),
            port=front_port,
            upstream_ports=[port],
            bastion_cert=home / "tls" / "cert.pem",
            paranoia=request.param,
        ):
            front = Gateway(home, front_port, home / "tls" / "cert.pem", keys, bastion.process)
            yield Edge(bastion, front)
    finally:
        stop(bastion)


def order(price: str | None = None, label: str | None = None) -> dict[str, object]:
    body: dict[str, object] = {
        "client_order_id": f"edge-{next(_ids)}",
        "symbol": "GOOG",
        "side": "buy",
        "type": "market" if price is None else "limit",
        "quantity": "1",
    }
    if price is not None:
        body |= {"price": price, "time_in_force": "gtc"}
    if label is not None:
        body["label"] = label
    return body


def test_legitimate_traffic_passes_the_edge(edge: Edge) -> None:
    front = edge.front
    placed = front.call("bot", "POST", "/v1/orders", order(label="O'Brien's grid #3 @ 0.5%"))
    assert placed.status == 201, placed.raw
    resting = front.call("bot", "POST", "/v1/orders", order(price="1.00"))
    assert resting.status == 201 and resting.body["status"] == "new", resting.raw
    for path, query in (
        (f"/v1/orders/{placed.body['id']}", ""),
        ("/v1/orders", "status=open&symbol=GOOG&limit=50"),
        ("/v1/account", ""),
        ("/v1/markets", ""),
        ("/v1/markets/GOOG/ticker", ""),
    ):
        response = front.call("bot", "GET", path, query=query)
        assert response.status == 200, (path, response.raw)
    canceled = front.call("bot", "DELETE", f"/v1/orders/{resting.body['id']}")
    assert canceled.status == 200 and canceled.body["status"] == "canceled", canceled.raw
    retry = front.call("bot", "POST", "/v1/orders", order(label="buy & hold"))
    assert retry.status == 201


def test_the_client_address_is_the_edges_view_not_the_clients_claim(edge: Edge) -> None:
    front = edge.front
    body = order()
    raw = __import__("json").dumps(body).encode()
    headers = front.signed_headers("bot", "POST", "/v1/orders", body=raw) | {"x-forwarded-for": "6.6.6.6"}
    response = front.raw("POST", "/v1/orders", raw, headers)
    assert response.status == 201
    assert edge.bastion.entry_for(response.headers["x-request-id"])["client_ip"].startswith("pd1:")  # sealed
    entry = edge.bastion.opened_entry_for(response.headers["x-request-id"])
    assert entry["client_ip"] == "127.0.0.1"


@pytest.mark.parametrize(
    "attack",
    [
        "/v1/orders?symbol=" + quote("1' OR '1'='1"),
        "/v1/orders?symbol=" + quote("<script>alert(1)</script>"),
        "/v1/orders?symbol=" + quote("; cat /etc/passwd"),
        "/v1/markets/" + quote("../../etc/passwd", safe="") + "/ticker",
        "/v1/orders?status=" + quote("open' UNION SELECT password FROM users--"),  # noqa: S608 - an attack we send
    ],
)
def test_attacks_in_queries_and_paths_are_stopped(edge: Edge, attack: str) -> None:
    path, _, query = attack.partition("?")
    response = edge.front.call("bot", "GET", path, query=query)
    assert response.status in (400, 403, 404), response.raw
    if response.status == 403:
        assert "x-request-id" not in response.headers  # refused by ModSecurity, before Bastion


@pytest.mark.parametrize(
    "label",
    ["' OR 1=1 --", "<img src=x onerror=alert(1)>", "x; rm -rf /", "../../etc/passwd", "admin'--"],
)
def test_attacks_in_bodies_never_become_orders(edge: Edge, label: str) -> None:
    response = edge.front.call("bot", "POST", "/v1/orders", order(label=label))
    assert response.status in (400, 403), response.raw
    orders = edge.front.call("bot", "GET", "/v1/orders").body["orders"]
    assert all(o.get("label") != label for o in orders)
