"""An agent framework unchanged: the OpenAI Agents SDK's chat-completions model pointed at the gateway runs a
tool-using agent (the call forced through tool_choice, so random weights still make it)."""

from __future__ import annotations

from typing import Literal


def test_an_openai_agents_sdk_agent_calls_a_tool_through_the_gateway(gateway):
    from agents import Agent, ModelSettings, OpenAIChatCompletionsModel, Runner, function_tool, set_tracing_disabled
    from openai import AsyncOpenAI

    set_tracing_disabled(True)  # no export to OpenAI's servers
    picked: list[str] = []

    @function_tool
    def pick(color: Literal["red", "blue"]) -> str:
        """Pick a color."""
        picked.append(color)
        return f"picked {color}"

    name = gateway.client().models.list().data[0].id
    model = OpenAIChatCompletionsModel(model=name, openai_client=AsyncOpenAI(base_url=gateway.base_url,
                                                                             api_key="key-acme", max_retries=0))
    agent = Agent(name="picker", instructions="Pick a color with the tool.", tools=[pick], model=model,
                  model_settings=ModelSettings(tool_choice="pick", temperature=0, max_tokens=60),
                  tool_use_behavior="stop_on_first_tool")
    result = Runner.run_sync(agent, "pick a color")
    assert picked and picked[0] in ("red", "blue")
    assert result.final_output == f"picked {picked[0]}"
