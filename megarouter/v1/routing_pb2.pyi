from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ProviderKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PROVIDER_KIND_UNSPECIFIED: _ClassVar[ProviderKind]
    PROVIDER_KIND_OPENAI: _ClassVar[ProviderKind]
    PROVIDER_KIND_AZURE_OPENAI: _ClassVar[ProviderKind]
    PROVIDER_KIND_ANTHROPIC: _ClassVar[ProviderKind]
    PROVIDER_KIND_GEMINI: _ClassVar[ProviderKind]
    PROVIDER_KIND_BEDROCK: _ClassVar[ProviderKind]
    PROVIDER_KIND_VERTEX: _ClassVar[ProviderKind]

class Strategy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STRATEGY_UNSPECIFIED: _ClassVar[Strategy]
    STRATEGY_BALANCED: _ClassVar[Strategy]
    STRATEGY_COST: _ClassVar[Strategy]
    STRATEGY_LATENCY: _ClassVar[Strategy]
    STRATEGY_AVAILABILITY: _ClassVar[Strategy]
PROVIDER_KIND_UNSPECIFIED: ProviderKind
PROVIDER_KIND_OPENAI: ProviderKind
PROVIDER_KIND_AZURE_OPENAI: ProviderKind
PROVIDER_KIND_ANTHROPIC: ProviderKind
PROVIDER_KIND_GEMINI: ProviderKind
PROVIDER_KIND_BEDROCK: ProviderKind
PROVIDER_KIND_VERTEX: ProviderKind
STRATEGY_UNSPECIFIED: Strategy
STRATEGY_BALANCED: Strategy
STRATEGY_COST: Strategy
STRATEGY_LATENCY: Strategy
STRATEGY_AVAILABILITY: Strategy

class CredentialRef(_message.Message):
    __slots__ = ("env", "file")
    ENV_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    env: str
    file: str
    def __init__(self, env: _Optional[str] = ..., file: _Optional[str] = ...) -> None: ...

class Provider(_message.Message):
    __slots__ = ("name", "kind", "base_url", "region", "credential", "headers", "timeout_s", "options", "preset")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class OptionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    BASE_URL_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    PRESET_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: ProviderKind
    base_url: str
    region: str
    credential: CredentialRef
    headers: _containers.ScalarMap[str, str]
    timeout_s: float
    options: _containers.ScalarMap[str, str]
    preset: str
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[_Union[ProviderKind, str]] = ..., base_url: _Optional[str] = ..., region: _Optional[str] = ..., credential: _Optional[_Union[CredentialRef, _Mapping]] = ..., headers: _Optional[_Mapping[str, str]] = ..., timeout_s: _Optional[float] = ..., options: _Optional[_Mapping[str, str]] = ..., preset: _Optional[str] = ...) -> None: ...

class Capabilities(_message.Message):
    __slots__ = ("tools", "vision", "json_mode", "streaming", "reasoning", "embeddings", "completions")
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    VISION_FIELD_NUMBER: _ClassVar[int]
    JSON_MODE_FIELD_NUMBER: _ClassVar[int]
    STREAMING_FIELD_NUMBER: _ClassVar[int]
    REASONING_FIELD_NUMBER: _ClassVar[int]
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    COMPLETIONS_FIELD_NUMBER: _ClassVar[int]
    tools: bool
    vision: bool
    json_mode: bool
    streaming: bool
    reasoning: bool
    embeddings: bool
    completions: bool
    def __init__(self, tools: _Optional[bool] = ..., vision: _Optional[bool] = ..., json_mode: _Optional[bool] = ..., streaming: _Optional[bool] = ..., reasoning: _Optional[bool] = ..., embeddings: _Optional[bool] = ..., completions: _Optional[bool] = ...) -> None: ...

class PriceTier(_message.Message):
    __slots__ = ("min_prompt_tokens", "input_price_per_mtok", "output_price_per_mtok", "cached_input_price_per_mtok")
    MIN_PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    INPUT_PRICE_PER_MTOK_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_PRICE_PER_MTOK_FIELD_NUMBER: _ClassVar[int]
    CACHED_INPUT_PRICE_PER_MTOK_FIELD_NUMBER: _ClassVar[int]
    min_prompt_tokens: int
    input_price_per_mtok: float
    output_price_per_mtok: float
    cached_input_price_per_mtok: float
    def __init__(self, min_prompt_tokens: _Optional[int] = ..., input_price_per_mtok: _Optional[float] = ..., output_price_per_mtok: _Optional[float] = ..., cached_input_price_per_mtok: _Optional[float] = ...) -> None: ...

class Model(_message.Message):
    __slots__ = ("name", "input_price_per_mtok", "output_price_per_mtok", "context_window", "max_output_tokens", "capabilities", "quality_tier", "cached_input_price_per_mtok", "price_tiers", "source")
    NAME_FIELD_NUMBER: _ClassVar[int]
    INPUT_PRICE_PER_MTOK_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_PRICE_PER_MTOK_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_WINDOW_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    QUALITY_TIER_FIELD_NUMBER: _ClassVar[int]
    CACHED_INPUT_PRICE_PER_MTOK_FIELD_NUMBER: _ClassVar[int]
    PRICE_TIERS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    input_price_per_mtok: float
    output_price_per_mtok: float
    context_window: int
    max_output_tokens: int
    capabilities: Capabilities
    quality_tier: int
    cached_input_price_per_mtok: float
    price_tiers: _containers.RepeatedCompositeFieldContainer[PriceTier]
    source: str
    def __init__(self, name: _Optional[str] = ..., input_price_per_mtok: _Optional[float] = ..., output_price_per_mtok: _Optional[float] = ..., context_window: _Optional[int] = ..., max_output_tokens: _Optional[int] = ..., capabilities: _Optional[_Union[Capabilities, _Mapping]] = ..., quality_tier: _Optional[int] = ..., cached_input_price_per_mtok: _Optional[float] = ..., price_tiers: _Optional[_Iterable[_Union[PriceTier, _Mapping]]] = ..., source: _Optional[str] = ...) -> None: ...

class Endpoint(_message.Message):
    __slots__ = ("name", "model", "provider", "upstream_model", "region", "weight")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_MODEL_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    name: str
    model: str
    provider: str
    upstream_model: str
    region: str
    weight: int
    def __init__(self, name: _Optional[str] = ..., model: _Optional[str] = ..., provider: _Optional[str] = ..., upstream_model: _Optional[str] = ..., region: _Optional[str] = ..., weight: _Optional[int] = ...) -> None: ...

class RetryPolicy(_message.Message):
    __slots__ = ("max_attempts", "per_try_timeout_s", "total_timeout_s", "retry_on", "backoff_base_s", "backoff_max_s", "ttft_timeout_s", "stall_timeout_s", "retry_budget_ratio")
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    PER_TRY_TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    RETRY_ON_FIELD_NUMBER: _ClassVar[int]
    BACKOFF_BASE_S_FIELD_NUMBER: _ClassVar[int]
    BACKOFF_MAX_S_FIELD_NUMBER: _ClassVar[int]
    TTFT_TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    STALL_TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    RETRY_BUDGET_RATIO_FIELD_NUMBER: _ClassVar[int]
    max_attempts: int
    per_try_timeout_s: float
    total_timeout_s: float
    retry_on: _containers.RepeatedScalarFieldContainer[str]
    backoff_base_s: float
    backoff_max_s: float
    ttft_timeout_s: float
    stall_timeout_s: float
    retry_budget_ratio: float
    def __init__(self, max_attempts: _Optional[int] = ..., per_try_timeout_s: _Optional[float] = ..., total_timeout_s: _Optional[float] = ..., retry_on: _Optional[_Iterable[str]] = ..., backoff_base_s: _Optional[float] = ..., backoff_max_s: _Optional[float] = ..., ttft_timeout_s: _Optional[float] = ..., stall_timeout_s: _Optional[float] = ..., retry_budget_ratio: _Optional[float] = ...) -> None: ...

class Tier(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, models: _Optional[_Iterable[str]] = ...) -> None: ...

class BalancedWeights(_message.Message):
    __slots__ = ("cost", "latency", "quality", "availability")
    COST_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    AVAILABILITY_FIELD_NUMBER: _ClassVar[int]
    cost: float
    latency: float
    quality: float
    availability: float
    def __init__(self, cost: _Optional[float] = ..., latency: _Optional[float] = ..., quality: _Optional[float] = ..., availability: _Optional[float] = ...) -> None: ...

class Route(_message.Message):
    __slots__ = ("name", "strategy", "tiers", "retry", "quality_floor", "description", "weights", "allowed_regions", "prefer_local_region", "cost_quality_target", "cost_mode")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    TIERS_FIELD_NUMBER: _ClassVar[int]
    RETRY_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FLOOR_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_REGIONS_FIELD_NUMBER: _ClassVar[int]
    PREFER_LOCAL_REGION_FIELD_NUMBER: _ClassVar[int]
    COST_QUALITY_TARGET_FIELD_NUMBER: _ClassVar[int]
    COST_MODE_FIELD_NUMBER: _ClassVar[int]
    name: str
    strategy: Strategy
    tiers: _containers.RepeatedCompositeFieldContainer[Tier]
    retry: RetryPolicy
    quality_floor: int
    description: str
    weights: BalancedWeights
    allowed_regions: _containers.RepeatedScalarFieldContainer[str]
    prefer_local_region: bool
    cost_quality_target: float
    cost_mode: str
    def __init__(self, name: _Optional[str] = ..., strategy: _Optional[_Union[Strategy, str]] = ..., tiers: _Optional[_Iterable[_Union[Tier, _Mapping]]] = ..., retry: _Optional[_Union[RetryPolicy, _Mapping]] = ..., quality_floor: _Optional[int] = ..., description: _Optional[str] = ..., weights: _Optional[_Union[BalancedWeights, _Mapping]] = ..., allowed_regions: _Optional[_Iterable[str]] = ..., prefer_local_region: _Optional[bool] = ..., cost_quality_target: _Optional[float] = ..., cost_mode: _Optional[str] = ...) -> None: ...

class OrgNode(_message.Message):
    __slots__ = ("name", "parent", "kind", "display_name", "metadata", "default_strategy")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    PARENT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    name: str
    parent: str
    kind: str
    display_name: str
    metadata: _containers.ScalarMap[str, str]
    default_strategy: Strategy
    def __init__(self, name: _Optional[str] = ..., parent: _Optional[str] = ..., kind: _Optional[str] = ..., display_name: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., default_strategy: _Optional[_Union[Strategy, str]] = ...) -> None: ...

class ApiKeyEntry(_message.Message):
    __slots__ = ("key_hash", "name", "principal", "allowed_models", "default_strategy", "node", "expires_at_unix_ms", "tasks")
    KEY_HASH_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_MODELS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    key_hash: str
    name: str
    principal: str
    allowed_models: _containers.RepeatedScalarFieldContainer[str]
    default_strategy: Strategy
    node: str
    expires_at_unix_ms: int
    tasks: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, key_hash: _Optional[str] = ..., name: _Optional[str] = ..., principal: _Optional[str] = ..., allowed_models: _Optional[_Iterable[str]] = ..., default_strategy: _Optional[_Union[Strategy, str]] = ..., node: _Optional[str] = ..., expires_at_unix_ms: _Optional[int] = ..., tasks: _Optional[_Iterable[str]] = ...) -> None: ...

class Defaults(_message.Message):
    __slots__ = ("strategy", "weights")
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    strategy: Strategy
    weights: BalancedWeights
    def __init__(self, strategy: _Optional[_Union[Strategy, str]] = ..., weights: _Optional[_Union[BalancedWeights, _Mapping]] = ...) -> None: ...

class RoutingTable(_message.Message):
    __slots__ = ("version", "providers", "models", "endpoints", "routes", "api_keys", "defaults", "generated_at_unix_ms", "nodes", "budgets")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    ROUTES_FIELD_NUMBER: _ClassVar[int]
    API_KEYS_FIELD_NUMBER: _ClassVar[int]
    DEFAULTS_FIELD_NUMBER: _ClassVar[int]
    GENERATED_AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    BUDGETS_FIELD_NUMBER: _ClassVar[int]
    version: int
    providers: _containers.RepeatedCompositeFieldContainer[Provider]
    models: _containers.RepeatedCompositeFieldContainer[Model]
    endpoints: _containers.RepeatedCompositeFieldContainer[Endpoint]
    routes: _containers.RepeatedCompositeFieldContainer[Route]
    api_keys: _containers.RepeatedCompositeFieldContainer[ApiKeyEntry]
    defaults: Defaults
    generated_at_unix_ms: int
    nodes: _containers.RepeatedCompositeFieldContainer[OrgNode]
    budgets: _containers.RepeatedCompositeFieldContainer[Budget]
    def __init__(self, version: _Optional[int] = ..., providers: _Optional[_Iterable[_Union[Provider, _Mapping]]] = ..., models: _Optional[_Iterable[_Union[Model, _Mapping]]] = ..., endpoints: _Optional[_Iterable[_Union[Endpoint, _Mapping]]] = ..., routes: _Optional[_Iterable[_Union[Route, _Mapping]]] = ..., api_keys: _Optional[_Iterable[_Union[ApiKeyEntry, _Mapping]]] = ..., defaults: _Optional[_Union[Defaults, _Mapping]] = ..., generated_at_unix_ms: _Optional[int] = ..., nodes: _Optional[_Iterable[_Union[OrgNode, _Mapping]]] = ..., budgets: _Optional[_Iterable[_Union[Budget, _Mapping]]] = ...) -> None: ...

class Budget(_message.Message):
    __slots__ = ("name", "node", "key", "window", "unit", "limit", "model", "task", "action", "alert_thresholds")
    NAME_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    ALERT_THRESHOLDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    node: str
    key: str
    window: str
    unit: str
    limit: float
    model: str
    task: str
    action: str
    alert_thresholds: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, name: _Optional[str] = ..., node: _Optional[str] = ..., key: _Optional[str] = ..., window: _Optional[str] = ..., unit: _Optional[str] = ..., limit: _Optional[float] = ..., model: _Optional[str] = ..., task: _Optional[str] = ..., action: _Optional[str] = ..., alert_thresholds: _Optional[_Iterable[float]] = ...) -> None: ...
