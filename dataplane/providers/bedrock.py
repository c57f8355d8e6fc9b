"""AWS Bedrock: the Converse and ConverseStream APIs (one wire for every Bedrock model family)
and InvokeModel for Titan and Cohere embeddings.

    POST {base_url}/model/{modelId}/converse          (JSON)
    POST {base_url}/model/{modelId}/converse-stream   (application/vnd.amazon.eventstream)
    POST {base_url}/model/{modelId}/invoke            (embeddings)

`base_url` is `https://bedrock-runtime.<region>.amazonaws.com`; `modelId` is a model id
(`anthropic.claude-3-5-sonnet-20241022-v2:0`) or a cross-region inference profile
(`us.anthropic.claude-…`), percent-encoded as botocore does. Requests are signed with SigV4
(`aws.SigV4Signer`, botocore) — or, when the provider has a credential, sent with it as a
Bedrock API key (`Authorization: Bearer`).

Request — the OpenAI chat request is first mapped as for Anthropic's Messages API
(`anthropic.messages_body`: system prompt, turns merged to alternate, parts, tool calls and
results, sampling, JSON-mode instruction, rejections), then re-expressed in Converse's
vocabulary: text -> {text}; base64 images -> {image: {format, source: {bytes}}} (Converse
takes no image URLs: 400); PDFs -> {document}; tool_use -> {toolUse}; tool_result ->
{toolResult}; a part's `cache_control` -> a {cachePoint} after it; `max_tokens`,
`temperature`, `top_p`, `stop` -> inferenceConfig; `top_k` -> additionalModelRequestFields;
tools -> toolConfig (`tool_choice` auto/required/named -> auto/any/tool; "none" sends no
tools, unless the conversation already holds tool calls, which Converse only accepts with a
toolConfig — then tools stay and the choice is the model's). `parallel_tool_calls` and
`user` have no Converse equivalent and are dropped.

Response — text blocks joined into `content`, toolUse -> `tool_calls`, `stopReason` ->
`finish_reason` (guardrail_intervened and content_filtered -> "content_filter"); usage:
prompt = inputTokens + cache reads + cache writes, cached = cache reads. Streams: see
`bedrock_stream`.

Errors — the exception name from `x-amzn-ErrorType` (or the body's `__type`), classified:
throttling and quota -> rate limited; ModelTimeout -> timeout; ValidationException saying
the input is too long -> context length, other validation -> the caller's request; access,
signature, token and not-found errors -> the endpoint (fail over); server, unavailable, not
ready and model errors -> retryable.
"""

from __future__ import annotations

import base64
import struct
import time
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import orjson

from dataplane.errors import ApiError, bad_request
from dataplane.providers.anthropic import messages_body
from dataplane.providers.anthropic_stream import usage_json
from dataplane.providers.aws import SigV4Signer, bedrock_region, signer_for
from dataplane.providers.base import ProviderError, Usage
from dataplane.providers.bedrock_stream import BedrockStream, classify, finish_reason, usage_of
from dataplane.providers.errors import parse_retry_after
from dataplane.providers.gemini import estimate_tokens

# Cross-region inference profiles: `<geography>.<model id>`.
INFERENCE_PROFILE_PREFIXES = frozenset({"us", "us-gov", "eu", "apac", "jp", "au", "ca", "global"})
_IMAGE_FORMATS = {"image/jpeg": "jpeg", "image/png": "png", "image/gif": "gif", "image/webp": "webp"}

# --- request: OpenAI chat request -> Converse body -----------------------------------


def converse_body(payload: dict[str, Any]) -> dict[str, Any]:
    """The Converse request body (the model id goes in the URL)."""
    anthropic = messages_body(payload, "")
    messages = [{"role": turn["role"], "content": _blocks(turn["content"], f"messages[{i}]")}
                for i, turn in enumerate(anthropic["messages"])]
    body: dict[str, Any] = {"messages": messages}
    if anthropic.get("system"):
        body["system"] = _blocks(anthropic["system"], "messages")
    inference: dict[str, Any] = {"maxTokens": anthropic["max_tokens"]}
    for ours, theirs in (("temperature", "temperature"), ("top_p", "topP"), ("stop_sequences", "stopSequences")):
        if ours in anthropic:
            inference[theirs] = anthropic[ours]
    body["inferenceConfig"] = inference
    if "top_k" in anthropic:
        body["additionalModelRequestFields"] = {"top_k": anthropic["top_k"]}
    tool_config = _tool_config(anthropic, payload.get("tool_choice"), messages)
    if tool_config:
        body["toolConfig"] = tool_config
    return body


def _blocks(blocks: list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for block in blocks:
        kind = block.get("type")
        if kind == "text":
            out.append({"text": block["text"]})
        elif kind == "image":
            out.append(_image(block["source"], where))
        elif kind == "document":
            out.append({"document": {"format": "pdf", "name": f"document-{len(out) + 1}",
                                     "source": {"bytes": block["source"]["data"]}}})
        elif kind == "tool_use":
            out.append({"toolUse": {"toolUseId": block["id"], "name": block["name"], "input": block["input"]}})
        elif kind == "tool_result":
            content = [{"text": b["text"]} if b.get("type") == "text" else _image(b["source"], where)
                       for b in block.get("content") or []] or [{"text": ""}]
            out.append({"toolResult": {"toolUseId": block["tool_use_id"], "content": content}})
        if "cache_control" in block:
            out.append({"cachePoint": {"type": "default"}})
    return out


def _image(source: dict[str, Any], where: str) -> dict[str, Any]:
    if source.get("type") != "base64":
        raise bad_request("Bedrock models take images as base64 data URLs, not image URLs.", f"{where}.content")
    return {"image": {"format": _IMAGE_FORMATS[source["media_type"]], "source": {"bytes": source["data"]}}}


def _tool_config(anthropic: dict[str, Any], choice: Any, messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    tools = anthropic.get("tools")
    if not tools:
        return None
    has_tool_blocks = any("toolUse" in block or "toolResult" in block
                          for message in messages for block in message["content"])
    if choice == "none" and not has_tool_blocks:
        return None
    config: dict[str, Any] = {"tools": [{"toolSpec": {
        "name": tool["name"], **({"description": tool["description"]} if tool.get("description") else {}),
        "inputSchema": {"json": tool["input_schema"]}}} for tool in tools]}
    selected = anthropic.get("tool_choice") or {}
    if selected.get("type") == "any":
        config["toolChoice"] = {"any": {}}
    elif selected.get("type") == "tool":
        config["toolChoice"] = {"tool": {"name": selected["name"]}}
    elif selected.get("type") == "auto":
        config["toolChoice"] = {"auto": {}}
    return config


# --- response: Converse answer -> chat.completion ------------------------------------


def completion(answer: dict[str, Any], model: str) -> tuple[dict[str, Any], Usage]:
    message = (answer.get("output") or {}).get("message") or {}
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in message.get("content") or []:
        if not isinstance(block, dict):
            continue
        if isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif isinstance(block.get("toolUse"), dict):
            use = block["toolUse"]
            arguments = orjson.dumps(use.get("input") or {}).decode()
            calls.append({"id": use.get("toolUseId"), "type": "function",
                          "function": {"name": use.get("name"), "arguments": arguments}})
    reply: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None,
                             "refusal": None}
    if calls:
        reply["tool_calls"] = calls
    usage = usage_of(answer.get("usage"))
    body = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": reply, "logprobs": None,
                     "finish_reason": finish_reason(answer.get("stopReason"))}],
        "usage": usage_json(usage),
    }
    return body, usage


def exception_name(headers: Mapping[str, str], body: Any) -> str:
    """`ThrottlingException` from `x-amzn-ErrorType: ThrottlingException:http://…` (or the
    body's `__type`, which may carry a namespace: `com.amazon.coral…#ThrottlingException`)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    name = lowered.get("x-amzn-errortype", "")
    if not name and isinstance(body, dict):
        name = str(body.get("__type") or body.get("code") or "")
    return name.split(":", 1)[0].rsplit("#", 1)[-1]


# --- embeddings: Titan and Cohere through InvokeModel --------------------------------


def _embedding_family(upstream_model: str) -> str:
    base = upstream_model.split(".", 1)[1] if upstream_model.split(".", 1)[0] in INFERENCE_PROFILE_PREFIXES \
        else upstream_model
    if base.startswith("amazon.titan-embed"):
        return "titan"
    if base.startswith("cohere.embed"):
        return "cohere"
    raise ApiError(400, f"Bedrock model {upstream_model!r} is not a Titan or Cohere embeddings model this "
                        "gateway can call", param="model", code="embeddings_not_supported")


def _inputs(payload: Mapping[str, Any]) -> list[str]:
    value = payload.get("input")
    inputs = [value] if isinstance(value, str) else value
    if not isinstance(inputs, list) or not inputs or not all(isinstance(i, str) for i in inputs):
        raise bad_request("Bedrock embeddings take 'input' as a string or an array of strings (not token "
                          "arrays).", "input")
    return inputs


# --- the adapter ---------------------------------------------------------------------


class BedrockAdapter:
    kind = "bedrock"
    supports_embeddings = True
    supports_completions = False  # legacy completions are translated through chat

    def auth_headers(self, secret: str | None) -> dict[str, str]:
        # A Bedrock API key is a bearer token; without one, requests are SigV4-signed instead.
        return {"Authorization": f"Bearer {secret}"} if secret else {}

    def request_signer(self, provider: str, base_url: str, options: Mapping[str, str],
                       secret: str | None) -> SigV4Signer | None:
        if secret:
            return None
        return signer_for(provider, bedrock_region(base_url, options) or "us-east-1", options.get("aws_profile", ""))

    def chat_url(self, base_url: str, options: Mapping[str, str], upstream_model: str, stream: bool) -> str:
        return f"{base_url}/model/{quote(upstream_model, safe='')}/{'converse-stream' if stream else 'converse'}"

    def chat_request(self, payload: dict[str, Any], upstream_model: str) -> bytes:
        return orjson.dumps(converse_body(payload))

    def chat_response(self, body: bytes, model: str) -> tuple[bytes, Usage]:
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError:
            answer = None
        if not isinstance(answer, dict):
            raise ApiError(502, "the upstream returned a response that is not a Converse answer",
                           type="server_error", code="upstream_error")
        reply, usage = completion(answer, model)
        return orjson.dumps(reply), usage

    def chat_stream(self, model: str, include_usage: bool) -> BedrockStream:
        return BedrockStream(model, include_usage)

    def classify_error(self, status: int, headers: Mapping[str, str], body: bytes) -> ProviderError:
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            parsed = None
        name = exception_name(headers, parsed)
        message = str((parsed.get("message") or parsed.get("Message")) if isinstance(parsed, dict) else "") \
            or name or f"HTTP {status}"
        return ProviderError(classify(status, name, message), message, status=status, code=name or None,
                             retry_after_s=parse_retry_after(headers) if status == 429 or status >= 500 else None)

    def embeddings_request(
        self, base_url: str, options: Mapping[str, str], payload: dict[str, Any], upstream_model: str
    ) -> tuple[str, bytes]:
        url = f"{base_url}/model/{quote(upstream_model, safe='')}/invoke"
        inputs = _inputs(payload)
        if payload.get("encoding_format") not in (None, "float", "base64"):
            raise bad_request("'encoding_format' must be 'float' or 'base64'", "encoding_format")
        if _embedding_family(upstream_model) == "titan":
            if len(inputs) != 1:
                raise bad_request("Titan embeddings models embed one input per request: send the inputs one by one "
                                  "(or use a Cohere embeddings model for batches).", "input")
            body: dict[str, Any] = {"inputText": inputs[0]}
            if payload.get("dimensions") is not None:
                body["dimensions"] = payload["dimensions"]
            return url, orjson.dumps(body)
        if len(inputs) > 96:
            raise bad_request("Cohere embeddings models on Bedrock take at most 96 inputs per request.", "input")
        return url, orjson.dumps({"texts": inputs, "input_type": options.get("embedding_input_type",
                                                                             "search_document")})

    def embeddings_response(self, body: bytes, model: str, payload: dict | None = None) -> tuple[bytes, Usage]:
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError:
            answer = None
        if not isinstance(answer, dict):
            raise ApiError(502, "the upstream returned a response that is not an embeddings answer",
                           type="server_error", code="upstream_error")
        vectors = [answer["embedding"]] if isinstance(answer.get("embedding"), list) else \
            [v for v in answer.get("embeddings") or [] if isinstance(v, list)]
        tokens = answer.get("inputTextTokenCount")
        if not isinstance(tokens, int):  # Cohere reports no token count
            tokens = estimate_tokens(payload) if payload is not None else 0
        as_base64 = (payload or {}).get("encoding_format") == "base64"
        data = [{"object": "embedding", "index": i,
                 "embedding": _base64_floats(v) if as_base64 else v} for i, v in enumerate(vectors)]
        response = {"object": "list", "data": data, "model": model,
                    "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
        return orjson.dumps(response), Usage(prompt_tokens=tokens)


def _base64_floats(vector: list[float]) -> str:
    """OpenAI's base64 encoding: little-endian float32s."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


ADAPTER = BedrockAdapter()
