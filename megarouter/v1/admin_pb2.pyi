from megarouter.v1 import discovery_pb2 as _discovery_pb2
from megarouter.v1 import routing_pb2 as _routing_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetDefaultsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class PutResponse(_message.Message):
    __slots__ = ("revision", "created", "changed")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    revision: int
    created: bool
    changed: bool
    def __init__(self, revision: _Optional[int] = ..., created: _Optional[bool] = ..., changed: _Optional[bool] = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ("revision",)
    REVISION_FIELD_NUMBER: _ClassVar[int]
    revision: int
    def __init__(self, revision: _Optional[int] = ...) -> None: ...

class ListProvidersResponse(_message.Message):
    __slots__ = ("items", "revision")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[_routing_pb2.Provider]
    revision: int
    def __init__(self, items: _Optional[_Iterable[_Union[_routing_pb2.Provider, _Mapping]]] = ..., revision: _Optional[int] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("items", "revision")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[_routing_pb2.Model]
    revision: int
    def __init__(self, items: _Optional[_Iterable[_Union[_routing_pb2.Model, _Mapping]]] = ..., revision: _Optional[int] = ...) -> None: ...

class ListEndpointsResponse(_message.Message):
    __slots__ = ("items", "revision")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[_routing_pb2.Endpoint]
    revision: int
    def __init__(self, items: _Optional[_Iterable[_Union[_routing_pb2.Endpoint, _Mapping]]] = ..., revision: _Optional[int] = ...) -> None: ...

class ListRoutesResponse(_message.Message):
    __slots__ = ("items", "revision")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[_routing_pb2.Route]
    revision: int
    def __init__(self, items: _Optional[_Iterable[_Union[_routing_pb2.Route, _Mapping]]] = ..., revision: _Optional[int] = ...) -> None: ...

class ListNodesResponse(_message.Message):
    __slots__ = ("items", "revision")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[_routing_pb2.OrgNode]
    revision: int
    def __init__(self, items: _Optional[_Iterable[_Union[_routing_pb2.OrgNode, _Mapping]]] = ..., revision: _Optional[int] = ...) -> None: ...

class ListBudgetsResponse(_message.Message):
    __slots__ = ("items", "revision")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[_routing_pb2.Budget]
    revision: int
    def __init__(self, items: _Optional[_Iterable[_Union[_routing_pb2.Budget, _Mapping]]] = ..., revision: _Optional[int] = ...) -> None: ...

class BudgetStatus(_message.Message):
    __slots__ = ("budget", "window", "limit", "spent", "leased", "used_ratio", "alerts_crossed", "resets_at_unix_ms", "unit", "action", "leased_by_proxy")
    class LeasedByProxyEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    SPENT_FIELD_NUMBER: _ClassVar[int]
    LEASED_FIELD_NUMBER: _ClassVar[int]
    USED_RATIO_FIELD_NUMBER: _ClassVar[int]
    ALERTS_CROSSED_FIELD_NUMBER: _ClassVar[int]
    RESETS_AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    LEASED_BY_PROXY_FIELD_NUMBER: _ClassVar[int]
    budget: str
    window: str
    limit: float
    spent: float
    leased: float
    used_ratio: float
    alerts_crossed: _containers.RepeatedScalarFieldContainer[float]
    resets_at_unix_ms: int
    unit: str
    action: str
    leased_by_proxy: _containers.ScalarMap[str, float]
    def __init__(self, budget: _Optional[str] = ..., window: _Optional[str] = ..., limit: _Optional[float] = ..., spent: _Optional[float] = ..., leased: _Optional[float] = ..., used_ratio: _Optional[float] = ..., alerts_crossed: _Optional[_Iterable[float]] = ..., resets_at_unix_ms: _Optional[int] = ..., unit: _Optional[str] = ..., action: _Optional[str] = ..., leased_by_proxy: _Optional[_Mapping[str, float]] = ...) -> None: ...

class ListBudgetStatusResponse(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[BudgetStatus]
    def __init__(self, items: _Optional[_Iterable[_Union[BudgetStatus, _Mapping]]] = ...) -> None: ...

class ApiKey(_message.Message):
    __slots__ = ("name", "prefix", "principal", "allowed_models", "created_at_unix_ms", "default_strategy", "node", "expires_at_unix_ms", "metadata", "tasks")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_MODELS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    name: str
    prefix: str
    principal: str
    allowed_models: _containers.RepeatedScalarFieldContainer[str]
    created_at_unix_ms: int
    default_strategy: _routing_pb2.Strategy
    node: str
    expires_at_unix_ms: int
    metadata: _containers.ScalarMap[str, str]
    tasks: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., prefix: _Optional[str] = ..., principal: _Optional[str] = ..., allowed_models: _Optional[_Iterable[str]] = ..., created_at_unix_ms: _Optional[int] = ..., default_strategy: _Optional[_Union[_routing_pb2.Strategy, str]] = ..., node: _Optional[str] = ..., expires_at_unix_ms: _Optional[int] = ..., metadata: _Optional[_Mapping[str, str]] = ..., tasks: _Optional[_Iterable[str]] = ...) -> None: ...

class CreateApiKeyRequest(_message.Message):
    __slots__ = ("name", "principal", "allowed_models", "secret", "default_strategy", "node", "expires_at_unix_ms", "metadata", "tasks")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_MODELS_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    name: str
    principal: str
    allowed_models: _containers.RepeatedScalarFieldContainer[str]
    secret: str
    default_strategy: _routing_pb2.Strategy
    node: str
    expires_at_unix_ms: int
    metadata: _containers.ScalarMap[str, str]
    tasks: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., principal: _Optional[str] = ..., allowed_models: _Optional[_Iterable[str]] = ..., secret: _Optional[str] = ..., default_strategy: _Optional[_Union[_routing_pb2.Strategy, str]] = ..., node: _Optional[str] = ..., expires_at_unix_ms: _Optional[int] = ..., metadata: _Optional[_Mapping[str, str]] = ..., tasks: _Optional[_Iterable[str]] = ...) -> None: ...

class CreateApiKeyResponse(_message.Message):
    __slots__ = ("key", "secret", "revision")
    KEY_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    key: ApiKey
    secret: str
    revision: int
    def __init__(self, key: _Optional[_Union[ApiKey, _Mapping]] = ..., secret: _Optional[str] = ..., revision: _Optional[int] = ...) -> None: ...

class ListApiKeysResponse(_message.Message):
    __slots__ = ("items", "revision")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[ApiKey]
    revision: int
    def __init__(self, items: _Optional[_Iterable[_Union[ApiKey, _Mapping]]] = ..., revision: _Optional[int] = ...) -> None: ...

class AdminToken(_message.Message):
    __slots__ = ("name", "prefix", "created_at_unix_ms")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    name: str
    prefix: str
    created_at_unix_ms: int
    def __init__(self, name: _Optional[str] = ..., prefix: _Optional[str] = ..., created_at_unix_ms: _Optional[int] = ...) -> None: ...

class CreateAdminTokenRequest(_message.Message):
    __slots__ = ("name", "secret")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    name: str
    secret: str
    def __init__(self, name: _Optional[str] = ..., secret: _Optional[str] = ...) -> None: ...

class CreateAdminTokenResponse(_message.Message):
    __slots__ = ("token", "secret", "revision")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    token: AdminToken
    secret: str
    revision: int
    def __init__(self, token: _Optional[_Union[AdminToken, _Mapping]] = ..., secret: _Optional[str] = ..., revision: _Optional[int] = ...) -> None: ...

class ListAdminTokensResponse(_message.Message):
    __slots__ = ("items", "revision")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[AdminToken]
    revision: int
    def __init__(self, items: _Optional[_Iterable[_Union[AdminToken, _Mapping]]] = ..., revision: _Optional[int] = ...) -> None: ...

class RoleBinding(_message.Message):
    __slots__ = ("name", "token", "role", "scope", "user")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    name: str
    token: str
    role: str
    scope: str
    user: str
    def __init__(self, name: _Optional[str] = ..., token: _Optional[str] = ..., role: _Optional[str] = ..., scope: _Optional[str] = ..., user: _Optional[str] = ...) -> None: ...

class ListRoleBindingsResponse(_message.Message):
    __slots__ = ("items", "revision")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[RoleBinding]
    revision: int
    def __init__(self, items: _Optional[_Iterable[_Union[RoleBinding, _Mapping]]] = ..., revision: _Optional[int] = ...) -> None: ...

class WhoAmIRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WhoAmIResponse(_message.Message):
    __slots__ = ("token", "bindings", "permissions", "user", "display_name", "session_expires_at_unix_ms")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    BINDINGS_FIELD_NUMBER: _ClassVar[int]
    PERMISSIONS_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    SESSION_EXPIRES_AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    token: str
    bindings: _containers.RepeatedCompositeFieldContainer[RoleBinding]
    permissions: _containers.RepeatedScalarFieldContainer[str]
    user: str
    display_name: str
    session_expires_at_unix_ms: int
    def __init__(self, token: _Optional[str] = ..., bindings: _Optional[_Iterable[_Union[RoleBinding, _Mapping]]] = ..., permissions: _Optional[_Iterable[str]] = ..., user: _Optional[str] = ..., display_name: _Optional[str] = ..., session_expires_at_unix_ms: _Optional[int] = ...) -> None: ...

class User(_message.Message):
    __slots__ = ("email", "display_name", "disabled", "created_at_unix_ms", "created_by")
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    DISABLED_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    email: str
    display_name: str
    disabled: bool
    created_at_unix_ms: int
    created_by: str
    def __init__(self, email: _Optional[str] = ..., display_name: _Optional[str] = ..., disabled: _Optional[bool] = ..., created_at_unix_ms: _Optional[int] = ..., created_by: _Optional[str] = ...) -> None: ...

class ListUsersResponse(_message.Message):
    __slots__ = ("items", "revision")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[User]
    revision: int
    def __init__(self, items: _Optional[_Iterable[_Union[User, _Mapping]]] = ..., revision: _Optional[int] = ...) -> None: ...

class CreateSessionRequest(_message.Message):
    __slots__ = ("ttl_s",)
    TTL_S_FIELD_NUMBER: _ClassVar[int]
    ttl_s: int
    def __init__(self, ttl_s: _Optional[int] = ...) -> None: ...

class ExchangeIdTokenRequest(_message.Message):
    __slots__ = ("id_token", "nonce", "ttl_s")
    ID_TOKEN_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    TTL_S_FIELD_NUMBER: _ClassVar[int]
    id_token: str
    nonce: str
    ttl_s: int
    def __init__(self, id_token: _Optional[str] = ..., nonce: _Optional[str] = ..., ttl_s: _Optional[int] = ...) -> None: ...

class SessionResponse(_message.Message):
    __slots__ = ("secret", "expires_at_unix_ms", "idle_timeout_s", "user", "token", "signed_up")
    SECRET_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    IDLE_TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    SIGNED_UP_FIELD_NUMBER: _ClassVar[int]
    secret: str
    expires_at_unix_ms: int
    idle_timeout_s: int
    user: str
    token: str
    signed_up: bool
    def __init__(self, secret: _Optional[str] = ..., expires_at_unix_ms: _Optional[int] = ..., idle_timeout_s: _Optional[int] = ..., user: _Optional[str] = ..., token: _Optional[str] = ..., signed_up: _Optional[bool] = ...) -> None: ...

class EndSessionRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class EndSessionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetSignInOptionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SignInOptions(_message.Message):
    __slots__ = ("sso_enabled", "issuer", "client_id", "scopes")
    SSO_ENABLED_FIELD_NUMBER: _ClassVar[int]
    ISSUER_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    SCOPES_FIELD_NUMBER: _ClassVar[int]
    sso_enabled: bool
    issuer: str
    client_id: str
    scopes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, sso_enabled: _Optional[bool] = ..., issuer: _Optional[str] = ..., client_id: _Optional[str] = ..., scopes: _Optional[_Iterable[str]] = ...) -> None: ...

class ListProxiesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ProxyStatus(_message.Message):
    __slots__ = ("node_id", "region", "peer", "acked_version", "pushed_version", "last_nack", "connected_at_unix_ms", "software_version", "control_plane")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    PEER_FIELD_NUMBER: _ClassVar[int]
    ACKED_VERSION_FIELD_NUMBER: _ClassVar[int]
    PUSHED_VERSION_FIELD_NUMBER: _ClassVar[int]
    LAST_NACK_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    SOFTWARE_VERSION_FIELD_NUMBER: _ClassVar[int]
    CONTROL_PLANE_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    region: str
    peer: str
    acked_version: int
    pushed_version: int
    last_nack: str
    connected_at_unix_ms: int
    software_version: str
    control_plane: str
    def __init__(self, node_id: _Optional[str] = ..., region: _Optional[str] = ..., peer: _Optional[str] = ..., acked_version: _Optional[int] = ..., pushed_version: _Optional[int] = ..., last_nack: _Optional[str] = ..., connected_at_unix_ms: _Optional[int] = ..., software_version: _Optional[str] = ..., control_plane: _Optional[str] = ...) -> None: ...

class ListProxiesResponse(_message.Message):
    __slots__ = ("proxies", "current_version")
    PROXIES_FIELD_NUMBER: _ClassVar[int]
    CURRENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    proxies: _containers.RepeatedCompositeFieldContainer[ProxyStatus]
    current_version: int
    def __init__(self, proxies: _Optional[_Iterable[_Union[ProxyStatus, _Mapping]]] = ..., current_version: _Optional[int] = ...) -> None: ...

class GetRoutingTableRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetFleetHealthRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetFleetHealthHistoryRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class EndpointHealthSeries(_message.Message):
    __slots__ = ("endpoint", "at_unix_ms", "success_rate", "latency_ms", "requests")
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_RATE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    at_unix_ms: _containers.RepeatedScalarFieldContainer[int]
    success_rate: _containers.RepeatedScalarFieldContainer[float]
    latency_ms: _containers.RepeatedScalarFieldContainer[float]
    requests: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, endpoint: _Optional[str] = ..., at_unix_ms: _Optional[_Iterable[int]] = ..., success_rate: _Optional[_Iterable[float]] = ..., latency_ms: _Optional[_Iterable[float]] = ..., requests: _Optional[_Iterable[int]] = ...) -> None: ...

class FleetHealthHistory(_message.Message):
    __slots__ = ("step_s", "endpoints")
    STEP_S_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    step_s: float
    endpoints: _containers.RepeatedCompositeFieldContainer[EndpointHealthSeries]
    def __init__(self, step_s: _Optional[float] = ..., endpoints: _Optional[_Iterable[_Union[EndpointHealthSeries, _Mapping]]] = ...) -> None: ...

class ListControlPlanesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ControlPlaneReplica(_message.Message):
    __slots__ = ("replica_id", "address", "started_at_unix_ms", "leader")
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    replica_id: str
    address: str
    started_at_unix_ms: int
    leader: bool
    def __init__(self, replica_id: _Optional[str] = ..., address: _Optional[str] = ..., started_at_unix_ms: _Optional[int] = ..., leader: _Optional[bool] = ...) -> None: ...

class ListControlPlanesResponse(_message.Message):
    __slots__ = ("replicas", "leader_id", "answered_by")
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    LEADER_ID_FIELD_NUMBER: _ClassVar[int]
    ANSWERED_BY_FIELD_NUMBER: _ClassVar[int]
    replicas: _containers.RepeatedCompositeFieldContainer[ControlPlaneReplica]
    leader_id: str
    answered_by: str
    def __init__(self, replicas: _Optional[_Iterable[_Union[ControlPlaneReplica, _Mapping]]] = ..., leader_id: _Optional[str] = ..., answered_by: _Optional[str] = ...) -> None: ...

class PushRawTableResponse(_message.Message):
    __slots__ = ("proxies",)
    PROXIES_FIELD_NUMBER: _ClassVar[int]
    proxies: int
    def __init__(self, proxies: _Optional[int] = ...) -> None: ...

class QueryUsageRequest(_message.Message):
    __slots__ = ("node", "key", "since_unix_ms", "until_unix_ms", "group_by")
    NODE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    SINCE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    UNTIL_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_FIELD_NUMBER: _ClassVar[int]
    node: str
    key: str
    since_unix_ms: int
    until_unix_ms: int
    group_by: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, node: _Optional[str] = ..., key: _Optional[str] = ..., since_unix_ms: _Optional[int] = ..., until_unix_ms: _Optional[int] = ..., group_by: _Optional[_Iterable[str]] = ...) -> None: ...

class UsageRow(_message.Message):
    __slots__ = ("dimensions", "requests", "errors", "prompt_tokens", "completion_tokens", "cost_usd", "latency_p50_ms", "latency_p99_ms")
    class DimensionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P50_MS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P99_MS_FIELD_NUMBER: _ClassVar[int]
    dimensions: _containers.ScalarMap[str, str]
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    latency_p50_ms: float
    latency_p99_ms: float
    def __init__(self, dimensions: _Optional[_Mapping[str, str]] = ..., requests: _Optional[int] = ..., errors: _Optional[int] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., cost_usd: _Optional[float] = ..., latency_p50_ms: _Optional[float] = ..., latency_p99_ms: _Optional[float] = ...) -> None: ...

class QueryUsageResponse(_message.Message):
    __slots__ = ("rows",)
    ROWS_FIELD_NUMBER: _ClassVar[int]
    rows: _containers.RepeatedCompositeFieldContainer[UsageRow]
    def __init__(self, rows: _Optional[_Iterable[_Union[UsageRow, _Mapping]]] = ...) -> None: ...
