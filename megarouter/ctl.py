"""`megarouterctl`: operate a MegaRouter control plane over its admin API.

  megarouterctl apply -f config.yaml          create or update resources
  megarouterctl get routes [NAME] [-o yaml]   show resources
  megarouterctl delete route NAME             delete a resource
  megarouterctl keys create NAME              create an API key (secret shown once)
  megarouterctl tokens create NAME --role R   create a token (admin/operator/viewer/billing/developer, or proxy)
  megarouterctl users add EMAIL --role R      invite a person (they sign in to the console with SSO)
  megarouterctl proxies                       connected proxies and their table versions
  megarouterctl health                        fleet-wide endpoint health
  megarouterctl usage --node N --by model     requests, tokens and cost per key, node, model, route, day
  megarouterctl whatif --profile NAME         monthly cost of a workload under each strategy
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import importlib
import json
import sys
import time
from datetime import UTC, datetime
from typing import Any

import grpc
import yaml
from google.protobuf import json_format
from google.protobuf.message import Message

from megarouter.admin_client import admin_channel
from megarouter.grpc_tls import TlsConfigError, add_client_tls_arguments, client_tls_from_args
from megarouter.manifest import (
    ROUTE_CALIBRATION_KEY,
    ManifestError,
    apply_resources,
    describe_rpc_error,
    parse_manifest,
)
from megarouter.resources import proto_to_dict
from megarouter.runtime import env_default, exit_quietly_on_closed_stdout
from megarouter.v1 import admin_pb2, admin_pb2_grpc

# kind (any accepted spelling) -> (Get, List, Delete method names, table columns)
_KINDS: dict[str, tuple[str, str, str, list[str]]] = {
    "providers": ("GetProvider", "ListProviders", "DeleteProvider", ["name", "kind", "base_url", "region"]),
    "models": ("GetModel", "ListModels", "DeleteModel",
               ["name", "input_price_per_mtok", "output_price_per_mtok", "context_window", "quality_tier", "source"]),
    "endpoints": ("GetEndpoint", "ListEndpoints", "DeleteEndpoint",
                  ["name", "model", "provider", "upstream_model", "region"]),
    "routes": ("GetRoute", "ListRoutes", "DeleteRoute", ["name", "strategy", "tiers"]),
    "apikeys": ("GetApiKey", "ListApiKeys", "DeleteApiKey",
                ["name", "prefix", "principal", "node", "allowed_models", "expires_at_unix_ms"]),
    "nodes": ("GetNode", "ListNodes", "DeleteNode", ["name", "kind", "parent", "display_name"]),
    "budgets": ("GetBudget", "ListBudgets", "DeleteBudget",
                ["name", "node", "key", "window", "unit", "limit", "model", "task", "action"]),
}
_ALIASES = {
    "provider": "providers", "model": "models", "endpoint": "endpoints", "route": "routes",
    "apikey": "apikeys", "key": "apikeys", "keys": "apikeys", "node": "nodes", "budget": "budgets",
}


class CtlError(Exception):
    pass


# The commands that run a plane's code, and the module each runs. megarouter is the base the planes
# stand on and never imports them (tests/test_layering.py checks); these are resolved by name when the
# command runs, as `megarouter proxy` resolves its plane in megarouter/cli.py's COMMANDS, so every other
# command works without the planes loaded (or installed).
PLANE_MODULES = {
    "whatif": "dataplane.whatif_replay",            # replays a workload through the data-plane router
    "calibration": "dataplane.routing.complexity",  # what a cost_quality_target means with the shipped model
}


def _plane_module(use: str) -> Any:
    return importlib.import_module(PLANE_MODULES[use])


def _kind(name: str) -> str:
    kind = _ALIASES.get(name, name)
    if kind not in _KINDS:
        raise CtlError(f"unknown kind {name!r}; expected one of: {', '.join(_KINDS)}")
    return kind


def _as_dict(message: Message) -> dict[str, Any]:
    return proto_to_dict(message, keep_output_only=True)


def _cell(value: Any) -> str:
    if isinstance(value, list):
        if value and isinstance(value[0], dict) and "models" in value[0]:
            return " > ".join(",".join(tier["models"]) for tier in value)  # degradation path
        return ",".join(str(v) for v in value)
    return str(value)


_CALIBRATION_COMMENT = "  # from the shipped complexity model, not stored (apply ignores it)"


def route_calibration(route: dict[str, Any]) -> dict[str, Any] | None:
    """What a route's cost_quality_target means with the shipped complexity model, or None."""
    target = route.get("cost_quality_target") or 0
    if not target:
        return None
    return _plane_module("calibration").quality_calibration(target)  # loads the model: only when asked


def routes_yaml(items: list[dict[str, Any]]) -> str:
    """Routes as YAML documents, each with its read-only `calibration` block when it has a
    cost_quality_target."""
    documents = []
    for item in items:
        text = yaml.safe_dump(item, sort_keys=False)
        calibration = route_calibration(item)
        if calibration is not None:
            block = yaml.safe_dump({ROUTE_CALIBRATION_KEY: calibration}, sort_keys=False)
            head, _, rest = block.partition("\n")
            text += head + _CALIBRATION_COMMENT + "\n" + rest
        documents.append(text)
    return "---\n".join(documents)


def print_items(items: list[dict[str, Any]], columns: list[str], output: str, kind: str = "") -> None:
    if output == "json":
        print(json.dumps(items, indent=2))
        return
    if output == "yaml":
        print(routes_yaml(items) if kind == "routes" else yaml.safe_dump_all(items, sort_keys=False), end="")
        return
    rows = [[c.upper() for c in columns]] + [[_cell(item.get(c, "")) for c in columns] for item in items]
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


async def cmd_apply(stub: admin_pb2_grpc.AdminStub, args: argparse.Namespace) -> int:
    if args.file == "-":
        text, source = sys.stdin.read(), "<stdin>"
    else:
        try:
            with open(args.file, encoding="utf-8") as handle:
                text, source = handle.read(), args.file
        except OSError as exc:
            raise CtlError(f"cannot read {args.file}: {exc.strerror}") from None
    resources = parse_manifest(text, source)
    if not resources:
        raise CtlError(f"{source}: no resources found")
    for result in await apply_resources(stub, resources):
        print(f"{result.resource.type.singular}/{result.resource.name} {result.outcome}")
    return 0


async def cmd_get(stub: admin_pb2_grpc.AdminStub, args: argparse.Namespace) -> int:
    kind = _kind(args.kind)
    get_method, list_method, _, columns = _KINDS[kind]
    if args.name:
        items = [_as_dict(await getattr(stub, get_method)(admin_pb2.GetRequest(name=args.name)))]
    else:
        response = await getattr(stub, list_method)(admin_pb2.ListRequest())
        items = [_as_dict(item) for item in response.items]
    print_items(items, columns, args.output, kind)
    return 0


async def cmd_delete(stub: admin_pb2_grpc.AdminStub, args: argparse.Namespace) -> int:
    kind = _kind(args.kind)
    response = await getattr(stub, _KINDS[kind][2])(admin_pb2.DeleteRequest(name=args.name))
    print(f"{kind.rstrip('s')}/{args.name} deleted (revision {response.revision})")
    return 0


def _expiry_ms(text: str | None) -> int:
    """'30d', '12h', '90m' from now, or an ISO date/time, as Unix ms; None: never."""
    if not text:
        return 0
    units = {"d": 86400, "h": 3600, "m": 60}
    if text[-1:] in units and text[:-1].isdigit():
        return int((time.time() + int(text[:-1]) * units[text[-1]]) * 1000)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise CtlError(f"--expires {text!r}: use a duration like 30d, 12h, 90m or an ISO date") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


async def cmd_keys_create(stub: admin_pb2_grpc.AdminStub, args: argparse.Namespace) -> int:
    allowed = [m.strip() for m in args.allow.split(",") if m.strip()] if args.allow else []
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else []
    response = await stub.CreateApiKey(
        admin_pb2.CreateApiKeyRequest(name=args.name, principal=args.principal or "", allowed_models=allowed,
                                      node=args.node or "", expires_at_unix_ms=_expiry_ms(args.expires), tasks=tasks)
    )
    print(f"apikey/{response.key.name} created for principal {response.key.principal}")
    print("secret (shown once, store it now):")
    print(response.secret)
    return 0


async def cmd_tokens_create(stub: admin_pb2_grpc.AdminStub, args: argparse.Namespace) -> int:
    created = await stub.CreateAdminToken(admin_pb2.CreateAdminTokenRequest(name=args.name))
    if args.role:
        await stub.PutRoleBinding(admin_pb2.RoleBinding(name=f"{args.name}-{args.role}", token=args.name,
                                                        role=args.role, scope=args.scope or ""))
    where = f" over {args.scope}" if args.scope else " over everything" if args.role else " (no role yet)"
    print(f"admintoken/{args.name} created{' as ' + args.role if args.role else ''}{where}")
    print("secret (shown once, store it now):")
    print(created.secret)
    return 0


async def cmd_tokens_list(stub: admin_pb2_grpc.AdminStub, args: argparse.Namespace) -> int:
    tokens = await stub.ListAdminTokens(admin_pb2.ListRequest())
    bindings = await stub.ListRoleBindings(admin_pb2.ListRequest())
    roles: dict[str, list[str]] = {}
    for binding in bindings.items:
        roles.setdefault(binding.token, []).append(f"{binding.role}@{binding.scope or '*'}")
    items = [{"name": t.name, "prefix": t.prefix, "roles": roles.get(t.name, [])} for t in tokens.items]
    print_items(items, ["name", "prefix", "roles"], args.output)
    return 0


async def cmd_users_add(stub: admin_pb2_grpc.AdminStub, args: argparse.Namespace) -> int:
    email = args.email.strip().lower()
    put = await stub.PutUser(admin_pb2.User(email=email, display_name=args.name or ""))
    if args.role:
        # Unique per (person, role, scope): bob@a.example and bob@b.example must not share one.
        local = "".join(ch if ch.isalnum() else "-" for ch in email.partition("@")[0].lower()).strip("-")[:24]
        digest = hashlib.sha256(f"{email}|{args.role}|{args.scope or ''}".encode()).hexdigest()[:8]
        name = f"{local or 'user'}-{args.role}-{digest}"
        await stub.PutRoleBinding(admin_pb2.RoleBinding(name=name, user=email, role=args.role,
                                                        scope=args.scope or ""))
    where = f" as {args.role} over {args.scope or 'everything'}" if args.role else " (no role yet)"
    print(f"user/{email} {'created' if put.created else 'updated'}{where}")
    return 0


async def cmd_users_list(stub: admin_pb2_grpc.AdminStub, args: argparse.Namespace) -> int:
    users = await stub.ListUsers(admin_pb2.ListRequest())
    bindings = await stub.ListRoleBindings(admin_pb2.ListRequest())
    roles: dict[str, list[str]] = {}
    for binding in bindings.items:
        if binding.user:
            roles.setdefault(binding.user, []).append(f"{binding.role}@{binding.scope or '*'}")
    items = [{"email": u.email, "name": u.display_name, "roles": roles.get(u.email, []), "via": u.created_by,
              "status": "disabled" if u.disabled else "active"} for u in users.items]
    print_items(items, ["email", "name", "roles", "via", "status"], args.output)
    return 0


async def cmd_users_disable(stub: admin_pb2_grpc.AdminStub, args: argparse.Namespace) -> int:
    user = await stub.GetUser(admin_pb2.GetRequest(name=args.email))
    user.disabled = not args.enable
    await stub.PutUser(user)
    print(f"user/{user.email} {'enabled' if args.enable else 'disabled (their sessions have ended)'}")
    return 0


async def cmd_budgets(stub: admin_pb2_grpc.AdminStub, args: argparse.Namespace) -> int:
    statuses = await stub.ListBudgetStatus(admin_pb2.ListRequest())
    items = [{
        "budget": s.budget, "window": s.window, "unit": s.unit, "limit": f"{s.limit:g}", "spent": f"{s.spent:.6g}",
        "used": f"{s.used_ratio:.0%}", "leased": f"{s.leased:.6g}", "action": s.action,
        "alerts": ",".join(f"{a:.0%}" for a in s.alerts_crossed),
    } for s in statuses.items]
    print_items(items, ["budget", "window", "unit", "limit", "spent", "used", "leased", "action", "alerts"],
                args.output)
    return 0


_USAGE_COUNTERS = ["requests", "errors", "prompt_tokens", "completion_tokens", "cost_usd"]


def _time_ms(text: str | None, option: str, end_of_day: bool = False) -> int:
    """'7d', '12h', '90m' ago, a date (UTC; with `end_of_day` the day is
    included), or an ISO time, as Unix ms; None: unbounded (0)."""
    if not text:
        return 0
    units = {"d": 86400, "h": 3600, "m": 60}
    if text[-1:] in units and text[:-1].isdigit():
        return int((time.time() - int(text[:-1]) * units[text[-1]]) * 1000)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise CtlError(f"{option} {text!r}: use a duration ago like 7d, 12h, 90m, a date or an ISO time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    ms = int(when.timestamp() * 1000)
    if end_of_day and len(text) == 10:  # a bare date: through the end of that day
        ms += 86400 * 1000
    return ms


async def cmd_usage(stub: admin_pb2_grpc.AdminStub, args: argparse.Namespace) -> int:
    group_by = [d.strip() for d in (args.by or "").split(",") if d.strip()]
    response = await stub.QueryUsage(admin_pb2.QueryUsageRequest(
        node=args.node or "", key=args.key or "", group_by=group_by,
        since_unix_ms=_time_ms(args.since, "--since"), until_unix_ms=_time_ms(args.until, "--until", True)))
    dimensions = list(dict.fromkeys(group_by))
    rows = sorted(response.rows, key=lambda r: (-r.cost_usd, -r.requests,
                                                [r.dimensions.get(d, "") for d in dimensions]))
    items = [{**{d: row.dimensions.get(d, "") for d in dimensions},
              **{c: getattr(row, c) for c in _USAGE_COUNTERS}} for row in rows]
    total = {c: sum(item[c] for item in items) for c in _USAGE_COUNTERS}
    if args.output == "json":
        print(json.dumps({"rows": items, "total": total}, indent=2))
        return 0
    if args.output == "yaml":
        print(yaml.safe_dump({"rows": items, "total": total}, sort_keys=False), end="")
        return 0
    # Table: a row per group (empty values shown as "-"), then the total.
    columns = dimensions or ["usage"]
    shown = [{**item, **{d: item[d] or "-" for d in dimensions}, "cost_usd": f"{item['cost_usd']:.6f}"}
             for item in items] if dimensions else []
    shown.append({columns[0]: "TOTAL", **total, "cost_usd": f"{total['cost_usd']:.6f}"})
    print_items(shown, [*columns, *_USAGE_COUNTERS], "table")
    return 0


async def cmd_whoami(stub: admin_pb2_grpc.AdminStub, args: argparse.Namespace) -> int:
    who = await stub.WhoAmI(admin_pb2.WhoAmIRequest())
    print(f"token: {who.token}")
    for binding in who.bindings:
        print(f"  {binding.role} over {binding.scope or 'everything'}")
    print("permissions: " + ", ".join(who.permissions))
    return 0


async def cmd_proxies(stub: admin_pb2_grpc.AdminStub, args: argparse.Namespace) -> int:
    response = await stub.ListProxies(admin_pb2.ListProxiesRequest())
    items = [json_format.MessageToDict(p, preserving_proto_field_name=True,
                                       always_print_fields_with_no_presence=True) for p in response.proxies]
    if args.output == "table":
        print(f"control plane table version: {response.current_version}")
        for item in items:
            item["in_sync"] = "yes" if int(item["acked_version"]) == response.current_version else "no"
    print_items(items, ["node_id", "region", "acked_version", "pushed_version", "in_sync", "control_plane",
                        "last_nack", "peer"], args.output)
    return 0


async def cmd_health(stub: admin_pb2_grpc.AdminStub, args: argparse.Namespace) -> int:
    view = await stub.GetFleetHealth(admin_pb2.GetFleetHealthRequest())
    items = []
    for endpoint in view.endpoints:
        items.append({
            "endpoint": endpoint.endpoint,
            "requests": endpoint.requests,
            "success_rate": f"{endpoint.success_rate:.4f}" if endpoint.requests else "-",
            "latency_ms": f"{endpoint.latency_ms:.1f}" if endpoint.requests else "-",
            "ttft_ms": f"{endpoint.ttft_ms:.1f}" if endpoint.ttft_ms else "-",
            "proxies": endpoint.reporting_proxies,
            "ejected_by": endpoint.ejected_by,
        })
    if args.output == "table":
        proxies = await stub.ListProxies(admin_pb2.ListProxiesRequest())
        regions: dict[str, int] = {}
        for proxy in proxies.proxies:
            regions[proxy.region or "default"] = regions.get(proxy.region or "default", 0) + 1
        by_region = ", ".join(f"{region} {count}" for region, count in sorted(regions.items())) or "none"
        print(f"fleet: {view.proxies} proxies reporting, last {view.window_s:g}s; connected by region: {by_region}")
    print_items(items, ["endpoint", "requests", "success_rate", "latency_ms", "ttft_ms", "proxies", "ejected_by"],
                args.output)
    return 0


async def cmd_controlplanes(stub: admin_pb2_grpc.AdminStub, args: argparse.Namespace) -> int:
    response = await stub.ListControlPlanes(admin_pb2.ListControlPlanesRequest())
    items = []
    for replica in response.replicas:
        items.append({
            "replica_id": replica.replica_id,
            "address": replica.address,
            "role": "leader" if replica.leader else "follower",
            "started": datetime.fromtimestamp(replica.started_at_unix_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "answering": "yes" if replica.replica_id == response.answered_by else "",
        })
    if args.output == "table" and not response.leader_id:
        print("no leader at the moment: an election is under way")
    print_items(items, ["replica_id", "address", "role", "started", "answering"], args.output)
    return 0


async def cmd_table(stub: admin_pb2_grpc.AdminStub, args: argparse.Namespace) -> int:
    table = await stub.GetRoutingTable(admin_pb2.GetRoutingTableRequest())
    print(json_format.MessageToJson(table, preserving_proto_field_name=True))
    return 0


async def cmd_whatif(stub: admin_pb2_grpc.AdminStub, args: argparse.Namespace) -> int:
    from megarouter.whatif import WhatIfError

    try:
        return await _plane_module("whatif").run(stub, args)  # loaded here: it loads the data-plane router
    except WhatIfError as exc:
        raise CtlError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="megarouterctl", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", default=env_default("ADMIN", "127.0.0.1:50051"),
                        help="control-plane gRPC address [MEGAROUTER_ADMIN]")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per admin call")
    # --tls-ca/--tls-cert/--tls-key: plain --key would collide with `usage --key NAME`.
    add_client_tls_arguments(parser, "tls-")
    parser.add_argument("--token", default=None,
                        help="operator token [MEGAROUTER_ADMIN_TOKEN, MEGAROUTER_ADMIN_TOKEN_FILE, "
                             "./.megarouter/admin-token]")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    apply = sub.add_parser("apply", help="create or update resources from a YAML file")
    apply.add_argument("-f", "--file", required=True, help="YAML file, or - for stdin")
    apply.set_defaults(handler=cmd_apply)

    output_choices = ["table", "yaml", "json"]
    get = sub.add_parser("get", help="list resources, or show one")
    get.add_argument("kind", help="providers | models | endpoints | routes | apikeys | nodes")
    get.add_argument("name", nargs="?")
    get.add_argument("-o", "--output", choices=output_choices, default="table")
    get.set_defaults(handler=cmd_get)

    delete = sub.add_parser("delete", help="delete a resource")
    delete.add_argument("kind")
    delete.add_argument("name")
    delete.set_defaults(handler=cmd_delete)

    keys = sub.add_parser("keys", help="manage API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create an API key; prints the secret once")
    create.add_argument("name")
    create.add_argument("--principal", help="who the key belongs to (default key:<name>)")
    create.add_argument("--allow", help="comma-separated routes/models the key may use (default: all)")
    create.add_argument("--node", help="org node the key belongs to; usage is charged up its tree")
    create.add_argument("--expires", help="expiry: a duration from now (30d, 12h, 90m) or an ISO date")
    create.add_argument("--tasks", help="comma-separated x-megarouter-task values the key may set (task budgets "
                                        "and usage follow them; others count under the route)")
    create.set_defaults(handler=cmd_keys_create)

    tokens = sub.add_parser("tokens", help="manage operator (admin API) tokens")
    tokens_sub = tokens.add_subparsers(dest="tokens_command", required=True)
    token_create = tokens_sub.add_parser("create", help="create a token; prints the secret once")
    token_create.add_argument("name")
    token_create.add_argument("--role", choices=["admin", "operator", "viewer", "billing", "developer", "proxy"],
                              help="proxy: a credential for data-plane proxies (refused by the admin API)")
    token_create.add_argument("--scope", help="org node whose subtree the role covers (default: everything)")
    token_create.set_defaults(handler=cmd_tokens_create)
    token_list = tokens_sub.add_parser("list", help="tokens and their role bindings")
    token_list.add_argument("-o", "--output", choices=output_choices, default="table")
    token_list.set_defaults(handler=cmd_tokens_list)
    users = sub.add_parser("users", help="manage people (console users: they sign in with SSO)")
    users_sub = users.add_subparsers(dest="users_command", required=True)
    user_add = users_sub.add_parser("add", help="add (or update) a user, optionally binding a role")
    user_add.add_argument("email")
    user_add.add_argument("--name", help="display name")
    user_add.add_argument("--role", choices=["admin", "operator", "viewer", "billing", "developer"])
    user_add.add_argument("--scope", help="org node whose subtree the role covers (default: everything)")
    user_add.set_defaults(handler=cmd_users_add)
    user_list = users_sub.add_parser("list", help="users and their role bindings")
    user_list.add_argument("-o", "--output", choices=output_choices, default="table")
    user_list.set_defaults(handler=cmd_users_list)
    user_disable = users_sub.add_parser("disable", help="disable a user, ending their sessions (--enable: undo)")
    user_disable.add_argument("email")
    user_disable.add_argument("--enable", action="store_true")
    user_disable.set_defaults(handler=cmd_users_disable)
    budgets = sub.add_parser("budgets", help="spend against each budget in its current window")
    budgets.add_argument("-o", "--output", choices=output_choices, default="table")
    budgets.set_defaults(handler=cmd_budgets)

    usage = sub.add_parser("usage", help="usage by key, node, model, route or day: requests, errors, tokens, cost",
                           description="Usage of the API keys this token may read usage of, summed over the "
                           "chosen dimensions, by cost (highest first), with a total. A node includes its subtree.")
    usage.add_argument("--node", help="only keys at this org node or below it")
    usage.add_argument("--key", help="only this API key")
    usage.add_argument("--by", metavar="DIM[,DIM...]", help="group by node, key, model, route and/or day "
                       "(default: one total)")
    usage.add_argument("--since", help="from: a duration ago (7d, 12h), a date (UTC) or an ISO time")
    usage.add_argument("--until", help="to: a duration ago, a date (included) or an ISO time (default: now)")
    usage.add_argument("-o", "--output", choices=output_choices, default="table")
    usage.set_defaults(handler=cmd_usage)

    whoami = sub.add_parser("whoami", help="the token in use, its roles and permissions")
    whoami.set_defaults(handler=cmd_whoami)

    proxies = sub.add_parser("proxies", help="connected proxies and the table version each ACKed")
    proxies.add_argument("-o", "--output", choices=output_choices, default="table")
    proxies.set_defaults(handler=cmd_proxies)

    health = sub.add_parser("health", help="fleet-wide endpoint health, as pushed to proxies")
    health.add_argument("-o", "--output", choices=output_choices, default="table")
    health.set_defaults(handler=cmd_health)

    controlplanes = sub.add_parser("controlplanes", help="control-plane replicas and which one leads")
    controlplanes.add_argument("-o", "--output", choices=output_choices, default="table")
    controlplanes.set_defaults(handler=cmd_controlplanes)

    table = sub.add_parser("table", help="print the routing table being pushed (JSON)")
    table.set_defaults(handler=cmd_table)

    whatif = sub.add_parser("whatif", help="monthly cost of a workload under each routing strategy vs the flagship",
                            description="Replay a usage log or a built-in workload profile (support-chat, "
                            "rag-summarise, coding-assistant, mixed-enterprise) through the router for each "
                            "strategy, at catalog prices, offline unless --route is given.")
    workload = whatif.add_mutually_exclusive_group(required=True)
    workload.add_argument("--log", metavar="FILE", help="usage log (- for stdin): one JSON object per line with "
                          "prompt_tokens, completion_tokens; optional task, count, prompt, needed_quality, tools, "
                          "vision, stream")
    workload.add_argument("--profile", metavar="NAME", help="built-in workload profile, or the path of a .yaml one")
    pool = whatif.add_mutually_exclusive_group()
    pool.add_argument("--models", metavar="A,B,C", help="catalog model ids to route among (default: a "
                      "cross-provider pool)")
    pool.add_argument("--route", metavar="NAME", help="use this route's models, tiers and prices from the control "
                      "plane at --server")
    whatif.add_argument("--flagship", metavar="ID", help="model to compare with (default: the pool's highest "
                        "quality tier, then most expensive)")
    whatif.add_argument("--latency-ms", metavar="MODEL=MS,...", help="model speeds for the latency strategy")
    whatif.add_argument("--log-days", type=float, help="days the --log covers, scaled to 30 (default 30)")
    whatif.add_argument("--samples", type=int, help="simulated requests for a --profile (default 10000)")
    whatif.add_argument("--seed", type=int, help="sampling seed (default: fixed)")
    whatif.add_argument("-o", "--output", choices=output_choices, default="table")
    whatif.set_defaults(handler=cmd_whatif)
    return parser


async def _run(args: argparse.Namespace) -> int:
    try:
        tls = client_tls_from_args(args, "tls-")
    except TlsConfigError as exc:
        raise CtlError(str(exc)) from None
    async with admin_channel(args.server, args.token, tls=tls) as channel:
        stub = admin_pb2_grpc.AdminStub(channel)
        # Every call on this stub gets the same deadline.
        for name in dir(stub):
            method = getattr(stub, name)
            if callable(method) and name[0].isupper():
                setattr(stub, name, _with_timeout(method, args.timeout))
        return await args.handler(stub, args)


def _with_timeout(method, timeout: float):
    def call(request):
        return method(request, timeout=timeout)
    return call


def main(argv: list[str] | None = None) -> int:
    # `megarouterctl get models | head -1`: a closed stdout ends the command quietly, with status 141
    # like a Unix tool killed by SIGPIPE (megarouter.runtime.CLOSED_STDOUT_EXIT says why that status).
    return exit_quietly_on_closed_stdout(lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return asyncio.run(_run(args))
    except (CtlError, ManifestError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
            print(f"error: {exc.details()} (set --token or MEGAROUTER_ADMIN_TOKEN)", file=sys.stderr)
        elif exc.code() == grpc.StatusCode.UNAVAILABLE:
            # A TLS mismatch looks like an unreachable server: say which mode was tried.
            mode = ("over TLS (check --tls-ca, and --tls-cert/--tls-key if it requires client certificates)"
                    if args.tls_ca or args.tls_cert else
                    "in plain text (if it serves TLS, pass --tls-ca or MEGAROUTER_CONTROL_PLANE_CA)")
            print(f"error: cannot reach the control plane at {args.server} {mode}: {exc.details()}", file=sys.stderr)
        else:
            print(f"error: {describe_rpc_error(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
