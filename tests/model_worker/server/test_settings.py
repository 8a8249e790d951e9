"""Every service's settings: a flag per field, and flags over the environment over a settings file over defaults."""

from __future__ import annotations

import argparse

import pytest

from agent_runtime.settings import AgentSettings
from foundation.settings import SETTINGS_FILE_ENV, add_settings_cli, settings_from
from model_worker.server.settings import WorkerSettings
from services.embedded.settings import EmbeddedSettings
from services.gateway.settings import GatewaySettings
from services.jobs.settings import JobsSettings


def parse(settings, argv: list[str]):
    parser = argparse.ArgumentParser()
    add_settings_cli(parser, settings)
    return settings_from(settings, parser.parse_args(argv))


def test_flags_win_over_the_environment_which_wins_over_the_file(tmp_path, monkeypatch):
    file = tmp_path / "platform.env"
    file.write_text("DSV4_WORKER_PORT=7001\nDSV4_WORKER_TOKEN_BUDGET=128\nDSV4_WORKER_CONFIG=flash\n"
                    "DSV4_AGENT_PORT=7002\n")  # one file may hold every service's settings
    monkeypatch.setenv("DSV4_WORKER_TOKEN_BUDGET", "256")
    settings = parse(WorkerSettings, ["--settings-file", str(file), "--config", "pro", "--speculative"])
    assert (settings.port, settings.token_budget, settings.config, settings.speculative) == (7001, 256, "pro", True)
    monkeypatch.setenv(SETTINGS_FILE_ENV, str(file))
    assert parse(AgentSettings, []).port == 7002
    defaults = parse(WorkerSettings, ["--no-speculative"])
    assert defaults.token_budget == 256 and not defaults.speculative and defaults.hot_budget_gb == 4.0


def test_flags_are_typed_and_renamed_and_bad_values_are_refused(capsys):
    settings = parse(WorkerSettings, ["--api-keys", "k.json", "--kv-budget-gb", "2.5", "--numerics", "reference"])
    assert (settings.api_keys_file, settings.kv_budget_gb, settings.numerics) == ("k.json", 2.5, "reference")
    with pytest.raises(SystemExit):
        parse(WorkerSettings, ["--numerics", "fp4"])
    with pytest.raises(SystemExit):
        parse(WorkerSettings, ["--port", "many"])
    with pytest.raises(SystemExit):
        parse(WorkerSettings, ["--token-budget", "0"])
    assert "--token-budget (DSV4_WORKER_TOKEN_BUDGET)" in capsys.readouterr().err


@pytest.mark.parametrize("settings", [WorkerSettings, JobsSettings, AgentSettings, GatewaySettings,
                                      EmbeddedSettings])
def test_every_setting_has_a_description_and_a_default(settings):
    for name, field in settings.model_fields.items():
        assert field.description, f"{settings.__name__}.{name} has no description"
        assert not field.is_required(), f"{settings.__name__}.{name} has no default"
    settings()  # the defaults validate on their own (they run embedded)
