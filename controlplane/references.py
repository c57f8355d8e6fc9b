"""Referential integrity between resources.

A write that would leave a reference dangling is refused with
FAILED_PRECONDITION, so every compiled table is internally consistent.
"""

from __future__ import annotations

from pydantic import BaseModel

from controlplane.catalog_models import catalog_models, effective_models
from controlplane.repository import StoreContents
from megarouter.resources import ApiKey, Budget, Endpoint, OrgNode, Route


def missing_references(resource: BaseModel, contents: StoreContents) -> list[str]:
    """What `resource` refers to that does not exist, as messages."""
    problems: list[str] = []
    models = effective_models(contents)
    if isinstance(resource, Endpoint):
        if resource.model not in models:
            problems.append(f"endpoint {resource.name!r} names unknown model {resource.model!r}")
        if resource.provider not in contents.providers:
            problems.append(f"endpoint {resource.name!r} names unknown provider {resource.provider!r}")
    elif isinstance(resource, Route):
        for model in resource.models:
            if model not in models:
                problems.append(f"route {resource.name!r} names unknown model {model!r}")
    elif isinstance(resource, ApiKey):
        for name in resource.allowed_models:
            if name not in models and name not in contents.routes:
                problems.append(f"API key {resource.name!r} allows unknown route or model {name!r}")
        if resource.node and resource.node not in contents.nodes:
            problems.append(f"API key {resource.name!r} names unknown node {resource.node!r}")
    elif isinstance(resource, Budget):
        if resource.node and resource.node not in contents.nodes:
            problems.append(f"budget {resource.name!r} names unknown node {resource.node!r}")
        if resource.key and resource.key not in contents.api_keys:
            problems.append(f"budget {resource.name!r} names unknown API key {resource.key!r}")
        if resource.model and resource.model not in models:
            problems.append(f"budget {resource.name!r} names unknown model {resource.model!r}")
    elif isinstance(resource, OrgNode) and resource.parent:
        if resource.parent not in contents.nodes:
            problems.append(f"node {resource.name!r} names unknown parent {resource.parent!r}")
        else:
            # Walk up from the new parent: meeting this node again is a cycle.
            ancestor, seen = resource.parent, set()
            while ancestor and ancestor not in seen:
                if ancestor == resource.name:
                    problems.append(f"node {resource.name!r} under {resource.parent!r} would make a cycle")
                    break
                seen.add(ancestor)
                ancestor = contents.nodes[ancestor].parent if ancestor in contents.nodes else ""
    return problems


def blocking_references(collection: str, name: str, contents: StoreContents) -> list[str]:
    """What still refers to the resource `collection/name`, as messages."""
    users: list[str] = []
    if collection == "models" and name in catalog_models():
        return users  # deleting an override: the name falls back to the catalog entry
    if collection == "providers":
        users += [f"endpoint {e.name!r}" for e in contents.endpoints.values() if e.provider == name]
    elif collection == "models":
        users += [f"endpoint {e.name!r}" for e in contents.endpoints.values() if e.model == name]
        users += [f"route {r.name!r}" for r in contents.routes.values() if name in r.models]
    if collection == "nodes":
        users += [f"node {n.name!r}" for n in contents.nodes.values() if n.parent == name]
        users += [f"API key {k.name!r}" for k in contents.api_keys.values() if k.node == name]
        users += [f"budget {b.name!r}" for b in contents.budgets.values() if b.node == name]
    if collection == "apikeys":
        users += [f"budget {b.name!r}" for b in contents.budgets.values() if b.key == name]
    if collection in ("models", "routes"):
        users += [f"API key {k.name!r}" for k in contents.api_keys.values() if name in k.allowed_models]
    return users
