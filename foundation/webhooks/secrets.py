"""Each tenant's webhook signing secret, in a service's own SQL table (SQLAlchemy, as foundation.sql): made at random
on first need, rotated by its operator with a grace period in which the replaced one still signs, so receivers can
switch without dropping a delivery. The table is the service's; it has the columns of `SecretColumns`."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker

from foundation.sql import utcnow
from foundation.tenancy import check_tenant
from foundation.webhooks.signing import new_secret


class SecretColumns(Protocol):
    tenant: str
    secret: str
    previous_secret: str | None
    previous_until: dt.datetime | None
    created_at: dt.datetime
    rotated_at: dt.datetime | None


@dataclass(frozen=True)
class SigningSecrets:
    """A tenant's current secret, and the previous one while it still signs."""

    current: str
    previous: str | None = None
    previous_until: dt.datetime | None = None

    def signing(self) -> list[str]:
        return [self.current] + ([self.previous] if self.previous else [])


class SecretStore:
    def __init__(self, sessions: sessionmaker, table: type) -> None:
        self.sessions, self.table = sessions, table

    def secrets(self, tenant: str) -> SigningSecrets:
        """The tenant's secrets, its first made now if it has none; a previous one past its grace is left out."""
        with self.sessions() as s:
            row = s.get(self.table, tenant)
        if row is None:
            try:
                with self.sessions.begin() as s:
                    row = self.table(tenant=tenant, secret=new_secret(), created_at=utcnow())
                    s.add(row)
            except IntegrityError:  # another process made it first: theirs is the one
                with self.sessions() as s:
                    row = s.get(self.table, tenant)
        return _view(row)

    def rotate(self, tenant: str, grace_s: float) -> SigningSecrets:
        """A new random secret for the tenant; the one it replaces still signs for `grace_s` (only the latest
        replaced one: rotating again within the grace ends the older one's at once)."""
        self.secrets(tenant)  # there is one to replace
        now = utcnow()
        with self.sessions.begin() as s:
            row = s.get(self.table, tenant, with_for_update=True)
            row.previous_secret, row.previous_until = row.secret, now + dt.timedelta(seconds=grace_s)
            row.secret, row.rotated_at = new_secret(), now
            return _view(row)


def _view(row: SecretColumns) -> SigningSecrets:
    in_grace = row.previous_secret is not None and row.previous_until is not None and row.previous_until > utcnow()
    return SigningSecrets(row.secret, row.previous_secret if in_grace else None,
                          row.previous_until if in_grace else None)


def show_secret(store: SecretStore, tenant: str, rotate: bool, grace_s: float) -> int:
    """The `webhook-secret` command: print the tenant's secret (for its receivers to verify signatures) and until
    when the previous one still signs; with `rotate`, a new one first."""
    tenant = check_tenant(tenant)
    secrets = store.rotate(tenant, grace_s) if rotate else store.secrets(tenant)
    until = secrets.previous_until.isoformat() if secrets.previous_until else None
    print(json.dumps({"tenant": tenant, "secret": secrets.current, "previous_signs_until": until}, indent=2))
    return 0
