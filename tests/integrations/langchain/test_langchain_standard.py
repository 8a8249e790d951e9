"""LangChain's standard chat-model tests (langchain-tests) on ChatDeepSeekV4: the unit tests offline, the integration
tests against a real model worker process (`tiny`, random weights: its words are noise, so only what a model must
understand to pass is marked xfail, each with the reason; the worker's constrained decoding still gives every forced
call and JSON reply its shape)."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests

from integrations.langchain import ChatDeepSeekV4

pytestmark = pytest.mark.integration

# Greedy, and few tokens: the words are noise. The tests whose outcome turns on a whole forced call of
# magic_function get room for one (~40 tokens of DSML).
PARAMS = {"temperature": 0.0, "max_tokens": 16}
WHOLE_CALL = {"max_tokens": 40}
NEEDS_WHOLE_CALL = ("test_tool_choice", "test_tool_calling", "test_tool_calling_async",
                    "test_tool_calling_with_no_arguments")

# Why each xfail below: the tiny model's weights are random, so it cannot do what these tests ask of a model. The
# worker's constrained decoding still gives every reply its shape (test_langchain_sessions checks forced calls and
# structured output on schemas whose values end: enums, integers).
NOISE_ARGUMENTS = "random weights: the forced call names the right tool and fits its schema, but input is noise, not 3"
NO_CHOICE = "random weights: with tool_choice auto the model does not choose to call the tool"
OPEN_STRINGS = ("random weights: a free string (a JSON value, a tool argument) ends only by chance, so the reply is "
                "cut at max_tokens before the JSON or the call is whole")
EMPTY_OBJECT = "random weights: json_mode asks for any JSON object and the model writes {}, without setup or punchline"


class TestChatDeepSeekV4Unit(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[ChatDeepSeekV4]:
        return ChatDeepSeekV4

    @property
    def chat_model_params(self) -> dict:
        return {"target": "127.0.0.1:50051"}  # nothing connects until a call

    @property
    def init_from_env_params(self) -> tuple[dict, dict, dict]:
        return ({"DSV4_WORKER_TARGET": "worker:50051", "DSV4_API_KEY": "key"}, {},
                {"target": "worker:50051", "api_key": "key"})

    @property
    def supports_model_override(self) -> bool:
        return False  # a worker serves the model it was started with: choose another by `target`


class TestChatDeepSeekV4Integration(ChatModelIntegrationTests):
    target, budget = "", PARAMS

    @pytest.fixture(autouse=True)
    def _worker(self, worker_target: str, request: pytest.FixtureRequest) -> None:
        """The standard tests read their model's parameters from properties: these set what the properties give."""
        type(self).target = worker_target
        type(self).budget = {**PARAMS, **WHOLE_CALL} if request.node.originalname in NEEDS_WHOLE_CALL else PARAMS

    @property
    def chat_model_class(self) -> type[ChatDeepSeekV4]:
        return ChatDeepSeekV4

    @property
    def chat_model_params(self) -> dict:
        return {"target": self.target, **self.budget}

    @property
    def supports_json_mode(self) -> bool:
        return True

    @property
    def supports_model_override(self) -> bool:
        return False  # a worker serves the model it was started with: choose another by `target`

    @property
    def supported_usage_metadata_details(self) -> dict:
        details = ["reasoning_output", "cache_read_input"]
        return {"invoke": details, "stream": details}

    def invoke_with_reasoning_output(self, *, stream: bool = False) -> AIMessage:
        model = ChatDeepSeekV4(target=self.target, reasoning_mode="think-high", **PARAMS)
        return _run(model, "Why is the sky blue?", stream)

    def invoke_with_cache_read_input(self, *, stream: bool = False) -> AIMessage:
        """The second call of a thread reads its history from the worker session."""
        model = ChatDeepSeekV4(target=self.target, **PARAMS)
        config = {"configurable": {"thread_id": "cache-read"}}
        history = [HumanMessage("Hello")]
        history += [model.invoke(history, config), HumanMessage("And again?")]
        message = _run(model, history, stream, config)
        assert message.usage_metadata["input_token_details"]["cache_read"] > 0
        return message

    @pytest.mark.xfail(reason=NOISE_ARGUMENTS)
    def test_tool_calling(self, model) -> None:
        super().test_tool_calling(model)

    @pytest.mark.xfail(reason=NOISE_ARGUMENTS)
    async def test_tool_calling_async(self, model) -> None:
        await super().test_tool_calling_async(model)

    @pytest.mark.xfail(reason=NO_CHOICE)
    def test_agent_loop(self, model) -> None:
        super().test_agent_loop(model)

    @pytest.mark.xfail(reason=OPEN_STRINGS)
    def test_bind_runnables_as_tools(self, model) -> None:
        super().test_bind_runnables_as_tools(model)

    @pytest.mark.xfail(reason=OPEN_STRINGS)
    def test_unicode_tool_call_integration(self, model, tool_choice=None, force_tool_call=True) -> None:
        super().test_unicode_tool_call_integration(model, tool_choice, force_tool_call)

    # The typeddict and json_schema variants may pass (XPASS): their check takes the JSON cut short, parsed as far
    # as it goes, for a dict with a subset of the keys.
    @pytest.mark.xfail(reason=OPEN_STRINGS)
    @pytest.mark.parametrize("schema_type", ["pydantic", "typeddict", "json_schema"])
    def test_structured_output(self, model, schema_type) -> None:
        super().test_structured_output(model, schema_type)

    @pytest.mark.xfail(reason=OPEN_STRINGS)
    @pytest.mark.parametrize("schema_type", ["pydantic", "typeddict", "json_schema"])
    async def test_structured_output_async(self, model, schema_type) -> None:
        await super().test_structured_output_async(model, schema_type)

    @pytest.mark.xfail(reason=OPEN_STRINGS)
    def test_structured_output_pydantic_2_v1(self, model) -> None:
        super().test_structured_output_pydantic_2_v1(model)

    @pytest.mark.xfail(reason=EMPTY_OBJECT)
    def test_json_mode(self, model) -> None:
        super().test_json_mode(model)


def _run(model: ChatDeepSeekV4, prompt, stream: bool, config: dict | None = None) -> AIMessage:
    if not stream:
        return model.invoke(prompt, config)
    full = None
    for chunk in model.stream(prompt, config):
        full = chunk if full is None else full + chunk
    return full
