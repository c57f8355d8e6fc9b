"""The translator contract, for every (input API × backend) pair.

Each pair is built the way the pipeline builds it (`operation.prepare`, then
`operation.translator(endpoint, exchange)`) and must: leave the client's
payload untouched (a retry translates it again); map the backend's usage and
finish reason into the client API's shape, for JSON and for streams;
classify every error class the backend can answer with; and decode the
backend's stream the same whether it arrives whole, byte by byte, or with
CRLF line ends.
"""

from __future__ import annotations

import copy

import orjson
import pytest
from aiohttp.test_utils import make_mocked_request

from dataplane.codecs.sse import SseDecoder
from dataplane.operations.chat import ChatOperation
from dataplane.operations.completions import CompletionsOperation
from dataplane.operations.embeddings import EmbeddingsOperation
from dataplane.operations.messages import MessagesOperation
from dataplane.operations.responses import ResponsesOperation
from dataplane.pipeline.exchange import Exchange
from dataplane.providers import adapter_for
from dataplane.providers.base import ErrorClass, Usage
from dataplane.table import EndpointRuntime, ProviderRuntime
from dataplane.usage import UsageLedger
from megarouter.catalog import PriceTier, Pricing
from megarouter.sim import eventstream

BACKENDS = ("openai", "azure_openai", "anthropic", "gemini", "bedrock", "vertex", "vertex_anthropic")
# Backend name -> (provider kind, provider options), for the ones a kind's options select.
BACKEND_KINDS = {"vertex": ("vertex", {"project": "proj-1", "publisher": "google"}),
                 "vertex_anthropic": ("vertex", {"project": "proj-1", "publisher": "anthropic"})}
# Backends whose streams are binary framing, not text: no CRLF variant of them exists.
BINARY_STREAMS = frozenset({"bedrock"})
TOOL = {"type": "function", "function": {"name": "lookup", "description": "Find",
                                         "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}

# One request per input API, using as many features as the API has.
REQUESTS = {
    "chat": {"model": "m", "messages": [{"role": "system", "content": "Be brief."},
                                        {"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
             "max_tokens": 50, "temperature": 0.5, "stop": ["\n\n"], "tools": [TOOL], "tool_choice": "auto"},
    "completions": {"model": "m", "prompt": "Once upon", "max_tokens": 50, "temperature": 0.5, "stop": ["\n"]},
    "responses": {"model": "m", "instructions": "Be brief.", "max_output_tokens": 50, "temperature": 0.5,
                  "input": [{"role": "user", "content": [{"type": "input_text", "text": "Hi"}]}],
                  "tools": [{"type": "function", "name": "lookup", "parameters": TOOL["function"]["parameters"]}],
                  "text": {"format": {"type": "text"}}},
    "messages": {"model": "m", "max_tokens": 50, "system": [{"type": "text", "text": "Be brief."}],
                 "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
                 "temperature": 0.5, "stop_sequences": ["\n\n"],
                 "tools": [{"name": "lookup", "input_schema": TOOL["function"]["parameters"]}]},
}
OPERATIONS = {"chat": ChatOperation(), "completions": CompletionsOperation(), "responses": ResponsesOperation(),
              "messages": MessagesOperation(), "embeddings": EmbeddingsOperation()}
PAIRS = [(api, backend) for api in REQUESTS for backend in BACKENDS]

# Each backend's answer: 11 prompt tokens, 7 completion tokens, cut off by the length limit.
JSON_ANSWERS = {
    "openai": {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "up",
               "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"},
                            "finish_reason": "length"}],
               "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}},
    "anthropic": {"id": "msg_1", "type": "message", "role": "assistant", "model": "up",
                  "content": [{"type": "text", "text": "Hello"}], "stop_reason": "max_tokens",
                  "stop_sequence": None, "usage": {"input_tokens": 11, "output_tokens": 7}},
    "gemini": {"candidates": [{"content": {"role": "model", "parts": [{"text": "Hello"}]},
                               "finishReason": "MAX_TOKENS", "index": 0}],
               "usageMetadata": {"promptTokenCount": 11, "candidatesTokenCount": 7, "totalTokenCount": 18},
               "modelVersion": "up", "responseId": "r1"},
    "bedrock": {"output": {"message": {"role": "assistant", "content": [{"text": "Hello"}]}},
                "stopReason": "max_tokens", "usage": {"inputTokens": 11, "outputTokens": 7, "totalTokens": 18},
                "metrics": {"latencyMs": 5}},
}
JSON_ANSWERS["azure_openai"] = JSON_ANSWERS["openai"]
JSON_ANSWERS["vertex"] = JSON_ANSWERS["gemini"]                  # Vertex serves each publisher's own wire
JSON_ANSWERS["vertex_anthropic"] = JSON_ANSWERS["anthropic"]


def _sse(*events: tuple[str, dict | str]) -> bytes:
    out = b""
    for name, data in events:
        body = data.encode() if isinstance(data, str) else orjson.dumps(data)
        out += (b"event: " + name.encode() + b"\n" if name else b"") + b"data: " + body + b"\n\n"
    return out


def _chunk(delta: dict, finish: str | None = None) -> dict:
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "up",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


STREAM_ANSWERS = {
    "openai": _sse(("", _chunk({"role": "assistant", "content": ""})), ("", _chunk({"content": "Hel"})),
                   ("", _chunk({"content": "lo"})), ("", _chunk({}, "length")),
                   ("", {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "up",
                         "choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 7,
                                                  "total_tokens": 18}}),
                   ("", "[DONE]")),
    "anthropic": _sse(
        ("message_start", {"type": "message_start", "message": {
            "id": "msg_1", "type": "message", "role": "assistant", "model": "up", "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 11, "output_tokens": 1}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
        ("ping", {"type": "ping"}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": "Hel"}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": "lo"}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "max_tokens", "stop_sequence": None},
                           "usage": {"output_tokens": 7}}),
        ("message_stop", {"type": "message_stop"})),
    "gemini": _sse(
        ("", {"candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}]}, "index": 0}],
              "usageMetadata": {"promptTokenCount": 11, "totalTokenCount": 11}, "responseId": "r1"}),
        ("", {"candidates": [{"content": {"role": "model", "parts": [{"text": "lo"}]}, "finishReason": "MAX_TOKENS",
                              "index": 0}],
              "usageMetadata": {"promptTokenCount": 11, "candidatesTokenCount": 7, "totalTokenCount": 18},
              "responseId": "r1"})),
}
STREAM_ANSWERS["azure_openai"] = STREAM_ANSWERS["openai"]
STREAM_ANSWERS["vertex"] = STREAM_ANSWERS["gemini"]
STREAM_ANSWERS["vertex_anthropic"] = STREAM_ANSWERS["anthropic"]
STREAM_ANSWERS["bedrock"] = b"".join(eventstream.event(name, payload) for name, payload in (
    ("messageStart", {"role": "assistant"}),
    ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hel"}}),
    ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "lo"}}),
    ("contentBlockStop", {"contentBlockIndex": 0}),
    ("messageStop", {"stopReason": "max_tokens"}),
    ("metadata", {"usage": {"inputTokens": 11, "outputTokens": 7, "totalTokens": 18}, "metrics": {"latencyMs": 5}}),
))

# (status, body) -> the class each backend's error must get.
_OPENAI_ERRORS = [
    (429, {"error": {"message": "slow down", "type": "requests", "code": "rate_limit_exceeded"}},
     ErrorClass.RATE_LIMITED),
    (500, {"error": {"message": "boom", "type": "server_error"}}, ErrorClass.RETRYABLE),
    (503, {"error": {"message": "overloaded", "type": "server_error"}}, ErrorClass.RETRYABLE),
    (401, {"error": {"message": "bad key", "type": "invalid_request_error", "code": "invalid_api_key"}},
     ErrorClass.ENDPOINT),
    (400, {"error": {"message": "too long", "type": "invalid_request_error", "code": "context_length_exceeded"}},
     ErrorClass.CONTEXT_LENGTH),
    (400, {"error": {"message": "flagged", "type": "invalid_request_error", "code": "content_filter"}},
     ErrorClass.CONTENT_FILTER),
    (400, {"error": {"message": "bad field", "type": "invalid_request_error", "param": "x"}},
     ErrorClass.INVALID_REQUEST),
]
def _aws(name: str) -> dict[str, str]:
    return {"x-amzn-ErrorType": f"{name}:http://internal.amazon.com/coral/com.amazon.bedrock/"}


_GOOGLE_ERRORS = [
    (429, {"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED"}}, ErrorClass.RATE_LIMITED),
    (503, {"error": {"code": 503, "message": "busy", "status": "UNAVAILABLE"}}, ErrorClass.RETRYABLE),
    (500, {"error": {"code": 500, "message": "boom", "status": "INTERNAL"}}, ErrorClass.RETRYABLE),
    (403, {"error": {"code": 403, "message": "denied", "status": "PERMISSION_DENIED"}}, ErrorClass.ENDPOINT),
    (401, {"error": {"code": 401, "message": "Request had invalid authentication credentials.",
                     "status": "UNAUTHENTICATED"}}, ErrorClass.ENDPOINT),
    (400, {"error": {"code": 400, "message": "The input token count (1200293) exceeds the maximum number of "
                                             "tokens allowed (1048576).", "status": "INVALID_ARGUMENT"}},
     ErrorClass.CONTEXT_LENGTH),
    (400, {"error": {"code": 400, "message": "Invalid value at 'generation_config'",
                     "status": "INVALID_ARGUMENT"}}, ErrorClass.INVALID_REQUEST),
]
ERRORS = {
    "vertex": _GOOGLE_ERRORS,
    # Claude on Vertex: Vertex's own refusals in Google's shape, the model's in Anthropic's.
    "vertex_anthropic": [
        *_GOOGLE_ERRORS[:5],
        (529, {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}, ErrorClass.RETRYABLE),
        (400, {"type": "error", "error": {"type": "invalid_request_error",
                                          "message": "prompt is too long: 208656 tokens > 200000 maximum"}},
         ErrorClass.CONTEXT_LENGTH),
        (400, {"type": "error", "error": {"type": "invalid_request_error", "message": "bad field"}},
         ErrorClass.INVALID_REQUEST),
    ],
    "bedrock": [
        (429, {"message": "Too many requests, please wait before trying again."}, ErrorClass.RATE_LIMITED,
         _aws("ThrottlingException")),
        (408, {"message": "Model has timed out in processing the request."}, ErrorClass.TIMEOUT,
         _aws("ModelTimeoutException")),
        (503, {"message": "Bedrock is unable to process your request."}, ErrorClass.RETRYABLE,
         _aws("ServiceUnavailableException")),
        (500, {"message": "boom"}, ErrorClass.RETRYABLE, _aws("InternalServerException")),
        (403, {"message": "You don't have access to the model with the specified model ID."}, ErrorClass.ENDPOINT,
         _aws("AccessDeniedException")),
        (403, {"message": "The security token included in the request is expired"}, ErrorClass.ENDPOINT,
         _aws("ExpiredTokenException")),
        (400, {"message": "Input is too long for requested model."}, ErrorClass.CONTEXT_LENGTH,
         _aws("ValidationException")),
        (400, {"message": "Malformed input request: #: extraneous key [foo] is not permitted"},
         ErrorClass.INVALID_REQUEST, _aws("ValidationException")),
        # The name may come in the body instead (`__type`, with or without a namespace).
        (429, {"__type": "com.amazon.bedrock#ThrottlingException", "message": "slow"}, ErrorClass.RATE_LIMITED),
    ],
    "openai": _OPENAI_ERRORS,
    "azure_openai": _OPENAI_ERRORS,
    "anthropic": [
        (429, {"type": "error", "error": {"type": "rate_limit_error", "message": "slow"}}, ErrorClass.RATE_LIMITED),
        (529, {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}, ErrorClass.RETRYABLE),
        (500, {"type": "error", "error": {"type": "api_error", "message": "boom"}}, ErrorClass.RETRYABLE),
        (401, {"type": "error", "error": {"type": "authentication_error", "message": "key"}}, ErrorClass.ENDPOINT),
        (400, {"type": "error", "error": {"type": "invalid_request_error",
                                          "message": "prompt is too long: 208656 tokens > 200000 maximum"}},
         ErrorClass.CONTEXT_LENGTH),
        (400, {"type": "error", "error": {"type": "invalid_request_error", "message": "bad field"}},
         ErrorClass.INVALID_REQUEST),
    ],
    "gemini": [
        (429, {"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED"}}, ErrorClass.RATE_LIMITED),
        (503, {"error": {"code": 503, "message": "busy", "status": "UNAVAILABLE"}}, ErrorClass.RETRYABLE),
        (500, {"error": {"code": 500, "message": "boom", "status": "INTERNAL"}}, ErrorClass.RETRYABLE),
        (403, {"error": {"code": 403, "message": "denied", "status": "PERMISSION_DENIED"}}, ErrorClass.ENDPOINT),
        (400, {"error": {"code": 400, "message": "The input token count (1200293) exceeds the maximum number of "
                                                 "tokens allowed (1048576).", "status": "INVALID_ARGUMENT"}},
         ErrorClass.CONTEXT_LENGTH),
        (400, {"error": {"code": 400, "message": "Invalid value at 'generation_config'",
                         "status": "INVALID_ARGUMENT"}}, ErrorClass.INVALID_REQUEST),
    ],
}


def endpoint_for(backend: str, *, embeddings: bool = False, native_completions: bool = False) -> EndpointRuntime:
    kind, options = BACKEND_KINDS.get(backend, (backend, {}))
    adapter = adapter_for(kind, "", options)
    base = "https://example.test/v1"
    provider = ProviderRuntime(f"p-{backend}", kind, adapter, base, "eu", {}, options, 30.0, "")
    upstream = "up-model"
    return EndpointRuntime(
        name=f"e-{backend}", model="m", upstream_model=upstream, region="eu", provider=provider,
        chat_url=adapter.chat_url(base, options, upstream, False),
        chat_stream_url=adapter.chat_url(base, options, upstream, True),
        embeddings=embeddings, native_completions=native_completions,
        pricing=Pricing(PriceTier(0, 1.0, 4.0, None)), capabilities=frozenset({"tools", "streaming"}),
        context_window=100_000, max_output_tokens=4096, quality_tier=3)


def translator_for(api: str, backend: str, payload: dict, stream: bool = False, **endpoint_flags):
    payload = {**payload, "stream": True} if stream else payload
    request = make_mocked_request("POST", f"/v1/{api}", headers={"anthropic-version": "2023-06-01"})
    exchange = Exchange(request, None, None, payload, "t", UsageLedger().account("k", (), "t"))
    operation = OPERATIONS[api]
    operation.prepare(exchange)
    return operation.translator(endpoint_for(backend, **endpoint_flags), exchange)


@pytest.mark.parametrize(("api", "backend"), PAIRS)
@pytest.mark.parametrize("stream", [False, True])
def test_translation_never_mutates_the_clients_payload(api: str, backend: str, stream: bool) -> None:
    payload = copy.deepcopy(REQUESTS[api])
    if stream:
        payload["stream"] = True
    before = copy.deepcopy(payload)
    translator = translator_for(api, backend, payload)
    first = translator.request()
    assert payload == before
    # A retry translates the same payload again and gets the same request.
    assert translator_for(api, backend, payload).request() == first
    assert payload == before


def _client_usage_and_finish(api: str, body: dict) -> tuple[tuple[int, int], str]:
    if api == "chat":
        return (body["usage"]["prompt_tokens"], body["usage"]["completion_tokens"]), body["choices"][0]["finish_reason"]
    if api == "completions":
        return (body["usage"]["prompt_tokens"], body["usage"]["completion_tokens"]), body["choices"][0]["finish_reason"]
    if api == "responses":
        return (body["usage"]["input_tokens"], body["usage"]["output_tokens"]), body["status"]
    return (body["usage"]["input_tokens"], body["usage"]["output_tokens"]), body["stop_reason"]


# What "cut off by the length limit" is called in each client API.
LENGTH = {"chat": "length", "completions": "length", "responses": "incomplete", "messages": "max_tokens"}


@pytest.mark.parametrize(("api", "backend"), PAIRS)
def test_usage_and_finish_reason_are_mapped(api: str, backend: str) -> None:
    translator = translator_for(api, backend, REQUESTS[api])
    body, usage = translator.response(orjson.dumps(JSON_ANSWERS[backend]))
    assert usage == Usage(11, 7)
    answer = orjson.loads(body)
    assert _client_usage_and_finish(api, answer) == ((11, 7), LENGTH[api])


def _stream_output(translator_stream, pieces: list[bytes]) -> bytes:
    return b"".join(translator_stream.feed(piece) for piece in pieces) + translator_stream.finish()


def _stream_finish(api: str, events) -> str:
    """The length verdict as the client sees it in the stream."""
    for event in events:
        if event.data == b"[DONE]":
            continue
        data = orjson.loads(event.data)
        if api in ("chat", "completions"):
            for choice in data.get("choices", []):
                if choice.get("finish_reason"):
                    return choice["finish_reason"]
        elif api == "responses" and data.get("type") in ("response.completed", "response.incomplete"):
            return data["response"]["status"]
        elif api == "messages" and data.get("type") == "message_delta":
            return data["delta"]["stop_reason"]
    return ""


@pytest.mark.parametrize(("api", "backend"), PAIRS)
def test_streams_decode_the_same_whole_split_and_with_crlf(api: str, backend: str) -> None:
    wire = STREAM_ANSWERS[backend]
    outputs = []
    variants = [[wire], [wire[i:i + 1] for i in range(len(wire))], [wire[i:i + 7] for i in range(0, len(wire), 7)]]
    if backend not in BINARY_STREAMS:
        crlf = wire.replace(b"\n", b"\r\n")
        variants += [[crlf], [crlf[i:i + 7] for i in range(0, len(crlf), 7)]]
    for pieces in variants:
        stream = translator_for(api, backend, REQUESTS[api], stream=True).stream()
        out = _stream_output(stream, pieces)
        assert stream.complete, pieces[:1]
        assert stream.error is None
        assert stream.usage == Usage(11, 7)
        outputs.append(out)
    # Pass-through relays keep the upstream's framing: compare decoded events, not bytes.
    decoded = []
    for out in outputs:
        decoder = SseDecoder()
        events = decoder.feed(out) + decoder.finish()
        decoded.append([(e.event, _without_volatile(e.data)) for e in events])
        assert _stream_finish(api, events) == LENGTH[api]
    assert all(d == decoded[0] for d in decoded)


def _without_volatile(data: bytes) -> object:
    """Event data minus ids and timestamps each translation makes up anew."""
    if not data.startswith(b"{"):
        return data

    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in ("id", "item_id", "created", "created_at")}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value
    return strip(orjson.loads(data))


@pytest.mark.parametrize(("api", "backend"), PAIRS)
def test_every_error_class_is_classified(api: str, backend: str) -> None:
    translator = translator_for(api, backend, REQUESTS[api])
    for status, body, expected, *headers in ERRORS[backend]:
        failure = translator.error(status, headers[0] if headers else {}, orjson.dumps(body))
        assert failure.error_class is expected, (status, body)


@pytest.mark.parametrize("backend", ["openai", "azure_openai", "gemini"])
def test_embeddings_translators_keep_the_payload_and_count_usage(backend: str) -> None:
    payload = {"model": "m", "input": ["a", "b"], "encoding_format": "float"}
    before = copy.deepcopy(payload)
    translator = translator_for("embeddings", backend, payload, embeddings=True)
    translator.request()
    assert payload == before
    if backend == "gemini":
        answer = {"embeddings": [{"values": [0.1, 0.2]}, {"values": [0.3, 0.4]}]}
    else:
        answer = {"object": "list", "model": "up", "data": [
            {"object": "embedding", "index": i, "embedding": [0.1, 0.2]} for i in range(2)],
            "usage": {"prompt_tokens": 4, "total_tokens": 4}}
    body, usage = translator.response(orjson.dumps(answer))
    assert [item["index"] for item in orjson.loads(body)["data"]] == [0, 1]
    assert usage.prompt_tokens > 0


def test_native_completions_pass_through_unmutated_and_keep_the_stream_options_quirk() -> None:
    payload = {"model": "m", "prompt": "x", "stream": True, "echo": True}
    before = copy.deepcopy(payload)
    translator = translator_for("completions", "openai", payload, native_completions=True)
    upstream = translator.request()
    assert payload == before
    sent = orjson.loads(upstream.body)
    assert sent["model"] == "up-model" and sent["echo"] is True and sent["stream_options"] == {"include_usage": True}


def test_native_completions_honour_a_preset_without_stream_options() -> None:
    """Mistral rejects `stream_options`: native completions go through the preset's adapter too."""
    exchange_payload = {"model": "m", "prompt": "x", "stream": True, "stream_options": {"include_usage": True}}
    endpoint = endpoint_for("openai", native_completions=True)
    endpoint = EndpointRuntime(**{**{f: getattr(endpoint, f) for f in endpoint.__slots__},
                                  "provider": ProviderRuntime("mistral", "openai", adapter_for("openai", "mistral"),
                                                              "https://example.test/v1", "eu", {}, {}, 30.0, "")})
    request = make_mocked_request("POST", "/v1/completions")
    exchange = Exchange(request, None, None, exchange_payload, "t", UsageLedger().account("k", (), "t"))
    OPERATIONS["completions"].prepare(exchange)
    sent = orjson.loads(OPERATIONS["completions"].translator(endpoint, exchange).request().body)
    assert "stream_options" not in sent and sent["stream"] is True


def test_messages_to_anthropic_forward_the_version_and_beta_headers_only() -> None:
    request = make_mocked_request("POST", "/v1/messages", headers={
        "anthropic-version": "2023-06-01", "anthropic-beta": "prompt-caching-2024-07-31",
        "x-api-key": "the-gateway-key", "cookie": "c=1"})
    exchange = Exchange(request, None, None, dict(REQUESTS["messages"]), "t", UsageLedger().account("k", (), "t"))
    OPERATIONS["messages"].prepare(exchange)
    upstream = OPERATIONS["messages"].translator(endpoint_for("anthropic"), exchange).request()
    assert dict(upstream.headers) == {"anthropic-version": "2023-06-01", "anthropic-beta": "prompt-caching-2024-07-31"}
    assert orjson.loads(upstream.body) == {**REQUESTS["messages"], "model": "up-model"}


# ------------------------------------------------------------------ Responses × a native OpenAI endpoint


def native_responses_endpoint() -> EndpointRuntime:
    endpoint = endpoint_for("openai")
    provider = ProviderRuntime("p-native", "openai", adapter_for("openai"), "https://example.test/v1", "eu", {},
                               {"responses_api": "native"}, 30.0, "")
    return EndpointRuntime(**{**{f: getattr(endpoint, f) for f in endpoint.__slots__}, "provider": provider})


def native_responses_translator(payload: dict):
    request = make_mocked_request("POST", "/v1/responses")
    exchange = Exchange(request, None, None, payload, "t", UsageLedger().account("k", (), "t"))
    OPERATIONS["responses"].prepare(exchange)
    return OPERATIONS["responses"].translator(native_responses_endpoint(), exchange)


NATIVE_RESPONSE = {"id": "resp_1", "object": "response", "created_at": 1, "status": "incomplete",
                   "incomplete_details": {"reason": "max_output_tokens"}, "model": "up", "output": [],
                   "usage": {"input_tokens": 11, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 7,
                             "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 18}}
NATIVE_STREAM = _sse(("response.created", {"type": "response.created", "sequence_number": 0,
                                           "response": {**NATIVE_RESPONSE, "status": "in_progress", "usage": None}}),
                     ("response.output_text.delta", {"type": "response.output_text.delta", "sequence_number": 1,
                                                     "item_id": "msg_1", "output_index": 0, "content_index": 0,
                                                     "delta": "Hello", "logprobs": []}),
                     ("response.incomplete", {"type": "response.incomplete", "sequence_number": 2,
                                              "response": NATIVE_RESPONSE}))


@pytest.mark.parametrize("stream", [False, True])
def test_native_responses_pass_through_unmutated_with_store_forced_off(stream: bool) -> None:
    payload = {**REQUESTS["responses"], "store": True, **({"stream": True} if stream else {})}
    before = copy.deepcopy(payload)
    upstream = native_responses_translator(payload).request()
    assert payload == before
    assert upstream.url == "https://example.test/v1/responses"
    assert orjson.loads(upstream.body) == {**before, "model": "up-model", "store": False}


def test_native_responses_usage_and_status_pass_through() -> None:
    body, usage = native_responses_translator(REQUESTS["responses"]).response(orjson.dumps(NATIVE_RESPONSE))
    assert usage == Usage(11, 7)
    assert _client_usage_and_finish("responses", orjson.loads(body)) == ((11, 7), "incomplete")


def test_native_responses_streams_whole_split_and_crlf() -> None:
    for wire in (NATIVE_STREAM, NATIVE_STREAM.replace(b"\n", b"\r\n")):
        for pieces in ([wire], [wire[i:i + 1] for i in range(len(wire))]):
            stream = native_responses_translator({**REQUESTS["responses"], "stream": True}).stream()
            out = _stream_output(stream, pieces)
            assert stream.complete and stream.error is None and stream.usage == Usage(11, 7)
            assert out == NATIVE_STREAM   # relayed frame for frame (line ends normalised)


def test_native_responses_stream_failure_is_an_error() -> None:
    failed = _sse(("response.failed", {"type": "response.failed", "sequence_number": 1, "response": {
        **NATIVE_RESPONSE, "status": "failed", "error": {"code": "rate_limit_exceeded", "message": "slow"}}}))
    stream = native_responses_translator({**REQUESTS["responses"], "stream": True}).stream()
    _stream_output(stream, [failed])
    assert not stream.complete and stream.error.error_class is ErrorClass.RATE_LIMITED


def test_native_responses_errors_are_classified_as_openai_ones() -> None:
    translator = native_responses_translator(REQUESTS["responses"])
    for status, body, expected in ERRORS["openai"]:
        assert translator.error(status, {}, orjson.dumps(body)).error_class is expected


def test_claude_on_vertex_names_the_model_in_the_url_and_the_version_in_the_body() -> None:
    translator = translator_for("chat", "vertex_anthropic", REQUESTS["chat"])
    upstream = translator.request()
    body = orjson.loads(upstream.body)
    assert "model" not in body and body["anthropic_version"] == "vertex-2023-10-16"
    assert upstream.url == ("https://example.test/v1/v1/projects/proj-1/locations/global/publishers/anthropic/"
                            "models/up-model:rawPredict")
    streamed = translator_for("chat", "vertex", REQUESTS["chat"], stream=True).request()
    assert streamed.url.endswith("/publishers/google/models/up-model:streamGenerateContent?alt=sse")
