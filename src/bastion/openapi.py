"""The OpenAPI 3.1 document, generated from the same structs that decode requests."""

from __future__ import annotations

from typing import Any

import msgspec

from bastion import __version__
from bastion.errors import HTTP_STATUS, MESSAGES, ErrorCode
from bastion.schema import ROUTES, ErrorBody, HealthView

_REF = "#/components/schemas/{name}"


def _error_responses(statuses: tuple[int, ...]) -> dict[str, Any]:
    by_status: dict[int, list[str]] = {}
    for code, status in HTTP_STATUS.items():
        by_status.setdefault(status, []).append(code.value)
    out: dict[str, Any] = {}
    out["414"] = {"description": "URL too long (URL_TOO_LONG): refused at the connection, on any route"}
    for status in (*statuses, 500):
        codes = ", ".join(by_status.get(status, []))
        description = f"Error ({codes})" if codes else "Error"
        out[str(status)] = {
            "description": description,
            "content": {"application/json": {"schema": {"$ref": _REF.format(name="ErrorBody")}}},
        }
    return out


def build_openapi() -> dict[str, Any]:
    structs: list[Any] = [ErrorBody, HealthView]
    for route in ROUTES:
        structs.append(route.response)
        if route.body is not None:
            structs.append(route.body)
    _, components = msgspec.json.schema_components(list(dict.fromkeys(structs)), ref_template=_REF)
    paths: dict[str, dict[str, Any]] = {}
    security: list[dict[str, list[str]]] = [{"httpMessageSignature": []}]
    for route in ROUTES:
        op: dict[str, Any] = {
            "operationId": route.name,
            "summary": route.summary,
            "security": security,
            "x-bastion-scope": route.scope.value,
            "responses": {
                str(route.success): {
                    "description": "OK",
                    "content": {
                        "application/json": {"schema": {"$ref": _REF.format(name=route.response.__name__)}}
                    },
                },
                **(
                    {"200": {"description": "A retry: the order placed first, unchanged"}}
                    if route.name == "place_order"
                    else {}
                ),
                **_error_responses(route.errors),
            },
        }
        parameters: list[dict[str, Any]] = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string", "pattern": pattern}}
            for name, pattern in route.path_params.items()
        ]
        if route.query is not None:
            query_schema = msgspec.json.schema(route.query)
            ref = str(query_schema.get("$ref", ""))
            defs = query_schema.get("$defs", {})
            struct = defs.get(ref.rsplit("/", 1)[-1], query_schema) if ref else query_schema
            required = set(struct.get("required", ()))
            for name, prop in struct.get("properties", {}).items():
                parameters.append({"name": name, "in": "query", "required": name in required, "schema": prop})
        if parameters:
            op["parameters"] = parameters
        if route.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": _REF.format(name=route.body.__name__)}}},
            }
        paths.setdefault(route.path, {})[route.method.lower()] = op
    paths["/healthz"] = {
        "get": {
            "operationId": "healthz",
            "summary": "Liveness and venue status",
            "security": [],
            "responses": {
                "200": {
                    "description": "OK",
                    "content": {"application/json": {"schema": {"$ref": _REF.format(name="HealthView")}}},
                }
            },
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Bastion",
            "version": __version__,
            "description": "Signed trading API. Every /v1 request carries an RFC 9421 signature "
            "(Signature-Input, Signature; Content-Digest for bodies). Error codes: "
            + "; ".join(f"{c.value}: {MESSAGES[c]}" for c in ErrorCode),
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "httpMessageSignature": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Signature",
                    "description": "RFC 9421 HTTP Message Signature with alg ed25519",
                }
            },
        },
    }
