"""The cascade's acceptance check: is the cheap model's answer good enough to keep?

With `cost_mode: cascade` on a cost-strategy route, a non-streaming chat request goes to the
cheapest qualifying model first; `judge()` reads that answer (in OpenAI chat-completion
shape, after translation) and the request, and the flagship is called only when it says
reject. Rules first, each a reason a cheap answer is clearly not the final one:

- truncated (`finish_reason: length`), empty, or a refusal (`message.refusal`, or refusal /
  hedging phrases near the start of the answer);
- `response_format` JSON: the content must parse as a JSON object (and, for a
  `json_schema`, carry its top-level `required` keys);
- tool calls: each must name a tool the request offered, with arguments that parse as a
  JSON object;
- provider logprobs, when the response carries them: a mean token logprob below
  `min_mean_logprob` (judgement, not measured: the evaluation data has no logprobs).

Structured answers (JSON, tool calls) that pass the rules are accepted. A free-text answer
is then judged by its length against what a strong model writes for such a prompt: a
logistic model of P(the cheap answer is worse | log length ratio, exam-likeness), trained
by scripts/train_cascade.py on recorded answer lengths (tune split); it rejects at
P >= `reject_p`. The answer text is read, never kept: nothing here logs or stores it.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dataplane.routing.complexity import Complexity

FORMAT = "megarouter-cascade/1"
MODEL_PATH = Path(__file__).with_name("cascade_model.json")
_REFUSAL_HEAD_CHARS = 300
_REFUSAL = re.compile(
    r"\b(i'?m sorry,? but i (?:can(?:no|')?t|am unable|won'?t)|i (?:can(?:no|')?t|am unable to|won'?t be able to) "
    r"(?:help|assist|provide|answer|comply|do that)|as an ai(?: language model)?,? i|i'?m (?:not able|unable) to|"
    r"i do(?: not|n'?t) (?:know|have (?:enough )?information))", re.IGNORECASE)


class CascadeModelError(RuntimeError):
    """The acceptance model's file is missing or corrupt (raised at proxy start-up)."""


@dataclass(frozen=True, slots=True)
class Verdict:
    accepted: bool
    reason: str                    # why, in a few words (for headers and explanations)
    p_worse: float | None = None   # the length model's P(cheap answer worse), when it ran


class AcceptanceModel:
    def __init__(self, data: dict[str, Any]) -> None:
        if data.get("format") != FORMAT:
            raise ValueError(f"format {data.get('format')!r}, expected {FORMAT!r}")
        length, worse = data["expected_log_chars"], data["worse"]
        self.length = (float(length["bias"]), float(length["log_prompt_chars"]), float(length["exam_like"]))
        self.worse = (float(worse["bias"]), float(worse["ratio"]), float(worse["ratio_squared"]),
                      float(worse["exam_like"]))
        self.reject_p = float(data["reject_p"])
        self.min_mean_logprob = float(data["min_mean_logprob"])

    def p_worse(self, answer_chars: int, complexity: Complexity) -> float:
        bias, slope, exam = self.length
        expected = bias + slope * math.log1p(4 * complexity.prompt_tokens) + exam * complexity.exam_like
        ratio = math.log1p(answer_chars) - expected
        b0, b1, b2, b3 = self.worse
        z = b0 + b1 * ratio + b2 * ratio * ratio + b3 * complexity.exam_like
        return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0


_MODEL: AcceptanceModel | None = None


def use_model(path: Path | None = None) -> AcceptanceModel:
    global _MODEL
    path = path or MODEL_PATH
    try:
        _MODEL = AcceptanceModel(json.loads(path.read_bytes()))
    except OSError as exc:
        raise CascadeModelError(f"cannot read the cascade model {path}: {exc.strerror}; retrain with "
                                "scripts/train_cascade.py") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise CascadeModelError(f"the cascade model {path} is corrupt ({exc}); retrain with "
                                "scripts/train_cascade.py") from None
    return _MODEL


def load_model() -> AcceptanceModel:
    return _MODEL or use_model()


def judge(payload: dict[str, Any], answer: Any, complexity: Complexity) -> Verdict:
    """Keep the cheap answer, or escalate (see the module docstring)."""
    try:
        choice = answer["choices"][0]
        message = choice["message"]
    except (KeyError, IndexError, TypeError):
        return Verdict(False, "no answer")
    if choice.get("finish_reason") == "length":
        return Verdict(False, "truncated")
    if message.get("refusal"):
        return Verdict(False, "refusal")
    calls = message.get("tool_calls") or []
    if calls:
        return _judge_tool_calls(payload, calls)
    content = message.get("content")
    if not isinstance(content, str) or not content.strip():
        return Verdict(False, "empty")
    if _REFUSAL.search(content[:_REFUSAL_HEAD_CHARS]):
        return Verdict(False, "refusal or hedging")
    fmt = payload.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"):
        return _judge_json(content, fmt)
    model = load_model()
    logprobs = choice.get("logprobs")
    tokens = logprobs.get("content") if isinstance(logprobs, dict) else None
    values = [t["logprob"] for t in tokens if isinstance(t, dict) and isinstance(t.get("logprob"), (int, float))] \
        if isinstance(tokens, list) else []
    if values and sum(values) / len(values) < model.min_mean_logprob:
        return Verdict(False, "low confidence (logprobs)")
    p = model.p_worse(len(content), complexity)
    if p >= model.reject_p:
        return Verdict(False, "length suggests a weaker answer", p)
    return Verdict(True, "passed", p)


def _judge_tool_calls(payload: dict[str, Any], calls: Any) -> Verdict:
    offered = {t.get("function", {}).get("name") for t in payload.get("tools") or () if isinstance(t, dict)}
    for call in calls if isinstance(calls, list) else ():
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or function.get("name") not in offered:
            return Verdict(False, "tool call names no offered tool")
        try:
            arguments = json.loads(function.get("arguments") or "")
        except (TypeError, ValueError):
            return Verdict(False, "tool call arguments are not JSON")
        if not isinstance(arguments, dict):
            return Verdict(False, "tool call arguments are not a JSON object")
    return Verdict(True, "valid tool calls")


def _judge_json(content: str, fmt: dict[str, Any]) -> Verdict:
    try:
        value = json.loads(content)
    except ValueError:
        return Verdict(False, "invalid JSON")
    if not isinstance(value, dict):
        return Verdict(False, "JSON is not an object")
    schema = (fmt.get("json_schema") or {}).get("schema") if fmt.get("type") == "json_schema" else None
    required = schema.get("required") if isinstance(schema, dict) else None
    if isinstance(required, list) and any(key not in value for key in required if isinstance(key, str)):
        return Verdict(False, "JSON lacks required keys")
    return Verdict(True, "valid JSON")
