"""The Responses API served through chat: validation, both codecs, and the event stream."""

from __future__ import annotations

import copy
import itertools
from typing import Any

import orjson
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from dataplane.errors import OPENAI_ERRORS, ApiError
from dataplane.providers.openai import OpenAIStream
from dataplane.translate import responses_chat
from dataplane.translate.responses_chat import (
    RETENTION_NOT_SUPPORTED,
    ChatToResponsesStream,
    chat_to_response,
    check_responses_request,
    not_retained_error,
    responses_to_chat,
    retention_error,
    stream_error_event,
)

STREAM_EVENT = TypeAdapter(ResponseStreamEvent)
WEATHER = {"type": "function", "name": "get_weather", "description": "Weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
           "strict": True}
CALL = {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city":"Paris"}'}


def request(**extra: Any) -> dict[str, Any]:
    return {"model": "m", "input": "hi", **extra}


def say(text: str, role: str = "user") -> dict[str, Any]:
    return {"role": role, "content": text}


# ------------------------------------------------------------------ validation

BAD_REQUESTS = [
    ({"model": None}, "model"),
    ({"input": None}, "input"),
    ({"input": ""}, "input"),
    ({"input": []}, "input"),
    ({"input": 7}, "input"),
    ({"temperature": "hot"}, "temperature"),
    ({"temperature": 2.5}, "temperature"),
    ({"top_p": 1.5}, "top_p"),
    ({"max_output_tokens": 0}, "max_output_tokens"),
    ({"max_output_tokens": 1.5}, "max_output_tokens"),
    ({"instructions": 5}, "instructions"),
    ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"tools": [WEATHER, {"type": "code_interpreter", "container": {"type": "auto"}}]}, "tools[1].type"),
    ({"tools": [{"type": "function", "function": {"name": "chat_style"}}]}, "tools[0].name"),
    ({"tools": [{**WEATHER, "parameters": "{}"}]}, "tools[0].parameters"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "name": "get_time"}}, "tool_choice.name"),
    ({"tools": [WEATHER], "tool_choice": {"type": "web_search_preview"}}, "tool_choice.type"),
    ({"tools": [WEATHER], "tool_choice": "always"}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"parallel_tool_calls": "yes"}, "parallel_tool_calls"),
    ({"input": [{"type": "function_call_output", "call_id": "call_9", "output": "12C"}]}, "input[0].call_id"),
    ({"input": [CALL, {"type": "function_call_output", "call_id": "call_2", "output": "12C"}]}, "input[1].call_id"),
    ({"input": [CALL, {"type": "function_call_output", "call_id": "call_1",
                       "output": [{"type": "input_image", "image_url": "https://x/y.png"}]}]},
     "input[1].output[0].type"),
    ({"input": [CALL, {"type": "function_call_output", "call_id": "call_1", "output": 12}]}, "input[1].output"),
    ({"input": [{**CALL, "arguments": {"city": "Paris"}}]}, "input[0].arguments"),
    ({"input": [{"type": "function_call", "call_id": "call_1", "name": "f"}]}, "input[0].arguments"),
    ({"input": [{"role": "user", "content": [{"type": "input_video", "url": "x"}]}]}, "input[0].content[0].type"),
    ({"input": [{"role": "user", "content": [{"text": "no type"}]}]}, "input[0].content[0].type"),
    ({"input": [{"role": "assistant", "content": [{"type": "input_text", "text": "x"}]}]},
     "input[0].content[0].type"),
    ({"input": [{"role": "user", "content": [{"type": "output_text", "text": "x"}]}]}, "input[0].content[0].type"),
    ({"input": [{"role": "user", "content": [{"type": "input_text"}]}]}, "input[0].content[0].text"),
    ({"input": [say("a"), {"role": "user", "content": [{"type": "input_text", "text": "look"},
                                                      {"type": "input_image", "detail": "auto"}]}]},
     "input[1].content[1].image_url"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file-1", "detail": "auto"}]}]},
     "input[0].content[0].file_id"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x", "detail": "max"}]}]},
     "input[0].content[0].detail"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "file-1"}]}]},
     "input[0].content[0].file_id"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_url": "https://x/a.pdf"}]}]},
     "input[0].content[0].file_url"),
    ({"input": [{"role": "user", "content": []}]}, "input[0].content"),
    ({"input": [{"role": "user", "content": 5}]}, "input[0].content"),
    ({"input": [{"role": "robot", "content": "beep"}]}, "input[0].role"),
    ({"input": [{"type": "message", "content": "who?"}]}, "input[0].role"),
    ({"input": [{"content": "no role, no type"}]}, "input[0].type"),
    ({"input": [say("a"), {"type": "web_search_call", "id": "ws_1", "status": "completed"}]}, "input[1].type"),
    ({"input": [say("a"), "just text"]}, "input[1]"),
    ({"text": {"format": {"type": "json_schema", "schema": {"type": "object"}}}}, "text.format.name"),
    ({"text": {"format": {"type": "json_schema", "name": "answer"}}}, "text.format.schema"),
    ({"text": {"format": {"type": "json_schema", "name": "my answer", "schema": {}}}}, "text.format.name"),
    ({"text": {"format": {"type": "yaml"}}}, "text.format.type"),
    ({"text": {"verbosity": "loud"}}, "text.verbosity"),
    ({"reasoning": {"effort": "extreme"}}, "reasoning.effort"),
    ({"reasoning": {"summary": "long"}}, "reasoning.summary"),
    ({"stream": "yes"}, "stream"),
    ({"store": "no"}, "store"),
    ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
    ({"metadata": {"team": 5}}, "metadata.team"),
    ({"user": 5}, "user"),
    ({"safety_identifier": ["x"]}, "safety_identifier"),
    ({"include": "reasoning.encrypted_content"}, "include"),
    ({"truncation": "sometimes"}, "truncation"),
    ({"top_logprobs": 21}, "top_logprobs"),
    ({"max_tool_calls": 0}, "max_tool_calls"),
    ({"background": "yes"}, "background"),
]


@pytest.mark.parametrize(("fields", "param"), BAD_REQUESTS, ids=[param for _, param in BAD_REQUESTS])
def test_bad_requests_are_refused_naming_the_field(fields: dict[str, Any], param: str) -> None:
    payload = {key: value for key, value in request(**fields).items() if value is not None}
    with pytest.raises(ApiError) as caught:
        check_responses_request(payload)
    assert caught.value.status == 400
    assert caught.value.param == param
    assert caught.value.code != RETENTION_NOT_SUPPORTED


RETAINED = [
    ({"previous_response_id": "resp_123"}, "previous_response_id"),
    ({"conversation": "conv_123"}, "conversation"),
    ({"conversation": {"id": "conv_123"}, "input": None}, "conversation"),  # before the missing input
    ({"background": True}, "background"),
    ({"prompt": {"id": "pmpt_123", "variables": {"city": "Paris"}}}, "prompt"),
    ({"input": [say("a"), {"type": "item_reference", "id": "msg_123"}]}, "input[1].type"),
]


@pytest.mark.parametrize(("fields", "param"), RETAINED, ids=[param for _, param in RETAINED])
def test_fields_that_need_stored_state_are_refused_as_retention(fields: dict[str, Any], param: str) -> None:
    payload = {key: value for key, value in request(**fields).items() if value is not None}
    with pytest.raises(ApiError) as caught:
        check_responses_request(payload)
    error = caught.value
    assert (error.status, error.param, error.code) == (400, param, RETENTION_NOT_SUPPORTED)
    assert "retains no data" in error.message and "'input'" in error.message


def test_retention_and_not_found_errors() -> None:
    error = retention_error("previous_response_id")
    assert (error.status, error.code, error.param) == (400, "retention_not_supported", "previous_response_id")
    missing = not_retained_error("resp_abc")
    assert (missing.status, missing.code, missing.type) == (404, "response_not_found", "invalid_request_error")
    assert "resp_abc" in missing.message and "retains no responses" in missing.message
    assert orjson.loads(OPENAI_ERRORS.body(missing))["error"]["code"] == "response_not_found"


FULL_REQUEST: dict[str, Any] = {
    "model": "m",
    "instructions": "Answer briefly.",
    "input": [
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Use metric units."}]},
        {"role": "user", "content": [
            {"type": "input_text", "text": "What is in these?"},
            {"type": "input_image", "image_url": "https://example.com/a.png", "detail": "high"},
            {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo=", "detail": "original"},
            {"type": "input_file", "filename": "report.pdf", "file_data": "data:application/pdf;base64,JVBERi0="},
            {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
        ]},
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "thinking"}]},
        {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed", "content": [
            {"type": "output_text", "text": "A chart. Checking the weather.", "annotations": []}]},
        CALL,
        {"type": "reasoning", "id": "rs_2", "summary": []},
        {"type": "function_call", "id": "fc_2", "call_id": "call_2", "name": "get_time", "arguments": "{}",
         "status": "completed"},
        {"type": "function_call_output", "call_id": "call_1", "output": '{"temp": 12}'},
        {"type": "function_call_output", "call_id": "call_2",
         "output": [{"type": "input_text", "text": "10:00"}, {"type": "input_text", "text": " CET"}]},
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "I cannot say."}]},
        say("Please try again."),
    ],
    "tools": [WEATHER, {"type": "function", "name": "get_time", "parameters": {"type": "object"}}],
    "tool_choice": {"type": "function", "name": "get_weather"},
    "parallel_tool_calls": False,
    "text": {"format": {"type": "json_schema", "name": "answer", "schema": {"type": "object"}, "strict": True,
                        "description": "The answer"}, "verbosity": "low"},
    "reasoning": {"effort": "low", "summary": "auto"},
    "max_output_tokens": 300,
    "temperature": 0.3,
    "top_p": 0.9,
    "stream": True,
    "stream_options": {"include_obfuscation": False},
    "store": True,
    "metadata": {"team": "search"},
    "safety_identifier": "user-hash",
    "prompt_cache_key": "k1",
    "include": ["reasoning.encrypted_content"],
    "truncation": "disabled",
    "top_logprobs": 0,
    "service_tier": "default",
    "max_tool_calls": 4,
    "previous_response_id": None,
    "background": False,
    "some_future_field": {"anything": True},
}

GOOD_REQUESTS = [
    request(),
    request(input=[say("hello")]),
    request(input=[{"type": "message", "role": "system", "content": "sys"}, say("hello")]),
    request(tools=[WEATHER], tool_choice="required", parallel_tool_calls=True),
    request(tools=[WEATHER], tool_choice="none"),
    request(text={"format": {"type": "json_object"}}),
    request(text={"format": {"type": "text"}}, reasoning={"effort": "minimal"}),
    request(metadata={f"k{i}": "v" for i in range(16)}),
    request(input=[CALL, {"type": "function_call_output", "call_id": "call_1", "output": ""}]),
    FULL_REQUEST,
]


@pytest.mark.parametrize("payload", GOOD_REQUESTS)
def test_good_requests_pass(payload: dict[str, Any]) -> None:
    check_responses_request(payload)


# ------------------------------------------------------------------ request: Responses -> chat

def test_string_input_becomes_one_user_message() -> None:
    assert responses_to_chat(request(input="Tell me a joke")) == {
        "model": "m", "messages": [{"role": "user", "content": "Tell me a joke"}]}


def test_instructions_lead_as_a_system_message() -> None:
    chat = responses_to_chat(request(instructions="Be terse.", input=[say("hi"), say("hello", "assistant")]))
    assert chat["messages"] == [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "hi"},
                                {"role": "assistant", "content": "hello"}]


def test_images_files_and_audio_become_chat_parts() -> None:
    chat = responses_to_chat(FULL_REQUEST)
    assert chat["messages"][2] == {"role": "user", "content": [
        {"type": "text", "text": "What is in these?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "high"}},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"}},
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "report.pdf"}},
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
    ]}
    no_detail = responses_to_chat(request(input=[{"role": "user", "content": [
        {"type": "input_image", "image_url": "https://example.com/b.png"}]}]))
    assert no_detail["messages"][0]["content"][0]["image_url"] == {"url": "https://example.com/b.png",
                                                                   "detail": "auto"}


def test_function_calls_and_outputs_round_trip_as_tool_calls_and_tool_messages() -> None:
    chat = responses_to_chat(FULL_REQUEST)
    assert chat["messages"][0] == {"role": "system", "content": "Answer briefly."}
    assert chat["messages"][1] == {"role": "developer", "content": [{"type": "text", "text": "Use metric units."}]}
    # The assistant text and both calls (reasoning items between them dropped) are one chat turn.
    assert chat["messages"][3] == {
        "role": "assistant",
        "content": [{"type": "text", "text": "A chart. Checking the weather."}],
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
            {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
        ],
    }
    assert chat["messages"][4:] == [
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 12}'},
        {"role": "tool", "tool_call_id": "call_2",
         "content": [{"type": "text", "text": "10:00"}, {"type": "text", "text": " CET"}]},
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "I cannot say."}]},
        {"role": "user", "content": "Please try again."},
    ]
    calls_only = responses_to_chat(request(input=[say("weather?"), CALL, {
        "type": "function_call_output", "call_id": "call_1", "output": "12C"}]))
    assert calls_only["messages"][1] == {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]}


def test_settings_map_to_their_chat_fields() -> None:
    chat = responses_to_chat(FULL_REQUEST)
    assert {key: value for key, value in chat.items() if key != "messages"} == {
        "model": "m",
        "temperature": 0.3,
        "top_p": 0.9,
        "service_tier": "default",
        "max_tokens": 300,
        "user": "user-hash",
        "tools": [
            {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                              "parameters": WEATHER["parameters"], "strict": True}},
            {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}},
        ],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": False,
        "response_format": {"type": "json_schema", "json_schema": {
            "name": "answer", "schema": {"type": "object"}, "strict": True, "description": "The answer"}},
        "reasoning_effort": "low",
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_json_object_user_and_tool_settings_without_tools() -> None:
    chat = responses_to_chat(request(text={"format": {"type": "json_object"}}, user="u1", safety_identifier="s1",
                                     tool_choice="auto", parallel_tool_calls=True, stream=False))
    # Chat refuses tool_choice and parallel_tool_calls without tools; `user` wins over safety_identifier.
    assert chat == {"model": "m", "messages": [{"role": "user", "content": "hi"}],
                    "response_format": {"type": "json_object"}, "user": "u1"}
    assert "response_format" not in responses_to_chat(request(text={"format": {"type": "text"}}))


def test_translation_never_mutates_the_request() -> None:
    payload = copy.deepcopy(FULL_REQUEST)
    check_responses_request(payload)
    chat = responses_to_chat(payload)
    assert payload == FULL_REQUEST
    chat["messages"][3]["tool_calls"].append({"id": "x"})  # the result's containers are its own
    chat["messages"].append({"role": "user", "content": "more"})
    chat["tools"][0]["function"]["name"] = "renamed"
    assert payload == FULL_REQUEST
    assert responses_to_chat(payload) == responses_to_chat(copy.deepcopy(FULL_REQUEST))


# ------------------------------------------------------------------ response: chat -> Responses

def chat_completion(message: dict[str, Any], finish: str = "stop", usage: dict[str, Any] | None = None,
                    ) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1700000000, "model": "up",
            "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}],
            "usage": usage or {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25}}


def test_text_answer_becomes_a_completed_response() -> None:
    body = chat_to_response(chat_completion({"content": "Hello there"}), request(instructions="Be nice."), "m-1")
    response = Response.model_validate(body)
    assert response.output_text == "Hello there"
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.status == "completed" and response.incomplete_details is None and response.error is None
    assert response.created_at == 1700000000 and response.model == "m-1"
    [message] = response.output
    assert message.type == "message" and message.id.startswith("msg_") and message.status == "completed"
    assert body["output"][0]["content"] == [{"type": "output_text", "text": "Hello there", "annotations": [],
                                             "logprobs": []}]
    assert response.instructions == "Be nice."
    assert (response.store, response.previous_response_id, response.background) == (False, None, False)
    assert (response.parallel_tool_calls, response.tool_choice, response.tools) == (True, "auto", [])
    assert response.text.format.type == "text" and response.metadata == {}
    assert (response.temperature, response.top_p, response.truncation) == (1.0, 1.0, "disabled")


def test_tool_calls_become_function_call_items_after_the_text() -> None:
    payload = request(tools=[WEATHER], tool_choice="required", parallel_tool_calls=False, temperature=0.2,
                      max_output_tokens=100, metadata={"team": "a"}, store=True,
                      text={"format": {"type": "json_object"}}, reasoning={"effort": "high"})
    chat = chat_completion({"content": "Checking.", "tool_calls": [
        {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}},
        {"id": "call_b", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}},
    ]}, finish="tool_calls")
    body = chat_to_response(chat, payload, "m", response_id="resp_fixed")
    response = Response.model_validate(body)
    assert response.id == "resp_fixed" and response.status == "completed"
    assert [item.type for item in response.output] == ["message", "function_call", "function_call"]
    calls = response.output[1:]
    assert [(c.call_id, c.name, c.arguments, c.status) for c in calls] == [
        ("call_a", "get_weather", '{"city":"Oslo"}', "completed"),
        ("call_b", "get_weather", '{"city":"Rome"}', "completed")]
    assert all(c.id.startswith("fc_") for c in calls) and calls[0].id != calls[1].id
    # The request's settings are echoed; store is answered false whatever was asked.
    assert response.tools[0].name == "get_weather" and response.tools[0].strict is True
    assert (response.tool_choice, response.parallel_tool_calls, response.temperature) == ("required", False, 0.2)
    assert (response.max_output_tokens, response.metadata, response.store) == (100, {"team": "a"}, False)
    assert response.text.format.type == "json_object" and response.reasoning.effort == "high"


def test_tool_calls_alone_have_no_message_item() -> None:
    chat = chat_completion({"content": None, "tool_calls": [
        {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
        finish="tool_calls")
    response = Response.model_validate(chat_to_response(chat, request(tools=[WEATHER]), "m"))
    assert [item.type for item in response.output] == ["function_call"] and response.output_text == ""


@pytest.mark.parametrize(("finish", "reason"), [("length", "max_output_tokens"), ("content_filter", "content_filter")])
def test_cut_answers_are_incomplete(finish: str, reason: str) -> None:
    response = Response.model_validate(chat_to_response(chat_completion({"content": "Once upon"}, finish), request(),
                                                        "m"))
    assert response.status == "incomplete" and response.incomplete_details.reason == reason
    assert response.output[0].status == "incomplete" and response.output_text == "Once upon"
    assert response.completed_at is None


def test_usage_carries_cached_and_reasoning_tokens() -> None:
    usage = {"prompt_tokens": 100, "completion_tokens": 40, "total_tokens": 140,
             "prompt_tokens_details": {"cached_tokens": 64}, "completion_tokens_details": {"reasoning_tokens": 30}}
    response = Response.model_validate(chat_to_response(chat_completion({"content": "ok"}, usage=usage), request(),
                                                        "m"))
    assert response.usage.input_tokens == 100 and response.usage.input_tokens_details.cached_tokens == 64
    assert response.usage.output_tokens == 40 and response.usage.output_tokens_details.reasoning_tokens == 30
    assert response.usage.total_tokens == 140


def test_refusal_becomes_a_refusal_part() -> None:
    body = chat_to_response(chat_completion({"content": None, "refusal": "I can't help with that."}), request(), "m")
    response = Response.model_validate(body)
    assert body["output"][0]["content"] == [{"type": "refusal", "refusal": "I can't help with that."}]
    assert response.output_text == ""


# ------------------------------------------------------------------ streams

@pytest.fixture
def fixed_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ids and clocks that repeat, so two runs of one stream can be compared byte for byte."""
    counter = itertools.count()
    monkeypatch.setattr(responses_chat, "_new_id", lambda prefix: f"{prefix}_{next(counter):04d}")
    monkeypatch.setattr(responses_chat, "_now", lambda: 1700000000)


def sse(data: Any) -> bytes:
    return b"data: " + (data if isinstance(data, bytes) else orjson.dumps(data)) + b"\n\n"


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None) -> bytes:
    return sse({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "up",
                "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}]})


def usage_chunk() -> bytes:
    return sse({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "up", "choices": [],
                "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18,
                          "prompt_tokens_details": {"cached_tokens": 2},
                          "completion_tokens_details": {"reasoning_tokens": 3}}})


def tool_delta(index: int, arguments: str, call_id: str | None = None, name: str | None = None) -> dict[str, Any]:
    call: dict[str, Any] = {"index": index, "function": {"arguments": arguments}}
    if call_id:
        call |= {"id": call_id, "type": "function"}
        call["function"]["name"] = name
    return {"tool_calls": [call]}


DONE = b"data: [DONE]\n\n"
TEXT_STREAM = (chunk({"role": "assistant", "content": ""}) + chunk({"content": "Hel"}) + chunk({"content": "lo"})
               + chunk(finish="stop") + usage_chunk() + DONE)
TOOLS_STREAM = (chunk({"role": "assistant", "content": "Let me check."})
                + chunk(tool_delta(0, "", "call_a", "get_weather")) + chunk(tool_delta(0, '{"city":'))
                + chunk(tool_delta(0, '"Paris"}')) + chunk(tool_delta(1, "{}", "call_b", "get_time"))
                + chunk(finish="tool_calls") + usage_chunk() + DONE)
TEXT_EVENTS = ["response.created", "response.in_progress", "response.output_item.added",
               "response.content_part.added", "response.output_text.delta", "response.output_text.delta",
               "response.output_text.done", "response.content_part.done", "response.output_item.done",
               "response.completed"]


def run(upstream: bytes, payload: dict[str, Any] | None = None, piece: int = 0,
        ) -> tuple[bytes, ChatToResponsesStream]:
    stream = ChatToResponsesStream(OpenAIStream(include_usage=True), payload or request(stream=True), "m")
    pieces = [upstream[i:i + piece] for i in range(0, len(upstream), piece)] if piece else [upstream]
    return b"".join(stream.feed(p) for p in pieces) + stream.finish(), stream


def events(out: bytes) -> list[dict[str, Any]]:
    """Each frame is `event: <type>` + one `data:` line; the data validates as the SDK's event."""
    parsed = []
    for frame in out.split(b"\n\n")[:-1]:
        head, data = frame.split(b"\n")
        assert head.startswith(b"event: ") and data.startswith(b"data: ")
        event = orjson.loads(data[6:])
        assert event["type"] == head[7:].decode()
        STREAM_EVENT.validate_python(event)
        parsed.append(event)
    assert out.endswith(b"\n\n")
    assert [event["sequence_number"] for event in parsed] == list(range(len(parsed)))
    return parsed


def test_text_stream_becomes_the_documented_event_sequence(fixed_ids: None) -> None:
    out, stream = run(TEXT_STREAM)
    sent = events(out)
    assert [event["type"] for event in sent] == TEXT_EVENTS
    created, in_progress, added, part_added, first, second, text_done, part_done, item_done, completed = sent
    assert created["response"]["status"] == in_progress["response"]["status"] == "in_progress"
    assert created["response"]["output"] == [] and created["response"]["usage"] is None
    assert added["item"] == {"id": "msg_0001", "type": "message", "role": "assistant", "status": "in_progress",
                             "content": []}
    assert part_added["part"] == {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    assert [first["delta"], second["delta"]] == ["Hel", "lo"]
    assert {(e["item_id"], e["output_index"], e["content_index"]) for e in (first, second, text_done)} == {
        ("msg_0001", 0, 0)}
    assert first["logprobs"] == [] and text_done["text"] == "Hello" and part_done["part"]["text"] == "Hello"
    assert item_done["item"]["status"] == "completed"
    response = Response.model_validate(completed["response"])
    assert response.id == created["response"]["id"] == "resp_0000"
    assert response.status == "completed" and response.output_text == "Hello"
    assert (response.usage.input_tokens, response.usage.output_tokens, response.usage.total_tokens) == (11, 7, 18)
    assert response.usage.input_tokens_details.cached_tokens == 2
    assert response.usage.output_tokens_details.reasoning_tokens == 3
    assert stream.complete and stream.error is None and stream.usage.prompt_tokens == 11


def test_text_and_two_tool_calls_stream(fixed_ids: None) -> None:
    out, _ = run(TOOLS_STREAM, request(stream=True, tools=[WEATHER, {"type": "function", "name": "get_time"}]))
    sent = events(out)
    assert [event["type"] for event in sent] == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.content_part.added", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.delta", "response.function_call_arguments.done",
        "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done",
        "response.completed"]
    first_call = sent[8]["item"]
    assert first_call == {"id": "fc_0002", "type": "function_call", "status": "in_progress", "call_id": "call_a",
                          "name": "get_weather", "arguments": ""}
    assert sent[8]["output_index"] == 1 and sent[13]["output_index"] == 2
    assert [e["delta"] for e in sent[9:11]] == ['{"city":', '"Paris"}']
    assert sent[11]["arguments"] == '{"city":"Paris"}' and sent[11]["item_id"] == "fc_0002"
    assert sent[12]["item"]["status"] == "completed" and sent[12]["item"]["arguments"] == '{"city":"Paris"}'
    response = Response.model_validate(sent[-1]["response"])
    assert response.output_text == "Let me check."
    assert [(item.type, getattr(item, "call_id", None), getattr(item, "arguments", None))
            for item in response.output] == [("message", None, None), ("function_call", "call_a", '{"city":"Paris"}'),
                                             ("function_call", "call_b", "{}")]
    assert response.tools[1].name == "get_time"


def test_splitting_anywhere_gives_the_same_bytes(fixed_ids: None, monkeypatch: pytest.MonkeyPatch) -> None:
    whole, _ = run(TOOLS_STREAM)
    for piece in (1, 2, 7):
        counter = itertools.count()  # the ids restart for each run
        monkeypatch.setattr(responses_chat, "_new_id", lambda prefix, c=counter: f"{prefix}_{next(c):04d}")
        assert run(TOOLS_STREAM, piece=piece)[0] == whole


def test_crlf_upstream_gives_the_same_bytes_as_lf(fixed_ids: None, monkeypatch: pytest.MonkeyPatch) -> None:
    lf, _ = run(TEXT_STREAM)
    counter = itertools.count()
    monkeypatch.setattr(responses_chat, "_new_id", lambda prefix: f"{prefix}_{next(counter):04d}")
    crlf, stream = run(TEXT_STREAM.replace(b"\n", b"\r\n"), piece=3)
    assert crlf == lf and stream.complete


def test_length_finish_ends_with_response_incomplete() -> None:
    out, _ = run(chunk({"content": "Once upon"}) + chunk(finish="length") + usage_chunk() + DONE)
    sent = events(out)
    assert sent[-1]["type"] == "response.incomplete" and sent[-2]["item"]["status"] == "incomplete"
    response = Response.model_validate(sent[-1]["response"])
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"


def test_refusal_streams_as_refusal_events() -> None:
    out, _ = run(chunk({"refusal": "I can't"}) + chunk({"refusal": " help."}) + chunk(finish="stop") + DONE)
    sent = events(out)
    assert [e["type"] for e in sent[2:]] == [
        "response.output_item.added", "response.content_part.added", "response.refusal.delta",
        "response.refusal.delta", "response.refusal.done", "response.content_part.done",
        "response.output_item.done", "response.completed"]
    assert sent[6]["refusal"] == "I can't help."
    assert sent[-1]["response"]["output"][0]["content"] == [{"type": "refusal", "refusal": "I can't help."}]


def test_whole_tool_call_in_one_chunk_has_no_message_item() -> None:
    out, _ = run(chunk(tool_delta(0, '{"city":"Oslo"}', "call_z", "get_weather")) + chunk(finish="tool_calls") + DONE)
    sent = events(out)
    assert [e["type"] for e in sent[2:]] == [
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done", "response.completed"]
    assert [item["type"] for item in sent[-1]["response"]["output"]] == ["function_call"]


def test_upstream_error_ends_with_error_then_response_failed() -> None:
    failure = sse({"error": {"message": "The server is overloaded", "type": "server_error", "param": None,
                             "code": None}})
    out, stream = run(chunk({"content": "Hel"}) + failure + chunk({"content": "lo"}) + DONE)
    sent = events(out)
    assert [e["type"] for e in sent] == ["response.created", "response.in_progress", "response.output_item.added",
                                         "response.content_part.added", "response.output_text.delta", "error",
                                         "response.failed"]
    error = sent[5]
    assert (error["message"], error["code"], error["param"]) == ("The server is overloaded", "server_error", None)
    # The nested object is what makes the official SDKs raise instead of ending quietly.
    assert error["error"]["message"] == "The server is overloaded"
    failed = Response.model_validate(sent[6]["response"])
    assert failed.status == "failed" and failed.error.code == "server_error"
    assert failed.error.message == "The server is overloaded" and failed.output_text == "Hel"
    assert stream.error is not None


def test_rate_limit_error_fails_as_rate_limit_exceeded() -> None:
    failure = sse({"error": {"message": "Slow down", "type": "requests", "param": None, "code": "rate_limit_exceeded"}})
    sent = events(run(failure)[0])
    assert [e["type"] for e in sent] == ["response.created", "response.in_progress", "error", "response.failed"]
    assert sent[2]["code"] == "rate_limit_exceeded"
    assert sent[3]["response"]["error"] == {"code": "rate_limit_exceeded", "message": "Slow down"}


def test_stream_without_done_has_no_closing_event_until_failed() -> None:
    out, stream = run(chunk({"content": "Hel"}) + chunk({"content": "lo"}))
    sent = events(out)
    assert sent[-1]["type"] == "response.output_text.delta"
    assert not {"response.completed", "response.incomplete", "response.failed", "error"} & {e["type"] for e in sent}
    assert not stream.complete and stream.sequence_number == len(sent)
    tail = stream.fail("the upstream stream ended before completing", "upstream_stream_interrupted")
    failed = events(out + tail)[len(sent):]
    assert [e["type"] for e in failed] == ["error", "response.failed"]
    assert failed[0]["code"] == "upstream_stream_interrupted"
    assert Response.model_validate(failed[1]["response"]).output_text == "Hello"
    assert stream.fail("again", "x") == b""


def test_stream_error_event_for_the_relay() -> None:
    frame = stream_error_event("the upstream stream ended before completing", "upstream_stream_interrupted")
    head, data = frame.removesuffix(b"\n\n").split(b"\n")
    assert head == b"event: error"
    event = orjson.loads(data.removeprefix(b"data: "))
    STREAM_EVENT.validate_python(event)
    assert (event["type"], event["code"], event["sequence_number"]) == ("error", "upstream_stream_interrupted", 0)
    assert event["message"] == "the upstream stream ended before completing"
