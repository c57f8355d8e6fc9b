"""Legacy completions translated through chat, both ways."""

from __future__ import annotations

import orjson
import pytest

from dataplane.errors import ApiError
from dataplane.providers.openai import OpenAIStream
from dataplane.translate.completions_chat import ChatToCompletionStream, chat_payload, completion_from_chat


def test_prompt_becomes_one_user_message_with_legacy_default_length() -> None:
    chat = chat_payload({"model": "m", "prompt": ["Once upon"], "temperature": 0.2, "stop": ["\n"], "echo": False})
    assert chat == {"model": "m", "messages": [{"role": "user", "content": "Once upon"}], "temperature": 0.2,
                    "stop": ["\n"], "max_tokens": 16}


@pytest.mark.parametrize(("field", "value"), [("echo", True), ("suffix", "end"), ("logprobs", 2), ("best_of", 3)])
def test_untranslatable_fields_are_refused_by_name(field: str, value) -> None:
    with pytest.raises(ApiError) as caught:
        chat_payload({"model": "m", "prompt": "x", field: value})
    assert caught.value.status == 400 and caught.value.param == field


def test_several_prompts_are_refused() -> None:
    with pytest.raises(ApiError) as caught:
        chat_payload({"model": "m", "prompt": ["a", "b"]})
    assert caught.value.param == "prompt"


def test_chat_answer_becomes_text_completion() -> None:
    chat = {"id": "chatcmpl-abc", "object": "chat.completion", "created": 5, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi there"},
                         "finish_reason": "length"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}
    completion = completion_from_chat(chat)
    assert completion == {"id": "cmpl-abc", "object": "text_completion", "created": 5, "model": "m",
                          "choices": [{"text": "hi there", "index": 0, "logprobs": None, "finish_reason": "length"}],
                          "usage": chat["usage"]}


def test_chat_stream_becomes_completion_stream() -> None:
    def event(delta: dict, finish=None) -> bytes:
        chunk = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 1, "model": "m",
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    upstream = event({"role": "assistant", "content": ""}) + event({"content": "Hel"}) + event({"content": "lo"}) \
        + event({}, "stop") + b"data: [DONE]\n\n"
    stream = ChatToCompletionStream(OpenAIStream(include_usage=False))
    out = b"".join(stream.feed(upstream[i:i + 5]) for i in range(0, len(upstream), 5)) + stream.finish()
    events = [e for e in out.split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]"
    chunks = [orjson.loads(e[6:]) for e in events[:-1]]
    assert all(c["object"] == "text_completion" and c["id"] == "cmpl-x" for c in chunks)
    assert "".join(c["choices"][0]["text"] for c in chunks) == "Hello"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert stream.complete
