"""The console's pages. Each handler makes admin calls as the viewer and renders a template;
what a page shows is what the control plane returned for that person, nothing more.

Pages read without JavaScript (tables under every chart); forms are plain POSTs with a CSRF
field; charts fetch their data as JSON from the same origin (the CSP allows no inline data).
"""

from __future__ import annotations

import datetime as dt
import difflib
import hashlib
import re
from typing import Any

import yaml
from aiohttp import web
from google.protobuf.message import Message
from pydantic import ValidationError

from console import usage_view, whatif
from console.admin import AdminError
from console.app import admin_call, error_page, form_fields, render, state_of
from megarouter.manifest import ManifestError, parse_manifest
from megarouter.resources import PROTO_TYPES, proto_to_dict, resource_to_proto, validation_message
from megarouter.v1 import admin_pb2, routing_pb2

STRATEGIES = ("unspecified", "balanced", "cost", "latency", "availability")
PERSON_ROLES = ("admin", "operator", "viewer", "billing", "developer")
LIST = admin_pb2.ListRequest()
# The catalog has hundreds of models: the page lists this many, and search narrows it.
MODELS_SHOWN = 100


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/", overview)
    r.add_get("/keys", keys_page)
    r.add_post("/keys", create_key)
    r.add_get("/keys/{name}/revoke", revoke_key_confirm)
    r.add_post("/keys/{name}/revoke", revoke_key)
    r.add_get("/usage", usage_page)
    r.add_get("/usage.csv", usage_csv)
    r.add_get("/usage/series.json", usage_series)
    r.add_get("/budgets", budgets_page)
    r.add_post("/budgets", put_budget)
    r.add_get("/routes", routes_page)
    r.add_get("/routes/edit", edit_yaml_page)
    r.add_post("/routes/edit", edit_yaml)
    r.add_get("/fleet", fleet_page)
    r.add_get("/fleet/history.json", fleet_history)
    r.add_get("/org", org_page)
    r.add_post("/org/nodes", put_node)
    r.add_post("/org/people", invite_person)
    r.add_post("/org/bindings", grant_role)
    r.add_post("/org/bindings/{name}/delete", revoke_role)
    r.add_get("/whatif", whatif_page)
    r.add_post("/whatif", run_whatif)


async def _optional(request: web.Request, permission: str, method: str, message: Message) -> Any | None:
    """A call the page can do without: skipped when the viewer lacks the permission."""
    if not request["viewer"].can(permission):
        return None
    return await admin_call(request, method, message)


def _month_start(today: dt.date) -> dt.date:
    return today.replace(day=1)


# ------------------------------------------------------------------ overview


async def overview(request: web.Request) -> web.Response:
    viewer = request["viewer"]
    today = usage_view.today()
    context: dict[str, Any] = {"today": today, "month_start": _month_start(today)}
    if viewer.can("usage.read"):
        month = usage_view.UsageFilters(group_by=["model"], since=_month_start(today), until=today)
        by_model = (await admin_call(request, "QueryUsage", month.request())).rows
        month.group_by = ["node"]
        by_node = (await admin_call(request, "QueryUsage", month.request())).rows
        day = usage_view.UsageFilters(group_by=[], since=today, until=today)
        today_rows = (await admin_call(request, "QueryUsage", day.request())).rows
        chart = usage_view.UsageFilters(group_by=["day", "model"])
        context.update(month_totals=usage_view.totals(list(by_model)), today_totals=usage_view.totals(list(today_rows)),
                       by_model=by_model, by_node=by_node,
                       chart_requests=chart.query_string(metric="requests", split="model"),
                       chart_cost=chart.query_string(metric="cost_usd", split="model"),
                       chart_errors=chart.query_string(metric="errors", split="model"),
                       chart_latency=usage_view.UsageFilters(group_by=["day"]).query_string(metric="latency"),
                       chart_latency_model=chart.query_string(metric="latency_p99_ms", split="model"),
                       chart_cost_node=usage_view.UsageFilters(group_by=["day", "node"]).query_string(
                           metric="cost_usd", split="node"),
                       chart_latency_node=usage_view.UsageFilters(group_by=["day", "node"]).query_string(
                           metric="latency_p99_ms", split="node"),
                       chart_requests_node=usage_view.UsageFilters(group_by=["day", "node"]).query_string(
                           metric="requests", split="node"))
    budgets = await _optional(request, "budgets.read", "ListBudgetStatus", LIST)
    context["budgets"] = list(budgets.items) if budgets is not None else None
    health = await _optional(request, "config.read", "GetFleetHealth", admin_pb2.GetFleetHealthRequest())
    context["health"] = sorted(health.endpoints, key=lambda e: e.endpoint) if health is not None else None
    return render(request, "overview.html", **context)


# ------------------------------------------------------------------ API keys


async def _key_form_context(request: web.Request) -> dict[str, Any]:
    nodes = await _optional(request, "nodes.read", "ListNodes", LIST)
    routes = await _optional(request, "config.read", "ListRoutes", LIST)
    return {"nodes": sorted(n.name for n in nodes.items) if nodes is not None else [],
            "routes": sorted(r.name for r in routes.items) if routes is not None else [],
            "strategies": STRATEGIES}


async def keys_page(request: web.Request, *, form_error: str = "", form: dict | None = None,
                    status: int = 200) -> web.Response:
    keys = (await admin_call(request, "ListApiKeys", LIST)).items
    usage: dict[str, dict] = {}
    if request["viewer"].can("usage.read"):
        today = usage_view.today()
        filters = usage_view.UsageFilters(group_by=["key", "day"], since=_month_start(today), until=today)
        for row in (await admin_call(request, "QueryUsage", filters.request())).rows:
            entry = usage.setdefault(row.dimensions["key"], {"requests": 0, "cost_usd": 0.0, "last_day": ""})
            entry["requests"] += row.requests
            entry["cost_usd"] += row.cost_usd
            entry["last_day"] = max(entry["last_day"], row.dimensions["day"])
    return render(request, "keys.html", status=status, keys=sorted(keys, key=lambda k: k.name), usage=usage,
                  form_error=form_error, form=form or {}, revoked=request.query.get("revoked", ""),
                  welcome=bool(request.query.get("welcome")), **await _key_form_context(request))


def _field(form, name: str) -> str:
    """A form field as text: "" when absent or not text (a file where a field was expected)."""
    value = form.get(name, "")
    return value if isinstance(value, str) else ""


def _split_list(value: str) -> list[str]:
    return [item for item in re.split(r"[\s,]+", value.strip()) if item]


async def create_key(request: web.Request) -> web.Response:
    form = await form_fields(request)
    viewer = request["viewer"]
    expires_ms = 0
    if form.get("expires", "").strip():
        try:
            day = dt.date.fromisoformat(form["expires"].strip())
        except ValueError:
            return await keys_page(request, form_error="expires: not a date (YYYY-MM-DD)", form=form, status=400)
        expires_ms = int(dt.datetime(day.year, day.month, day.day, 23, 59, 59, tzinfo=dt.UTC).timestamp() * 1000)
    strategy = form.get("strategy", "unspecified")
    if strategy not in STRATEGIES:
        return await keys_page(request, form_error=f"strategy: unknown {strategy!r}", form=form, status=400)
    allowed = _split_list(form.get("allowed", ""))
    message = admin_pb2.CreateApiKeyRequest(
        name=form.get("name", "").strip(), node=form.get("node", "").strip(), allowed_models=allowed,
        expires_at_unix_ms=expires_ms, default_strategy=routing_pb2.Strategy.Value(f"STRATEGY_{strategy.upper()}"),
        metadata={"created_by": viewer.user or f"token:{viewer.token}"})
    try:
        created = await admin_call(request, "CreateApiKey", message)
    except AdminError as exc:
        if exc.invalid or exc.denied:
            return await keys_page(request, form_error=exc.message, form=form, status=403 if exc.denied else 400)
        raise
    state = state_of(request)
    base_url = state.config.proxy_url or "http://127.0.0.1:8080/v1"
    model = allowed[0] if allowed else "auto"
    return render(request, "key_created.html", key=created.key, secret=created.secret, base_url=base_url,
                  anthropic_base_url=base_url.removesuffix("/v1"), model=model)


async def revoke_key_confirm(request: web.Request) -> web.Response:
    key = await admin_call(request, "GetApiKey", admin_pb2.GetRequest(name=request.match_info["name"]))
    return render(request, "revoke_key.html", key=key)


async def revoke_key(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    await admin_call(request, "DeleteApiKey", admin_pb2.DeleteRequest(name=name))
    raise web.HTTPSeeOther(f"/keys?revoked={name}")


# --------------------------------------------------------------------- usage


async def usage_page(request: web.Request) -> web.Response:
    try:
        filters = usage_view.parse_filters(request.query)
    except usage_view.FilterError as exc:
        return render(request, "usage.html", status=400, error=str(exc), filters=usage_view.UsageFilters(),
                      rows=[], totals=usage_view.totals([]), dimensions=usage_view.DIMENSIONS,
                      metrics=usage_view.METRICS, chart_query="", csv_query="")
    rows = list((await admin_call(request, "QueryUsage", filters.request())).rows)
    split = next((d for d in filters.group_by if d != "day"), "")
    chart_query = filters.query_string(group_by=["day", split] if split else ["day"], split=split) \
        if "day" in filters.group_by else ""
    return render(request, "usage.html", error="", filters=filters, rows=rows, totals=usage_view.totals(rows),
                  dimensions=usage_view.DIMENSIONS, metrics=usage_view.METRICS, chart_query=chart_query,
                  csv_query=filters.query_string())


async def usage_csv(request: web.Request) -> web.Response:
    try:
        filters = usage_view.parse_filters(request.query)
    except usage_view.FilterError as exc:
        return web.Response(status=400, text=f"{exc}\n")
    rows = list((await admin_call(request, "QueryUsage", filters.request())).rows)
    name = f"megarouter-usage-{filters.since.isoformat()}-{filters.until.isoformat()}.csv"
    return web.Response(text=usage_view.to_csv(rows, filters.group_by), content_type="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})


async def usage_series(request: web.Request) -> web.Response:
    """Chart data for uPlot: requires `day` in group_by; `split` names the dimension that
    makes one series per value."""
    try:
        filters = usage_view.parse_filters(request.query)
    except usage_view.FilterError as exc:
        return web.json_response({"error": {"message": str(exc), "param": exc.field}}, status=400)
    split = request.query.get("split", "")
    if split and split not in usage_view.DIMENSIONS:
        return web.json_response({"error": {"message": f"split: unknown {split!r}", "param": "split"}}, status=400)
    if filters.metric == "latency":
        split = ""  # two lines, p50 and p99, over everything the filters select
    filters.group_by = ["day", split] if split and split != "day" else ["day"]
    rows = list((await admin_call(request, "QueryUsage", filters.request())).rows)
    return web.json_response(usage_view.day_series(rows, filters.metric, filters.since, filters.until,
                                                   split if split != "day" else None))


# ------------------------------------------------------------------- budgets


async def budgets_page(request: web.Request, *, form_error: str = "", form: dict | None = None,
                       status: int = 200) -> web.Response:
    budgets = (await admin_call(request, "ListBudgets", LIST)).items
    statuses = {s.budget: s for s in (await admin_call(request, "ListBudgetStatus", LIST)).items}
    editing = request.query.get("edit", "")
    if form is None and editing:
        match = next((b for b in budgets if b.name == editing), None)
        form = proto_to_dict(match) if match is not None else {}
    return render(request, "budgets.html", status=status, budgets=sorted(budgets, key=lambda b: b.name),
                  statuses=statuses, form=form or {}, form_error=form_error,
                  can_write=request["viewer"].can("budgets.write"))


async def put_budget(request: web.Request) -> web.Response:
    form = await form_fields(request)
    try:
        limit = float(form.get("limit", ""))
    except ValueError:
        return await budgets_page(request, form_error="limit: a number", form=form, status=400)
    budget = routing_pb2.Budget(name=form.get("name", "").strip(), node=form.get("node", "").strip(),
                                key=form.get("key", "").strip(), window=form.get("window", ""),
                                unit=form.get("unit", ""), limit=limit, action=form.get("action", "pause"))
    try:
        await admin_call(request, "PutBudget", budget)
    except AdminError as exc:
        if exc.invalid or exc.denied:
            return await budgets_page(request, form_error=exc.message, form=form, status=403 if exc.denied else 400)
        raise
    raise web.HTTPSeeOther("/budgets")


# -------------------------------------------------------------------- routes


async def routes_page(request: web.Request) -> web.Response:
    routes = (await admin_call(request, "ListRoutes", LIST)).items
    models = (await admin_call(request, "ListModels", LIST)).items
    query = request.query.get("q", "").strip().lower()
    if query:
        models = [m for m in models if query in m.name.lower()]
    defaults = await admin_call(request, "GetDefaults", admin_pb2.GetDefaultsRequest())
    return render(request, "routes.html", routes=sorted(routes, key=lambda r: r.name), models=models[:MODELS_SHOWN],
                  model_count=len(models), q=query, defaults=defaults, strategy_name=_strategy_name,
                  can_write=request["viewer"].can("config.write"))


def _strategy_name(value: int) -> str:
    return routing_pb2.Strategy.Name(value).removeprefix("STRATEGY_").lower()


def _manifest_yaml(kind: str, message: Message) -> str:
    return yaml.safe_dump({kind: proto_to_dict(message)}, sort_keys=False)


# The resource model the control plane validates each manifest kind with (megarouter.resources).
_MODELS = {model_type: model for model, model_type in PROTO_TYPES.items()}


def _normalised(resource) -> Message:
    """The resource as the control plane would store it — validated by the same model, unset
    fields at their defaults — so a preview's diff shows real changes only. ValidationError
    names the field, as the admin API would."""
    model = _MODELS[type(resource.message)]
    return resource_to_proto(model.model_validate(proto_to_dict(resource.message)), type(resource.message))


# The editor takes manifests up to this size (a large org tree is still far below it).
MAX_MANIFEST_BYTES = 256 * 1024


async def edit_yaml_page(request: web.Request) -> web.Response:
    if not request["viewer"].can("config.write"):
        return error_page(request, 403, "Not allowed", "Applying YAML needs the config.write permission.")
    name = request.query.get("route", "")
    text = ""
    if name:
        text = _manifest_yaml("route", await admin_call(request, "GetRoute", admin_pb2.GetRequest(name=name)))
    return render(request, "edit_yaml.html", text=text, diff=None, error="", applied=[], route=name)


async def _current_yaml(request: web.Request, resource) -> str:
    """The stored version of a manifest resource as YAML ("" if it does not exist)."""
    get_method = resource.type.put_method.replace("Put", "Get", 1)
    try:
        if resource.type.singular == "defaults":
            current = await admin_call(request, "GetDefaults", admin_pb2.GetDefaultsRequest())
        else:
            current = await admin_call(request, get_method, admin_pb2.GetRequest(name=resource.name))
    except AdminError as exc:
        if exc.code.name == "NOT_FOUND":
            return ""
        raise
    return _manifest_yaml(resource.type.singular, current)


async def edit_yaml(request: web.Request) -> web.Response:
    """Preview (validate and diff) or apply a YAML manifest — the same parsing as
    `megarouterctl apply`, and the same server-side validation, whose errors are shown here."""
    if not request["viewer"].can("config.write"):
        return error_page(request, 403, "Not allowed", "Applying YAML needs the config.write permission.")
    form = await form_fields(request)
    text, action, route = _field(form, "text"), _field(form, "action") or "preview", _field(form, "route")
    if len(text.encode()) > MAX_MANIFEST_BYTES:
        return render(request, "edit_yaml.html", status=413, text="", diff=None, applied=[], route=route,
                      error=f"text: larger than {MAX_MANIFEST_BYTES // 1024} KiB; apply it with megarouterctl")
    try:
        resources = parse_manifest(text, "the editor", allow_aliases=False)
    except ManifestError as exc:
        return render(request, "edit_yaml.html", status=400, text=text, diff=None, error=str(exc)[:2000],
                      applied=[], route=route)
    if not resources:
        return render(request, "edit_yaml.html", status=400, text=text, diff=None, error="the editor is empty",
                      applied=[], route=route)
    try:
        normalised = [_normalised(resource) for resource in resources]
    except ValidationError as exc:
        failed = next(r for r in resources if _fails(r))
        return render(request, "edit_yaml.html", status=400, text=text, diff=None, applied=[], route=route,
                      error=f"{failed.source}: {validation_message(failed.type.singular, exc)}")
    if action != "apply":
        chunks = []
        for resource, message in zip(resources, normalised, strict=True):
            before = await _current_yaml(request, resource)
            after = _manifest_yaml(resource.type.singular, message)
            label = f"{resource.type.singular} {resource.name}"
            chunks.append("".join(difflib.unified_diff(before.splitlines(True), after.splitlines(True),
                                                       f"{label} (stored)", f"{label} (edited)"))
                          or f"{label}: unchanged\n")
        return render(request, "edit_yaml.html", text=text, diff="\n".join(chunks), error="", applied=[], route=route)
    applied = []
    for resource in resources:
        try:
            result = await admin_call(request, resource.type.put_method, resource.message)
        except AdminError as exc:
            if exc.invalid or exc.denied:
                return render(request, "edit_yaml.html", status=403 if exc.denied else 400, text=text, diff=None,
                              error=f"{resource.source}: {exc.message}", applied=applied, route=route)
            raise
        outcome = "created" if result.created else "configured" if result.changed else "unchanged"
        applied.append(f"{resource.type.singular} {resource.name}: {outcome} (revision {result.revision})")
    return render(request, "edit_yaml.html", text=text, diff=None, error="", applied=applied, route=route)


def _fails(resource) -> bool:
    try:
        _normalised(resource)
    except ValidationError:
        return True
    return False


# --------------------------------------------------------------------- fleet


async def fleet_page(request: web.Request) -> web.Response:
    proxies = await admin_call(request, "ListProxies", admin_pb2.ListProxiesRequest())
    planes = await admin_call(request, "ListControlPlanes", admin_pb2.ListControlPlanesRequest())
    health = await admin_call(request, "GetFleetHealth", admin_pb2.GetFleetHealthRequest())
    return render(request, "fleet.html", proxies=proxies, planes=planes,
                  health=sorted(health.endpoints, key=lambda e: e.endpoint), window_s=health.window_s,
                  sparklines=True)


async def fleet_history(request: web.Request) -> web.Response:
    """Per-endpoint sparkline data: {endpoint: {x (unix s), success (%), latency (ms)}}."""
    history = await admin_call(request, "GetFleetHealthHistory", admin_pb2.GetFleetHealthHistoryRequest())
    return web.json_response({"step_s": history.step_s, "endpoints": {
        series.endpoint: {"x": [ms // 1000 for ms in series.at_unix_ms],
                          "success": [round(100 * rate, 2) for rate in series.success_rate],
                          "latency": [round(ms, 1) for ms in series.latency_ms]}
        for series in history.endpoints}})


# ------------------------------------------------------------ org and people


def _tree(nodes: list) -> list[tuple[int, Any]]:
    """(depth, node) in tree order; nodes whose parent the viewer cannot see are roots."""
    names = {n.name for n in nodes}
    children: dict[str, list] = {}
    for node in nodes:
        children.setdefault(node.parent if node.parent in names else "", []).append(node)
    ordered: list[tuple[int, Any]] = []

    def walk(parent: str, depth: int) -> None:
        for node in sorted(children.get(parent, []), key=lambda n: n.name):
            ordered.append((depth, node))
            walk(node.name, depth + 1)
    walk("", 0)
    return ordered


async def org_page(request: web.Request, *, form_error: str = "", status: int = 200) -> web.Response:
    viewer = request["viewer"]
    nodes = list((await admin_call(request, "ListNodes", LIST)).items)
    users = await _optional(request, "access.admin", "ListUsers", LIST)
    tokens = await _optional(request, "access.admin", "ListAdminTokens", LIST)
    bindings = await _optional(request, "access.admin", "ListRoleBindings", LIST)
    return render(request, "org.html", status=status, tree=_tree(nodes), node_names=sorted(n.name for n in nodes),
                  users=users.items if users else None, tokens=tokens.items if tokens else None,
                  bindings=bindings.items if bindings else None, roles=PERSON_ROLES, form_error=form_error,
                  can_write_nodes=viewer.can("nodes.write"), can_admin=viewer.can("access.admin"))


async def put_node(request: web.Request) -> web.Response:
    form = await form_fields(request)
    node = routing_pb2.OrgNode(name=str(form.get("name", "")).strip(), parent=str(form.get("parent", "")).strip(),
                               kind=str(form.get("kind", "")), display_name=str(form.get("display_name", "")).strip())
    try:
        await admin_call(request, "PutNode", node)
    except AdminError as exc:
        if exc.invalid or exc.denied:
            return await org_page(request, form_error=exc.message, status=403 if exc.denied else 400)
        raise
    raise web.HTTPSeeOther("/org")


async def invite_person(request: web.Request) -> web.Response:
    """Add (or update) a user and bind a role: they sign in through SSO afterwards."""
    form = await form_fields(request)
    email = str(form.get("email", "")).strip().lower()
    role, scope = str(form.get("role", "")), str(form.get("scope", "")).strip()
    binding_name = _binding_name(email, role, scope)
    try:
        try:  # an existing user keeps what the form does not say: their name, and being disabled
            user = await admin_call(request, "GetUser", admin_pb2.GetRequest(name=email))
        except AdminError as exc:
            if exc.code.name != "NOT_FOUND":
                raise
            user = admin_pb2.User(email=email)
        if form.get("display_name", "").strip():
            user.display_name = form["display_name"].strip()
        await admin_call(request, "PutUser", user)
        await admin_call(request, "PutRoleBinding", admin_pb2.RoleBinding(name=binding_name, user=email, role=role,
                                                                          scope=scope))
    except AdminError as exc:
        if exc.invalid or exc.denied:
            return await org_page(request, form_error=exc.message, status=403 if exc.denied else 400)
        raise
    raise web.HTTPSeeOther("/org")



def _binding_name(subject: str, role: str, scope: str) -> str:
    """Readable and unique per (subject, role, scope): bob@example.com and bob@partner.example
    must not share a binding name, or granting one would replace the other's."""
    local = re.sub(r"[^a-z0-9-]+", "-", subject.partition("@")[0].lower()).strip("-")[:24] or "subject"
    digest = hashlib.sha256(f"{subject}|{role}|{scope}".encode()).hexdigest()[:8]
    return f"{local}-{role}-{digest}"


async def grant_role(request: web.Request) -> web.Response:
    """Bind a role to a user or a token over a node's subtree (or everything)."""
    form = await form_fields(request)
    kind, _, subject = str(form.get("subject", "")).partition(":")
    role, scope = str(form.get("role", "")), str(form.get("scope", "")).strip()
    if kind not in ("user", "token") or not subject:
        return await org_page(request, form_error="subject: choose a person or a token", status=400)
    binding = admin_pb2.RoleBinding(name=_binding_name(subject, role, scope), role=role, scope=scope,
                                    **{kind: subject})
    try:
        await admin_call(request, "PutRoleBinding", binding)
    except AdminError as exc:
        if exc.invalid or exc.denied:
            return await org_page(request, form_error=exc.message, status=403 if exc.denied else 400)
        raise
    raise web.HTTPSeeOther("/org#h-bindings")


async def revoke_role(request: web.Request) -> web.Response:
    await admin_call(request, "DeleteRoleBinding", admin_pb2.DeleteRequest(name=request.match_info["name"]))
    raise web.HTTPSeeOther("/org#h-bindings")


# ------------------------------------------------------------------- what-if


async def _whatif_context(request: web.Request) -> dict[str, Any]:
    routes = await _optional(request, "config.read", "ListRoutes", LIST)
    return {"profiles": whatif.builtin_profiles(), "routes": sorted(r.name for r in routes.items) if routes else [],
            "max_samples": whatif.MAX_SAMPLES, "max_log_mb": whatif.MAX_LOG_BYTES // (1024 * 1024)}


async def whatif_page(request: web.Request) -> web.Response:
    return render(request, "whatif.html", report=None, error="", form={}, **await _whatif_context(request))


async def run_whatif(request: web.Request) -> web.Response:
    """Replay a built-in profile or an uploaded usage log through each strategy."""
    try:
        form = await request.post()
    except (UnicodeDecodeError, ValueError):
        raise web.HTTPBadRequest(text="the form is not valid form data\n") from None
    fields = {name: value if isinstance(value := form.get(name, ""), str) else ""
              for name in ("profile", "route", "samples", "log_days")}
    upload = form.get("log")
    log = upload.file.read(whatif.MAX_LOG_BYTES + 1) if isinstance(upload, web.FileField) else b""

    async def refused(message: str, status: int = 400) -> web.Response:
        return render(request, "whatif.html", status=status, report=None, error=message, form=fields,
                      **await _whatif_context(request))
    if len(log) > whatif.MAX_LOG_BYTES:
        return await refused(f"log: larger than {whatif.MAX_LOG_BYTES // (1024 * 1024)} MB")
    job = whatif.WhatIfRequest(log=log, route=fields["route"].strip())
    if not log:
        if fields["profile"] not in whatif.builtin_profiles():
            return await refused("profile: choose a built-in profile, or upload a usage log")
        job.profile = fields["profile"]
        if fields["samples"].strip():
            if not fields["samples"].strip().isdigit() or not 100 <= int(fields["samples"]) <= whatif.MAX_SAMPLES:
                return await refused(f"samples: a whole number from 100 to {whatif.MAX_SAMPLES}")
            job.samples = int(fields["samples"])
    elif fields["log_days"].strip():
        try:
            job.log_days = float(fields["log_days"])
        except ValueError:
            return await refused("log_days: a number of days")
    if job.route and not request["viewer"].can("config.read"):
        return await refused("route: you may not read routes; leave it empty to use the catalog pool", 403)
    try:
        report = await whatif.run_whatif(state_of(request).admin.address, request["viewer"].credential, job)
    except whatif.WhatIfFailed as exc:
        return await refused(str(exc))
    chart = {"labels": [r["strategy"] for r in report["results"]],
             "values": [r["cost_usd_per_month"] for r in report["results"]], "metric": "cost_usd"}
    return render(request, "whatif.html", report=report, chart=chart, error="", form=fields,
                  **await _whatif_context(request))
