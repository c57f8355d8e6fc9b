"""Declarative config files and applying them through the admin API.

A file is a YAML stream; each document names one resource type at its top
level, either one resource or a list of them:

    provider:
      name: openai
      kind: openai
      base_url: https://api.openai.com/v1
      credential: {env: OPENAI_API_KEY}
    ---
    models:
      - {name: gpt-4o-mini, input_price_per_mtok: 0.15, output_price_per_mtok: 0.6, context_window: 128000}

Applying is idempotent and ordered by dependency (providers and models,
then endpoints, then routes, then the fleet-wide `defaults`) whatever the
order in the file.

A route's `calibration` block, which `megarouterctl get route NAME -o yaml`
adds (what its `cost_quality_target` means with the shipped complexity
model), is read-only: applying ignores it, so edited `get` output applies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
import yaml
from google.protobuf import json_format
from google.protobuf.message import Message

from megarouter.resources import check_cost_quality_target, dict_to_proto
from megarouter.v1 import admin_pb2_grpc, routing_pb2


@dataclass(frozen=True)
class ResourceType:
    singular: str
    plural: str
    message: type[Message]
    put_method: str
    order: int


RESOURCE_TYPES = [
    ResourceType("node", "nodes", routing_pb2.OrgNode, "PutNode", 0),
    ResourceType("provider", "providers", routing_pb2.Provider, "PutProvider", 0),
    ResourceType("model", "models", routing_pb2.Model, "PutModel", 0),
    ResourceType("endpoint", "endpoints", routing_pb2.Endpoint, "PutEndpoint", 1),
    ResourceType("route", "routes", routing_pb2.Route, "PutRoute", 2),
    ResourceType("budget", "budgets", routing_pb2.Budget, "PutBudget", 2),
    ResourceType("defaults", "defaults", routing_pb2.Defaults, "PutDefaults", 3),
]
_BY_NAME = {name: t for t in RESOURCE_TYPES for name in (t.singular, t.plural)}


class ManifestError(ValueError):
    pass


# Read-only block of `get route -o yaml` output; never sent.
ROUTE_CALIBRATION_KEY = "calibration"


@dataclass(frozen=True)
class Resource:
    type: ResourceType
    message: Message
    source: str  # "file.yaml document 2" — for error messages

    @property
    def name(self) -> str:
        # Singletons (defaults) have no name field: they are named by type.
        return getattr(self.message, "name", self.type.singular)


class _NoAliasLoader(yaml.SafeLoader):
    """YAML without anchors and aliases: a few hundred bytes of nested aliases expand to
    gigabytes ("billion laughs"). For manifests from a web form; files keep their aliases."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not accepted here",
                                              event.start_mark)
        return super().compose_node(parent, index)


def parse_manifest(text: str, source: str = "<input>", *, allow_aliases: bool = True) -> list[Resource]:
    try:
        documents = list(yaml.load_all(text, Loader=yaml.SafeLoader if allow_aliases else _NoAliasLoader))
    except yaml.YAMLError as exc:
        raise ManifestError(f"{source}: not valid YAML: {exc}") from None
    resources: list[Resource] = []
    for index, document in enumerate(documents, start=1):
        where = f"{source} document {index}"
        if document is None:
            continue
        if not isinstance(document, dict) or len(document) != 1:
            raise ManifestError(f"{where}: expected one top-level key naming the type, one of: "
                                + ", ".join(sorted(_BY_NAME)))
        (type_name, body), = document.items()
        rtype = _BY_NAME.get(type_name)
        if rtype is None:
            raise ManifestError(f"{where}: unknown type {type_name!r}; expected one of: "
                                + ", ".join(sorted(_BY_NAME)))
        items = body if isinstance(body, list) else [body]
        for position, item in enumerate(items):
            item_where = where if not isinstance(body, list) else f"{where} item {position + 1}"
            resources.append(Resource(rtype, _to_message(rtype, item, item_where), item_where))
    parents = {r.name: r.message.parent for r in resources if r.type.singular == "node"}  # type: ignore[attr-defined]
    return sorted(resources, key=lambda r: (r.type.order, _depth(r, parents)))


def _depth(resource: Resource, parents: dict[str, str]) -> int:
    """Org nodes sort parents first, so a whole tree applies in one file."""
    if resource.type.singular != "node":
        return 0
    depth, parent, seen = 0, parents.get(resource.name, ""), set()
    while parent in parents and parent not in seen:
        seen.add(parent)
        depth += 1
        parent = parents[parent]
    return depth


def _to_message(rtype: ResourceType, item: Any, where: str) -> Message:
    if not isinstance(item, dict):
        raise ManifestError(f"{where}: a {rtype.singular} must be a mapping")
    if rtype.singular == "route":
        item = {key: value for key, value in item.items() if key != ROUTE_CALIBRATION_KEY}
        if "cost_quality_target" in item:
            # Checked here, on the YAML value: once in a proto, `true` and "0.9" are already
            # numbers the admin API cannot tell apart from 1.0 and 0.9.
            try:
                check_cost_quality_target(item["cost_quality_target"])
            except ValueError as exc:
                raise ManifestError(f"{where}: {exc}") from None
    try:
        return dict_to_proto(item, rtype.message)
    except json_format.ParseError as exc:
        raise ManifestError(f"{where}: {exc}") from None


@dataclass(frozen=True)
class ApplyResult:
    resource: Resource
    outcome: str  # created | configured | unchanged
    revision: int


async def apply_resources(stub: admin_pb2_grpc.AdminStub, resources: list[Resource]) -> list[ApplyResult]:
    """Put each resource; stops at the first error (an AioRpcError)."""
    results = []
    for resource in resources:
        response = await getattr(stub, resource.type.put_method)(resource.message)
        outcome = "created" if response.created else "configured" if response.changed else "unchanged"
        results.append(ApplyResult(resource, outcome, response.revision))
    return results


def describe_rpc_error(exc: grpc.aio.AioRpcError) -> str:
    return f"{exc.code().name}: {exc.details()}"
