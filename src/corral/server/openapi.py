"""What the OpenAPI schema says beyond what FastAPI infers: bodies that are not JSON, responses that are not JSON,
specs as their models (the routes take them as mappings, to word their errors themselves) and examples that a
client, or a fuzzer, can start from."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Body
from pydantic import WithJsonSchema

#: Reached through ``$ref``: FastAPI puts ``JobSpec`` and ``ClusterSpec`` in the schema's components (the
#: resources ``Job`` and ``Cluster`` hold them).
CLUSTER_SPEC_EXAMPLE = {"name": "local", "node": {"cpus": 1}, "scale": {"nodes": 2}}

#: A cluster spec as a body: a mapping to the route, ``ClusterSpec`` to the schema.
ClusterSpecBody = Annotated[
    dict[str, Any],
    WithJsonSchema({"allOf": [{"$ref": "#/components/schemas/ClusterSpec"}]}),
    Body(openapi_examples={"two nodes": {"value": CLUSTER_SPEC_EXAMPLE}}),
]

#: A volume spec as a body: a mapping to the route (which words its errors), the three kinds to the schema.
VOLUME_SPEC_EXAMPLE = {"name": "shared", "kind": "path", "path": "/srv/data"}
VolumeSpecBody = Annotated[
    dict[str, Any],
    WithJsonSchema(
        {
            "type": "object",
            "required": ["name", "kind"],
            "properties": {"name": {"type": "string"}, "kind": {"enum": ["s3", "azureblob", "path"]}},
            "description": "s3: bucket, prefix, region, endpoint_url, credentials {access_key_id, secret_access_key, "
            "session_token}; azureblob: account, container, prefix, endpoint, credentials {account_key | sas_token}; "
            "path: path (admins only). docs/data.md",
        }
    ),
    Body(openapi_examples={"a shared directory": {"value": VOLUME_SPEC_EXAMPLE}}),
]

FILE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "The file's bytes",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}

ARCHIVE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "A gzipped tar whose SHA-256 is the path's last segment",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}

TEXT_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"description": "The text", "content": {"text/plain": {"schema": {"type": "string"}}}}
}

LIST_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "One page, oldest first",
        "headers": {
            "X-Next-Cursor": {
                "description": "Present when more follow: give it as ``cursor`` for the next page",
                "schema": {"type": "string"},
            }
        },
    }
}

LOG_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The log as text (``follow=false``; ``X-Log-Size`` is where a later read goes on, "
        "``offset``), or Server-Sent Events (``follow=true``): ``state`` on every change, ``log`` with whole "
        "lines of one rank's stream, ``attempt`` when a new attempt starts, then ``end``; each ``log`` event's "
        "id is a cursor to resume from (``Last-Event-ID``).",
        "content": {
            "text/plain": {"schema": {"type": "string"}},
            "text/event-stream": {
                "schema": {
                    "type": "object",
                    "description": "One event",
                    "properties": {
                        "event": {"type": "string", "enum": ["state", "log", "attempt", "end"]},
                        "data": {"type": "string", "description": "JSON (corral.core.models.FollowEvent)"},
                        "id": {"type": "string", "description": "a cursor to go on from (Last-Event-ID)"},
                    },
                    "required": ["event", "data"],
                }
            },
        },
        "headers": {"X-Log-Size": {"description": "The log's size when read", "schema": {"type": "integer"}}},
    }
}

FILE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The file's bytes (a log of a job with secrets: each secret shown as ***)",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}
