"""The Anthropic Messages codec: validation, request and answer translation, both stream watchers.

Streams are checked against the official SDK's own event models (and its accumulator),
so what a Claude Code or Anthropic-SDK client would parse is what is asserted."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message, RawMessageStreamEvent
from anthropic.types.shared import ErrorResponse
from pydantic import TypeAdapter

from dataplane.errors import ApiError
from dataplane.providers.base import ErrorClass, Usage
from dataplane.providers.openai import OpenAIStream
from dataplane.translate.messages_chat import (
    AnthropicPassthroughStream,
    ChatToMessagesStream,
    chat_to_message,
    check_count_tokens_request,
    check_messages_request,
    estimate_input_tokens,
    messages_to_chat,
    passthrough_usage,
    stream_error_event,
)

STREAM_EVENT = TypeAdapter(RawMessageStreamEvent)
PNG = {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}
WEATHER = {"name": "get_weather", "description": "Weather for a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
HELLO = [{"role": "user", "content": "Hello"}]


def request(**fields: Any) -> dict[str, Any]:
    body = {"model": "claude-x", "max_tokens": 100, "messages": HELLO, **fields}
    return {k: v for k, v in body.items() if v is not None}


def tool_round(result: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """A user ask, the assistant's tool call, and the user's tool result."""
    return [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": [{"type": "text", "text": "Let me look."},
                                          {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                                           "input": {"city": "Paris"}}]},
        {"role": "user", "content": [result or {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}]},
    ]


# ================================================================ validation

BAD_REQUESTS = [
    pytest.param({"model": None}, "model", id="no-model"),
    pytest.param({"model": ""}, "model", id="empty-model"),
    pytest.param({"max_tokens": None}, "max_tokens", id="no-max-tokens"),
    pytest.param({"max_tokens": 0}, "max_tokens", id="max-tokens-zero"),
    pytest.param({"max_tokens": "100"}, "max_tokens", id="max-tokens-string"),
    pytest.param({"messages": None}, "messages", id="no-messages"),
    pytest.param({"messages": []}, "messages", id="empty-messages"),
    pytest.param({"messages": [{"role": "system", "content": "hi"}]}, "messages[0].role", id="system-role"),
    pytest.param({"messages": [{"content": "hi"}]}, "messages[0].role", id="no-role"),
    pytest.param({"messages": [{"role": "user"}]}, "messages[0].content", id="no-content"),
    pytest.param({"messages": [{"role": "user", "content": []}]}, "messages[0].content", id="empty-blocks"),
    pytest.param({"messages": [{"role": "user", "content": 7}]}, "messages[0].content", id="content-number"),
    pytest.param({"messages": [{"role": "user", "content": [{"type": "audio"}]}]},
                 "messages[0].content[0].type", id="unknown-block"),
    pytest.param({"messages": [{"role": "user", "content": [{"text": "no type"}]}]},
                 "messages[0].content[0].type", id="untyped-block"),
    pytest.param({"messages": [{"role": "user", "content": [{"type": "text"}]}]},
                 "messages[0].content[0].text", id="text-without-text"),
    pytest.param({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "see"},
        {"type": "image", "source": {**PNG, "media_type": "image/tiff"}}]}]},
        "messages[0].content[1].source.media_type", id="image-media-type"),
    pytest.param({"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "file"}}]}]},
                 "messages[0].content[0].source.type", id="image-source-type"),
    pytest.param({"messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png"}}]}]},
        "messages[0].content[0].source.data", id="image-without-data"),
    pytest.param({"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "url"}}]}]},
                 "messages[0].content[0].source.url", id="image-url-missing"),
    pytest.param({"messages": [{"role": "user", "content": [
        {"type": "document", "source": {"type": "base64", "media_type": "image/png", "data": "x"}}]}]},
        "messages[0].content[0].source.media_type", id="document-not-pdf"),
    pytest.param({"messages": [{"role": "user", "content": [
        {"type": "document", "source": {"type": "text", "media_type": "text/html", "data": "x"}}]}]},
        "messages[0].content[0].source.media_type", id="text-document-not-plain"),
    pytest.param({"messages": [{"role": "user", "content": [{"type": "document"}]}]},
                 "messages[0].content[0].source", id="document-without-source"),
    pytest.param({"messages": [{"role": "assistant", "content": [
        {"type": "tool_use", "id": "t1", "name": "f", "input": "{}"}]}]},
        "messages[0].content[0].input", id="tool-use-input-string"),
    pytest.param({"messages": [{"role": "assistant", "content": [{"type": "tool_use", "name": "f", "input": {}}]}]},
                 "messages[0].content[0].id", id="tool-use-without-id"),
    pytest.param({"messages": [{"role": "user", "content": [
        {"type": "tool_use", "id": "t1", "name": "f", "input": {}}]}]},
        "messages[0].content[0].type", id="tool-use-in-user-turn"),
    pytest.param({"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "nope"}]}]},
                 "messages[0].content[0].tool_use_id", id="tool-result-without-call"),
    pytest.param({"messages": tool_round({"type": "tool_result", "tool_use_id": "toolu_1", "is_error": "yes"})},
                 "messages[2].content[0].is_error", id="tool-result-is-error"),
    pytest.param({"messages": tool_round({"type": "tool_result", "tool_use_id": "toolu_1",
                                          "content": [{"type": "document", "source": PNG}]})},
                 "messages[2].content[0].content[0].type", id="tool-result-document"),
    pytest.param({"messages": tool_round({"type": "tool_result", "tool_use_id": "toolu_1",
                                          "content": [{"type": "image", "source": {**PNG, "media_type": "x/y"}}]})},
                 "messages[2].content[0].content[0].source.media_type", id="tool-result-image-media-type"),
    pytest.param({"messages": [{"role": "assistant", "content": [{"type": "thinking", "thinking": "hm"}]}]},
                 "messages[0].content[0].signature", id="thinking-without-signature"),
    pytest.param({"system": 5}, "system", id="system-number"),
    pytest.param({"system": [{"type": "image", "source": PNG}]}, "system[0].type", id="system-image"),
    pytest.param({"temperature": "hot"}, "temperature", id="temperature-string"),
    pytest.param({"temperature": 1.5}, "temperature", id="temperature-above-1"),
    pytest.param({"top_p": -0.1}, "top_p", id="top-p"),
    pytest.param({"top_k": -1}, "top_k", id="top-k"),
    pytest.param({"stop_sequences": "END"}, "stop_sequences", id="stop-string"),
    pytest.param({"stop_sequences": ["END", 3]}, "stop_sequences[1]", id="stop-number"),
    pytest.param({"stream": "yes"}, "stream", id="stream"),
    pytest.param({"metadata": {"user_id": 42}}, "metadata.user_id", id="metadata-user-id"),
    pytest.param({"metadata": "me"}, "metadata", id="metadata-string"),
    pytest.param({"tools": {"name": "x"}}, "tools", id="tools-object"),
    pytest.param({"tools": [{"name": "x"}]}, "tools[0].input_schema", id="tool-without-schema"),
    pytest.param({"tools": [{**WEATHER, "name": "get weather"}]}, "tools[0].name", id="tool-name-space"),
    pytest.param({"tools": [{**WEATHER, "name": "x" * 65}]}, "tools[0].name", id="tool-name-long"),
    pytest.param({"tools": [{**WEATHER, "description": 1}]}, "tools[0].description", id="tool-description"),
    pytest.param({"tools": [{**WEATHER, "input_schema": "object"}]}, "tools[0].input_schema", id="tool-schema"),
    pytest.param({"tools": [{"type": "web_search_20250305"}]}, "tools[0].name", id="server-tool-without-name"),
    pytest.param({"tools": [WEATHER], "tool_choice": {"type": "tool", "name": "search"}}, "tool_choice.name",
                 id="tool-choice-undeclared"),
    pytest.param({"tools": [WEATHER], "tool_choice": {"type": "tool"}}, "tool_choice.name",
                 id="tool-choice-without-name"),
    pytest.param({"tool_choice": {"type": "sometimes"}}, "tool_choice.type", id="tool-choice-type"),
    pytest.param({"tool_choice": "auto"}, "tool_choice", id="tool-choice-string"),
    pytest.param({"tools": [WEATHER], "tool_choice": {"type": "any", "disable_parallel_tool_use": 1}},
                 "tool_choice.disable_parallel_tool_use", id="disable-parallel"),
    pytest.param({"thinking": {"type": "enabled", "budget_tokens": 100}, "max_tokens": 4000},
                 "thinking.budget_tokens", id="thinking-budget-small"),
    pytest.param({"thinking": {"type": "enabled", "budget_tokens": 2048}, "max_tokens": 2048},
                 "thinking.budget_tokens", id="thinking-budget-max-tokens"),
    pytest.param({"thinking": {"type": "enabled"}}, "thinking.budget_tokens", id="thinking-no-budget"),
    pytest.param({"thinking": {"type": "sometimes"}}, "thinking.type", id="thinking-type"),
    pytest.param({"service_tier": 1}, "service_tier", id="service-tier"),
]


@pytest.mark.parametrize(("fields", "param"), BAD_REQUESTS)
def test_a_bad_request_is_a_400_naming_the_field(fields, param):
    with pytest.raises(ApiError) as caught:
        check_messages_request(request(**fields))
    assert caught.value.status == 400
    assert caught.value.param == param
    assert caught.value.type == "invalid_request_error"


def test_an_unknown_block_type_is_named_in_the_message():
    with pytest.raises(ApiError) as caught:
        check_messages_request(request(messages=[{"role": "user", "content": [{"type": "audio"}]}]))
    assert "'audio'" in caught.value.message


def test_a_body_that_is_not_an_object_is_a_400():
    with pytest.raises(ApiError) as caught:
        check_messages_request([])  # type: ignore[arg-type]
    assert caught.value.status == 400


GOOD_REQUESTS = [
    pytest.param({}, id="minimal"),
    pytest.param({"system": "Be brief.", "temperature": 0, "top_p": 1, "top_k": 5, "stop_sequences": ["END"],
                  "stream": True, "metadata": {"user_id": "u-1"}, "service_tier": "auto"}, id="sampling"),
    pytest.param({"system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]},
                 id="system-blocks"),
    pytest.param({"messages": tool_round(), "tools": [WEATHER],
                  "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True}},
                 id="tool-round"),
    pytest.param({"messages": tool_round({"type": "tool_result", "tool_use_id": "toolu_1", "is_error": True,
                                          "content": [{"type": "text", "text": "boom"},
                                                      {"type": "image", "source": PNG}]})}, id="tool-result-blocks"),
    pytest.param({"messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}},
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "notes"}},
        {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}},
        {"type": "text", "text": "Compare them."}]}]}, id="media"),
    pytest.param({"messages": [HELLO[0], {"role": "assistant", "content": [
        {"type": "thinking", "thinking": "hm", "signature": "sig"},
        {"type": "redacted_thinking", "data": "opaque"}, {"type": "text", "text": "Hi"}]}],
        "thinking": {"type": "enabled", "budget_tokens": 1024}, "max_tokens": 2048}, id="thinking"),
    pytest.param({"thinking": {"type": "disabled"}}, id="thinking-disabled"),
    pytest.param({"tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
                            {**WEATHER, "type": "custom"}],
                  "tool_choice": {"type": "tool", "name": "web_search"}}, id="server-tool"),
    pytest.param({"tool_choice": {"type": "none"}, "tools": [WEATHER]}, id="tool-choice-none"),
    pytest.param({"anthropic_beta_field": {"anything": True}, "container": "c-1"}, id="unknown-fields"),
]


@pytest.mark.parametrize("fields", GOOD_REQUESTS)
def test_a_good_request_passes(fields):
    check_messages_request(request(**fields))


def test_count_tokens_needs_no_max_tokens():
    body = {"model": "claude-x", "messages": HELLO, "tools": [WEATHER]}
    check_count_tokens_request(body)
    with pytest.raises(ApiError) as caught:
        check_messages_request(body)
    assert caught.value.param == "max_tokens"
    with pytest.raises(ApiError) as caught:
        check_count_tokens_request({"model": "claude-x"})
    assert caught.value.param == "messages"


# ================================================================ request: Messages -> chat

def test_minimal_request():
    assert messages_to_chat(request()) == {"model": "claude-x", "max_tokens": 100,
                                           "messages": [{"role": "user", "content": "Hello"}]}


def test_system_string_and_blocks_lead():
    chat = messages_to_chat(request(system="Be brief."))
    assert chat["messages"][0] == {"role": "system", "content": "Be brief."}
    chat = messages_to_chat(request(system=[{"type": "text", "text": "One.", "cache_control": {"type": "ephemeral"}},
                                            {"type": "text", "text": "Two."}]))
    assert chat["messages"] == [{"role": "system", "content": "One.\n\nTwo."}, {"role": "user", "content": "Hello"}]
    assert messages_to_chat(request(system=""))["messages"] == [{"role": "user", "content": "Hello"}]


def test_images_and_documents_become_parts():
    content = [
        {"type": "text", "text": "Look:", "cache_control": {"type": "ephemeral"}},
        {"type": "image", "source": PNG},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="},
         "title": "Report"},
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "plain notes"}},
    ]
    chat = messages_to_chat(request(messages=[{"role": "user", "content": content}]))
    assert chat["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "Look:"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
        {"type": "file", "file": {"filename": "document.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}},
        {"type": "text", "text": "plain notes"},
    ]}]


def test_a_turn_of_one_text_block_is_a_string():
    one = [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]
    assert messages_to_chat(request(messages=one))["messages"] == [{"role": "user", "content": "Hi"}]
    two = [{"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "there"}]}]
    assert messages_to_chat(request(messages=two))["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "there"}]}]


def test_a_document_url_cannot_reach_another_backend():
    content = [{"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}}]
    with pytest.raises(ApiError) as caught:
        messages_to_chat(request(messages=[{"role": "user", "content": content}]))
    assert (caught.value.status, caught.value.param) == (400, "messages[0].content[0].source.type")


def test_tool_round_keeps_ids_and_puts_results_first():
    messages = tool_round()
    messages[2]["content"] = [{"type": "text", "text": "Also, thanks."}, *messages[2]["content"],
                              {"type": "tool_result", "tool_use_id": "toolu_1", "content": "still sunny"}]
    chat = messages_to_chat(request(messages=messages, tools=[WEATHER]))
    assert chat["messages"] == [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "Let me look.", "tool_calls": [
            {"id": "toolu_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "still sunny"},
        {"role": "user", "content": "Also, thanks."},
    ]
    assert chat["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather for a city", "parameters": WEATHER["input_schema"]}}]


def test_an_assistant_turn_of_only_tool_calls_has_null_content():
    messages = tool_round()
    messages[1]["content"] = messages[1]["content"][1:]
    (_, assistant, tool) = messages_to_chat(request(messages=messages))["messages"]
    assert assistant["content"] is None and assistant["tool_calls"][0]["id"] == "toolu_1"
    assert tool == {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"}


def test_tool_result_blocks_errors_and_images():
    result = {"type": "tool_result", "tool_use_id": "toolu_1", "is_error": True,
              "content": [{"type": "text", "text": "city not found"}, {"type": "image", "source": PNG},
                          {"type": "text", "text": "try another"}]}
    chat = messages_to_chat(request(messages=tool_round(result)))
    assert chat["messages"][2:] == [
        {"role": "tool", "tool_call_id": "toolu_1", "content": "Error: city not found\n\ntry another"},
        # Chat tool messages hold text only: the result's image follows as user content.
        {"role": "user", "content": [{"type": "image_url",
                                      "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]},
    ]
    empty = messages_to_chat(request(messages=tool_round({"type": "tool_result", "tool_use_id": "toolu_1"})))
    assert empty["messages"][2] == {"role": "tool", "tool_call_id": "toolu_1", "content": ""}


def test_thinking_blocks_are_dropped_and_budget_sets_effort():
    messages = [HELLO[0], {"role": "assistant", "content": [
        {"type": "thinking", "thinking": "secret", "signature": "sig"},
        {"type": "redacted_thinking", "data": "opaque"},
        {"type": "text", "text": "Hi!"}]},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "only", "signature": "s"}]},
        {"role": "user", "content": "More"}]
    chat = messages_to_chat(request(messages=messages, max_tokens=64000,
                                    thinking={"type": "enabled", "budget_tokens": 1024}))
    assert chat["messages"] == [HELLO[0], {"role": "assistant", "content": "Hi!"}, {"role": "user", "content": "More"}]
    for budget, effort in ((1024, "low"), (4095, "low"), (4096, "medium"), (16383, "medium"), (16384, "high"),
                           (32000, "high")):
        thinking = {"type": "enabled", "budget_tokens": budget}
        assert messages_to_chat(request(max_tokens=64000, thinking=thinking))["reasoning_effort"] == effort
    assert "reasoning_effort" not in messages_to_chat(request(thinking={"type": "disabled"}))


@pytest.mark.parametrize(("choice", "expected"), [
    ({"type": "auto"}, {"tool_choice": "auto"}),
    ({"type": "any"}, {"tool_choice": "required"}),
    ({"type": "none"}, {"tool_choice": "none"}),
    ({"type": "tool", "name": "get_weather"},
     {"tool_choice": {"type": "function", "function": {"name": "get_weather"}}}),
    ({"type": "any", "disable_parallel_tool_use": True}, {"tool_choice": "required", "parallel_tool_calls": False}),
    ({"type": "auto", "disable_parallel_tool_use": False}, {"tool_choice": "auto"}),
])
def test_tool_choice(choice, expected):
    chat = messages_to_chat(request(tools=[WEATHER], tool_choice=choice))
    assert {k: chat[k] for k in ("tool_choice", "parallel_tool_calls") if k in chat} == expected


def test_tool_choice_without_tools_is_left_out():
    chat = messages_to_chat(request(tool_choice={"type": "auto", "disable_parallel_tool_use": True}))
    assert "tool_choice" not in chat and "parallel_tool_calls" not in chat and "tools" not in chat


def test_server_tools_are_refused_naming_the_type():
    tools = [WEATHER, {"type": "web_search_20250305", "name": "web_search"}]
    with pytest.raises(ApiError) as caught:
        messages_to_chat(request(tools=tools))
    assert (caught.value.status, caught.value.param) == (400, "tools[1].type")
    assert "web_search_20250305" in caught.value.message
    custom = messages_to_chat(request(tools=[{**WEATHER, "type": "custom"}]))
    assert custom["tools"][0]["function"]["name"] == "get_weather"


def test_sampling_stop_user_stream():
    chat = messages_to_chat(request(temperature=0.3, top_p=0.9, top_k=40, stop_sequences=["END", "STOP"],
                                    metadata={"user_id": "u-1"}, stream=True, service_tier="standard_only"))
    assert chat == {"model": "claude-x", "max_tokens": 100, "messages": [{"role": "user", "content": "Hello"}],
                    "temperature": 0.3, "top_p": 0.9, "stop": ["END", "STOP"], "user": "u-1",
                    "stream": True, "stream_options": {"include_usage": True}}
    assert "stop" not in messages_to_chat(request(stop_sequences=[]))
    with pytest.raises(ApiError) as caught:
        messages_to_chat(request(stop_sequences=["a", "b", "c", "d", "e"]))
    assert caught.value.param == "stop_sequences"


def test_images_in_an_assistant_turn_cannot_be_translated():
    messages = [HELLO[0], {"role": "assistant", "content": [{"type": "image", "source": PNG}]}]
    with pytest.raises(ApiError) as caught:
        messages_to_chat(request(messages=messages))
    assert caught.value.param == "messages[1].content[0].type"


def test_the_payload_is_not_mutated():
    payload = request(
        system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "Look", "cache_control": {"type": "ephemeral"}},
                                         {"type": "image", "source": PNG},
                                         {"type": "image", "source": {"type": "url", "url": "https://e.com/a.png"}},
                                         {"type": "document", "source": {"type": "base64",
                                                                         "media_type": "application/pdf",
                                                                         "data": "JVBERi0="}},
                                         {"type": "document", "source": {"type": "text", "media_type": "text/plain",
                                                                         "data": "notes"}}]},
            {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm", "signature": "s"},
                                              {"type": "text", "text": "Calling"},
                                              {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                                               "input": {"city": "Paris"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "is_error": True,
                                          "content": [{"type": "text", "text": "no"},
                                                      {"type": "image", "source": PNG}]},
                                         {"type": "text", "text": "Retry"}]},
        ],
        max_tokens=8000, temperature=0.5, top_p=0.9, top_k=10, stop_sequences=["END"],
        metadata={"user_id": "u"}, stream=True, tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
        thinking={"type": "enabled", "budget_tokens": 2048}, service_tier="auto", container="c",
    )
    check_messages_request(payload)
    before = copy.deepcopy(payload)
    chat = messages_to_chat(payload)
    assert payload == before
    # The translation is independent of the payload at every level it builds.
    chat["messages"][1]["content"][0]["text"] = "changed"
    chat["tools"][0]["function"]["name"] = "changed"
    chat["stop"].append("more")
    assert payload == before
    assert {"user", "stream_options", "reasoning_effort", "parallel_tool_calls"} <= set(chat)


# ================================================================ response: chat -> Messages

def completion(message: dict[str, Any], finish: str = "stop", usage: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"id": "chatcmpl-abc", "object": "chat.completion", "created": 1, "model": "gpt-x",
            "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}],
            "usage": usage or {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}}


def test_text_answer():
    message = chat_to_message(completion({"content": "Hello!"}), "claude-x")
    assert message == {"id": "msg_abc", "type": "message", "role": "assistant", "model": "claude-x",
                       "content": [{"type": "text", "text": "Hello!"}], "stop_reason": "end_turn",
                       "stop_sequence": None,
                       "usage": {"input_tokens": 12, "output_tokens": 5, "cache_creation_input_tokens": 0,
                                 "cache_read_input_tokens": 0}}
    Message.model_validate(message)


def test_tool_calls_answer():
    calls = [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
             {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": ""}},
             {"id": "call_3", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Ro'}},
             {"id": "call_4", "type": "function", "function": {"name": "get_weather", "arguments": "[1]"}}]
    message = chat_to_message(completion({"content": "Checking.", "tool_calls": calls}, "tool_calls"), "claude-x")
    assert message["content"] == [
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_2", "name": "get_time", "input": {}},
        # Broken JSON (or JSON that is not an object) reaches the caller's tool as written.
        {"type": "tool_use", "id": "call_3", "name": "get_weather", "input": {"_raw": '{"city": "Ro'}},
        {"type": "tool_use", "id": "call_4", "name": "get_weather", "input": {"_raw": "[1]"}},
    ]
    assert message["stop_reason"] == "tool_use"
    Message.model_validate(message)
    only_calls = chat_to_message(completion({"content": None, "tool_calls": calls[:1]}, "tool_calls"), "m")
    assert [block["type"] for block in only_calls["content"]] == ["tool_use"]


@pytest.mark.parametrize(("finish", "reason"), [
    ("stop", "end_turn"), ("length", "max_tokens"), ("tool_calls", "tool_use"), ("content_filter", "refusal"),
    ("function_call", "tool_use"), (None, "end_turn"), ("something_new", "end_turn"),
])
def test_finish_reasons(finish, reason):
    assert chat_to_message(completion({"content": "x"}, finish), "m")["stop_reason"] == reason


def test_a_stop_with_tool_calls_is_tool_use():
    calls = [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    assert chat_to_message(completion({"content": None, "tool_calls": calls}, "stop"), "m")["stop_reason"] == "tool_use"


def test_usage_with_cached_tokens():
    usage = {"prompt_tokens": 1000, "completion_tokens": 50, "total_tokens": 1050,
             "prompt_tokens_details": {"cached_tokens": 800}}
    message = chat_to_message(completion({"content": "x"}, usage=usage), "m")
    assert message["usage"] == {"input_tokens": 200, "output_tokens": 50, "cache_creation_input_tokens": 0,
                                "cache_read_input_tokens": 800}


def test_empty_and_odd_answers_are_still_messages():
    empty = chat_to_message(completion({"content": ""}), "m")
    assert empty["content"] == [] and empty["stop_reason"] == "end_turn"
    refusal = chat_to_message(completion({"content": None, "refusal": "I can't."}, "content_filter"), "m")
    assert refusal["content"] == [{"type": "text", "text": "I can't."}] and refusal["stop_reason"] == "refusal"
    in_parts = {"content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
    parts = chat_to_message(completion(in_parts), "m")
    assert parts["content"] == [{"type": "text", "text": "ab"}]
    bare = chat_to_message({"choices": []}, "m")
    assert bare["id"].startswith("msg_") and bare["content"] == [] and bare["usage"]["input_tokens"] == 0
    for message in (empty, refusal, parts, bare):
        Message.model_validate(message)


# ================================================================ stream: chat SSE -> Messages events

def sse(chunk: dict[str, Any] | str) -> bytes:
    return b"data: " + (chunk.encode() if isinstance(chunk, str) else orjson.dumps(chunk)) + b"\n\n"


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None) -> bytes:
    return sse({"id": "chatcmpl-s1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-x",
                "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}]})


def usage_chunk(prompt: int = 20, completion: int = 7, cached: int = 0) -> bytes:
    return sse({"id": "chatcmpl-s1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-x",
                "choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                                         "total_tokens": prompt + completion,
                                         "prompt_tokens_details": {"cached_tokens": cached}}})


def call(index: int, id_: str | None = None, name: str | None = None, arguments: str = "") -> dict[str, Any]:
    function: dict[str, Any] = {"arguments": arguments}
    entry: dict[str, Any] = {"index": index, "function": function}
    if id_:
        entry.update(id=id_, type="function")
        function["name"] = name
    return {"tool_calls": [entry]}


TEXT_STREAM = (chunk({"role": "assistant", "content": ""}) + chunk({"content": "Hel"}) + chunk({"content": "lo"})
               + chunk(finish="stop") + usage_chunk(cached=5) + b"data: [DONE]\n\n")
TOOLS_STREAM = (chunk({"role": "assistant", "content": ""}) + chunk({"content": "Checking both."})
                + chunk(call(0, "call_a", "get_weather")) + chunk(call(0, arguments='{"city":'))
                + chunk(call(0, arguments='"Paris"}')) + chunk(call(1, "call_b", "get_time", '{"tz":"CET"}'))
                + chunk(finish="tool_calls") + usage_chunk() + b"data: [DONE]\n\n")


def translate(data: bytes, pieces: int = 0) -> tuple[bytes, ChatToMessagesStream]:
    """The translator's whole output for `data`, fed at once or in pieces of `pieces` bytes."""
    stream = ChatToMessagesStream(OpenAIStream(include_usage=True), "claude-x")
    size = pieces or len(data) or 1
    out = b"".join(stream.feed(data[i:i + size]) for i in range(0, len(data), size))
    return out + stream.finish(), stream


def events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) per frame, each validated with the official SDK's models."""
    assert raw.endswith(b"\n\n")
    parsed = []
    for frame in raw[:-2].split(b"\n\n"):
        name_line, data_line = frame.split(b"\n")
        assert name_line.startswith(b"event: ") and data_line.startswith(b"data: ")
        name, data = name_line[7:].decode(), orjson.loads(data_line[6:])
        assert data["type"] == name
        if name == "ping":
            assert data == {"type": "ping"}
        elif name == "error":
            ErrorResponse.model_validate(data)
        else:
            STREAM_EVENT.validate_python(data)
        parsed.append((name, data))
    return parsed


def final_message(parsed: list[tuple[str, dict[str, Any]]]) -> Message:
    """The message the SDK's own accumulator builds from the events."""
    snapshot, buffers = None, {}
    for name, data in parsed:
        if name not in ("ping", "error"):
            snapshot = accumulate_event(event=STREAM_EVENT.validate_python(data), current_snapshot=snapshot,
                                        json_bufs=buffers)
    assert snapshot is not None
    return snapshot


def test_text_stream_event_sequence():
    raw, stream = translate(TEXT_STREAM)
    parsed = events(raw)
    assert [name for name, _ in parsed] == [
        "message_start", "ping", "content_block_start", "content_block_delta", "content_block_delta",
        "content_block_stop", "message_delta", "message_stop"]
    start = parsed[0][1]["message"]
    assert start["id"] == "msg_s1" and start["model"] == "claude-x" and start["content"] == []
    assert start["stop_reason"] is None and start["usage"]["output_tokens"] == 0
    assert parsed[2][1] == {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    assert parsed[3][1] == {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}}
    assert parsed[5][1] == {"type": "content_block_stop", "index": 0}
    assert parsed[6][1] == {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                            "usage": {"input_tokens": 15, "output_tokens": 7, "cache_creation_input_tokens": 0,
                                      "cache_read_input_tokens": 5}}
    message = final_message(parsed)
    assert message.content[0].text == "Hello" and message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (15, 7)
    assert stream.complete and stream.error is None
    assert stream.usage == Usage(20, 7, 5)


def test_text_and_two_tool_calls():
    raw, stream = translate(TOOLS_STREAM)
    parsed = events(raw)
    assert [(name, data.get("index")) for name, data in parsed] == [
        ("message_start", None), ("ping", None),
        ("content_block_start", 0), ("content_block_delta", 0), ("content_block_stop", 0),
        ("content_block_start", 1), ("content_block_delta", 1), ("content_block_delta", 1),
        ("content_block_stop", 1),
        ("content_block_start", 2), ("content_block_delta", 2), ("content_block_stop", 2),
        ("message_delta", None), ("message_stop", None)]
    assert parsed[5][1]["content_block"] == {"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {}}
    assert parsed[6][1]["delta"] == {"type": "input_json_delta", "partial_json": '{"city":'}
    assert parsed[-2][1]["delta"]["stop_reason"] == "tool_use"
    message = final_message(parsed)
    assert [block.type for block in message.content] == ["text", "tool_use", "tool_use"]
    assert message.content[1].input == {"city": "Paris"} and message.content[2].input == {"tz": "CET"}
    assert message.content[2].id == "call_b" and message.stop_reason == "tool_use"
    assert stream.complete


def test_a_stream_answers_what_the_json_path_answers():
    calls = [{"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
             {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": '{"tz":"CET"}'}}]
    body = completion({"content": "Checking both.", "tool_calls": calls}, "tool_calls",
                      {"prompt_tokens": 20, "completion_tokens": 7, "total_tokens": 27})
    expected = chat_to_message(body, "claude-x")
    streamed = final_message(events(translate(TOOLS_STREAM)[0])).to_dict()
    for field in ("content", "stop_reason", "stop_sequence", "role", "model", "type"):
        assert streamed[field] == expected[field], field
    assert streamed["usage"] == expected["usage"]


@pytest.mark.parametrize("data", [TEXT_STREAM, TOOLS_STREAM], ids=["text", "tools"])
def test_byte_by_byte_and_crlf_give_the_same_output(data):
    whole, _ = translate(data)
    assert translate(data, pieces=1)[0] == whole
    assert translate(data, pieces=7)[0] == whole
    assert translate(data.replace(b"\n", b"\r\n"), pieces=1)[0] == whole
    assert translate(data.replace(b"\n", b"\r\n"))[0] == whole


def test_an_error_mid_stream_is_an_error_event_and_the_end():
    data = (chunk({"role": "assistant", "content": ""}) + chunk({"content": "Hel"})
            + sse({"error": {"message": "upstream overloaded", "type": "server_error", "code": None}})
            + chunk({"content": "never"}) + b"data: [DONE]\n\n")
    raw, stream = translate(data)
    parsed = events(raw)
    assert [name for name, _ in parsed] == ["message_start", "ping", "content_block_start", "content_block_delta",
                                            "error"]
    assert parsed[-1][1] == {"type": "error", "error": {"type": "api_error", "message": "upstream overloaded"}}
    assert stream.error is not None and stream.error.error_class == ErrorClass.RETRYABLE
    assert translate(data, pieces=1)[0] == raw


def test_an_error_event_is_typed_by_the_inner_error_class():
    class Inner(OpenAIStream):
        """A chat translator whose upstream was rate-limited."""

        def feed(self, data: bytes) -> bytes:
            out = super().feed(data)
            if self.error is not None:
                self.error.error_class = ErrorClass.RATE_LIMITED
            return out

    stream = ChatToMessagesStream(Inner(include_usage=True), "claude-x")
    out = stream.feed(sse({"error": {"message": "slow down"}})) + stream.finish()
    assert events(out) == [("error", {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}})]


def test_a_stream_without_done_has_no_message_stop():
    raw, stream = translate(TEXT_STREAM.removesuffix(b"data: [DONE]\n\n"))
    names = [name for name, _ in events(raw)]
    assert names == ["message_start", "ping", "content_block_start", "content_block_delta", "content_block_delta",
                     "content_block_stop"]
    assert not stream.complete and stream.error is None
    cut, _ = translate(chunk({"content": "Hel"}) + b'data: {"id":"chatcmpl-s1","cho')
    assert [name for name, _ in events(cut)] == ["message_start", "ping", "content_block_start",
                                                 "content_block_delta"]


def test_an_empty_answer_is_still_a_whole_message():
    raw, _ = translate(chunk({"role": "assistant", "content": ""}) + chunk(finish="length") + b"data: [DONE]\n\n")
    parsed = events(raw)
    assert [name for name, _ in parsed] == ["message_start", "ping", "message_delta", "message_stop"]
    assert parsed[2][1]["delta"]["stop_reason"] == "max_tokens"


def test_stream_error_event():
    raw = stream_error_event("upstream went away")
    assert raw == (b'event: error\ndata: {"type":"error","error":{"type":"api_error",'
                   b'"message":"upstream went away"}}\n\n')
    assert events(stream_error_event("late", "overloaded_error"))[0][1]["error"]["type"] == "overloaded_error"


# ================================================================ native pass-through

def anthropic_frame(data: dict[str, Any]) -> bytes:
    return b"event: " + data["type"].encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


NATIVE_FRAMES = [
    anthropic_frame({"type": "message_start", "message": {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x", "content": [],
        "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 30, "output_tokens": 1, "cache_creation_input_tokens": 4,
                  "cache_read_input_tokens": 100, "cache_creation": {"ephemeral_5m_input_tokens": 4}}}}),
    anthropic_frame({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    anthropic_frame({"type": "ping"}),
    anthropic_frame({"type": "content_block_delta", "index": 0,
                     "delta": {"type": "text_delta", "text": "an \"error\" about message_stop"}}),
    b": keep-alive comment\n\n",
    anthropic_frame({"type": "content_block_stop", "index": 0}),
    anthropic_frame({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                     "usage": {"output_tokens": 12}}),
    anthropic_frame({"type": "message_stop"}),
]
NATIVE = b"".join(NATIVE_FRAMES)


def relay(data: bytes, pieces: int = 0) -> tuple[bytes, AnthropicPassthroughStream]:
    stream = AnthropicPassthroughStream()
    size = pieces or len(data) or 1
    out = b"".join(stream.feed(data[i:i + size]) for i in range(0, len(data), size))
    return out + stream.finish(), stream


def test_passthrough_relays_the_frames_and_reads_usage():
    out, stream = relay(NATIVE)
    assert out == NATIVE
    assert stream.complete and stream.error is None
    # Anthropic's input excludes cache writes and reads; prompt tokens include both.
    assert stream.usage == Usage(prompt_tokens=134, completion_tokens=12, cached_prompt_tokens=100)


def test_passthrough_emits_whole_frames_only():
    stream = AnthropicPassthroughStream()
    first, second = NATIVE_FRAMES[0], NATIVE_FRAMES[1]
    assert stream.feed(first[:40]) == b""
    assert stream.feed(first[40:] + second[:10]) == first
    assert stream.usage.prompt_tokens == 134
    assert stream.feed(second[10:]) == second


@pytest.mark.parametrize("pieces", [1, 3, 64])
def test_passthrough_split_anywhere(pieces):
    out, stream = relay(NATIVE, pieces)
    assert out == NATIVE and stream.complete and stream.usage == Usage(134, 12, 100)


def test_passthrough_normalises_crlf():
    out, stream = relay(NATIVE.replace(b"\n", b"\r\n"), pieces=1)
    assert out == NATIVE and stream.complete and stream.usage == Usage(134, 12, 100)


def test_passthrough_message_delta_may_carry_input_counts():
    data = NATIVE_FRAMES[0] + anthropic_frame({
        "type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"input_tokens": 31, "output_tokens": 9, "cache_read_input_tokens": 100}})
    _, stream = relay(data)
    assert stream.usage == Usage(135, 9, 100) and not stream.complete


def test_passthrough_error_event():
    error = anthropic_frame({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    out, stream = relay(NATIVE_FRAMES[0] + NATIVE_FRAMES[1] + error)
    assert out == NATIVE_FRAMES[0] + NATIVE_FRAMES[1] + error
    assert not stream.complete
    assert stream.error is not None and stream.error.error_class == ErrorClass.RETRYABLE
    assert (stream.error.status, stream.error.code, stream.error.message) == (529, "overloaded_error", "Overloaded")


def test_passthrough_last_frame_without_blank_line():
    out, stream = relay(NATIVE.removesuffix(b"\n\n"))
    assert out == NATIVE and stream.complete


def test_passthrough_usage_of_a_json_answer():
    body = orjson.dumps({"id": "msg_1", "type": "message", "usage": {
        "input_tokens": 10, "output_tokens": 3, "cache_creation_input_tokens": 2, "cache_read_input_tokens": 5}})
    assert passthrough_usage(body) == Usage(17, 3, 5)
    assert passthrough_usage(b"not json") == Usage()
    assert passthrough_usage(b"[1, 2]") == Usage()


# ================================================================ count_tokens estimate

def test_estimate_input_tokens():
    assert estimate_input_tokens(request(messages=[{"role": "user", "content": "x" * 400}])) == 100 + 4
    with_system = request(system=[{"type": "text", "text": "y" * 40}],
                          messages=[{"role": "user", "content": "x" * 400}])
    assert estimate_input_tokens(with_system) == 110 + 8
    media = [{"role": "user", "content": [{"type": "image", "source": PNG},
                                          {"type": "document", "source": {"type": "text", "media_type": "text/plain",
                                                                          "data": "d"}},
                                          {"type": "text", "text": "x" * 40}]}]
    assert estimate_input_tokens(request(messages=media)) == 10 + 2 * 85 + 4
    tools_round = estimate_input_tokens(request(messages=tool_round(), tools=[WEATHER]))
    assert tools_round == ((len("Weather in Paris?") + len("Let me look.") + len("get_weather")
                            + len('{"city":"Paris"}') + len("sunny") + len(orjson.dumps([WEATHER]))) // 4 + 3 * 4)
    result = {"type": "tool_result", "tool_use_id": "toolu_1",
              "content": [{"type": "text", "text": "z" * 80}, {"type": "image", "source": PNG}]}
    assert estimate_input_tokens(request(messages=tool_round(result))) > tools_round - len(orjson.dumps([WEATHER])) // 4


def test_tool_calls_without_an_index_are_told_apart_by_id():
    def bare(id_: str | None, name: str | None, arguments: str) -> bytes:
        entry: dict[str, Any] = {"function": {"arguments": arguments}}
        if id_:
            entry.update(id=id_, type="function")
            entry["function"]["name"] = name
        return chunk({"tool_calls": [entry]})

    data = (bare("call_a", "f", '{"x":') + bare(None, None, "1}") + bare("call_b", "g", "{}")
            + bare("call_b", "g", "") + chunk(finish="tool_calls") + b"data: [DONE]\n\n")
    message = final_message(events(translate(data)[0]))
    assert [(block.id, block.name, block.input) for block in message.content] == [
        ("call_a", "f", {"x": 1}), ("call_b", "g", {})]
