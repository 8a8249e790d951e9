"""`python -m agent_runtime serve ...` (agent_runtime/service/serve.py); `python -m agent_runtime webhook-secret
--tenant T [--rotate]`: the tenant's turn-webhook signing secret, for its receivers to verify deliveries."""

import argparse
import sys

from agent_runtime.service.serve import add_serve_parser
from agent_runtime.settings import AgentSettings
from foundation.settings import add_settings_cli, settings_from


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agent_runtime")
    commands = parser.add_subparsers(dest="command", required=True)
    add_serve_parser(commands)
    secret = commands.add_parser("webhook-secret", help="the tenant's turn-webhook signing secret (made if it has "
                                 "none), as JSON; --rotate replaces it, the old one signing too for "
                                 "webhook_secret_grace_seconds")
    secret.add_argument("--tenant", required=True)
    secret.add_argument("--rotate", action="store_true")
    add_settings_cli(secret, AgentSettings)
    secret.set_defaults(func=webhook_secret)
    args = parser.parse_args(argv)
    return args.func(args)


def webhook_secret(args: argparse.Namespace) -> int:
    from agent_runtime.store.tables import WebhookSecret
    from agent_runtime.store.transcript import upgrade
    from foundation.sql import make_engine, sessions
    from foundation.webhooks.secrets import SecretStore, show_secret

    settings = settings_from(AgentSettings, args)
    upgrade(settings.database_url)
    store = SecretStore(sessions(make_engine(settings.database_url)), WebhookSecret)
    try:
        return show_secret(store, args.tenant, args.rotate, settings.webhook_secret_grace_seconds)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
