"""Every service command's flags, made by pydantic-settings from its settings model: each flag's help names the
environment variable of the same setting, a flag beats that variable, the documented spellings parse, and settings
that do not validate end the command with a usage error."""

from __future__ import annotations

import argparse
import importlib
from unittest import mock

import pytest

from agent_runtime.settings import AgentSettings
from foundation.settings import SETTINGS_FILE_ENV, settings_from
from model_worker.server.settings import WorkerSettings
from services.embedded.settings import EmbeddedSettings
from services.gateway.settings import GatewaySettings
from services.jobs.settings import JobsSettings

# (module whose main() builds the parser, subcommand or None, the settings model its flags set)
COMMANDS = {"model_worker serve": ("model_worker.__main__", "serve", WorkerSettings),
            "services.gateway": ("services.gateway.__main__", None, GatewaySettings),
            "services.embedded": ("services.embedded.__main__", None, EmbeddedSettings),
            "services.jobs serve": ("services.jobs.cli", "serve", JobsSettings),
            "agent_runtime serve": ("agent_runtime.__main__", "serve", AgentSettings)}
# Spellings the README, docs/ and deploy/ use that are not the field's name in kebab case.
RENAMED = {"--api-keys": "api_keys_file", "--worker": "workers", "--jobs": "jobs_target", "--database": "database_url"}


class _Captured(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser = parser


def command_parser(command: str) -> argparse.ArgumentParser:
    """The parser the command's main() builds (captured where it parses, before anything runs): its subcommand's."""
    module, subcommand, _ = COMMANDS[command]

    def capture(self, *args, **kwargs):
        raise _Captured(self)

    with mock.patch.object(argparse.ArgumentParser, "parse_args", capture), pytest.raises(_Captured) as caught:
        importlib.import_module(module).main([])
    parser = caught.value.parser
    if subcommand is None:
        return parser
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return commands.choices[subcommand]


def env_name(settings, field: str) -> str:
    return settings.model_config["env_prefix"] + field.upper()


@pytest.mark.parametrize("command", COMMANDS)
def test_every_flag_has_a_setting_and_its_help_names_the_environment_variable(command):
    settings = COMMANDS[command][2]
    flags = [a for a in command_parser(command)._actions if a.option_strings and a.dest != "help"]
    assert {a.dest for a in flags} == {*settings.model_fields, "settings_file"}, command
    for action in flags:
        env = SETTINGS_FILE_ENV if action.dest == "settings_file" else env_name(settings, action.dest)
        assert f"[env: {env}]" in action.help, f"{command} {action.option_strings[0]}: {action.help!r}"
        if action.dest in settings.model_fields:
            assert f"--{action.dest.replace('_', '-')}" in action.option_strings, action.option_strings


@pytest.mark.parametrize("command", COMMANDS)
def test_a_flag_beats_its_environment_variable_which_beats_the_default(command, monkeypatch):
    parser, settings = command_parser(command), COMMANDS[command][2]
    monkeypatch.setenv(env_name(settings, "host"), "10.0.0.1")
    monkeypatch.setenv(env_name(settings, "config" if settings is EmbeddedSettings else "port"), "flash" if
                       settings is EmbeddedSettings else "7000")
    from_env = settings_from(settings, parser.parse_args([]))
    assert from_env.host == "10.0.0.1"
    flagged = settings_from(settings, parser.parse_args(["--host", "0.0.0.0"]))
    assert flagged.host == "0.0.0.0"
    if settings is EmbeddedSettings:
        assert (from_env.config, flagged.config) == ("flash", "flash")
    else:
        assert (from_env.port, flagged.port) == (7000, 7000)  # the variables of flags not given stay in force
        assert settings_from(settings, parser.parse_args(["--port", "7001"])).port == 7001
    monkeypatch.delenv(env_name(settings, "host"))
    assert settings_from(settings, parser.parse_args([])).host == settings.model_fields["host"].default


@pytest.mark.parametrize("command", COMMANDS)
def test_the_documented_spellings_of_flags_parse(command):
    parser, settings = command_parser(command), COMMANDS[command][2]
    renamed = {flag: field for flag, field in RENAMED.items() if field in settings.model_fields}
    argv = [part for flag in renamed for part in (flag, "x.example:1")]
    parsed = settings_from(settings, parser.parse_args(argv))
    assert all(getattr(parsed, field) == "x.example:1" for field in renamed.values())
    for name, field in settings.model_fields.items():  # a bool has --name and --no-name
        if field.annotation is bool:
            flag = "--" + name.replace("_", "-")
            assert getattr(settings_from(settings, parser.parse_args([flag])), name) is True
            assert getattr(settings_from(settings, parser.parse_args([flag.replace("--", "--no-")])), name) is False


def test_renamed_flags_are_the_ones_the_docs_name():
    assert {f for f in RENAMED if f in command_parser("model_worker serve")._option_string_actions} == {"--api-keys"}
    assert set(RENAMED) <= set(command_parser("services.gateway")._option_string_actions)
    assert set(RENAMED) <= set(command_parser("agent_runtime serve")._option_string_actions)


def test_settings_that_do_not_validate_are_a_usage_error_naming_the_flag_and_the_variable(capsys, monkeypatch):
    parser = command_parser("services.gateway")
    with pytest.raises(SystemExit) as exited:
        settings_from(GatewaySettings, parser.parse_args(["--port", "many"]))
    assert exited.value.code == 2
    assert "--port (DSV4_GATEWAY_PORT)" in capsys.readouterr().err
    monkeypatch.setenv("DSV4_GATEWAY_MAX_TOOLS", "0")
    with pytest.raises(SystemExit):
        settings_from(GatewaySettings, parser.parse_args([]))
    assert "--max-tools (DSV4_GATEWAY_MAX_TOOLS)" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a check across fields says what is wrong in its own words
        settings_from(JobsSettings, command_parser("services.jobs serve").parse_args(
            ["--longest-job-seconds", "100", "--visibility-timeout-seconds", "50"]))
    assert "visibility_timeout_seconds must exceed longest_job_seconds" in capsys.readouterr().err


def test_a_command_without_the_settings_flags_reads_the_environment_and_the_file(tmp_path, monkeypatch):
    file = tmp_path / "platform.env"
    file.write_text("DSV4_JOBS_PORT=7003\nDSV4_JOBS_HOST=10.0.0.3\n")
    monkeypatch.setenv(SETTINGS_FILE_ENV, str(file))
    monkeypatch.setenv("DSV4_JOBS_HOST", "10.0.0.4")
    settings = settings_from(JobsSettings, argparse.Namespace(command="status", batch_id="b", tenant="default"))
    assert (settings.port, settings.host) == (7003, "10.0.0.4")
