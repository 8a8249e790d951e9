"""Every request field the `openai` SDK can send to chat completions, Responses and legacy completions is implemented,
recorded or refused by name (services/gateway/openai_fields.py): a field a new SDK adds fails here until the gateway
decides about it."""

from __future__ import annotations

import typing

import pytest
from openai.types import completion_create_params as completions_params
from openai.types.chat import completion_create_params as chat_params
from openai.types.responses import response_create_params as responses_params

from services.gateway.completions_types import CompletionRequest
from services.gateway.errors import ApiError
from services.gateway.openai_fields import CHAT, COMPLETIONS, RESPONSES
from services.gateway.openai_types import ChatCompletionRequest
from services.gateway.responses_request import ResponsesRequest

CHAT_BODY = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}
RESPONSES_BODY = {"model": "tiny", "input": "hi"}
COMPLETIONS_BODY = {"model": "tiny", "prompt": "def f():"}


def sdk_fields(*param_types: type) -> set[str]:
    return {name for params in param_types for name in typing.get_type_hints(params)}


CHAT_FIELDS = sdk_fields(chat_params.CompletionCreateParamsNonStreaming, chat_params.CompletionCreateParamsStreaming)
RESPONSES_FIELDS = sdk_fields(responses_params.ResponseCreateParamsNonStreaming,
                              responses_params.ResponseCreateParamsStreaming)
COMPLETIONS_FIELDS = sdk_fields(completions_params.CompletionCreateParamsNonStreaming,
                                completions_params.CompletionCreateParamsStreaming)


@pytest.mark.parametrize("table, fields", [(CHAT, CHAT_FIELDS), (RESPONSES, RESPONSES_FIELDS),
                                           (COMPLETIONS, COMPLETIONS_FIELDS)], ids=["chat", "responses", "completions"])
def test_every_field_the_sdk_sends_is_placed(table, fields):
    assert fields - table.known() == set(), "new SDK fields: implement, record or refuse them in openai_fields.py"
    assert not table.implemented & table.recorded and not (table.implemented | table.recorded) & set(table.refused)


@pytest.mark.parametrize("model, table, fields", [(ChatCompletionRequest, CHAT, CHAT_FIELDS),
                                                  (ResponsesRequest, RESPONSES, RESPONSES_FIELDS),
                                                  (CompletionRequest, COMPLETIONS, COMPLETIONS_FIELDS)],
                         ids=["chat", "responses", "completions"])
def test_implemented_fields_are_the_request_models_own(model, table, fields):
    assert table.implemented <= set(model.model_fields)


@pytest.mark.parametrize("name", sorted(CHAT.refused))
def test_a_refused_chat_field_is_a_400_naming_it(name):
    with pytest.raises(ApiError) as error:
        ChatCompletionRequest.model_validate({**CHAT_BODY, name: {"something": "set"}})
    assert (error.value.status, error.value.param, error.value.code) == (400, name, "unsupported_parameter")
    assert error.value.message.startswith(f"{name}: ")


@pytest.mark.parametrize("name", sorted(RESPONSES.refused))
def test_a_refused_responses_field_is_a_400_naming_it(name):
    with pytest.raises(ApiError) as error:
        ResponsesRequest.model_validate({**RESPONSES_BODY, name: {"something": "set"}})
    assert (error.value.status, error.value.param) == (400, name)


def test_neutral_values_and_recorded_fields_are_accepted():
    request = ChatCompletionRequest.model_validate({
        **CHAT_BODY, "modalities": ["text"], "parallel_tool_calls": False, "audio": None, "user": "u-1",
        "metadata": {"k": "v"}, "store": False, "service_tier": "auto", "safety_identifier": "s",
        "prompt_cache_retention": "24h"})
    assert request.mode() == "non-think"
    ResponsesRequest.model_validate({**RESPONSES_BODY, "include": [], "truncation": "disabled", "user": "u-1",
                                     "service_tier": "default", "top_logprobs": 0})
    with pytest.raises(ApiError, match="modalities"):
        ChatCompletionRequest.model_validate({**CHAT_BODY, "modalities": ["text", "audio"]})
    with pytest.raises(ApiError, match="parallel_tool_calls"):
        ResponsesRequest.model_validate({**RESPONSES_BODY, "parallel_tool_calls": False})


@pytest.mark.parametrize("name", sorted(COMPLETIONS.refused))
def test_a_refused_completions_field_is_a_400_naming_it(name):
    with pytest.raises(ApiError) as error:
        CompletionRequest.model_validate({**COMPLETIONS_BODY, name: 3})
    assert (error.value.status, error.value.param, error.value.code) == (400, name, "unsupported_parameter")
    CompletionRequest.model_validate({**COMPLETIONS_BODY, "echo": False, "best_of": 1, "user": "u-1"})
