"""Tenants by API key, for every gRPC service of the platform and the gateway: `authorization: Bearer KEY` in the
call metadata, mapped by a configured table (never hard-coded keys); without a table every caller is the default
tenant.

The table maps each key to its tenant. A key marked as a service key (`{"tenant": "jobs", "service": true}`) belongs
to one of the platform's own services, which call on behalf of their end users: such a call names the end user's
tenant in `dsv4-tenant` (foundation/tenancy.py) and acts for it. Any other key that names a tenant is refused
(PERMISSION_DENIED), so an end user's key can never reach past its own tenant. Without a table no caller is
authenticated and a named tenant is taken as given: the single-user embedded platform, whose one entry point (the
gateway, with its own keys) still keeps its users apart at every service behind it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from foundation.tenancy import TENANT_HEADER, check_tenant


class Unauthenticated(PermissionError):
    """No or unknown API key (UNAUTHENTICATED)."""


class Forbidden(PermissionError):
    """A key that may not do what it asked: naming another tenant without being a service key (PERMISSION_DENIED)."""


@dataclass(frozen=True)
class ApiKey:
    tenant: str
    service: bool = False  # may act for the tenant a call names


def load_api_keys(path: str | None) -> dict[str, ApiKey]:
    """The key table of a service's `api_keys_file` setting (empty without one)."""
    return parse_api_keys(json.loads(Path(path).read_text())) if path else {}


def parse_api_keys(table: object) -> dict[str, ApiKey]:
    """A key table: a JSON object whose values are a tenant name, or `{"tenant": NAME, "service": true}` for a
    service key."""
    if not isinstance(table, dict):
        raise ValueError("the API key table is a JSON object {key: tenant}")
    return {key: _grant(key, value) for key, value in table.items()}


def _grant(key: str, value: object) -> ApiKey:
    if isinstance(value, str):
        return ApiKey(check_tenant(value))
    if isinstance(value, dict) and set(value) <= {"tenant", "service"} and isinstance(value.get("service", False),
                                                                                      bool):
        return ApiKey(check_tenant(value.get("tenant")), value.get("service", False))
    raise ValueError(f"API key {key[:4]}...: a tenant name or {{\"tenant\": NAME, \"service\": true}}")


def tenant_for(metadata: Mapping[str, str], api_keys: Mapping[str, ApiKey | str], default: str = "default") -> str:
    """The tenant a call acts for: its key's, or the one a service key names."""
    named = metadata.get(TENANT_HEADER) or None
    if not api_keys:
        return check_tenant(named) if named else default
    header = metadata.get("authorization", "")
    key = header[len("Bearer "):] if header.startswith("Bearer ") else ""
    grant = api_keys.get(key)
    if grant is None:
        raise Unauthenticated("a valid API key is required (authorization: Bearer KEY)")
    if isinstance(grant, str):
        grant = ApiKey(grant)
    if named is None:
        return grant.tenant
    if not grant.service and named != grant.tenant:
        raise Forbidden(f"only a service key may act for another tenant ({TENANT_HEADER})")
    return check_tenant(named)
