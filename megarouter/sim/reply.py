"""The simulated model, independent of any wire format.

Each wire module reduces its provider's request to an ``Ask`` (what the
answer depends on), calls ``answer`` and renders the resulting ``Answer`` in
its own response and streaming shapes. Keeping the model here means every
wire format gives the same answer to the same question, token for token.

Replies are deterministic: the same request always gets the same words,
tool arguments and token counts, so tests and benchmarks can compare them.
"""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass, field
from typing import Any

import orjson

from megarouter.sim.schema_fake import fake_from_schema
from megarouter.sim.settings import SimSettings

# Deterministic reply text: one word is one token.
_WORDS = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima "
    "mike november oscar papa quebec romeo sierra tango uniform victor whiskey "
    "xray yankee zulu"
).split()
_SPACED_WORDS = [" " + w for w in _WORDS]

# Rough prompt accounting, in the spirit of OpenAI's cookbook estimate.
CHARS_PER_TOKEN = 4
_TOKENS_PER_MESSAGE = 4
_TOKENS_PER_IMAGE = 85
_REPLY_PRIMING_TOKENS = 3

# Finish kinds; each wire maps them to its own names.
STOP = "stop"
LENGTH = "length"
TOOL = "tool"
STOP_SEQUENCE = "stop_sequence"

# ``Ask.structured`` value asking for some JSON object, no schema given.
JSON_OBJECT = "json_object"


@dataclass
class Tool:
    name: str
    parameters: Any = None  # a JSON schema for the arguments, or None


@dataclass
class Ask:
    """A chat request reduced to what the simulated answer depends on."""

    model: str
    turns: int = 0                    # messages, counting a system prompt
    texts: list[str] = field(default_factory=list)   # everything the model reads as text
    images: int = 0                   # images and other media parts
    tools: list[Tool] = field(default_factory=list)  # tools the model may call
    tools_size: int = 0               # size of the tool definitions as sent (they count as prompt)
    tool_mode: str = "auto"           # "auto" (call one if offered) or "none"
    forced_tool: str | None = None    # a tool the caller insists on
    after_tool_result: bool = False   # the conversation ends with a tool's result
    max_tokens: int | None = None
    structured: Any = None            # None, JSON_OBJECT or a JSON schema for the reply
    stop: list[str] = field(default_factory=list)    # stop sequences (honoured in plain text)


@dataclass
class ToolCall:
    name: str
    arguments: Any   # the decoded arguments
    json: str        # the same, as the JSON text sent on the wire


@dataclass
class Answer:
    text: str | None           # None for a tool call
    pieces: list[str]          # the text (or the tool arguments' JSON) in ~one-token stream pieces
    finish: str                # STOP, LENGTH, TOOL or STOP_SEQUENCE
    prompt_tokens: int
    tool_call: ToolCall | None = None
    stop_sequence: str | None = None  # the stop sequence that ended the text, if one did

    @property
    def completion_tokens(self) -> int:
        return len(self.pieces)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def answer(ask: Ask, settings: SimSettings) -> Answer:
    prompt = prompt_tokens(ask)
    tool = _chosen_tool(ask)
    if tool is not None:
        # A tool without parameters takes an empty object, not a string.
        params = tool.parameters
        args = fake_from_schema(params) if isinstance(params, dict) and params else {}
        text = orjson.dumps(args).decode()
        return Answer(None, split(text), TOOL, prompt, ToolCall(tool.name, args, text))
    if ask.structured is not None:
        # Structured output is always whole: a cut-off JSON document helps no one.
        text = structured_text(ask.structured)
        return Answer(text, split(text), STOP, prompt)
    pieces, finish = words(settings.reply_tokens, ask.max_tokens)
    pieces, matched = _cut_at_stop(pieces, ask.stop)
    if matched is not None:
        finish = STOP_SEQUENCE
    return Answer("".join(pieces), pieces, finish, prompt, stop_sequence=matched)


@dataclass(frozen=True)
class Overflow:
    """A request that does not fit the context window; each wire renders its provider's error."""

    limit: int                  # the context window, in tokens
    prompt_tokens: int          # the prompt estimate (``prompt_tokens``)
    max_tokens: int | None      # the requested output limit, if one was given

    @property
    def requested(self) -> int:
        return self.prompt_tokens + (self.max_tokens or 0)

    @property
    def prompt_too_long(self) -> bool:
        """The prompt alone exceeds the window (providers word this case differently)."""
        return self.prompt_tokens > self.limit


def context_overflow(ask: Ask, settings: SimSettings) -> Overflow | None:
    """Why ``ask`` does not fit ``settings.context_window``, or None when it fits (or no window is set)."""
    limit = settings.context_window
    if limit <= 0:
        return None
    over = Overflow(limit, prompt_tokens(ask), ask.max_tokens)
    return over if over.requested > limit else None


def prompt_tokens(ask: Ask) -> int:
    chars = sum(len(t) for t in ask.texts) + ask.tools_size
    return (_REPLY_PRIMING_TOKENS + _TOKENS_PER_MESSAGE * ask.turns + _TOKENS_PER_IMAGE * ask.images
            + math.ceil(chars / CHARS_PER_TOKEN))


def text_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def _chosen_tool(ask: Ask) -> Tool | None:
    # A tool result last means the model has what it asked for: answer in text
    # so a client's tool loop terminates.
    if not ask.tools or ask.tool_mode == "none" or ask.after_tool_result:
        return None
    for tool in ask.tools:
        if ask.forced_tool is None or tool.name == ask.forced_tool:
            return tool
    return None


def structured_text(structured: Any) -> str:
    if structured == JSON_OBJECT:
        return orjson.dumps({"answer": " ".join(_WORDS[:3]), "ok": True}).decode()
    return orjson.dumps(fake_from_schema(structured)).decode()


def words(count: int, limit: int | None) -> tuple[list[str], str]:
    """``count`` reply words (cut to ``limit``) and the finish kind."""
    finish = STOP
    if limit is not None and limit < count:
        count, finish = limit, LENGTH
    if count <= 0:
        return [], finish
    n = len(_WORDS)
    return [_WORDS[0]] + [_SPACED_WORDS[i % n] for i in range(1, count)], finish


def split(text: str) -> list[str]:
    # Structured output and tool arguments stream as ~one-token fragments.
    return [text[i:i + CHARS_PER_TOKEN] for i in range(0, len(text), CHARS_PER_TOKEN)]


def _cut_at_stop(pieces: list[str], stops: list[str]) -> tuple[list[str], str | None]:
    """The pieces before the earliest stop sequence (which is not emitted), and that sequence."""
    text = "".join(pieces)
    found = [(text.find(s), s) for s in stops if s and s in text]
    if not found:
        return pieces, None
    at, matched = min(found)
    kept: list[str] = []
    used = 0
    for piece in pieces:
        if used >= at:
            break
        kept.append(piece[:at - used])
        used += len(piece)
    return kept, matched


# ---------------------------------------------------------------- embeddings

def embedding(text: str, dimensions: int) -> list[float]:
    """A unit vector derived from a hash of ``text``: same text, same vector; nothing stored.

    Shorter vectors are prefixes of longer ones before normalising, the way
    shortened OpenAI/Gemini embeddings behave. Values are float32-exact, so
    JSON floats and base64 float32 encodings carry the same numbers.
    """
    raw = hashlib.shake_256(text.encode()).digest(4 * dimensions)
    ints = struct.unpack(f"<{dimensions}I", raw)
    values = [i / 2**31 - 1.0 for i in ints]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return list(struct.unpack(f"<{dimensions}f", struct.pack(f"<{dimensions}f", *(v / norm for v in values))))
