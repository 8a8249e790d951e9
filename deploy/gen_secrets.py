"""The deployment's secrets, made once on the operator's machine and never committed (docs/operations.md, "Secrets").

    python deploy/gen_secrets.py [--env-file .env] [--tables-dir deploy/secrets]   # make what is missing
    python deploy/gen_secrets.py check [--env-file .env] [--tables-dir deploy/secrets]

The env file holds the passwords, the session encryption key and the services' own API keys (docker compose reads
`.env` by itself; `kubectl create secret generic dsv4-secrets --from-env-file=.env` makes the cluster's Secret of
it). The tables directory holds one API key table per service that authenticates its callers (`worker.json`,
`jobs.json`, `agent.json`, `gateway.json`; foundation/auth.py's format). Nothing that exists is replaced:
a second run only adds what is missing, so it never rotates a secret by accident. `check` proves that every
service's key is a service key in the table of each service it calls.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
from pathlib import Path

# Generated values are hex or URL-safe base64 only: they go into URLs (redis://:PASSWORD@..., postgresql://) as is.
SECRET_ENV = {
    "POSTGRES_PASSWORD": lambda: secrets.token_hex(24),
    "REDIS_PASSWORD": lambda: secrets.token_hex(24),
    "REDIS_WARM_PASSWORD": lambda: secrets.token_hex(24),
    "DSV4_SESSION_KEY": lambda: secrets.token_hex(32),  # AES-256 (model_worker/sessions/codec.py, KEY_ENV)
    "GATEWAY_SERVICE_KEY": lambda: "sk-svc-" + secrets.token_urlsafe(32),
    "AGENT_SERVICE_KEY": lambda: "sk-svc-" + secrets.token_urlsafe(32),
    "JOBS_SERVICE_KEY": lambda: "sk-svc-" + secrets.token_urlsafe(32),
}
# The platform's own callers: the variable holding each one's service key, and the services it calls with it.
SERVICE_KEYS = {"gateway": "GATEWAY_SERVICE_KEY", "agent": "AGENT_SERVICE_KEY", "jobs": "JOBS_SERVICE_KEY"}
CALLEES = {"gateway": ("worker", "jobs"), "agent": ("worker", "jobs"), "jobs": ("worker",)}
# Every service that authenticates callers has a table; end users enter at the gateway (HTTP) and the agent service.
TABLES = ("worker", "jobs", "agent", "gateway")
ENTRY_POINTS = ("gateway", "agent")
FIRST_TENANT = "default"


def read_env(path: Path) -> dict[str, str]:
    """KEY=VALUE lines (docker compose's .env syntax, as far as this file writes it)."""
    values = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip().strip("'\"")
    return values


def write_private(path: Path, text: str, mode: int) -> None:
    """Created with its final mode, never readable by others in between."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.chmod(path, mode)


def complete_env(env_file: Path) -> tuple[dict[str, str], list[str]]:
    """The env file with every secret in it: existing values kept, missing ones generated and appended."""
    values = read_env(env_file)
    missing = [name for name in SECRET_ENV if not values.get(name)]
    if missing:
        lines = env_file.read_text().rstrip("\n").splitlines() if env_file.exists() else [
            "# Secrets of the dsv4 deployment (deploy/gen_secrets.py). Never commit this file."]
        lines += [f"{name}={SECRET_ENV[name]()}" for name in missing]
        write_private(env_file, "\n".join(lines) + "\n", 0o600)
        values = read_env(env_file)
    return values, missing


def initial_table(service: str, env: dict[str, str], user_key: str) -> dict[str, object]:
    table: dict[str, object] = {env[SERVICE_KEYS[caller]]: {"tenant": caller, "service": True}
                                for caller, callees in CALLEES.items() if service in callees}
    if service in ENTRY_POINTS:
        table[user_key] = FIRST_TENANT
    return table


def complete_tables(tables_dir: Path, env: dict[str, str]) -> tuple[list[str], str | None]:
    """A table for each service that has none (the tables of a running deployment are the operator's to edit)."""
    made, user_key = [], None
    for service in TABLES:
        path = tables_dir / f"{service}.json"
        if path.exists():
            continue
        if service in ENTRY_POINTS and user_key is None:
            user_key = "sk-" + secrets.token_urlsafe(32)
        # 0644 inside a 0700 directory: only the operator reaches it on the host, and the container's non-root user
        # can read the single file docker compose mounts.
        write_private(path, json.dumps(initial_table(service, env, user_key or ""), indent=2) + "\n", 0o644)
        made.append(path.name)
    return made, user_key


def problems(env: dict[str, str], tables_dir: Path) -> list[str]:
    """What would make a service refuse another: a missing secret, a missing table, a caller's key that is not a
    service key in its callee's table. Standard library only (it runs on the operator's machine, and the tables'
    full format check is foundation/auth.py's, at each service's start)."""
    found = [f"{name} is not set" for name in SECRET_ENV if not env.get(name)]
    key = env.get("DSV4_SESSION_KEY", "")
    if key and (len(key) != 64 or any(c not in "0123456789abcdefABCDEF" for c in key)):
        found.append("DSV4_SESSION_KEY must be 64 hex digits (AES-256)")
    for service in TABLES:
        path = tables_dir / f"{service}.json"
        if not path.exists():
            found.append(f"{path}: missing")
            continue
        try:
            table = json.loads(path.read_text())
        except ValueError as exc:
            found.append(f"{path}: not JSON ({exc})")
            continue
        if not isinstance(table, dict):
            found.append(f"{path}: a key table is a JSON object {{key: tenant}}")
            continue
        for caller, callees in CALLEES.items():
            grant = table.get(env.get(SERVICE_KEYS[caller], ""))
            if service in callees and not (isinstance(grant, dict) and grant.get("service") is True):
                found.append(f"{path}: {SERVICE_KEYS[caller]} ({caller}) is not a service key there")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gen_secrets.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", nargs="?", choices=["make", "check"], default="make")
    parser.add_argument("--env-file", type=Path, default=Path(".env"), help="passwords and keys (default .env)")
    parser.add_argument("--tables-dir", type=Path, default=Path("deploy/secrets"),
                        help="the services' API key tables (default deploy/secrets)")
    args = parser.parse_args(argv)
    if args.action == "make":
        env, missing = complete_env(args.env_file)
        made, user_key = complete_tables(args.tables_dir, env)
        print(f"{args.env_file}: " + (f"added {', '.join(missing)}" if missing else "complete"))
        print(f"{args.tables_dir}: " + (f"made {', '.join(made)}" if made else "complete"))
        if user_key:
            print(f"an API key for tenant {FIRST_TENANT!r} at the gateway and the agent service: {user_key}")
    found = problems(read_env(args.env_file), args.tables_dir)
    for problem in found:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
