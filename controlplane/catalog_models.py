"""The built-in model catalog as the control plane's base layer of models.

Every catalog model exists without being created: endpoints and routes may
name it directly. A model put through the admin API with the same name
overrides it; one with a new name adds to it. Only models something refers
to go into the routing table, so the table stays small.
"""

from __future__ import annotations

import functools
import logging

from pydantic import ValidationError

from controlplane.repository import StoreContents
from megarouter.catalog import CatalogModel, load_catalog, to_model_resource
from megarouter.resources import Model

log = logging.getLogger("megarouter.controlplane.catalog")


def _resource(entry: CatalogModel) -> Model:
    data = to_model_resource(entry)
    if entry.cached_input_per_mtok is not None:
        data["cached_input_price_per_mtok"] = entry.cached_input_per_mtok
    data["price_tiers"] = [
        {
            "min_prompt_tokens": tier.min_prompt_tokens,
            "input_price_per_mtok": tier.input_per_mtok,
            "output_price_per_mtok": tier.output_per_mtok,
            **({"cached_input_price_per_mtok": tier.cached_input_per_mtok}
               if tier.cached_input_per_mtok is not None else {}),
        }
        for tier in entry.tiers
    ]
    return Model.model_validate(data)


@functools.cache
def catalog_models() -> dict[str, Model]:
    """Catalog models by id; where several providers list one id, the
    catalog's own preference (the first-party vendor) wins."""
    catalog = load_catalog()
    models: dict[str, Model] = {}
    for entry in catalog.all():
        if entry.id in models or catalog.get(entry.id) is not entry:
            continue
        try:
            models[entry.id] = _resource(entry)
        except ValidationError as exc:  # a catalog entry the resource rules reject: skip, say so
            log.warning("catalog model %s skipped: %s", entry.id, exc.errors()[0]["msg"])
    return models


def effective_models(contents: StoreContents) -> dict[str, Model]:
    """Catalog models overlaid by the admin-managed ones."""
    return {**catalog_models(), **contents.models}
