"""Tenants by API key, for every gRPC service of the platform: `authorization: Bearer KEY` in the call metadata,
mapped by a configured table (never hard-coded keys); without a table every caller is the default tenant."""

from __future__ import annotations

from collections.abc import Mapping


class Unauthenticated(PermissionError):
    """No or unknown API key (UNAUTHENTICATED)."""


def tenant_for(metadata: Mapping[str, str], api_keys: Mapping[str, str], default: str = "default") -> str:
    if not api_keys:
        return default
    header = metadata.get("authorization", "")
    key = header[len("Bearer "):] if header.startswith("Bearer ") else ""
    if key not in api_keys:
        raise Unauthenticated("a valid API key is required (authorization: Bearer KEY)")
    return api_keys[key]
