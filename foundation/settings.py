"""How every platform service reads its settings: one pydantic-settings model per service (environment variables
under its prefix, `DSV4_WORKER_*`, `DSV4_GATEWAY_*`, ...; an optional `.env`-style settings file), with command-line
flags over both. The flags are pydantic-settings' own (`CliSettingsSource`): a kebab-case flag per field
(`--token-budget`; `--x` / `--no-x` for a bool), its help the field's description, default and environment variable
(`[env: DSV4_WORKER_TOKEN_BUDGET]`), more spellings from the model's `cli_shortcuts` (`--api-keys` for
`api_keys_file`).

The glue here exists because the services' commands are argparse subcommands (`python -m model_worker serve`) that the
command's own parser parses, not pydantic-settings: `add_settings_cli` puts a model's flags on that (sub)parser, and
`settings_from` turns what it parsed into the settings. Precedence: flags, then the environment, then the settings
file, then the defaults."""

from __future__ import annotations

import argparse
import os
from typing import Any, TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings, CliSettingsSource

SETTINGS_FILE_ENV = "DSV4_SETTINGS_FILE"
# The namespace attribute under which a parser's defaults carry the source that made its flags (only the selected
# subcommand's defaults reach the namespace, so a command without settings flags has none).
_SOURCE = "_settings_cli"

S = TypeVar("S", bound=BaseSettings)


def add_settings_cli(parser: argparse.ArgumentParser, settings: type[BaseSettings]) -> None:
    """A flag per field of `settings` on `parser` (a root parser or a subcommand's), and `--settings-file`. Unset
    flags stay out of the parsed namespace, leaving the environment and the file in force."""
    source = CliSettingsSource(settings, root_parser=parser, cli_kebab_case=True, cli_implicit_flags=True,
                               cli_show_env_vars=True, cli_hide_none_type=True)
    parser.add_argument("--settings-file", metavar="FILE", help="a .env-style file of settings (one may hold every "
                        f"service's); the environment wins over it, flags over both [env: {SETTINGS_FILE_ENV}]")
    parser.set_defaults(**{_SOURCE: source})


def settings_from(settings: type[S], args: argparse.Namespace) -> S:
    """The settings: the flags given, then the environment, then the settings file, then the defaults. Settings
    that do not validate end the command with a usage error naming the flag and the variable. A command whose
    parser has no settings flags (`python -m services.jobs submit`) reads the environment and the file only."""
    parsed = {k: v for k, v in vars(args).items() if k != _SOURCE}
    env_file = parsed.get("settings_file") or os.environ.get(SETTINGS_FILE_ENV)
    source: CliSettingsSource | None = getattr(args, _SOURCE, None)
    if source is None:
        return settings(_env_file=env_file)
    try:
        return settings(_cli_settings_source=source(parsed_args=parsed), _env_file=env_file)
    except ValidationError as exc:
        source.root_parser.error("; ".join(_problem(error, source) for error in exc.errors()))


def _problem(error: Any, source: CliSettingsSource) -> str:
    """One validation error as an operator reads it: which flag and variable, what is wrong, the value refused."""
    if not error["loc"]:  # a check across fields (a model validator): its message says which
        return error["msg"]
    name = str(error["loc"][0])
    env = " | ".join(source.env_var_names.get(name, ()))
    return f"--{name.replace('_', '-')} ({env}): {error['msg']}, got {error['input']!r}"
