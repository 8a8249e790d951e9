"""Tenants by API key, for every gRPC service of the platform: `authorization: Bearer KEY` in the call metadata,
mapped by a configured table (never hard-coded keys); without a table every caller is the default tenant."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path


class Unauthenticated(PermissionError):
    """No or unknown API key (UNAUTHENTICATED)."""


def load_api_keys(path: str | None) -> dict[str, str]:
    """The {key: tenant} table of a service's `api_keys_file` setting (empty without one)."""
    return json.loads(Path(path).read_text()) if path else {}


def tenant_for(metadata: Mapping[str, str], api_keys: Mapping[str, str], default: str = "default") -> str:
    if not api_keys:
        return default
    header = metadata.get("authorization", "")
    key = header[len("Bearer "):] if header.startswith("Bearer ") else ""
    if key not in api_keys:
        raise Unauthenticated("a valid API key is required (authorization: Bearer KEY)")
    return api_keys[key]
