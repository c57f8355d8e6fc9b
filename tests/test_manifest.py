"""Parsing declarative YAML config files."""

from __future__ import annotations

import pytest

from megarouter.manifest import ManifestError, parse_manifest


def test_documents_are_ordered_by_dependency() -> None:
    resources = parse_manifest("""
route: {name: r, tiers: [{models: [m]}]}
---
endpoint: {name: e, model: m, provider: p}
---
models:
  - {name: m, context_window: 100}
---
provider: {name: p, kind: openai, base_url: 'http://x/v1', credential: {env: KEY}}
""")
    assert [(r.type.singular, r.name) for r in resources] == [
        ("model", "m"), ("provider", "p"), ("endpoint", "e"), ("route", "r"),
    ]
    provider = resources[1].message
    assert provider.credential.env == "KEY" and provider.kind == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("route: {name: r, teirs: []}", "teirs"),
        ("widget: {name: w}", "unknown type 'widget'"),
        ("provider: {name: p}\nmodel: {name: m}", "one top-level key"),
        ("provider: {name: p, kind: cobol}", "kind"),
        ("models: [1, 2]", "must be a mapping"),
        ("route: [unclosed", "not valid YAML"),
    ],
)
def test_errors_say_where_and_what(text: str, message: str) -> None:
    with pytest.raises(ManifestError, match=message) as caught:
        parse_manifest(text, "f.yaml")
    assert "f.yaml" in str(caught.value)
