"""The commands and settings the deployment names, checked with the code's own parsers and settings models: a
`python -m` command parses with the parser its main() builds, a Celery command names real options and queues, a
DSV4_* variable is a settings field with a valid value, a service listens where its callers dial, and a probe asks
the question its kind is for (readiness or liveness)."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import re
import shlex
from unittest import mock

import pytest
from deploy_manifests import DIRECT_ENV, MODULE_PREFIX, OTEL_ENV, SETTINGS, interpolate, load_script

from foundation.serving import LIVENESS

# `python -m X`: the module whose main() builds X's parser.
MAIN_MODULES = {"model_worker": "model_worker.__main__", "services.jobs": "services.jobs.cli",
                "agent_runtime": "agent_runtime.__main__", "services.gateway": "services.gateway.__main__"}
# Where each service's listening port, host and address settings come from.
PORT_ENV = {"agent_runtime": "DSV4_AGENT_", "services.gateway": "DSV4_GATEWAY_", "model_worker": "DSV4_WORKER_",
            "services.jobs": "DSV4_JOBS_"}
ADDRESS_FIELDS = ("WORKERS", "WORKER_TARGET", "JOBS_TARGET")
READY, LIVE = "ready", "live"
# What each probe asks: compose's health checks gate `depends_on: service_healthy`, a question of readiness; a
# Kubernetes liveness (and startup) probe restarts the container, so it must not fail while dependencies are away.
PROBE_QUESTION = {"readinessProbe": READY, "livenessProbe": LIVE, "startupProbe": LIVE}
GRPC_HEALTH_NAME = {READY: "", LIVE: LIVENESS}
HTTP_PATH = {READY: "/readyz", LIVE: "/livez"}


class _Captured(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser = parser


def real_parser(module: str) -> argparse.ArgumentParser:
    """The parser the module's main() builds (captured at its parse_args call, before anything runs)."""
    main = importlib.import_module(MAIN_MODULES[module]).main

    def capture(self, *args, **kwargs):
        raise _Captured(self)

    with mock.patch.object(argparse.ArgumentParser, "parse_args", capture), pytest.raises(_Captured) as caught:
        main([])
    return caught.value.parser


def parse_python_m(argv: list[str]) -> tuple[str, argparse.Namespace]:
    assert argv[:2] == ["python", "-m"], argv
    module = argv[2]
    assert importlib.util.find_spec(f"{module}.__main__"), f"no {module}/__main__.py"
    parser = real_parser(module)
    try:
        args = parser.parse_args(argv[3:])
    except SystemExit as exc:
        raise AssertionError(f"{shlex.join(argv)}: the real parser rejects it") from exc
    # The flags' values as the command's settings model takes them (validated and typed: the parser keeps text and
    # leaves out flags not given), None for a setting no flag gives.
    model = SETTINGS[MODULE_PREFIX[module]]
    flags = {name: value for name, value in vars(args).items() if name in model.model_fields}
    try:
        given = model.model_validate(flags)
    except ValueError as exc:
        raise AssertionError(f"{shlex.join(argv)}: its settings refuse it: {exc}") from exc
    for name in model.model_fields:
        setattr(args, name, getattr(given, name) if name in flags else None)
    return module, args


def check_celery(argv: list[str]) -> str:
    """celery -A APP SUBCOMMAND [options]: the app imports, the subcommand and its options exist, the queues exist."""
    from celery import Celery
    from celery.bin.celery import celery as cli

    assert argv[0] == "celery" and argv[1] == "-A", argv
    app = importlib.import_module(argv[2]).app
    assert isinstance(app, Celery)
    command = cli.commands.get(argv[3])
    assert command is not None, f"celery has no {argv[3]!r} command"
    options = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
    rest = argv[4:]
    for token in rest:
        if token.startswith("-"):
            assert token.split("=")[0] in options, f"celery {argv[3]} has no option {token}"
    if "-Q" in rest:
        queues = {q.name for q in app.conf.task_queues}
        for name in rest[rest.index("-Q") + 1].split(","):
            assert name in queues, f"queue {name!r} is not one of {queues}"
    return argv[3]


def check_env(env: dict[str, str], context: str) -> None:
    """Every DSV4_* variable is a settings field (with a valid value) or a variable the code reads directly."""
    for name, value in env.items():
        if name in DIRECT_ENV:
            assert f'"{name}"' in DIRECT_ENV[name].read_text(), name
            continue
        prefix = next((p for p in SETTINGS if name.startswith(p)), None)
        if prefix is None:
            assert not name.startswith("DSV4_"), f"{context}: {name} is read by nothing"
            assert name in OTEL_ENV, f"{context}: {name} is not a platform setting"
            continue
        model, field = SETTINGS[prefix], name[len(prefix):].lower()
        assert field in model.model_fields, f"{context}: {name} is not a field of {model.__name__}"
        if value is not None:
            model(**{field: interpolate(str(value))})  # the value validates


def listen(module: str, args: argparse.Namespace, env: dict[str, str]) -> tuple[str, int]:
    """The host and port a platform service binds, from its flags, then its settings."""
    prefix = PORT_ENV.get(module)
    settings = SETTINGS[prefix] if prefix else None
    host, port = getattr(args, "host", None), getattr(args, "port", None)
    if prefix:
        host = host or env.get(f"{prefix}HOST") or settings.model_fields["host"].default
        port = port or int(env.get(f"{prefix}PORT") or settings.model_fields["port"].default)
    return host, port


def addresses(env: dict[str, str]) -> list[tuple[str, int]]:
    found = []
    for name, value in env.items():
        if name.startswith(tuple(SETTINGS)) and name.endswith(ADDRESS_FIELDS):
            for address in str(value).split(","):
                host, port = address.rsplit(":", 1)
                found.append((host, int(port)))
    return found


def asks(check) -> str:
    """The question a health check script's arguments ask (READY or LIVE)."""
    if check.kind == "grpc":
        return next(q for q, name in GRPC_HEALTH_NAME.items() if name == check.service)
    return next(q for q, path in HTTP_PATH.items() if re.fullmatch(rf"https?://[^/]+{path}", check.url))


def check_probe(probe: dict, port: int, question: str) -> None:
    """A platform server's probe reaches its port and asks `question` (a TCP connect would ask neither)."""
    if "grpc" in probe:
        assert probe["grpc"]["port"] == port and probe["grpc"].get("service", "") == GRPC_HEALTH_NAME[question]
    elif "httpGet" in probe:
        assert probe["httpGet"]["port"] == port and probe["httpGet"]["path"] == HTTP_PATH[question]
    else:  # the health check script, where a native probe cannot (TLS)
        assert "exec" in probe, f"{probe} asks nothing"
        command = probe["exec"]["command"]
        assert command[:2] == ["python", "/app/deploy/healthcheck.py"], command
        check = load_script("healthcheck").build_parser().parse_args(command[2:])
        assert check.kind == "grpc" and int(check.target.rsplit(":", 1)[1]) == port, command
        assert asks(check) == question, command
