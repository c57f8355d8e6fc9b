"""The Gemini adapter: request, response, stream, error and embeddings translation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from dataplane.errors import ApiError
from dataplane.providers.base import ErrorClass
from dataplane.providers.gemini import SKIP_SIGNATURE, GeminiAdapter, clean_schema

ADAPTER = GeminiAdapter()
BASE = "https://generativelanguage.googleapis.com/v1beta"
FIXTURES = Path(__file__).parent / "fixtures" / "gemini"


def _fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def _request(**payload: Any) -> dict[str, Any]:
    payload.setdefault("model", "gemini")
    payload.setdefault("messages", [{"role": "user", "content": "hi"}])
    return orjson.loads(ADAPTER.chat_request(payload, "gemini-2.5-flash"))


def _response(body: dict[str, Any] | bytes) -> tuple[dict[str, Any], Any]:
    raw, usage = ADAPTER.chat_response(body if isinstance(body, bytes) else orjson.dumps(body), "my-model")
    return orjson.loads(raw), usage


def _candidate(parts: list[dict[str, Any]], finish: str | None = "STOP", index: int = 0) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": index}
    if finish:
        candidate["finishReason"] = finish
    return candidate


# -- addressing ----------------------------------------------------------------


def test_urls_and_auth() -> None:
    assert ADAPTER.kind == "gemini" and ADAPTER.supports_embeddings
    assert ADAPTER.chat_url(BASE, {}, "gemini-2.0-flash", stream=False) == (
        f"{BASE}/models/gemini-2.0-flash:generateContent"
    )
    assert ADAPTER.chat_url(BASE, {}, "models/gemini-2.0-flash", stream=True) == (
        f"{BASE}/models/gemini-2.0-flash:streamGenerateContent?alt=sse"
    )
    tuned = ADAPTER.chat_url(BASE, {}, "tunedModels/my-tune", stream=False)
    assert tuned == f"{BASE}/tunedModels/my-tune:generateContent"
    assert ADAPTER.auth_headers("AIza-secret") == {"x-goog-api-key": "AIza-secret"}
    assert ADAPTER.auth_headers(None) == {}


# -- request -------------------------------------------------------------------


def test_system_messages_become_system_instruction_and_roles_merge() -> None:
    body = _request(messages=[
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
        {"role": "user", "content": "Hello"},
        {"role": "user", "content": [{"type": "text", "text": "Who are you?"}]},
        {"role": "assistant", "content": "Bonjour."},
        {"role": "assistant", "content": [{"type": "text", "text": "Je suis Gemini."}]},
        {"role": "user", "content": "Merci"},
    ])
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}, {"text": "Answer in French."}]}
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "Hello"}, {"text": "Who are you?"}]},
        {"role": "model", "parts": [{"text": "Bonjour."}, {"text": "Je suis Gemini."}]},
        {"role": "user", "parts": [{"text": "Merci"}]},
    ]
    assert "generationConfig" not in body and "tools" not in body


def test_only_system_messages_is_rejected() -> None:
    with pytest.raises(ApiError) as caught:
        _request(messages=[{"role": "system", "content": "x"}, {"role": "user", "content": ""}])
    assert caught.value.status == 400 and caught.value.param == "messages"


def test_inline_and_file_images() -> None:
    body = _request(messages=[{"role": "user", "content": [
        {"type": "text", "text": "Compare"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/photos/cat.webp?size=large"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/render", "detail": "high"}},
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "mp3"}},
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"}},
    ]}])
    assert body["contents"][0]["parts"] == [
        {"text": "Compare"},
        {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
        {"fileData": {"mimeType": "image/webp", "fileUri": "https://example.com/photos/cat.webp?size=large"}},
        {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/render"}},
        {"inlineData": {"mimeType": "audio/mp3", "data": "UklGRg=="}},
        {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}},
    ]


@pytest.mark.parametrize(
    ("part", "param"),
    [
        ({"type": "image_url", "image_url": {"url": "ftp://example.com/a.png"}}, "messages[0].content[0].image_url"),
        ({"type": "image_url", "image_url": {"url": "data:image/png,plain"}}, "messages[0].content[0]"),
        ({"type": "file", "file": {"file_id": "file-abc"}}, "messages[0].content[0].file"),
        ({"type": "video_url", "video_url": "x"}, "messages[0].content[0]"),
    ],
)
def test_unusable_content_parts_are_rejected(part: dict[str, Any], param: str) -> None:
    with pytest.raises(ApiError) as caught:
        _request(messages=[{"role": "user", "content": [part]}])
    assert caught.value.param == param


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather",
        "strict": True,
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
            "required": ["location"],
            "additionalProperties": False,
        },
    },
}


def test_tools_become_function_declarations_with_clean_schemas() -> None:
    no_args = {"type": "function", "function": {"name": "now", "parameters": {"type": "object", "properties": {}}}}
    body = _request(tools=[WEATHER_TOOL, no_args])
    assert body["tools"] == [{"functionDeclarations": [
        {
            "name": "get_weather",
            "description": "Current weather",
            "parameters": {
                "type": "OBJECT",
                "properties": {"location": {"type": "STRING"}, "unit": {"type": "STRING", "enum": ["c", "f"]}},
                "required": ["location"],
            },
        },
        {"name": "now"},  # Gemini rejects an OBJECT without properties
    ]}]
    assert "toolConfig" not in body


@pytest.mark.parametrize(
    ("choice", "config"),
    [
        ("auto", {"mode": "AUTO"}),
        ("required", {"mode": "ANY"}),
        ("none", {"mode": "NONE"}),
        ({"type": "function", "function": {"name": "get_weather"}},
         {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}),
    ],
)
def test_tool_choice(choice: Any, config: dict[str, Any]) -> None:
    assert _request(tools=[WEATHER_TOOL], tool_choice=choice)["toolConfig"] == {"functionCallingConfig": config}


def test_bad_tools_and_tool_choice_are_rejected() -> None:
    with pytest.raises(ApiError) as caught:
        _request(tools=[{"type": "web_search"}])
    assert caught.value.param == "tools[0]"
    with pytest.raises(ApiError) as caught:
        _request(tools=[WEATHER_TOOL], tool_choice={"type": "allowed_tools"})
    assert caught.value.param == "tool_choice"
    with pytest.raises(ApiError) as caught:
        _request(tool_choice="required")
    assert caught.value.param == "tool_choice"


def test_tool_round_trip_names_function_responses_and_keeps_signatures() -> None:
    body = _request(messages=[
        {"role": "user", "content": "Weather in Tokyo and Mumbai?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_a", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"location": "Tokyo"}'},
             "extra_content": {"google": {"thought_signature": "EqQBCqEB"}}},
            {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": ""}},
        ]},
        {"role": "tool", "tool_call_id": "call_b", "content": "09:00"},
        {"role": "tool", "tool_call_id": "call_a", "content": '{"temp_c": 21, "sky": "clear"}'},
        {"role": "assistant", "content": "Checking again.", "tool_calls": [
            {"id": "call_c", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"location": "Mumbai"}'}},
        ]},
        {"role": "tool", "tool_call_id": "call_c", "content": [{"type": "text", "text": "[1, 2]"}]},
    ], tools=[WEATHER_TOOL])
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "Weather in Tokyo and Mumbai?"}]},
        {"role": "model", "parts": [
            {"functionCall": {"name": "get_weather", "args": {"location": "Tokyo"}}, "thoughtSignature": "EqQBCqEB"},
            {"functionCall": {"name": "get_time", "args": {}}},
        ]},
        {"role": "user", "parts": [
            {"functionResponse": {"name": "get_time", "response": {"content": "09:00"}}},
            {"functionResponse": {"name": "get_weather", "response": {"temp_c": 21, "sky": "clear"}}},
        ]},
        {"role": "model", "parts": [
            {"text": "Checking again."},
            # No signature came back from the client: Google's placeholder on the first call.
            {"functionCall": {"name": "get_weather", "args": {"location": "Mumbai"}},
             "thoughtSignature": SKIP_SIGNATURE},
        ]},
        {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"content": "[1, 2]"}}}]},
    ]


def test_tool_round_trip_errors_name_the_field() -> None:
    with pytest.raises(ApiError) as caught:
        _request(messages=[
            {"role": "user", "content": "x"},
            {"role": "assistant", "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{not json"}}]},
        ])
    assert caught.value.param == "messages[1].tool_calls[0].function.arguments"
    with pytest.raises(ApiError) as caught:
        _request(messages=[{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": ["f"]}])
    assert caught.value.param == "messages[1].tool_calls[0]"
    with pytest.raises(ApiError) as caught:
        _request(messages=[{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "nope", "content": "1"}])
    assert caught.value.param == "messages[1].tool_call_id"


def test_generation_config_fields() -> None:
    body = _request(max_tokens=50, max_completion_tokens=100, temperature=0.2, top_p=0.9, stop="END", n=2, seed=7,
                    presence_penalty=0.5, frequency_penalty=-0.5, user="u-1", parallel_tool_calls=False)
    assert body["generationConfig"] == {
        "maxOutputTokens": 100, "temperature": 0.2, "topP": 0.9, "candidateCount": 2, "seed": 7,
        "presencePenalty": 0.5, "frequencyPenalty": -0.5, "stopSequences": ["END"],
    }
    assert _request(max_tokens=64, stop=["a", "b"])["generationConfig"] == {
        "maxOutputTokens": 64, "stopSequences": ["a", "b"],
    }


@pytest.mark.parametrize(
    ("field", "value"),
    [("logprobs", True), ("logit_bias", {"50256": -100}), ("modalities", ["text", "audio"]), ("stop", 5)],
)
def test_unexpressible_options_are_rejected(field: str, value: Any) -> None:
    with pytest.raises(ApiError) as caught:
        _request(**{field: value})
    assert caught.value.status == 400 and caught.value.param == field


def test_response_format_json_object_and_schema() -> None:
    assert _request(response_format={"type": "json_object"})["generationConfig"] == {
        "responseMimeType": "application/json"
    }
    assert "generationConfig" not in _request(response_format={"type": "text"}, logprobs=False, top_logprobs=0)
    schema = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": {
            "name": {"type": "string", "format": "email", "minLength": 1},
            "when": {"type": "string", "format": "date-time"},
            "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True, "maxItems": 3},
            "score": {"type": ["number", "null"], "exclusiveMinimum": 0},
        },
        "required": ["name", "tags", "ghost"],
        "additionalProperties": False,
    }
    config = _request(response_format={"type": "json_schema", "json_schema": {"name": "x", "strict": True,
                                                                               "schema": schema}})["generationConfig"]
    assert config == {"responseMimeType": "application/json", "responseSchema": {
        "type": "OBJECT",
        "properties": {
            "name": {"type": "STRING", "minLength": 1},
            "when": {"type": "STRING", "format": "date-time"},
            "tags": {"type": "ARRAY", "maxItems": 3, "items": {"type": "STRING"}},
            "score": {"type": "NUMBER", "nullable": True},
        },
        "required": ["name", "tags"],
        "propertyOrdering": ["name", "when", "tags", "score"],
    }}


def test_schema_cleaning_resolves_refs_and_unions() -> None:
    schema = {
        "$defs": {
            "Pet": {"type": "object", "properties": {"kind": {"const": "cat"}, "friend": {"$ref": "#/$defs/Pet"}}},
        },
        "type": "object",
        "properties": {
            "pet": {"$ref": "#/$defs/Pet", "description": "the pet"},
            "either": {"oneOf": [{"type": "string"}, {"type": "integer"}, {"type": "null"}]},
            "maybe": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "multi": {"type": ["string", "integer"]},
            "level": {"type": "integer", "enum": [1, 2]},
            "both": {"allOf": [{"properties": {"a": {"type": "string"}}, "required": ["a"]},
                               {"properties": {"b": {"type": "boolean"}}}]},
        },
    }
    assert clean_schema(schema)["properties"] == {
        "pet": {"type": "OBJECT", "description": "the pet", "properties": {
            "kind": {"enum": ["cat"]},
            "friend": {"type": "OBJECT"},  # recursion cannot be expressed
        }},
        "either": {"nullable": True, "anyOf": [{"type": "STRING"}, {"type": "INTEGER"}]},
        "maybe": {"nullable": True, "type": "STRING"},
        "multi": {"anyOf": [{"type": "STRING"}, {"type": "INTEGER"}]},
        "level": {"type": "INTEGER"},  # non-string enums are dropped
        "both": {"type": "OBJECT", "properties": {"a": {"type": "STRING"}, "b": {"type": "BOOLEAN"}},
                 "required": ["a"]},
    }


def test_request_does_not_change_the_payload() -> None:
    payload = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": [WEATHER_TOOL]}
    before = orjson.dumps(payload)
    ADAPTER.chat_request(payload, "gemini-2.0-flash")
    assert orjson.dumps(payload) == before


# -- response ------------------------------------------------------------------


def test_text_response() -> None:
    data, usage = _response(_fixture("generate_content_text.json"))
    assert data["id"] == "chatcmpl-q2WfaKjQLdOhz7IPgeCc8Qg"
    assert data["object"] == "chat.completion" and data["model"] == "my-model" and isinstance(data["created"], int)
    assert data["choices"] == [{"index": 0, "logprobs": None, "finish_reason": "stop",
                                "message": {"role": "assistant", "content": "The capital of France is Paris."}}]
    assert data["usage"] == {"prompt_tokens": 11, "completion_tokens": 8, "total_tokens": 19,
                             "prompt_tokens_details": {"cached_tokens": 0},
                             "completion_tokens_details": {"reasoning_tokens": 0}}
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_prompt_tokens) == (11, 8, 0)


def test_thoughts_are_dropped_and_billed_as_output() -> None:
    data, usage = _response(_fixture("generate_content_thinking.json"))
    assert data["choices"][0]["message"]["content"] == "Blue."
    assert data["usage"] == {"prompt_tokens": 2100, "completion_tokens": 130, "total_tokens": 2230,
                             "prompt_tokens_details": {"cached_tokens": 2048},
                             "completion_tokens_details": {"reasoning_tokens": 128}}
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_prompt_tokens) == (2100, 130, 2048)


def test_function_calls_response() -> None:
    data, usage = _response(_fixture("generate_content_function_call.json"))
    choice = data["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    first, second = choice["message"]["tool_calls"]
    assert first["id"].startswith("call_") and second["id"].startswith("call_") and first["id"] != second["id"]
    assert first["type"] == "function"
    assert first["function"]["name"] == "get_weather"
    assert orjson.loads(first["function"]["arguments"]) == {"location": "Tokyo", "unit": "celsius"}
    signature = "CiQBcsjafGvJ0jRnq3R5G1hm7rxSg8/0tYbFUYQXk3N2v7jKqLsKXgFyyNp8"
    assert first["extra_content"] == {"google": {"thought_signature": signature}}
    assert "extra_content" not in second
    assert usage.completion_tokens == 86


def test_function_call_round_trips_through_a_client() -> None:
    data, _ = _response(_fixture("generate_content_function_call.json"))
    message = data["choices"][0]["message"]
    body = _request(messages=[{"role": "user", "content": "weather?"}, message,
                              {"role": "tool", "tool_call_id": message["tool_calls"][1]["id"], "content": "hot"}])
    model_turn, user_turn = body["contents"][1], body["contents"][2]
    assert model_turn["parts"][0]["thoughtSignature"].startswith("CiQBcsja")
    assert "thoughtSignature" not in model_turn["parts"][1]
    assert user_turn["parts"] == [{"functionResponse": {"name": "get_weather", "response": {"content": "hot"}}}]


def test_multiple_candidates_become_choices_by_index() -> None:
    data, _ = _response({"candidates": [_candidate([{"text": "B"}], index=1), _candidate([{"text": "A"}], index=0)]})
    assert [(c["index"], c["message"]["content"]) for c in data["choices"]] == [(0, "A"), (1, "B")]
    assert data["id"].startswith("chatcmpl-")


@pytest.mark.parametrize(
    ("reason", "expected"),
    [("STOP", "stop"), ("MAX_TOKENS", "length"), ("SAFETY", "content_filter"), ("RECITATION", "content_filter"),
     ("BLOCKLIST", "content_filter"), ("PROHIBITED_CONTENT", "content_filter"), ("SPII", "content_filter"),
     ("IMAGE_SAFETY", "content_filter"), ("OTHER", "stop"), ("MALFORMED_FUNCTION_CALL", "stop"),
     ("LANGUAGE", "stop"), ("SOMETHING_NEW", "stop")],
)
def test_finish_reasons(reason: str, expected: str) -> None:
    data, _ = _response({"candidates": [_candidate([{"text": "x"}], reason)]})
    assert data["choices"][0]["finish_reason"] == expected


def test_safety_stop_without_content() -> None:
    data, _ = _response({"candidates": [{"finishReason": "SAFETY", "index": 0, "safetyRatings": []}]})
    assert data["choices"][0]["message"] == {"role": "assistant", "content": None}
    assert data["choices"][0]["finish_reason"] == "content_filter"


def test_blocked_prompt() -> None:
    data, usage = _response(_fixture("generate_content_prompt_blocked.json"))
    assert data["choices"] == [{"index": 0, "message": {"role": "assistant", "content": None}, "logprobs": None,
                                "finish_reason": "content_filter"}]
    assert usage.prompt_tokens == 9 and usage.completion_tokens == 0


def test_unreadable_response_is_a_gateway_error() -> None:
    with pytest.raises(ApiError) as caught:
        ADAPTER.chat_response(b"<html>oops</html>", "m")
    assert caught.value.status == 502


# -- streaming -----------------------------------------------------------------

PIECES = [1, 7, 1_000_000]


def _run(data: bytes, piece: int, include_usage: bool = True) -> tuple[bytes, Any]:
    stream = ADAPTER.chat_stream("my-model", include_usage)
    out = b"".join(stream.feed(data[i:i + piece]) for i in range(0, len(data), piece))
    return out + stream.finish(), stream


def _events(raw: bytes) -> list[Any]:
    events = []
    for block in raw.split(b"\n\n"):
        if block:
            assert block.startswith(b"data: ")
            payload = block.removeprefix(b"data: ")
            events.append("[DONE]" if payload == b"[DONE]" else orjson.loads(payload))
    assert raw.endswith(b"\n\n")
    return events


def _normalised(raw: bytes) -> list[Any]:
    """Events with the per-run values (created, fresh call ids) fixed."""
    events = _events(raw)
    for event in events:
        if isinstance(event, dict) and "created" in event:
            event["created"] = 0
            for choice in event["choices"]:
                for call in choice["delta"].get("tool_calls", []):
                    assert call["id"].startswith("call_")
                    call["id"] = "call_X"
    return events


def _deltas(events: list[Any]) -> list[tuple[dict[str, Any], Any]]:
    return [(c["delta"], c["finish_reason"]) for e in events if isinstance(e, dict) for c in e.get("choices", [])]


@pytest.mark.parametrize("piece", PIECES)
def test_text_stream(piece: int) -> None:
    raw, stream = _run(_fixture("stream_text.sse"), piece)
    events = _events(raw)
    assert _deltas(events) == [
        ({"role": "assistant", "content": ""}, None),
        ({"content": "Bonjour ! Je m’appelle"}, None),
        ({"content": " Gemini — ravi de"}, None),
        ({"content": " vous aider. 😊"}, None),
        ({}, "stop"),
    ]
    chunks = [e for e in events if isinstance(e, dict)]
    assert {e["id"] for e in chunks} == {"chatcmpl-tTCwacuEBMvnitYP06qsgQY"}
    assert {e["object"] for e in chunks} == {"chat.completion.chunk"} and {e["model"] for e in chunks} == {"my-model"}
    assert len({e["created"] for e in chunks}) == 1
    assert all(e["usage"] is None for e in chunks[:-1])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == {
        "prompt_tokens": 7, "completion_tokens": 54, "total_tokens": 61,
        "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 40},
    }
    assert events[-1] == "[DONE]"
    assert stream.complete and stream.error is None
    assert (stream.usage.prompt_tokens, stream.usage.completion_tokens) == (7, 54)


@pytest.mark.parametrize(
    "name", ["stream_text.sse", "stream_function_call.sse", "stream_error.sse", "stream_cut.sse"]
)
def test_stream_output_does_not_depend_on_piece_size_or_line_endings(name: str) -> None:
    data = _fixture(name)
    assert b"\r\n\r\n" in data  # recorded as Gemini sends it
    outputs = [_normalised(_run(data, piece)[0]) for piece in PIECES]
    outputs.append(_normalised(_run(data.replace(b"\r\n", b"\n"), 3)[0]))
    assert all(output == outputs[0] for output in outputs)


@pytest.mark.parametrize("piece", PIECES)
def test_function_call_stream(piece: int) -> None:
    raw, stream = _run(_fixture("stream_function_call.sse"), piece, include_usage=False)
    deltas = _deltas(_events(raw))
    assert deltas[:2] == [({"role": "assistant", "content": ""}, None), ({"content": "Let me look that up."}, None)]
    first, second = deltas[2][0]["tool_calls"], deltas[3][0]["tool_calls"]
    assert first[0]["index"] == 0 and second[0]["index"] == 1
    assert first[0]["id"] != second[0]["id"]
    assert first[0]["function"] == {"name": "get_weather", "arguments": '{"location":"Tokyo"}'}
    assert first[0]["extra_content"] == {"google": {"thought_signature": "EqQBCqEBAdHtim9x7uvmKzZ3OQ=="}}
    assert second[0]["type"] == "function" and second[0]["function"]["name"] == "get_time"
    assert deltas[4] == ({}, "tool_calls") and len(deltas) == 5
    events = _events(raw)
    assert events[-1] == "[DONE]" and all("usage" not in e for e in events if isinstance(e, dict))
    assert stream.complete and stream.usage.completion_tokens == 31


@pytest.mark.parametrize("piece", PIECES)
def test_error_event_in_stream(piece: int) -> None:
    raw, stream = _run(_fixture("stream_error.sse"), piece)
    events = _events(raw)
    assert events[-1] == {"error": {"message": "The model is overloaded. Please try again later.",
                                    "type": "server_error", "param": None, "code": "UNAVAILABLE"}}
    assert "[DONE]" not in events
    assert stream.error is not None and stream.error.error_class is ErrorClass.RETRYABLE
    assert stream.error.status == 503 and not stream.complete


@pytest.mark.parametrize("piece", PIECES)
def test_stream_cut_before_finish_is_not_complete(piece: int) -> None:
    raw, stream = _run(_fixture("stream_cut.sse"), piece)
    events = _events(raw)
    assert "[DONE]" not in events and all(reason is None for _, reason in _deltas(events))
    assert not stream.complete and stream.error is None
    assert stream.usage.prompt_tokens == 7  # what was seen is still counted


def test_stream_cut_mid_event_is_not_complete() -> None:
    data = _fixture("stream_text.sse")
    raw, stream = _run(data[: data.rfind(b"STOP")], 7)
    assert not stream.complete and stream.error is None and b"[DONE]" not in raw


def test_last_event_without_trailing_blank_line_still_counts() -> None:
    raw, stream = _run(_fixture("stream_text.sse").rstrip(b"\r\n"), 5, include_usage=False)
    assert stream.complete and _events(raw)[-1] == "[DONE]"


def test_blocked_prompt_stream() -> None:
    raw, stream = _run(b"data: " + _fixture("generate_content_prompt_blocked.json").replace(b"\n", b"") + b"\r\n\r\n",
                       7, include_usage=False)
    assert _deltas(_events(raw)) == [({"role": "assistant", "content": ""}, None), ({}, "content_filter")]
    assert stream.complete


def test_stream_with_two_candidates_completes_when_both_finish() -> None:
    def event(*candidates: dict[str, Any]) -> bytes:
        return b"data: " + orjson.dumps({"candidates": list(candidates), "responseId": "r"}) + b"\r\n\r\n"

    data = event(_candidate([{"text": "a"}], None, 0), _candidate([{"text": "b"}], None, 1))
    data += event(_candidate([{"text": "!"}], "STOP", 0))
    raw, stream = _run(data, 4, include_usage=False)
    assert not stream.complete  # candidate 1 never finished
    raw, stream = _run(data + event(_candidate([], "MAX_TOKENS", 1)), 4, include_usage=False)
    finishes = [(c["index"], c["finish_reason"]) for e in _events(raw) if isinstance(e, dict)
                for c in e["choices"] if c["finish_reason"]]
    assert finishes == [(0, "stop"), (1, "length")] and stream.complete


def test_malformed_stream_event_is_an_error() -> None:
    raw, stream = _run(b"data: {not json}\r\n\r\n", 1)
    assert stream.error is not None and stream.error.error_class is ErrorClass.RETRYABLE
    assert b'"error"' in raw and not stream.complete


# -- errors --------------------------------------------------------------------


def _google(code: int, status: str, message: str = "m") -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message, "status": status}})


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (429, _fixture("error_429_retry_info.json"), ErrorClass.RATE_LIMITED),
        (500, _google(500, "INTERNAL"), ErrorClass.RETRYABLE),
        (503, _google(503, "UNAVAILABLE", "The model is overloaded."), ErrorClass.RETRYABLE),
        (504, _google(504, "DEADLINE_EXCEEDED"), ErrorClass.RETRYABLE),
        (401, _google(401, "UNAUTHENTICATED"), ErrorClass.ENDPOINT),
        (403, _google(403, "PERMISSION_DENIED"), ErrorClass.ENDPOINT),
        (404, _google(404, "NOT_FOUND", "models/gemini-9 is not found"), ErrorClass.ENDPOINT),
        (400, _fixture("error_400_api_key_invalid.json"), ErrorClass.ENDPOINT),
        (400, _google(400, "FAILED_PRECONDITION", "User location is not supported for the API use."),
         ErrorClass.ENDPOINT),
        (400, _fixture("error_400_context_length.json"), ErrorClass.CONTEXT_LENGTH),
        (400, _google(400, "INVALID_ARGUMENT", "Invalid value at 'contents[0].role'"), ErrorClass.INVALID_REQUEST),
        (502, b"<html>Bad Gateway</html>", ErrorClass.RETRYABLE),
        (400, b"", ErrorClass.INVALID_REQUEST),
    ],
)
def test_error_classification(status: int, body: bytes, expected: ErrorClass) -> None:
    assert ADAPTER.classify_error(status, {}, body).error_class is expected


def test_error_message_code_and_retry_info() -> None:
    failure = ADAPTER.classify_error(429, {}, _fixture("error_429_retry_info.json"))
    assert failure.code == "RESOURCE_EXHAUSTED" and failure.status == 429
    assert failure.message.startswith("You exceeded your current quota")
    assert failure.retry_after_s == 38
    # A Retry-After header wins over the body.
    assert ADAPTER.classify_error(429, {"Retry-After": "5"}, _fixture("error_429_retry_info.json")).retry_after_s == 5
    fractional = orjson.dumps({"error": {"code": 429, "message": "slow", "status": "RESOURCE_EXHAUSTED", "details": [
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "45.837906927s"}]}})
    assert ADAPTER.classify_error(429, {}, fractional).retry_after_s == pytest.approx(45.837906927)
    assert ADAPTER.classify_error(429, {}, b"").retry_after_s is None
    context = ADAPTER.classify_error(400, {}, _fixture("error_400_context_length.json"))
    assert context.code == "context_length_exceeded" and "1048576" in context.message
    assert context.retry_after_s is None
    assert ADAPTER.classify_error(400, {}, _google(400, "INVALID_ARGUMENT")).code == "INVALID_ARGUMENT"
    # The streaming endpoint without alt=sse wraps errors in an array.
    wrapped = b"[" + _google(503, "UNAVAILABLE", "busy") + b"]"
    assert ADAPTER.classify_error(503, {}, wrapped).message == "busy"
    assert ADAPTER.classify_error(502, {}, b"<html>").message == "HTTP 502"


# -- embeddings ----------------------------------------------------------------


def test_single_embedding_request_and_response() -> None:
    url, body = ADAPTER.embeddings_request(BASE, {}, {"model": "e", "input": "hello world", "dimensions": 768},
                                           "models/gemini-embedding-001")
    assert url == f"{BASE}/models/gemini-embedding-001:embedContent"
    assert orjson.loads(body) == {"content": {"parts": [{"text": "hello world"}]}, "outputDimensionality": 768}
    raw, usage = ADAPTER.embeddings_response(_fixture("embed_content.json"), "my-embed",
                                             {"input": "hello world, how are you"})
    assert orjson.loads(raw) == {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": [-0.0223, 0.0076, 0.0129, -0.0681]}],
        "model": "my-embed",
        "usage": {"prompt_tokens": 6, "total_tokens": 6},  # no count from Gemini: ~chars/4
    }
    assert usage.prompt_tokens == 6
    assert ADAPTER.embeddings_response(_fixture("embed_content.json"), "m")[1].prompt_tokens == 0


def test_batch_embedding_request_and_response() -> None:
    url, body = ADAPTER.embeddings_request(BASE, {}, {"model": "e", "input": ["a", "b"], "encoding_format": "base64"},
                                           "gemini-embedding-001")
    assert url == f"{BASE}/models/gemini-embedding-001:batchEmbedContents"
    assert orjson.loads(body) == {"requests": [
        {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "a"}]}},
        {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "b"}]}},
    ]}
    raw, usage = ADAPTER.embeddings_response(_fixture("batch_embed_contents.json"), "my-embed", {"input": ["a", "b"]})
    data = orjson.loads(raw)
    assert [(d["index"], d["embedding"]) for d in data["data"]] == [(0, [0.0131, -0.0052, 0.0412]),
                                                                    (1, [-0.0207, 0.0333, 0.0019])]
    assert data["usage"] == {"prompt_tokens": 9, "total_tokens": 9} and usage.prompt_tokens == 9


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        ({"input": [1, 2, 3]}, "input"),
        ({"input": [[1, 2], [3]]}, "input"),
        ({"input": []}, "input"),
        ({"input": "x", "dimensions": 0}, "dimensions"),
        ({"input": "x", "encoding_format": "int8"}, "encoding_format"),
    ],
)
def test_unusable_embedding_requests_are_rejected(payload: dict[str, Any], param: str) -> None:
    with pytest.raises(ApiError) as caught:
        ADAPTER.embeddings_request(BASE, {}, payload, "gemini-embedding-001")
    assert caught.value.status == 400 and caught.value.param == param
