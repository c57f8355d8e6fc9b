"""Resources an operator manages, as pydantic models.

Every admin write and every YAML document passes through these models, so
this module is where "what is valid" lives. The same field names are used in
the protobuf messages of `routing.proto`; `to_proto`/`from_proto` convert,
mapping the proto enums (`PROVIDER_KIND_OPENAI`) to the short lowercase names
operators write (`openai`).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from google.protobuf import json_format
from google.protobuf.message import Message
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from megarouter.presets import PRESETS
from megarouter.v1 import admin_pb2, routing_pb2

# Names of providers, endpoints, routes and keys: DNS-label-like, so they are
# safe in URLs, metric labels and store keys.
NAME_PATTERN = r"^[a-z0-9]([a-z0-9._-]{0,62})$"
# Model ids follow the providers' own spelling: "gpt-4o-mini",
# "claude-3-5-sonnet-20241022", "meta-llama/Llama-3.1-70B-Instruct".
MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$"

Name = Annotated[str, Field(pattern=NAME_PATTERN)]
# The last millisecond of year 9999: later times have no calendar date to show or compare.
MAX_UNIX_MS = 253_402_300_799_999
# Labels a key may set with x-megarouter-task: like names, so they are safe as usage dimensions.
TaskLabel = Annotated[str, Field(pattern=NAME_PATTERN)]
ModelName = Annotated[str, Field(pattern=MODEL_NAME_PATTERN)]

ProviderKindName = Literal["openai", "azure_openai", "anthropic", "gemini", "bedrock", "vertex"]
StrategyName = Literal["unspecified", "balanced", "cost", "latency", "availability"]

# Provider kinds this release of the proxy can serve. The admin API rejects
# the others so that no table ever names a kind the proxies would NACK.
SUPPORTED_PROVIDER_KINDS: frozenset[str] = frozenset(
    {"openai", "azure_openai", "anthropic", "gemini", "bedrock", "vertex"})
# Options a Vertex provider may set: the GCP project (required), the location (default: the one in
# base_url's host, else global) and the model publisher (google: Gemini; anthropic: Claude).
_VERTEX_OPTIONS = frozenset({"project", "location", "publisher"})
# Options a Bedrock provider may set (requests are signed for aws_region with the credentials of
# aws_profile, or of botocore's default chain; embedding_input_type is Cohere's input_type).
_BEDROCK_OPTIONS = frozenset({"aws_region", "aws_profile", "embedding_input_type"})

# Headers that carry credentials must come from a credential reference, never
# from the stored config.
_SECRET_HEADERS = {"authorization", "api-key", "x-api-key", "proxy-authorization", "cookie"}

DEFAULT_PROVIDER_TIMEOUT_S = 60.0
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_PER_TRY_TIMEOUT_S = 60.0
DEFAULT_TOTAL_TIMEOUT_S = 180.0


class _Resource(BaseModel):
    # No infinities or NaNs anywhere: JSON (the store's encoding) has no spelling for them, so
    # a budget limit of 1e999 would be stored as null and break every later read of the store.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class CredentialRef(_Resource):
    env: str = ""
    file: str = ""

    @model_validator(mode="after")
    def _one_source(self) -> CredentialRef:
        if self.env and self.file:
            raise ValueError("set either env or file, not both")
        if self.env and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.env):
            raise ValueError(f"env must be an environment variable name, got {self.env!r}")
        return self

    @property
    def is_set(self) -> bool:
        return bool(self.env or self.file)


class Provider(_Resource):
    name: Name
    kind: ProviderKindName
    base_url: str = ""           # may be empty when a preset supplies it
    region: str = "default"
    credential: CredentialRef = CredentialRef()
    headers: dict[str, str] = {}
    timeout_s: float = Field(DEFAULT_PROVIDER_TIMEOUT_S, ge=0, le=3600)
    options: dict[str, str] = {}
    preset: str = ""

    @model_validator(mode="after")
    def _preset(self) -> Provider:
        if self.preset:
            if self.preset not in PRESETS:
                raise ValueError(f"preset: unknown preset {self.preset!r} (known: {', '.join(sorted(PRESETS))})")
            if self.kind != "openai":
                raise ValueError("preset: presets are OpenAI-compatible services; use kind openai")
            if not self.base_url:
                object.__setattr__(self, "base_url", PRESETS[self.preset].base_url)
        if not self.base_url:
            raise ValueError("base_url: required (or name a preset)")
        return self

    @model_validator(mode="after")
    def _responses_api(self) -> Provider:
        # How /v1/responses reaches this provider: translated through chat (any backend), or
        # passed through to its own Responses API (api.openai.com has one; most
        # OpenAI-compatible servers do not, so it is opt-in).
        mode = self.options.get("responses_api")
        if mode is not None:
            if mode not in ("native", "chat"):
                raise ValueError(f"options.responses_api: use 'native' or 'chat', not {mode!r}")
            if self.kind != "openai":
                raise ValueError("options.responses_api: only an openai provider can serve the Responses API "
                                 "natively")
        return self

    @model_validator(mode="after")
    def _bedrock(self) -> Provider:
        if self.kind != "bedrock":
            return self
        unknown = sorted(set(self.options) - _BEDROCK_OPTIONS)
        if unknown:
            raise ValueError(f"options: unknown Bedrock option(s) {unknown} (known: {sorted(_BEDROCK_OPTIONS)})")
        region = self.options.get("aws_region", "")
        if region and not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d", region):
            raise ValueError(f"options.aws_region: {region!r} is not an AWS region (e.g. us-east-1)")
        if not region and not re.search(r"://bedrock-runtime(-fips)?\.[a-z0-9-]+\.amazonaws\.com", self.base_url):
            raise ValueError("options.aws_region: required unless base_url is https://bedrock-runtime.<region>"
                             ".amazonaws.com (requests are signed for a region)")
        return self

    @model_validator(mode="after")
    def _vertex(self) -> Provider:
        if self.kind != "vertex":
            return self
        unknown = sorted(set(self.options) - _VERTEX_OPTIONS)
        if unknown:
            raise ValueError(f"options: unknown Vertex option(s) {unknown} (known: {sorted(_VERTEX_OPTIONS)})")
        if not re.fullmatch(r"[a-z][a-z0-9-]{4,61}[a-z0-9]", self.options.get("project", "")):
            raise ValueError("options.project: required, a Google Cloud project id (e.g. my-project-123)")
        if self.options.get("publisher", "google") not in ("google", "anthropic"):
            raise ValueError("options.publisher: 'google' (Gemini) or 'anthropic' (Claude)")
        location = self.options.get("location", "")
        if location and not re.fullmatch(r"global|[a-z]+-[a-z]+\d+", location):
            raise ValueError(f"options.location: {location!r} is not a Vertex location (e.g. us-central1, global)")
        return self

    @field_validator("kind")
    @classmethod
    def _kind_supported(cls, kind: str) -> str:
        if kind not in SUPPORTED_PROVIDER_KINDS:
            supported = ", ".join(sorted(SUPPORTED_PROVIDER_KINDS))
            raise ValueError(f"provider kind {kind!r} is not supported yet (supported: {supported})")
        return kind

    @field_validator("base_url")
    @classmethod
    def _url(cls, url: str) -> str:
        if url and not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", url):
            raise ValueError("base_url must be an http(s) URL without query, e.g. https://api.openai.com/v1")
        return url.rstrip("/")

    @field_validator("region")
    @classmethod
    def _region(cls, region: str) -> str:
        return region or "default"

    @field_validator("headers")
    @classmethod
    def _no_secret_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        for header in headers:
            if header.lower() in _SECRET_HEADERS:
                raise ValueError(f"header {header!r} carries a secret: use credential.env or credential.file")
        return headers

    @field_validator("timeout_s")
    @classmethod
    def _timeout(cls, timeout: float) -> float:
        return timeout or DEFAULT_PROVIDER_TIMEOUT_S


class Capabilities(_Resource):
    tools: bool = False
    vision: bool = False
    json_mode: bool = False
    streaming: bool = False
    reasoning: bool = False
    embeddings: bool = False
    completions: bool = False  # serves the legacy completions API natively


class PriceTier(_Resource):
    min_prompt_tokens: int = Field(ge=1)
    input_price_per_mtok: float = Field(ge=0)
    output_price_per_mtok: float = Field(ge=0)
    cached_input_price_per_mtok: float | None = Field(None, ge=0)


class Model(_Resource):
    name: ModelName
    input_price_per_mtok: float = Field(0, ge=0)
    output_price_per_mtok: float = Field(0, ge=0)
    context_window: int = Field(ge=1, le=100_000_000)
    max_output_tokens: int = Field(0, ge=0, le=100_000_000)
    capabilities: Capabilities = Capabilities()
    # 0 = unrated; otherwise 1 (basic) .. 5 (frontier).
    quality_tier: int = Field(0, ge=0, le=5)
    cached_input_price_per_mtok: float | None = Field(None, ge=0)
    price_tiers: list[PriceTier] = []

    @field_validator("price_tiers")
    @classmethod
    def _ascending(cls, tiers: list[PriceTier]) -> list[PriceTier]:
        thresholds = [tier.min_prompt_tokens for tier in tiers]
        if thresholds != sorted(set(thresholds)):
            raise ValueError("tiers must have distinct, ascending min_prompt_tokens")
        return tiers


class Endpoint(_Resource):
    name: Name
    model: ModelName
    provider: Name
    upstream_model: str = ""   # empty: the model's own name
    region: str = ""           # empty: the provider's region
    weight: int = Field(1, ge=0, le=1000)

    @field_validator("weight")
    @classmethod
    def _weight(cls, weight: int) -> int:
        return weight or 1


RETRYABLE_CLASSES = ("retryable", "timeout", "rate_limited", "endpoint", "context_length")
DEFAULT_BACKOFF_BASE_S = 0.025
DEFAULT_BACKOFF_MAX_S = 0.5
DEFAULT_RETRY_BUDGET_RATIO = 0.2


class RetryPolicy(_Resource):
    max_attempts: int = Field(DEFAULT_MAX_ATTEMPTS, ge=0, le=10)
    per_try_timeout_s: float = Field(DEFAULT_PER_TRY_TIMEOUT_S, ge=0, le=3600)
    total_timeout_s: float = Field(DEFAULT_TOTAL_TIMEOUT_S, ge=0, le=3600)
    retry_on: list[Literal["retryable", "timeout", "rate_limited", "endpoint", "context_length"]] = []
    backoff_base_s: float = Field(DEFAULT_BACKOFF_BASE_S, ge=0, le=60)
    backoff_max_s: float = Field(DEFAULT_BACKOFF_MAX_S, ge=0, le=300)
    ttft_timeout_s: float = Field(0, ge=0, le=3600)     # 0: per_try_timeout_s
    stall_timeout_s: float = Field(0, ge=0, le=3600)    # 0: per_try_timeout_s
    retry_budget_ratio: float = Field(DEFAULT_RETRY_BUDGET_RATIO, ge=0, le=10)

    # Zero is what an unset proto field reads as; it means "the default".
    @model_validator(mode="after")
    def _defaults(self) -> RetryPolicy:
        values = {
            "max_attempts": self.max_attempts or DEFAULT_MAX_ATTEMPTS,
            "per_try_timeout_s": self.per_try_timeout_s or DEFAULT_PER_TRY_TIMEOUT_S,
            "total_timeout_s": self.total_timeout_s or DEFAULT_TOTAL_TIMEOUT_S,
            "backoff_base_s": self.backoff_base_s or DEFAULT_BACKOFF_BASE_S,
            "backoff_max_s": self.backoff_max_s or DEFAULT_BACKOFF_MAX_S,
            "retry_budget_ratio": self.retry_budget_ratio or DEFAULT_RETRY_BUDGET_RATIO,
        }
        for field, value in values.items():
            object.__setattr__(self, field, value)
        if self.per_try_timeout_s > self.total_timeout_s:
            raise ValueError("per_try_timeout_s must not exceed total_timeout_s")
        return self


class Tier(_Resource):
    models: list[ModelName] = Field(min_length=1)


class BalancedWeights(_Resource):
    cost: float = Field(0, ge=0, le=1000)
    latency: float = Field(0, ge=0, le=1000)
    quality: float = Field(0, ge=0, le=1000)
    availability: float = Field(0, ge=0, le=1000)


QUALITY_TARGET_HINT = "0.95 keeps 95% of the flagship's quality"


def check_cost_quality_target(value: Any) -> float:
    """A route's `cost_quality_target`: 0 (not set) or a real number in (0, 1].

    Strict: a bool, a string (even "0.9"), NaN or an infinity is an error, not
    a coercion — `true` must not quietly mean "keep all of the quality".
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:  # NaN fails
        raise ValueError(f"cost_quality_target must be a number in (0, 1] ({QUALITY_TARGET_HINT}; "
                         f"0 = not set), got {value!r}")
    return float(value)


class Route(_Resource):
    name: Name
    strategy: StrategyName = "unspecified"
    tiers: list[Tier] = Field(min_length=1)
    retry: RetryPolicy = RetryPolicy()
    quality_floor: int = Field(0, ge=0, le=5)
    description: str = Field("", max_length=500)
    weights: BalancedWeights = BalancedWeights()
    allowed_regions: list[Annotated[str, Field(min_length=1, max_length=64)]] = []
    prefer_local_region: bool = False
    # With the cost strategy: keep at least this share of the flagship's quality, as cheaply
    # as possible (0 = not set). A request's x-megarouter-quality-target overrides it.
    cost_quality_target: float = 0.0
    # With the cost strategy, "cascade": the cheapest model first, the flagship when its answer
    # fails the acceptance check (dataplane/routing/cascade.py). "" = pick one model per request.
    cost_mode: Literal["", "cascade"] = ""

    @field_validator("cost_quality_target", mode="before")
    @classmethod
    def _quality_target(cls, value: Any) -> float:
        return check_cost_quality_target(value)

    @field_validator("tiers")
    @classmethod
    def _distinct_models(cls, tiers: list[Tier]) -> list[Tier]:
        seen: set[str] = set()
        for tier in tiers:
            for model in tier.models:
                if model in seen:
                    raise ValueError(f"model {model!r} appears more than once in the degradation path")
                seen.add(model)
        return tiers

    @property
    def models(self) -> list[str]:
        return [model for tier in self.tiers for model in tier.models]


class OrgNode(_Resource):
    """An organisation, team or project; organisations are the roots."""

    name: Name
    parent: str = ""
    kind: Literal["org", "team", "project"]
    display_name: str = Field("", max_length=200)
    metadata: dict[str, str] = {}
    # For keys at this node or below that set none themselves (a nearer node's wins).
    default_strategy: StrategyName = "unspecified"

    @model_validator(mode="after")
    def _shape(self) -> OrgNode:
        if self.kind == "org" and self.parent:
            raise ValueError("parent: an org is a root and has no parent")
        if self.kind != "org" and not self.parent:
            raise ValueError(f"parent: a {self.kind} needs a parent node")
        if self.parent == self.name:
            raise ValueError("parent: a node cannot be its own parent")
        return self


class Budget(_Resource):
    """A spending limit on a node's subtree or on one API key, per window."""

    name: Name
    node: str = ""
    key: str = ""
    # "minute" makes a rate limit (requests or tokens per minute).
    window: Literal["minute", "daily", "monthly", "total"]
    unit: Literal["usd", "tokens", "requests"]
    limit: float = Field(gt=0)
    model: str = ""
    task: str = ""
    action: Literal["pause", "alert"] = "pause"
    alert_thresholds: list[Annotated[float, Field(gt=0, le=10)]] = [0.5, 0.8, 1.0]

    @model_validator(mode="after")
    def _one_scope(self) -> Budget:
        if bool(self.node) == bool(self.key):
            raise ValueError("node: set exactly one of node (a subtree) or key (one API key)")
        if not self.alert_thresholds:
            object.__setattr__(self, "alert_thresholds", [0.5, 0.8, 1.0])
        return self


class Defaults(_Resource):
    """Fleet-wide settings; one per control plane."""

    strategy: StrategyName = "unspecified"
    weights: BalancedWeights = BalancedWeights()


class ApiKey(_Resource):
    """An API key as stored: the hash of the secret, never the secret."""

    name: Name
    key_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    prefix: str
    principal: str = Field(min_length=1, max_length=200)
    allowed_models: list[str] = []
    created_at_unix_ms: int = 0
    default_strategy: StrategyName = "unspecified"
    node: str = ""
    expires_at_unix_ms: int = Field(0, ge=0, le=MAX_UNIX_MS)
    metadata: dict[str, str] = {}
    tasks: list[TaskLabel] = []


class CreateApiKey(_Resource):
    name: Name
    principal: str = Field("", max_length=200)
    allowed_models: list[str] = []
    secret: str = ""
    default_strategy: StrategyName = "unspecified"
    node: str = ""
    expires_at_unix_ms: int = Field(0, ge=0, le=MAX_UNIX_MS)
    metadata: dict[str, str] = {}
    tasks: list[TaskLabel] = Field([], max_length=64)

    @field_validator("secret")
    @classmethod
    def _secret(cls, secret: str) -> str:
        if secret and not re.fullmatch(r"[A-Za-z0-9._~+/=-]{16,200}", secret):
            raise ValueError("secret must be 16-200 characters of letters, digits or ._~+/=-")
        return secret


def validation_message(kind: str, error: ValidationError) -> str:
    """'invalid provider: base_url: must be ...' — one clause per bad field. The admin API's
    INVALID_ARGUMENT details, and the console's preview of a manifest, say it the same way."""
    clauses = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "(body)"
        message = item["msg"].removeprefix("Value error, ")
        clauses.append(f"{field}: {message}")
    return f"invalid {kind}: " + "; ".join(clauses)


# ---------------------------------------------------------------- conversion

_ENUM_PREFIXES = {"kind": "PROVIDER_KIND_", "strategy": "STRATEGY_", "default_strategy": "STRATEGY_"}


def _rename_enums(data: Any, rename, descriptor) -> Any:
    """Walk a dict/list tree shaped like message `descriptor`, applying `rename(prefix, value)`
    to its enum fields — only those: OrgNode.kind is a plain string that happens to share its
    name with Provider.kind, an enum, and must pass untouched."""
    if isinstance(data, list):
        return [_rename_enums(item, rename, descriptor) for item in data]
    if not isinstance(data, dict) or descriptor is None:
        return data
    out = {}
    for key, value in data.items():
        field = descriptor.fields_by_name.get(key)
        prefix = _ENUM_PREFIXES.get(key)
        if field is not None and field.enum_type is not None and prefix and isinstance(value, str):
            out[key] = rename(prefix, value)
        elif field is not None and field.message_type is not None and not field.message_type.GetOptions().map_entry:
            out[key] = _rename_enums(value, rename, field.message_type)
        else:
            out[key] = value
    return out


def _enum_to_short(data: Any, descriptor) -> Any:
    """PROVIDER_KIND_OPENAI -> openai."""
    return _rename_enums(data, lambda prefix, v: v[len(prefix):].lower() if v.startswith(prefix) else v, descriptor)


def _enum_to_proto(data: Any, descriptor) -> Any:
    """openai -> PROVIDER_KIND_OPENAI."""
    return _rename_enums(data, lambda prefix, v: v if v.startswith(prefix) else prefix + v.upper(), descriptor)


# Output-only proto fields, never part of what an operator writes.
_OUTPUT_ONLY = {"source"}


def proto_to_dict(message: Message, keep_output_only: bool = False) -> dict[str, Any]:
    """A proto message as the plain dict the pydantic models validate.

    Fields without presence are always included, so a missing string reads as
    "" and fails its validator with the field's name rather than silently
    taking a default.
    """
    data = json_format.MessageToDict(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )
    if not keep_output_only:
        for field in _OUTPUT_ONLY:
            data.pop(field, None)
    return _enum_to_short(data, message.DESCRIPTOR)


def dict_to_proto(data: dict[str, Any], message_type: type[Message]) -> Message:
    """A plain dict (YAML document, pydantic dump) as a proto message.

    Raises json_format.ParseError naming an unknown or mistyped field.
    """
    return json_format.ParseDict(_enum_to_proto(data, message_type.DESCRIPTOR), message_type())


def resource_to_proto(resource: _Resource, message_type: type[Message]) -> Message:
    data = resource.model_dump(mode="json", exclude_none=True)
    if isinstance(resource, Provider):
        credential = {k: v for k, v in data["credential"].items() if v}
        data["credential"] = credential
        if not credential:
            del data["credential"]
    return dict_to_proto(data, message_type)


def api_key_public(key: ApiKey) -> admin_pb2.ApiKey:
    return admin_pb2.ApiKey(
        name=key.name,
        prefix=key.prefix,
        principal=key.principal,
        allowed_models=key.allowed_models,
        created_at_unix_ms=key.created_at_unix_ms,
        default_strategy=strategy_enum(key.default_strategy),
        node=key.node,
        expires_at_unix_ms=key.expires_at_unix_ms,
        metadata=key.metadata,
        tasks=key.tasks,
    )


def strategy_enum(name: str) -> int:
    return routing_pb2.Strategy.Value("STRATEGY_" + name.upper())


PROTO_TYPES: dict[type[_Resource], type[Message]] = {
    Provider: routing_pb2.Provider,
    Model: routing_pb2.Model,
    Endpoint: routing_pb2.Endpoint,
    Route: routing_pb2.Route,
    Defaults: routing_pb2.Defaults,
    OrgNode: routing_pb2.OrgNode,
    Budget: routing_pb2.Budget,
}
