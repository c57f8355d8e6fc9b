"""Fast offline complexity estimate of a chat request.

`estimate(payload)` answers, for an OpenAI chat request dict, how likely a cheap model's
answer is worse than a capable one's, so the cost strategy can send only the requests that
need it to an expensive model. It runs in pure Python (no numpy, nothing downloaded) in
well under a millisecond: the text it reads is capped (`_HEAD_CHARS` + `_TAIL_CHARS` of the
last user message for n-grams and cues, `_EMBED_*_CHARS` for the embedding) while lengths
are counted over the whole request.

How the score is made
---------------------
1. Features of the request (`features()`):
   - binary word unigrams and bigrams of the last user message (lower-cased, numbers kept
     as tokens), L2-normalised (each present n-gram counts 1/sqrt(number of distinct));
   - dense structure features: log prompt length (whole request and last user message),
     lines, numbers, question marks, sentences, capitalised names, code-symbol density,
     multiple-choice layout, and the detected task (one-hot); the length/structure
     features are split by layout (multiple choice or not);
   - the mean WordLlama token embedding of the message (see embedding.py): every head is
     linear in it, so it is shipped folded into one weight per vocabulary piece per head.
2. A mixture of experts (scripts/train_complexity.py, weights in complexity_model.json):
   - exam expert (MMLU + GSM8K correctness): two logistic heads P(strong right | x),
     P(weak right | x); exam gain = their difference;
   - chat expert (AlpacaEval judge verdicts, 8 cheaper models pooled, length-controlled):
     a ridge regression predicting chat gain = P(strong preferred) - P(weak preferred);
   - gate: g = P(the prompt looks like an exam question rather than open chat).
   gain = g · exam gain + (1 - g) · chat gain: both experts estimate P(strong strictly
   better) - P(weak strictly better), so the mixture is in one unit.
3. Request-level priors the evaluation data cannot teach (every evaluation prompt is one
   user message without tools): tools, JSON-schema output, a large requested output,
   images, long conversations and very long contexts add a small documented amount to
   `gain` (`_PRIOR_*` below). Judgement, not measured.
4. `score` = 0.01 + 0.98·sigmoid(a·gain + b), (a, b) fitted (Platt scaling) on out-of-fold
   gains of the tune split against P(GPT-4's answer strictly better than Mixtral's), each
   dataset weighted equally. So `score` is strictly monotone in `gain` and calibrated ≈
   P(a Mixtral-class answer is worse than a GPT-4-class one) on traffic like the training
   data; a monotone score, not a calibrated probability, for traffic unlike it. Trivial
   requests (empty, or a short greeting/thanks under 1,000 estimated tokens, without tools
   or media) get 0.0.

`needed_quality` (1..5, the catalog's quality_tier scale) maps `score` with the thresholds
stored in the weights file (chosen on out-of-fold predictions of the tune split only):
    score <  t[0]            -> 1   (trivial; greetings get 1 whatever)
    t[0] <= score < t[1]     -> 2
    t[1] <= score < t[2]     -> 3   (a cheap model suffices)
    t[2] <= score < t[3]     -> 4   (the tune split reaches PGR >= 80 % on every dataset)
    score >= t[3]            -> 5   (... PGR >= 50 % with tier 5 alone)
t[0] and t[1] are fixed conventions (0.05, 0.10); t[2], t[3] are tuned.

Quality targets (`quality_decision`, `quality_calibration`): a table of score thresholds,
one per target share 0.50..0.99 of the flagship's quality (1 - P(the served answer is worse
than the flagship's)), calibrated on the tune split out of fold; the most demanding dataset
sets each threshold.

`prompt_tokens` is an estimate: ceil(characters / 4) of every text part of every message,
+ 4 per message, + ceil(characters / 4) of the JSON of `tools`/`functions`/
`response_format`'s schema, + 85 per image/audio/file part. No tokenizer.

Measured (bench/routellm_eval.py, held-out halves never used for training or thresholds):
APGR 0.54 on open chat (AlpacaEval), 0.685 on MMLU, 0.60 on GSM8K; trained without the
evaluated kind of traffic 0.45 / 0.57 / 0.51 (see bench/RESULTS.md). Timing ≈ 0.16 ms
median, 0.73 ms p99, one core, CPython 3.11; about 24 MB of resident memory.

Zero data retention: nothing here logs, stores or caches prompt text; the only state is
the weights file, read once at start-up (`use_model`) or on the first estimate.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import Any

from dataplane.routing.embedding import EmbeddingError, Segmenter

try:  # orjson is a runtime dependency of the project; json is the fallback
    import orjson as _orjson
except ImportError:  # pragma: no cover
    _orjson = None

__all__ = [
    "Complexity",
    "MODEL_PATH",
    "ModelError",
    "TASKS",
    "estimate",
    "estimate_prompt_tokens",
    "features",
    "load_model",
    "QualityDecision",
    "quality_calibration",
    "quality_decision",
    "use_model",
]

TASKS: tuple[str, ...] = ("chat", "summarisation", "classification", "extraction", "code", "maths", "reasoning")

MODEL_PATH = Path(__file__).with_name("complexity_model.json")

# Work caps: n-grams and cue regexes read at most this much of the last user
# message (its head and its tail); lengths are measured on everything.
_HEAD_CHARS = 1500
_TAIL_CHARS = 500
# ... and the embedding reads at most this much (its mean settles within a few hundred pieces).
_EMBED_HEAD_CHARS = 600
_EMBED_TAIL_CHARS = 300
_SYSTEM_CUE_CHARS = 1000

_IMAGE_TOKENS = 85
_MESSAGE_OVERHEAD_TOKENS = 4

# Priors added to `gain` (expected correctness gain of the capable model) for
# request properties absent from the evaluation data. Judgement, not measured.
_PRIOR_TOOLS = 0.05
_PRIOR_MANY_TOOLS = 0.03          # more than 8 tools
_PRIOR_JSON_SCHEMA = 0.03
_PRIOR_LONG_OUTPUT = 0.03         # max_tokens >= 2000
_PRIOR_VERY_LONG_OUTPUT = 0.03    # max_tokens >= 8000 (on top of the above)
_PRIOR_IMAGES = 0.03
_PRIOR_LONG_CONVERSATION = 0.02   # more than 6 messages
_PRIOR_LONG_CONTEXT = 0.03        # prompt estimate >= 8000 tokens


@dataclass(frozen=True, slots=True)
class Complexity:
    score: float          # 0 (trivial) .. 1 (needs the most capable model); see the module docstring
    task: str             # one of TASKS
    prompt_tokens: int    # estimate: ≈ chars/4 (see the module docstring)
    needed_quality: int   # 1..5, the quality tier this request needs
    exam_like: float = 0.0  # the gate: P(the request looks like an exam question rather than open chat)


# ---------------------------------------------------------------------------
# Reading the request


class _Parsed:
    __slots__ = ("system", "user", "total_chars", "n_messages", "n_media", "extra_chars")

    def __init__(self) -> None:
        self.system = ""        # system/developer text (capped)
        self.user = ""          # last user message text (full)
        self.total_chars = 0    # text characters in all messages
        self.n_messages = 0
        self.n_media = 0        # image/audio/file parts
        self.extra_chars = 0    # tool schemas, response_format schema


def _content(content: Any, parsed: _Parsed) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict):
                kind = part.get("type")
                text = part.get("text")
                if isinstance(text, str):
                    texts.append(text)
                elif kind in ("image_url", "input_image", "image", "input_audio", "audio", "file", "input_file"):
                    parsed.n_media += 1
                elif isinstance(text, dict) and isinstance(text.get("value"), str):
                    texts.append(text["value"])
        return "\n".join(texts)
    return ""


def _json_len(value: Any) -> int:
    if value is None:
        return 0
    try:
        if _orjson is not None:
            return len(_orjson.dumps(value, default=str))
        return len(json.dumps(value, default=str))
    except (TypeError, ValueError):
        return 0


def _parse(payload: Any) -> _Parsed:
    parsed = _Parsed()
    if not isinstance(payload, dict):
        return parsed
    messages = payload.get("messages")
    last_text = ""
    if isinstance(messages, list):
        system_parts: list[str] = []
        user = None
        for message in messages:
            if not isinstance(message, dict):
                continue
            parsed.n_messages += 1
            text = _content(message.get("content"), parsed)
            parsed.total_chars += len(text)
            role = message.get("role")
            if role in ("system", "developer"):
                if sum(map(len, system_parts)) < _SYSTEM_CUE_CHARS:
                    system_parts.append(text)
            elif role == "user":
                user = text
            if text:
                last_text = text
            calls = message.get("tool_calls")
            if calls:
                parsed.extra_chars += _json_len(calls)
        parsed.system = "\n".join(system_parts)[:_SYSTEM_CUE_CHARS]
        parsed.user = user if user is not None else last_text
    else:
        prompt = payload.get("prompt", payload.get("input"))
        if isinstance(prompt, list):
            prompt = "\n".join(p for p in prompt if isinstance(p, str))
        if isinstance(prompt, str):
            parsed.user = prompt
            parsed.total_chars = len(prompt)
            parsed.n_messages = 1
    for key in ("tools", "functions"):
        parsed.extra_chars += _json_len(payload.get(key)) if payload.get(key) else 0
    fmt = payload.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        parsed.extra_chars += _json_len(fmt.get("json_schema"))
    return parsed


def _tokens_of(parsed: _Parsed) -> int:
    return (
        -(-parsed.total_chars // 4)
        + _MESSAGE_OVERHEAD_TOKENS * parsed.n_messages
        + -(-parsed.extra_chars // 4)
        + _IMAGE_TOKENS * parsed.n_media
    )


def estimate_prompt_tokens(payload: dict) -> int:
    """Estimated prompt tokens of a request: ≈ chars/4 (see the module docstring)."""
    return _tokens_of(_parse(payload))


# ---------------------------------------------------------------------------
# Task detection (rules; also features of the learned model)

_I = re.IGNORECASE


def _cues(*items: str) -> frozenset[str]:
    return frozenset(items)


# Cue words and bigrams per task, matched against the request's lower-cased
# word uni+bigrams (the tokenizer splits punctuation: "c++" -> "c +", "```" ->
# "` `", "\\frac" -> "\\ frac"). A task's evidence is weight x the number of
# distinct cues present (plus structural evidence for code and maths).
_CUES: tuple[tuple[str, frozenset[str], float], ...] = (
    ("summarisation", _cues(
        "summarise", "summarize", "summarised", "summarized", "summarising", "summarizing", "summary", "summaries",
        "summarisation", "summarization", "tldr", "tl ;", "condense", "recap", "gist", "key points", "key takeaways",
        "main points", "bullet points"), 2.0),
    ("classification", _cues(
        "classify", "classified", "classifier", "classification", "categorise", "categorize", "categorised",
        "categorized", "categorisation", "categorization", "sentiment", "spam", "which category", "which class",
        "which label", "positive or", "or negative", "label each", "label this", "label the", "intent detection",
        "tag each"), 2.0),
    ("extraction", _cues(
        "extract", "extracted", "extracting", "extraction", "pull out", "named entities", "entity extraction",
        "following fields", "these fields", "the fields", "key value", "as json", "in json", "json object",
        "parse out"), 2.0),
    ("code", _cues(
        "python", "javascript", "typescript", "java", "golang", "rust", "sql", "regex", "bash", "html", "css",
        "kotlin", "swift", "c +", "c #", "function", "functions", "script", "program", "compile", "compiler",
        "debug", "bug", "traceback", "refactor", "snippet", "implement", "code", "api", "stack trace", "unit test",
        "unit tests", "` `", "def", "import", "return"), 1.0),
    ("maths", _cues(
        "solve", "calculate", "compute", "evaluate", "simplify", "integral", "integrate", "derivative",
        "differentiate", "equation", "equations", "probability", "percent", "percentage", "average", "prime",
        "factorise", "factorize", "matrix", "theorem", "how many", "how much", "sum of", "product of", "\\ frac",
        "\\ int", "%", "how far", "how long", "how old", "how fast", "in total", "altogether", "total"), 1.0),
    ("reasoning", _cues(
        "prove", "proof", "reasoning", "analyse", "analyze", "compare", "contrast", "deduce", "infer", "logic",
        "logical", "tradeoff", "tradeoffs", "justify", "strategy", "plan", "step by", "explain why", "why does",
        "why do", "why is", "why are", "why would", "pros and", "what would", "think through"), 1.0),
)
_TASK_PRIORITY = {t: i for i, t in enumerate(("extraction", "summarisation", "classification", "code", "maths",
                                               "reasoning", "chat"))}
_STRONG_MATHS = frozenset(("\\ frac", "\\ int", "integral", "derivative", "equation", "equations"))
_NUMBER_WORDS = frozenset((
    "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve", "fifteen",
    "twenty", "thirty", "forty", "fifty", "hundred", "thousand", "million", "half", "third", "thirds", "quarter",
    "twice", "double", "triple", "dozen"))
_ARITHMETIC = re.compile(r"\d\s*[-+*/^×÷=]\s*\d")


def _detect_task(grams: dict[str, None], system: set[str], capped: str, json_output: bool, code_lines: int, mc: bool,
                 numbers: int) -> str:
    best, best_score = "chat", 0.0
    for task, cues, weight in _CUES:
        present = grams.keys() & cues
        hits = len(present)
        if system:
            hits += len((system & cues) - present)
        if task == "maths":
            quantities = numbers + len(grams.keys() & _NUMBER_WORDS)
            if _ARITHMETIC.search(capped):
                hits += 1
            if quantities >= 3 and not mc and "?" in grams:
                hits += 1     # a question over several quantities: a word problem
        if not hits and not (task == "code" and code_lines):
            continue
        score = weight * hits
        if task == "code":
            score += 2.0 * min(code_lines, 5) / 5
            if "` `" in grams:
                score += 2.0
            elif hits == 1 and not code_lines:
                score *= 0.5          # a lone "function"/"program" word is weak evidence
        elif task == "maths":
            if quantities >= 2 or any(k in grams for k in _STRONG_MATHS):
                score += 0.5
            else:
                score *= 0.5
        elif task == "extraction" and json_output:
            score += 1.0
        if score > best_score or (score == best_score and _TASK_PRIORITY[task] < _TASK_PRIORITY[best]):
            best, best_score = task, score
    if best_score < 1.0:
        if mc:
            return "reasoning"
        return "chat"
    return best


# Lines that look like code: a keyword at a line start, or a line ending in ; { or }.
_CODE_START = re.compile(r"\n[ \t]*(?:def |class |import |from \S+ import|#include|public |function |const |let |"
                         r"var |SELECT |for \(|if \(|return )")
_CODE_END = re.compile(r"[;{}][ \t]*$", re.MULTILINE)
_MC_MARKS = tuple(tuple(f"\n{fmt.format(letter)} " for fmt in ("{}.", "{})", "({})")) for letter in "ABCD")
_SENTENCE_END = re.compile(r"[.?!](?:\s|$)")
_CAPITALISED = re.compile(r"[A-Z][a-z]+")
_TOKEN = re.compile(r"\w+|\S")   # words, and every other non-space character alone
_TRIVIAL = re.compile(
    r"^\W*(hi|hello|hey|hiya|yo|howdy|greetings|good (morning|afternoon|evening|night)|thanks?( you)?( so much)?|"
    r"thank you( very much)?|thx|ty|ok(ay)?|cool|great|nice|bye|goodbye|see you|cheers|how are you( doing)?( today)?|"
    r"what'?s up|sup)\W*(there|everyone|all|friend|again|!|\.)*\W*$", _I)


# ---------------------------------------------------------------------------
# Features

DENSE_NAMES: tuple[str, ...] = (
    "log_total_chars", "log_user_chars", "log_lines", "log_numbers", "log_questions", "log_sentences",
    "log_capitalised", "code_density", "multiple_choice",
) + tuple(f"task_{t}" for t in TASKS)
# Features whose slope differs by layout: emitted twice, for MC and non-MC.
_SPLIT = 7   # the first _SPLIT dense features are split by layout


class _Features:
    __slots__ = ("ngrams", "dense", "task", "parsed", "trivial", "json_schema")

    def __init__(self, ngrams: dict[str, None], dense: list[float], task: str, parsed: _Parsed, trivial: bool,
                 json_schema: bool) -> None:
        self.ngrams = ngrams
        self.dense = dense
        self.task = task
        self.parsed = parsed
        self.trivial = trivial
        self.json_schema = json_schema


def features(payload: Any) -> _Features:
    """The model's inputs for one request (used by training and inference alike)."""
    parsed = _parse(payload)
    user = parsed.user
    if len(user) > _HEAD_CHARS + _TAIL_CHARS:
        capped = user[:_HEAD_CHARS] + "\n" + user[-_TAIL_CHARS:]
    else:
        capped = user
    lower = capped.lower()
    toks = _TOKEN.findall(lower)
    numbers = sum(map(str.isdigit, toks))
    # A dict, not a set: distinct n-grams in first-occurrence order, so sums over them are reproducible.
    ngrams = dict.fromkeys(toks)
    if len(toks) > 1:
        ngrams.update(dict.fromkeys([a + " " + b for a, b in zip(toks, toks[1:], strict=False)]))

    fmt = payload.get("response_format") if isinstance(payload, dict) else None
    fmt_type = fmt.get("type") if isinstance(fmt, dict) else None
    json_output = fmt_type in ("json_schema", "json_object")
    code_lines = len(_CODE_START.findall("\n" + capped)) + len(_CODE_END.findall(capped))
    mc = sum(1 for marks in _MC_MARKS if any(m in capped for m in marks)) >= 3
    system: set[str] = set()
    if parsed.system:
        stoks = _TOKEN.findall(parsed.system.lower())
        system = set(stoks)
        system.update([a + " " + b for a, b in zip(stoks, stoks[1:], strict=False)])
    task = _detect_task(ngrams, system, capped, json_output, code_lines, mc, numbers)

    n = len(capped) or 1
    symbols = capped.count("{") + capped.count("}") + capped.count(";") + capped.count("(") + capped.count("=")
    base = [
        math.log1p(parsed.total_chars),
        math.log1p(len(user)),
        math.log1p(capped.count("\n")),
        math.log1p(numbers),
        math.log1p(capped.count("?")),
        math.log1p(len(_SENTENCE_END.findall(capped))),
        math.log1p(len(set(_CAPITALISED.findall(capped)))),
    ]
    zeros = [0.0] * _SPLIT
    dense = (base + zeros) if mc else (zeros + base)
    dense.append(min(1.0, 10.0 * symbols / n) + min(code_lines, 10) / 10.0)
    dense.append(1.0 if mc else 0.0)
    dense.extend(1.0 if task == t else 0.0 for t in TASKS)

    tools = payload.get("tools") or payload.get("functions") if isinstance(payload, dict) else None
    trivial = (not tools and parsed.n_media == 0 and len(user) <= 60 and _tokens_of(parsed) < 1000
               and (not user.strip() or _TRIVIAL.match(user) is not None))
    return _Features(ngrams, dense, task, parsed, trivial, fmt_type == "json_schema")


def embedding_text(user: str) -> str:
    """The part of the last user message the embedding reads (head and tail)."""
    if len(user) > _EMBED_HEAD_CHARS + _EMBED_TAIL_CHARS:
        return user[:_EMBED_HEAD_CHARS] + "\n" + user[-_EMBED_TAIL_CHARS:]
    return user


def dense_names() -> list[str]:
    """Names of the dense feature vector as `features()` lays it out."""
    split = list(DENSE_NAMES[:_SPLIT])
    return ([f"mc:{n}" for n in split] + [f"free:{n}" for n in split] + list(DENSE_NAMES[_SPLIT:]))


# ---------------------------------------------------------------------------
# Model


class ModelError(RuntimeError):
    """The weights file is missing, corrupt or from another feature layout: the message says
    which and how to fix it. Raised at proxy start-up (`load_model()`), never per request."""


class _Model:
    __slots__ = ("strong", "weak", "chat", "dense_s", "dense_w", "bias_s", "bias_w", "chat_dense", "chat_bias",
                 "gate_dense", "gate_bias", "segmenter", "piece_chat", "piece_gate", "piece_exam", "platt_a", "platt_b",
                 "thresholds", "quality_targets", "meta")

    def __init__(self, data: dict[str, Any]) -> None:
        if data.get("format") != "megarouter-complexity/2":
            raise ValueError(f"format {data.get('format')!r}, expected 'megarouter-complexity/2'")
        if data["dense_names"] != dense_names():
            raise ValueError("the weights do not match this feature layout")
        exam = data["exam"]
        self.strong: dict[str, float] = {}
        self.weak: dict[str, float] = {}
        self.chat: dict[str, float] = {}
        for key, (ws, ww, wc) in exam["ngrams"].items():
            if ws:
                self.strong[key] = float(ws)
            if ww:
                self.weak[key] = float(ww)
            if wc:
                self.chat[key] = float(wc)
        n_dense = len(data["dense_names"])
        self.dense_s = _floats(exam["dense"]["strong"], n_dense, "exam.dense.strong")
        self.dense_w = _floats(exam["dense"]["weak"], n_dense, "exam.dense.weak")
        self.bias_s = float(exam["bias"]["strong"])
        self.bias_w = float(exam["bias"]["weak"])
        self.chat_dense = _floats(data["chat"]["dense"], n_dense, "chat.dense")
        self.chat_bias = float(data["chat"]["bias"])
        self.gate_dense = _floats(data["gate"]["dense"], n_dense, "gate.dense")
        self.gate_bias = float(data["gate"]["bias"])
        pieces = data["pieces"]
        if not isinstance(pieces, list) or not all(isinstance(p, str) for p in pieces):
            raise ValueError("pieces must be a list of strings")
        self.segmenter = Segmenter(pieces)
        self.piece_chat = _floats(data["piece_weights"]["chat"], len(pieces), "piece_weights.chat")
        self.piece_gate = _floats(data["piece_weights"]["gate"], len(pieces), "piece_weights.gate")
        # Exam heads trained with the embedding block (train_complexity.py --exam-embed-scale).
        self.piece_exam = None
        if "strong" in data["piece_weights"]:
            self.piece_exam = (_floats(data["piece_weights"]["strong"], len(pieces), "piece_weights.strong"),
                               _floats(data["piece_weights"]["weak"], len(pieces), "piece_weights.weak"))
        self.platt_a = float(data["platt"]["a"])
        self.platt_b = float(data["platt"]["b"])
        self.thresholds: list[float] = [float(x) for x in data["thresholds"]]
        if len(self.thresholds) != 4 or self.thresholds != sorted(self.thresholds):
            raise ValueError("thresholds must be 4 ascending numbers")
        self.quality_targets: list[dict[str, Any]] = sorted(data["quality_targets"], key=lambda r: r["target"])
        if not self.quality_targets or not all(0 < float(r["target"]) < 1 and isinstance(r["threshold"], float)
                                               for r in self.quality_targets):
            raise ValueError("quality_targets must be rows with a target in (0, 1) and a threshold")
        self.meta: dict[str, Any] = {k: data[k] for k in ("about", "trained_on", "hyperparameters", "cv_tune")
                                     if k in data}

    def parts(self, f: _Features) -> tuple[float, float, float]:
        """(exam gain, chat gain, P(exam-like)) of a request; see the module docstring."""
        zs, zw = self.bias_s, self.bias_w
        chat, gate = self.chat_bias, self.gate_bias
        keys = f.ngrams
        if keys:
            norm = 1.0 / math.sqrt(len(keys))
            zs += sum(map(self.strong.get, keys, repeat(0.0))) * norm
            zw += sum(map(self.weak.get, keys, repeat(0.0))) * norm
            chat += sum(map(self.chat.get, keys, repeat(0.0))) * norm
        for x, a, b, c, g in zip(f.dense, self.dense_s, self.dense_w, self.chat_dense, self.gate_dense, strict=True):
            if x:
                zs += a * x
                zw += b * x
                chat += c * x
                gate += g * x
        ids = self.segmenter.pieces(embedding_text(f.parsed.user))
        if ids:
            n = len(ids)
            chat += sum(map(self.piece_chat.__getitem__, ids)) / n
            gate += sum(map(self.piece_gate.__getitem__, ids)) / n
            if self.piece_exam is not None:
                zs += sum(map(self.piece_exam[0].__getitem__, ids)) / n
                zw += sum(map(self.piece_exam[1].__getitem__, ids)) / n
        return _sigmoid(zs) - _sigmoid(zw), chat, _sigmoid(gate)

    def score(self, gain: float) -> float:
        return 0.01 + 0.98 * _sigmoid(self.platt_a * gain + self.platt_b)

    def quality(self, score: float) -> int:
        tier = 1
        for t in self.thresholds:
            if score >= t:
                tier += 1
        return tier

    def quality_row(self, target: float) -> dict[str, Any] | None:
        """The calibration row for a quality target: the smallest calibrated target >= it
        (None above the largest: only the flagship keeps that share)."""
        for row in self.quality_targets:
            if row["target"] >= target - 1e-9:
                return row
        return None


def _floats(values: Any, n: int, name: str) -> list[float]:
    if not isinstance(values, list) or len(values) != n:
        raise ValueError(f"{name} must be a list of {n} numbers")
    return [float(x) for x in values]


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


_MODEL: _Model | None = None


def _read_model(path: Path) -> _Model:
    try:
        # Bytes straight into orjson: a str of the file would take four bytes per character
        # (it holds non-Latin-1 pieces) and stay in the heap's high-water mark.
        raw = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read the complexity weights {path}: {exc.strerror}; reinstall MegaRouter or "
                         "retrain with scripts/train_complexity.py") from None
    try:
        return _Model(_orjson.loads(raw) if _orjson is not None else json.loads(raw))
    except (ValueError, KeyError, TypeError, EmbeddingError) as exc:
        raise ModelError(f"the complexity weights {path} are corrupt or from another version ({exc}); reinstall "
                         "MegaRouter or retrain with scripts/train_complexity.py") from None


def load_model(path: Path | str | None = None) -> _Model:
    """Read the weights file (the shipped one by default; cached after the first call).
    Raises ModelError with what to fix. The proxy calls this at start-up."""
    global _MODEL
    if path is not None:
        return _read_model(Path(path))
    if _MODEL is None:
        _MODEL = _read_model(MODEL_PATH)
    return _MODEL


def use_model(path: Path | str | None = None) -> _Model:
    """Read a weights file (the shipped one by default) and make it the process's model."""
    global _MODEL
    _MODEL = _read_model(Path(path) if path else MODEL_PATH)
    return _MODEL


@dataclass(frozen=True, slots=True)
class QualityDecision:
    """What a quality target decides for one request (cost strategy)."""

    target: float             # what was asked: keep this share of the flagship's quality
    calibrated_target: float  # the calibration row used (the smallest calibrated target >= target)
    threshold: float          # score at or above which the flagship serves
    score: float
    flagship: bool

    def explain(self, chosen_is_flagship: bool) -> dict[str, Any]:
        """For x-megarouter-explain. `predicted_win_rate`: P(the chosen model's answer is as good
        as the flagship's) — 1 for the flagship itself, else 1 - score, where score is
        calibrated as P(a Mixtral-8x7B-class answer is worse than a GPT-4-class one)."""
        return {"target": self.target, "calibrated_target": self.calibrated_target,
                "score": round(self.score, 4), "threshold": round(self.threshold, 4),
                "decision": "flagship" if self.flagship else "cheapest",
                "predicted_win_rate": 1.0 if chosen_is_flagship else round(1.0 - self.score, 4)}


def quality_decision(complexity: Complexity, target: float) -> QualityDecision:
    """Flagship or cheapest, for a request of this complexity under a quality target in (0, 1]."""
    row = load_model().quality_row(target)
    if row is None:   # above every calibrated target: only the flagship keeps that share
        return QualityDecision(target, 1.0, 0.0, complexity.score, True)
    threshold = float(row["threshold"])
    return QualityDecision(target, float(row["target"]), threshold, complexity.score,
                           complexity.score >= threshold)


def quality_calibration(target: float) -> dict[str, Any]:
    """What a quality target means with the shipped model: the score threshold above which the
    flagship serves, and what that threshold kept on each kind of traffic of the tune split
    (out-of-fold): the quality share (1 - P(the cheaper answer is worse than the flagship's),
    averaged) and the share of requests sent to the flagship."""
    if not (isinstance(target, (int, float)) and not isinstance(target, bool) and 0 < target <= 1):
        raise ValueError("a quality target is a number in (0, 1]")
    row = load_model().quality_row(float(target))
    if row is None:
        return {"cost_quality_target": target, "score_threshold": 0.0, "calibrated_target": 1.0,
                "measured": {}, "note": "above the largest calibrated target: every request goes to the flagship"}
    return {"cost_quality_target": target, "score_threshold": row["threshold"], "calibrated_target": row["target"],
            "measured": row["measured"],
            "measured_on": "tune split, out-of-fold (scripts/train_complexity.py); held-out figures in "
                           "bench/RESULTS.md"}


def _priors(f: _Features, payload: dict, prompt_tokens: int) -> float:
    extra = 0.0
    tools = payload.get("tools") or payload.get("functions")
    if isinstance(tools, list) and tools:
        extra += _PRIOR_TOOLS + (_PRIOR_MANY_TOOLS if len(tools) > 8 else 0.0)
    if f.json_schema:
        extra += _PRIOR_JSON_SCHEMA
    max_out = payload.get("max_completion_tokens", payload.get("max_tokens"))
    if isinstance(max_out, (int, float)) and not isinstance(max_out, bool):
        if max_out >= 2000:
            extra += _PRIOR_LONG_OUTPUT
        if max_out >= 8000:
            extra += _PRIOR_VERY_LONG_OUTPUT
    if f.parsed.n_media:
        extra += _PRIOR_IMAGES
    if f.parsed.n_messages > 6:
        extra += _PRIOR_LONG_CONVERSATION
    if prompt_tokens >= 8000:
        extra += _PRIOR_LONG_CONTEXT
    return extra


def estimate(payload: dict) -> Complexity:
    """How hard a chat request is: see the module docstring. Never raises on odd input."""
    model = load_model()
    if not isinstance(payload, dict):
        payload = {}
    f = features(payload)
    tokens = _tokens_of(f.parsed)
    if f.trivial:
        return Complexity(score=0.0, task="chat", prompt_tokens=tokens, needed_quality=1)
    exam, chat, exam_like = model.parts(f)
    gain = exam_like * exam + (1.0 - exam_like) * chat + _priors(f, payload, tokens)
    score = model.score(gain)
    return Complexity(score=score, task=f.task, prompt_tokens=tokens, needed_quality=model.quality(score),
                      exam_like=exam_like)
