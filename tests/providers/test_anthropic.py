"""The Anthropic adapter: request, response and stream translation; error classes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from dataplane.errors import ApiError
from dataplane.providers import anthropic_stream
from dataplane.providers.anthropic import DEFAULT_MAX_TOKENS, AnthropicAdapter
from dataplane.providers.base import ErrorClass

ADAPTER = AnthropicAdapter()
FIXTURES = Path(__file__).parent / "fixtures" / "anthropic"
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


def _fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def _body(**payload: Any) -> dict[str, Any]:
    payload.setdefault("model", "claude")
    payload.setdefault("messages", [{"role": "user", "content": "Hi"}])
    return orjson.loads(ADAPTER.chat_request(payload, "claude-sonnet-4-5"))


def _rejected(**payload: Any) -> ApiError:
    with pytest.raises(ApiError) as caught:
        _body(**payload)
    assert caught.value.status == 400
    return caught.value


# --- addressing -----------------------------------------------------------------


def test_headers_and_url() -> None:
    assert ADAPTER.auth_headers("sk-ant-x") == {"x-api-key": "sk-ant-x", "anthropic-version": "2023-06-01"}
    assert ADAPTER.auth_headers(None) == {"anthropic-version": "2023-06-01"}
    assert ADAPTER.chat_url("https://api.anthropic.com/v1", {}, "claude-x", True) == "https://api.anthropic.com/v1/messages"
    assert (ADAPTER.kind, ADAPTER.supports_embeddings) == ("anthropic", False)


def test_embeddings_are_refused() -> None:
    with pytest.raises(ApiError) as caught:
        ADAPTER.embeddings_request("https://api.anthropic.com/v1", {}, {"input": "x"}, "claude")
    assert caught.value.status == 400 and "embeddings" in caught.value.message


# --- request translation ----------------------------------------------------------


def test_system_and_developer_messages_become_top_level_system() -> None:
    body = _body(messages=[
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "Hi"},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
        {"role": "assistant", "content": "Salut."},
        {"role": "user", "content": "Encore?"},
    ])
    assert body["system"] == [{"type": "text", "text": "Be terse."}, {"type": "text", "text": "Answer in French."}]
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["model"] == "claude-sonnet-4-5"
    assert "stream" not in body and "system" not in [m["role"] for m in body["messages"]]


def test_system_with_an_image_is_rejected() -> None:
    error = _rejected(messages=[
        {"role": "system", "content": [{"type": "image_url", "image_url": {"url": "https://x.test/a.png"}}]},
        {"role": "user", "content": "Hi"},
    ])
    assert error.param == "messages[0].content"


def test_consecutive_turns_of_one_role_are_merged() -> None:
    body = _body(messages=[
        {"role": "user", "content": "First."},
        {"role": "user", "content": [{"type": "text", "text": "Second."}]},
        {"role": "assistant", "content": "A."},
        {"role": "assistant", "content": "B."},
        {"role": "user", "content": ""},  # empty: dropped, Anthropic rejects empty text
        {"role": "user", "content": "Third."},
    ])
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "First."}, {"type": "text", "text": "Second."}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A."}, {"type": "text", "text": "B."}]},
        {"role": "user", "content": [{"type": "text", "text": "Third."}]},
    ]


def test_only_system_messages_are_rejected() -> None:
    assert _rejected(messages=[{"role": "system", "content": "x"}]).param == "messages"


def test_images_base64_and_url() -> None:
    body = _body(messages=[{"role": "user", "content": [
        {"type": "text", "text": "Compare these."},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}", "detail": "high"}},
        {"type": "image_url", "image_url": {"url": "https://upload.example/cat.jpg"}},
    ]}])
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "Compare these."},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://upload.example/cat.jpg"}},
    ]


@pytest.mark.parametrize("url", ["data:image/bmp;base64,Qk0=", "data:image/png,rawbytes", "ftp://x.test/a.png"])
def test_unusable_images_are_rejected_naming_the_part(url: str) -> None:
    error = _rejected(messages=[{"role": "user", "content": [
        {"type": "text", "text": "Look"}, {"type": "image_url", "image_url": {"url": url}},
    ]}])
    assert error.param == "messages[0].content[1]"


def test_pdf_file_becomes_document_and_cache_control_is_kept() -> None:
    body = _body(messages=[{"role": "user", "content": [
        {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0x"}},
        {"type": "text", "text": "Summarise.", "cache_control": {"type": "ephemeral"}},
    ]}])
    assert body["messages"][0]["content"] == [
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"}},
        {"type": "text", "text": "Summarise.", "cache_control": {"type": "ephemeral"}},
    ]
    error = _rejected(messages=[{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}])
    assert error.param == "messages[0].content[0]"


WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
}}
CLOCK = {"type": "function", "function": {"name": "get_time"}}


def test_tools_are_translated() -> None:
    body = _body(tools=[WEATHER, CLOCK])
    assert body["tools"] == [
        {"name": "get_weather", "description": "Current weather",
         "input_schema": WEATHER["function"]["parameters"]},
        {"name": "get_time", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert "tool_choice" not in body


@pytest.mark.parametrize(
    ("tool_choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("required", None, {"type": "any"}),
        ("none", None, {"type": "none"}),
        ({"type": "function", "function": {"name": "get_weather"}}, None, {"type": "tool", "name": "get_weather"}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        ({"type": "function", "function": {"name": "get_weather"}}, False,
         {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True}),
        ("none", False, {"type": "none"}),
        ("auto", True, {"type": "auto"}),
    ],
)
def test_tool_choice_forms(tool_choice: Any, parallel: bool | None, expected: dict[str, Any]) -> None:
    payload: dict[str, Any] = {"tools": [WEATHER]}
    if tool_choice is not None:
        payload["tool_choice"] = tool_choice
    if parallel is not None:
        payload["parallel_tool_calls"] = parallel
    assert _body(**payload)["tool_choice"] == expected


def test_non_function_tools_and_bad_tool_choice_are_rejected() -> None:
    assert _rejected(tools=[WEATHER, {"type": "custom", "custom": {"name": "x"}}]).param == "tools[1]"
    assert _rejected(tools=[WEATHER], tool_choice="sometimes").param == "tool_choice"


def test_tool_round_trip() -> None:
    body = _body(tools=[WEATHER], messages=[
        {"role": "user", "content": "Weather in SF and Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "toolu_01A", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"location": "SF"}'}},
            {"id": "call:2/x", "type": "function", "function": {"name": "get_weather", "arguments": ""}},
        ]},
        {"role": "tool", "tool_call_id": "toolu_01A", "content": "18C, fog"},
        {"role": "tool", "tool_call_id": "call:2/x", "content": [{"type": "text", "text": "24C, sun"}]},
        {"role": "user", "content": "And tomorrow?"},
    ])
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Weather in SF and Paris?"}]},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"location": "SF"}},
            {"type": "tool_use", "id": "call_2_x", "name": "get_weather", "input": {}},
        ]},
        {"role": "user", "content": [  # results first, then the user's text, in one turn
            {"type": "tool_result", "tool_use_id": "toolu_01A", "content": [{"type": "text", "text": "18C, fog"}]},
            {"type": "tool_result", "tool_use_id": "call_2_x", "content": [{"type": "text", "text": "24C, sun"}]},
            {"type": "text", "text": "And tomorrow?"},
        ]},
    ]


def test_invalid_tool_arguments_are_rejected_naming_the_message() -> None:
    error = _rejected(messages=[
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "tool_calls": [
            {"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{not json"}}]},
    ])
    assert error.param == "messages[1].tool_calls"
    assert _rejected(messages=[{"role": "tool", "content": "x"}]).param == "messages[0].tool_call_id"


@pytest.mark.parametrize(
    ("fields", "expected"),
    [({}, DEFAULT_MAX_TOKENS), ({"max_tokens": 300}, 300), ({"max_completion_tokens": 200, "max_tokens": 300}, 200)],
)
def test_max_tokens(fields: dict[str, int], expected: int) -> None:
    assert _body(**fields)["max_tokens"] == expected


def test_sampling_stop_user_and_stream() -> None:
    body = _body(temperature=0.3, stop="\n\nHuman:", user="user-42", stream=True, top_k=5)
    assert body["temperature"] == 0.3 and body["top_k"] == 5
    assert body["stop_sequences"] == ["\n\nHuman:"]
    assert body["metadata"] == {"user_id": "user-42"}
    assert body["stream"] is True
    assert _body(stop=["END", "STOP"])["stop_sequences"] == ["END", "STOP"]
    assert "stop_sequences" not in _body(stop=None)


def test_temperature_is_capped_and_top_p_yields_to_it() -> None:
    assert _body(temperature=1.7)["temperature"] == 1.0
    both = _body(temperature=0.5, top_p=0.9)
    assert both["temperature"] == 0.5 and "top_p" not in both
    assert _body(top_p=0.9)["top_p"] == 0.9


def test_hints_are_dropped() -> None:
    body = _body(seed=7, presence_penalty=0.5, frequency_penalty=0.5, logit_bias={"50256": -100},
                 service_tier="auto", reasoning_effort="high", store=True, stream_options={"include_usage": True})
    assert set(body) == {"model", "max_tokens", "messages"}


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}}, "modalities"),
        ({"web_search_options": {}}, "web_search_options"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"response_format": {"type": "xml"}}, "response_format"),
        ({"stop": [1, 2]}, "stop"),
    ],
)
def test_unexpressible_requests_are_rejected_naming_the_field(fields: dict[str, Any], param: str) -> None:
    assert _rejected(**fields).param == param


def test_n_of_one_is_fine() -> None:
    assert "n" not in _body(n=1)


def test_response_format_becomes_a_system_instruction() -> None:
    plain = _body(messages=[{"role": "system", "content": "You extract data."}, {"role": "user", "content": "x"}],
                  response_format={"type": "json_object"})
    assert plain["system"][0] == {"type": "text", "text": "You extract data."}
    assert "JSON only" in plain["system"][1]["text"]
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    shaped = _body(response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": schema}})
    [instruction] = shaped["system"]
    assert "JSON Schema" in instruction["text"] and orjson.dumps(schema).decode() in instruction["text"]
    assert "system" not in _body(response_format={"type": "text"})


def test_request_does_not_modify_the_payload() -> None:
    payload = {"model": "m", "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
               "tools": [WEATHER], "parallel_tool_calls": False, "temperature": 1.5}
    before = orjson.dumps(payload)
    ADAPTER.chat_request(payload, "claude")
    assert orjson.dumps(payload) == before


# --- response translation ---------------------------------------------------------


def _message(content: list[dict[str, Any]], stop_reason: str = "end_turn", **usage: int) -> bytes:
    return orjson.dumps({
        "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": content, "stop_reason": stop_reason, "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 5, **usage},
    })


def _translate(body: bytes) -> tuple[dict[str, Any], Any]:
    out, usage = ADAPTER.chat_response(body, "gateway-model")
    return orjson.loads(out), usage


def test_text_response() -> None:
    out, usage = _translate(_fixture("text_message.json"))
    assert out["id"] == "chatcmpl-msg_01XFDUDYJgAACzvnptvVoYEL"
    assert out["object"] == "chat.completion" and isinstance(out["created"], int)
    assert out["model"] == "gateway-model"
    [choice] = out["choices"]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == "Hello! Ready for a café au lait ☕ — or something stronger?"
    assert "tool_calls" not in choice["message"]
    assert choice["finish_reason"] == "stop"
    assert out["usage"] == {"prompt_tokens": 1825, "completion_tokens": 16, "total_tokens": 1841,
                            "prompt_tokens_details": {"cached_tokens": 1800}}
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_prompt_tokens) == (1825, 16, 1800)


def test_tool_use_only_response_has_null_content() -> None:
    out, _ = _translate(_message(
        [{"type": "tool_use", "id": "toolu_9", "name": "get_time", "input": {}}], "tool_use"))
    message = out["choices"][0]["message"]
    assert message["content"] is None
    assert message["tool_calls"] == [
        {"id": "toolu_9", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]
    assert out["choices"][0]["finish_reason"] == "tool_calls"


def test_mixed_response_drops_thinking() -> None:
    out, _ = _translate(_fixture("tool_message.json"))
    message = out["choices"][0]["message"]
    assert message["content"] == "Okay, let's check the weather in San Francisco and Zürich:"
    assert [orjson.loads(c["function"]["arguments"]) for c in message["tool_calls"]] == [
        {"location": "San Francisco, CA", "unit": "fahrenheit"}, {"location": "Zürich, CH", "unit": "celsius"}]
    thinking = _message([{"type": "thinking", "thinking": "hmm", "signature": "sig"},
                         {"type": "text", "text": "42"}])
    assert _translate(thinking)[0]["choices"][0]["message"]["content"] == "42"


@pytest.mark.parametrize(
    ("stop_reason", "expected"),
    [("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("tool_use", "tool_calls"),
     ("refusal", "content_filter"), ("pause_turn", "stop"), ("model_context_window_exceeded", "length")],
)
def test_stop_reasons(stop_reason: str, expected: str) -> None:
    out, _ = _translate(_message([{"type": "text", "text": "x"}], stop_reason))
    assert out["choices"][0]["finish_reason"] == expected


def test_usage_counts_cache_writes_and_reads_as_prompt() -> None:
    out, usage = _translate(_message([{"type": "text", "text": "x"}],
                                     cache_creation_input_tokens=200, cache_read_input_tokens=3000))
    assert out["usage"]["prompt_tokens"] == 10 + 200 + 3000
    assert out["usage"]["prompt_tokens_details"] == {"cached_tokens": 3000}
    assert out["usage"]["total_tokens"] == 3215
    assert usage.cached_prompt_tokens == 3000


def test_unparseable_response_is_a_gateway_error() -> None:
    with pytest.raises(ApiError) as caught:
        ADAPTER.chat_response(b"<html>", "m")
    assert caught.value.status == 502


# --- streaming -----------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _frozen_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    # `created` comes from the clock; runs compared byte for byte must share it.
    monkeypatch.setattr(anthropic_stream.time, "time", lambda: 1_764_000_000.0)


def _run(data: bytes, piece: int, include_usage: bool = True) -> tuple[bytes, anthropic_stream.AnthropicStream]:
    stream = ADAPTER.chat_stream("gateway-model", include_usage)
    out = b"".join(stream.feed(data[i:i + piece]) for i in range(0, len(data), piece))
    return out + stream.finish(), stream


def _events(out: bytes) -> list[Any]:
    assert out.endswith(b"\n\n")
    events = out[:-2].split(b"\n\n")
    assert all(e.startswith(b"data: ") for e in events)
    return [e[6:].decode() if e == b"data: [DONE]" else orjson.loads(e[6:]) for e in events]


def _reassemble(chunks: list[Any]) -> tuple[str, list[dict[str, Any]], list[str]]:
    text, calls, finishes = "", {}, []
    for chunk in chunks:
        for choice in chunk["choices"]:
            delta = choice["delta"]
            text += delta.get("content") or ""
            for call in delta.get("tool_calls", []):
                entry = calls.setdefault(call["index"], {"id": None, "name": None, "arguments": ""})
                entry["id"] = call.get("id") or entry["id"]
                entry["name"] = call.get("function", {}).get("name") or entry["name"]
                entry["arguments"] += call.get("function", {}).get("arguments", "")
            if choice["finish_reason"]:
                finishes.append(choice["finish_reason"])
    return text, [calls[i] for i in sorted(calls)], finishes


@pytest.mark.parametrize("name", ["text_stream.sse", "tool_stream.sse", "error_stream.sse"])
@pytest.mark.parametrize("include_usage", [True, False])
def test_stream_output_does_not_depend_on_network_pieces(name: str, include_usage: bool) -> None:
    data = _fixture(name)
    whole, _ = _run(data, len(data), include_usage)
    assert whole
    for piece in (1, 7):
        assert _run(data, piece, include_usage)[0] == whole
    crlf, _ = _run(data.replace(b"\n", b"\r\n"), 7, include_usage)
    assert crlf == whole


def test_text_stream_matches_the_json_answer() -> None:
    out, stream = _run(_fixture("text_stream.sse"), 1)
    *chunks, usage_chunk, done = _events(out)
    assert done == "[DONE]" and stream.complete and stream.error is None
    first = chunks[0]
    assert first["id"] == "chatcmpl-msg_01XFDUDYJgAACzvnptvVoYEL"
    assert first["object"] == "chat.completion.chunk" and first["model"] == "gateway-model"
    assert first["choices"] == [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]
    assert all(c["usage"] is None for c in chunks)
    assert chunks[-1]["choices"] == [{"index": 0, "delta": {}, "finish_reason": "stop"}]
    text, calls, finishes = _reassemble(chunks)
    expected, _ = _translate(_fixture("text_message.json"))
    assert text == expected["choices"][0]["message"]["content"]
    assert calls == [] and finishes == ["stop"]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"] == expected["usage"]
    assert (stream.usage.prompt_tokens, stream.usage.completion_tokens, stream.usage.cached_prompt_tokens) == (
        1825, 16, 1800)


def test_tool_stream_matches_the_json_answer() -> None:
    out, stream = _run(_fixture("tool_stream.sse"), 7)
    *chunks, usage_chunk, done = _events(out)
    assert done == "[DONE]" and stream.complete
    starts = [c["choices"][0]["delta"]["tool_calls"][0] for c in chunks
              if "id" in c["choices"][0]["delta"].get("tool_calls", [{}])[0]]
    assert starts == [
        {"index": 0, "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "type": "function",
         "function": {"name": "get_weather", "arguments": ""}},
        {"index": 1, "id": "toolu_01K2Mv9rNgGzWeGg2qYX1bxT", "type": "function",
         "function": {"name": "get_weather", "arguments": ""}},
    ]
    text, calls, finishes = _reassemble(chunks)
    expected = _translate(_fixture("tool_message.json"))[0]["choices"][0]["message"]
    assert text == expected["content"]
    assert [(c["id"], c["name"], orjson.loads(c["arguments"])) for c in calls] == [
        (c["id"], c["function"]["name"], orjson.loads(c["function"]["arguments"])) for c in expected["tool_calls"]]
    assert finishes == ["tool_calls"]
    assert usage_chunk["usage"]["prompt_tokens"] == 472 + 120
    assert usage_chunk["usage"]["completion_tokens"] == 112


def test_without_include_usage_chunks_carry_no_usage_but_it_is_counted() -> None:
    out, stream = _run(_fixture("tool_stream.sse"), 64, include_usage=False)
    *chunks, done = _events(out)
    assert done == "[DONE]"
    assert all("usage" not in c and c["choices"] for c in chunks)
    assert (stream.usage.prompt_tokens, stream.usage.completion_tokens) == (592, 112)


def test_error_event_ends_the_stream_without_done() -> None:
    out, stream = _run(_fixture("error_stream.sse"), 1)
    *chunks, error = _events(out)
    assert _reassemble(chunks)[0] == "Once upon a time"
    assert error == {"error": {"message": "Overloaded", "type": "server_error", "param": None,
                               "code": "overloaded_error"}}
    assert b"[DONE]" not in out and not stream.complete
    assert stream.error is not None
    assert stream.error.error_class is ErrorClass.RETRYABLE and stream.error.status == 529
    assert stream.usage.prompt_tokens == 31


def test_truncated_stream_is_not_complete() -> None:
    data = _fixture("text_stream.sse")
    out, stream = _run(data[: data.index(b"event: message_delta")], 5)
    assert not stream.complete and stream.error is None
    assert b"[DONE]" not in out
    assert _reassemble(_events(out))[0] == "Hello! Ready for a café au lait ☕ — or something stronger?"


def _sse(*events: dict[str, Any]) -> bytes:
    return b"".join(f"event: {e['type']}\n".encode() + b"data: " + orjson.dumps(e) + b"\n\n" for e in events)


START = {"type": "message_start", "message": {"id": "msg_x", "content": [], "usage": {"input_tokens": 3}}}
STOP = {"type": "message_stop"}


def test_thinking_is_not_streamed_and_inputless_tools_get_empty_object() -> None:
    data = _sse(
        START,
        {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Let me see"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "EqQB"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1,
         "content_block": {"type": "tool_use", "id": "toolu_t", "name": "get_time", "input": {}}},
        {"type": "content_block_stop", "index": 1},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}},
        STOP,
    )
    out, stream = _run(data, 3, include_usage=False)
    text, calls, finishes = _reassemble(_events(out)[:-1])
    assert text == "" and b"Let me see" not in out and b"EqQB" not in out
    assert calls == [{"id": "toolu_t", "name": "get_time", "arguments": "{}"}]
    assert finishes == ["tool_calls"] and stream.complete


def test_stream_error_classes_follow_the_error_type() -> None:
    for error_type, expected in [("rate_limit_error", ErrorClass.RATE_LIMITED), ("api_error", ErrorClass.RETRYABLE),
                                 ("invalid_request_error", ErrorClass.INVALID_REQUEST)]:
        _, stream = _run(_sse(START, {"type": "error", "error": {"type": error_type, "message": "m"}}), 10)
        assert stream.error is not None and stream.error.error_class is expected


# --- error classification --------------------------------------------------------------


def _error(error_type: str, message: str) -> bytes:
    return orjson.dumps({"type": "error", "error": {"type": error_type, "message": message},
                         "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"})


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (529, _error("overloaded_error", "Overloaded"), ErrorClass.RETRYABLE),
        (500, _error("api_error", "Internal server error"), ErrorClass.RETRYABLE),
        (503, b"<html>upstream connect error</html>", ErrorClass.RETRYABLE),
        (429, _error("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit"),
         ErrorClass.RATE_LIMITED),
        (401, _error("authentication_error", "invalid x-api-key"), ErrorClass.ENDPOINT),
        (403, _error("permission_error", "Your API key does not have permission"), ErrorClass.ENDPOINT),
        (404, _error("not_found_error", "model: claude-nonexistent"), ErrorClass.ENDPOINT),
        (400, _error("invalid_request_error", "prompt is too long: 208656 tokens > 200000 maximum"),
         ErrorClass.CONTEXT_LENGTH),
        (400, _error("invalid_request_error", "input length and `max_tokens` exceed context limit: "
                                              "199759 + 8192 > 200000, decrease input length or `max_tokens`"),
         ErrorClass.CONTEXT_LENGTH),
        (400, _error("invalid_request_error", "Your credit balance is too low to access the Anthropic API."),
         ErrorClass.ENDPOINT),
        (400, _error("invalid_request_error", "messages: roles must alternate"), ErrorClass.INVALID_REQUEST),
        (413, _error("request_too_large", "Request exceeds the maximum allowed number of bytes."),
         ErrorClass.INVALID_REQUEST),
        (422, b"", ErrorClass.INVALID_REQUEST),
    ],
)
def test_error_classification(status: int, body: bytes, expected: ErrorClass) -> None:
    failure = ADAPTER.classify_error(status, {}, body)
    assert failure.error_class is expected
    assert failure.status == status
    if body.startswith(b"{"):
        inner = orjson.loads(body)["error"]
        assert (failure.message, failure.code) == (inner["message"], inner["type"])
    else:
        assert failure.message == f"HTTP {status}" and failure.code is None


def test_retry_after_is_read_for_rate_limits_and_overload() -> None:
    limited = ADAPTER.classify_error(429, {"retry-after": "17"}, _error("rate_limit_error", "slow down"))
    assert limited.retry_after_s == 17
    overloaded = ADAPTER.classify_error(529, {"Retry-After": "3"}, _error("overloaded_error", "Overloaded"))
    assert overloaded.error_class is ErrorClass.RETRYABLE and overloaded.retry_after_s == 3
    assert ADAPTER.classify_error(400, {"retry-after": "5"}, _error("invalid_request_error", "x")).retry_after_s is None
