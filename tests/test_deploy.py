"""Static and local checks of the deployment artifacts in deploy/ (no Docker, no cluster).

* Kubernetes manifests: validated offline against the Kubernetes OpenAPI schemas of a pinned
  version with `kubernetes-validate` (it ships the JSON schemas; strict mode rejects unknown
  fields), then checked for what the schema cannot see: references between objects, probes,
  security contexts, container arguments parsed by the real `megarouter` argument parsers,
  and the NetworkPolicies evaluated for which pods may reach which ports.
* docker-compose.yml: validated against the Compose Specification JSON schema vendored in
  `check-jsonschema`, then structurally (dependencies, healthchecks, ports, volumes), and its
  commands parsed by the real argument parsers. The `observability` profile (OpenTelemetry
  Collector + Jaeger): pinned images, localhost-only ports, the collector config's pipelines
  (every component they name is defined, every defined one used), and MEGAROUTER_OTEL_ENDPOINT
  empty (tracing off) unless set to the documented collector address.
* The compose topology is rehearsed on loopback: a 3-member etcd cluster, both control planes,
  the three simulators, a proxy and the console run with the compose file's own commands and
  environment (addresses rewritten), the compose seed script applies deploy/examples/demo.yaml
  and creates the API key, the compose healthcheck commands are run, requests are served, and
  an operator signs in to the console; then a control plane is killed (the proxy keeps serving
  and gets changes made through the other one; a new proxy whose first address is the dead
  one finds the second; the console, which has only that one, turns unready) and an etcd
  member is killed (writes continue and reach the proxy). A proxy started with the documented
  MEGAROUTER_OTEL_ENDPOINT (made local) exports its spans to an OTLP/HTTP receiver the test
  runs in the collector's place; the profile-only images themselves are not run. Needs the
  etcd binary, like the etcd store tests: skipped without it, unless MEGAROUTER_REQUIRE_ETCD=1 (CI).
* Dockerfile: parsed with `dockerfile` (Docker's own Go parser, as a wheel); its build stage's
  `pip wheel .` is run on exactly what its COPY lines bring in, and the wheel must carry the
  console's templates and static files.
* Prometheus configs: loaded, targets and ports checked against compose and the manifests.
* Grafana dashboard: every PromQL expression parsed with `promql-parser`; every metric name it
  uses must be exported by the code (found by scanning the sources for Counter/Gauge/Histogram
  definitions here, so renaming a metric fails this test), and every label it filters or
  groups by must be one of that metric's labels or one Prometheus attaches; the same for the
  Jaeger datasource's trace-to-metrics queries. Trace links open the provisioned Jaeger
  datasource on a service MegaRouter reports, with tags from the span attribute allow-list.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import importlib.resources
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp
import dockerfile
import jsonschema
import kubernetes_validate
import promql_parser
import pytest
import yaml
from aiohttp import web
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from megarouter import tracing
from megarouter.cli import COMMANDS
from megarouter.manifest import parse_manifest
from tests.console_harness import ConsoleClient
from tests.harness import Service, eventually, start_service

try:
    from tests.etcd_cluster import start_or_skip
except ImportError:  # pragma: no cover - tests/ on sys.path directly
    from etcd_cluster import start_or_skip  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
DEMO_CONFIG = DEPLOY / "examples" / "demo.yaml"
DASHBOARD = DEPLOY / "grafana" / "megarouter-dashboard.json"
SOURCE_PACKAGES = ("megarouter", "controlplane", "dataplane", "console")

OTEL_COLLECTOR_CONFIG = DEPLOY / "otel" / "collector.yaml"
GRAFANA_DATASOURCES = DEPLOY / "grafana" / "provisioning" / "datasources"
# The traces endpoint deploy/README.md tells users to set for `--profile observability`.
DOCUMENTED_OTEL_ENDPOINT = "http://otel-collector:4318/v1/traces"
# Jaeger all-in-one's ports: the UI and query API, OTLP over gRPC, and the admin (health) port.
JAEGER_UI_PORT, JAEGER_OTLP_GRPC_PORT, JAEGER_ADMIN_PORT = 16686, 4317, 14269

# The Kubernetes version whose OpenAPI schemas the manifests must satisfy.
KUBERNETES_VERSION = "1.30"
PROXY_PORT, CONTROLPLANE_PORT, METRICS_PORT, SIM_PORT, CONSOLE_PORT = 8080, 50051, 9464, 9000, 8090


# ------------------------------------------------------------------------------------ helpers

def load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def kustomization() -> dict[str, Any]:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


@pytest.fixture(scope="module")
def k8s_objects(kustomization) -> list[dict[str, Any]]:
    """Every object `kubectl apply -k` would create (before kustomize's transformations)."""
    objects = []
    for name in kustomization["resources"]:
        objects.extend(load_yaml_documents(K8S / name))
    return objects


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == kind}


def pod_templates(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for obj in objects:
        if obj["kind"] in ("Deployment", "StatefulSet", "Job", "DaemonSet"):
            yield f"{obj['kind']}/{obj['metadata']['name']}", obj["spec"]["template"]


def parse_megarouter_args(argv: list[str], env: dict[str, str] | None = None) -> argparse.Namespace:
    """Parse `megarouter <argv>` with the real subcommand parser, as the image's entrypoint
    would; `env` is the container's environment (flags default from MEGAROUTER_* variables)."""
    assert argv and argv[0] in COMMANDS, f"{argv[:1]} is not a megarouter subcommand ({', '.join(COMMANDS)})"
    module = importlib.import_module(COMMANDS[argv[0]][0])
    saved = dict(os.environ)
    try:
        for name in [n for n in os.environ if n.startswith("MEGAROUTER_")]:
            del os.environ[name]
        os.environ.update(env or {})
        parser = argparse.ArgumentParser(prog=f"megarouter {argv[0]}", exit_on_error=False)
        module.add_arguments(parser)
        try:
            return parser.parse_args(argv[1:])
        except (argparse.ArgumentError, SystemExit) as exc:
            raise AssertionError(f"`megarouter {' '.join(argv)}` does not parse: {exc}") from None
    finally:
        os.environ.clear()
        os.environ.update(saved)


def host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def exported_metrics() -> dict[str, list[str]]:
    """Metric families the code defines -> their label names, from the sources themselves."""
    pattern = re.compile(
        r"\b(Counter|Gauge|Histogram|Summary)\(\s*\"([a-zA-Z_:][a-zA-Z0-9_:]*)\"\s*,\s*"
        r"(?:\"(?:[^\"\\]|\\.)*\"\s*)+(?:,\s*\[([^\]]*)\])?",
        re.S,
    )
    families: dict[str, list[str]] = {}
    for package in SOURCE_PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for kind, name, labels in pattern.findall(path.read_text()):
                label_names = re.findall(r"\"([a-zA-Z_][a-zA-Z0-9_]*)\"", labels or "")
                families[name] = [kind, *label_names]
    return families


def exported_series() -> dict[str, set[str]]:
    """Series names as Prometheus scrapes them (prometheus_client's suffixes) -> labels."""
    series: dict[str, set[str]] = {}
    for name, (kind, *labels) in exported_metrics().items():
        if kind == "Counter":
            base = name.removesuffix("_total")
            series[base + "_total"] = set(labels)
            series[base + "_created"] = set(labels)
        elif kind == "Gauge":
            series[name] = set(labels)
        elif kind == "Histogram":
            series[name + "_bucket"] = {*labels, "le"}
            for suffix in ("_sum", "_count", "_created"):
                series[name + suffix] = set(labels)
        else:  # Summary
            series[name] = {*labels, "quantile"}
            for suffix in ("_sum", "_count", "_created"):
                series[name + suffix] = set(labels)
    return series


def target_labels() -> set[str]:
    """Labels Prometheus attaches to every scraped series, per the configs in deploy/prometheus."""
    labels = {"job", "instance"}
    for path in (DEPLOY / "prometheus").glob("*.yml"):
        config = yaml.safe_load(path.read_text())
        labels |= set((config.get("global") or {}).get("external_labels", {}))
        for job in config["scrape_configs"]:
            for static in job.get("static_configs", []):
                labels |= set(static.get("labels", {}))
            for relabel in job.get("relabel_configs", []):
                if relabel.get("target_label") and not relabel["target_label"].startswith("__"):
                    labels.add(relabel["target_label"])
    return labels


# -------------------------------------------------------------------------------- Dockerfile

@pytest.fixture(scope="module")
def dockerfile_stages() -> list[list[dockerfile.Command]]:
    commands = dockerfile.parse_file(str(DEPLOY / "Dockerfile"))
    stages: list[list[dockerfile.Command]] = []
    for command in commands:
        if command.cmd == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(command)
    return stages


def dockerfile_args() -> dict[str, str]:
    """Global ARG defaults (before the first FROM)."""
    defaults = {}
    for command in dockerfile.parse_file(str(DEPLOY / "Dockerfile")):
        if command.cmd == "FROM":
            break
        if command.cmd == "ARG":
            name, _, value = command.value[0].partition("=")
            defaults[name] = value.strip('"')
    return defaults


def stage_env(stage: list[dockerfile.Command]) -> dict[str, str]:
    env = {}
    for command in stage:
        if command.cmd == "ENV":
            values = list(command.value)
            env.update(dict(zip(values[::2], values[1::2], strict=True)))
    return env


def copy_sources(stage: list[dockerfile.Command]) -> list[str]:
    sources = []
    for command in stage:
        if command.cmd in ("COPY", "ADD") and not any(flag.startswith("--from") for flag in command.flags):
            sources.extend(command.value[:-1])
    return sources


def package_sources() -> set[str]:
    """What a wheel of this project is built from, per pyproject.toml."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    includes = project["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*") for pattern in includes}
    return {"pyproject.toml", project["project"]["readme"], *packages}


def test_dockerfile_is_multistage_on_python_311_slim(dockerfile_stages):
    args = dockerfile_args()
    assert len(dockerfile_stages) >= 2
    for stage in dockerfile_stages:
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], stage[0].value[0])
        assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?(@sha256:[0-9a-f]{64})?", image), image
    build, runtime = dockerfile_stages[0], dockerfile_stages[-1]
    assert build[0].value[-1] == "build" and runtime[0].value[-1] == "runtime"
    # The first stage builds a wheel of the project (and collects its dependencies' wheels).
    assert any(c.cmd == "RUN" and "pip wheel" in c.value[0] and "--wheel-dir /wheels ." in c.value[0]
               for c in build)


def test_dockerfile_runs_as_a_numeric_non_root_user(dockerfile_stages):
    runtime = dockerfile_stages[-1]
    users = [(index, c.value[0]) for index, c in enumerate(runtime) if c.cmd == "USER"]
    assert users, "the final stage sets no USER: it would run as root"
    index, user = users[-1]
    uid, _, gid = user.partition(":")
    # Numeric, so Kubernetes' runAsNonRoot can verify it without /etc/passwd.
    assert uid.isdigit() and int(uid) != 0, user
    assert not gid or (gid.isdigit() and int(gid) != 0), user
    assert all(c.cmd not in ("RUN", "COPY", "ADD") for c in runtime[index:]), "USER must come after setup steps"
    # The same UID the manifests run as, owning the writable directories it creates.
    run = " ".join(c.value[0] for c in runtime if c.cmd == "RUN")
    assert f"--uid {uid}" in run and f"chown -R {uid}:{gid or uid}" in run


def test_dockerfile_copies_only_the_package_sources(dockerfile_stages):
    copied = [source.rstrip("/") for source in copy_sources(dockerfile_stages[0])]
    assert set(copied) == package_sources(), "COPY exactly what pyproject.toml builds the wheel from"
    assert len(copied) == len(set(copied))
    assert not any(c.cmd == "ADD" for stage in dockerfile_stages for c in stage)
    # The runtime stage copies no sources at all: it installs the wheel built in stage one.
    assert copy_sources(dockerfile_stages[-1]) == []


def test_dockerfile_runtime_installs_only_the_built_wheels(dockerfile_stages):
    runtime = dockerfile_stages[-1]
    runs = [c for c in runtime if c.cmd == "RUN"]
    install = [c for c in runs if "pip install" in c.value[0]]
    assert len(install) == 1
    command = install[0]
    assert "--mount=type=bind,from=build,source=/wheels,target=/wheels" in command.flags
    assert "--no-index" in command.value[0] and "--find-links=/wheels" in command.value[0]
    text = " ".join(c.value[0] for c in runs)
    for tool in ("apt-get", "apk ", "gcc", "build-essential", "make ", "git "):
        assert tool not in text, f"the runtime image must not install or use {tool.strip()}"


def test_dockerfile_ports_entrypoint_and_env_defaults(dockerfile_stages):
    runtime = dockerfile_stages[-1]
    exposed = {int(port) for c in runtime if c.cmd == "EXPOSE" for port in c.value}
    assert exposed == {PROXY_PORT, CONTROLPLANE_PORT, METRICS_PORT, CONSOLE_PORT}
    entrypoint = [c for c in runtime if c.cmd == "ENTRYPOINT"][-1]
    assert entrypoint.json and list(entrypoint.value) == ["megarouter"]
    cmd = [c for c in runtime if c.cmd == "CMD"][-1]
    assert cmd.json and cmd.value[0] in COMMANDS
    # The image's environment makes every service listen on all interfaces, on the exposed
    # ports, with state in directories the non-root user owns.
    env = stage_env(runtime)
    controlplane = parse_megarouter_args(["controlplane"], env)
    proxy = parse_megarouter_args(["proxy"], env)
    console = parse_megarouter_args(["console"], env)
    assert host_port(controlplane.listen) == ("0.0.0.0", CONTROLPLANE_PORT)
    assert host_port(controlplane.metrics_listen) == ("0.0.0.0", METRICS_PORT)
    assert host_port(proxy.listen) == ("0.0.0.0", PROXY_PORT)
    assert host_port(console.listen) == ("0.0.0.0", CONSOLE_PORT)
    assert proxy.cache_file.startswith("/var/cache/megarouter/")
    assert controlplane.store.startswith("/var/lib/megarouter/")


def test_dockerignore_allowlists_exactly_what_is_copied(dockerfile_stages):
    lines = [line.strip() for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()]
    patterns = [line for line in lines if line and not line.startswith("#")]
    assert patterns[0] == "*", "exclude everything first, then allow the sources back"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    assert allowed == {s.rstrip("/") for s in copy_sources(dockerfile_stages[0])}


async def test_dockerfile_build_context_makes_a_wheel_with_the_console_assets(dockerfile_stages, tmp_path):
    """The build stage's `pip wheel .`, run on exactly what its COPY lines bring in: the wheel
    must carry the console's templates and static files (package data), or the image's
    console would fail on its first page."""
    context = tmp_path / "src"
    junk = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")  # the .dockerignore's exclusions
    for source in copy_sources(dockerfile_stages[0]):
        path = ROOT / source.rstrip("/")
        if path.is_dir():
            shutil.copytree(path, context / path.name, ignore=junk)
        else:
            context.mkdir(exist_ok=True)
            shutil.copy2(path, context / path.name)
    code, out = await run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "--wheel-dir", str(tmp_path / "wheels"), "."], cwd=context, timeout=120)
    assert code == 0, out
    [wheel] = (tmp_path / "wheels").glob("megarouter-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    assets = {str(path.relative_to(ROOT)) for folder in ("console/templates", "console/static")
              for path in (ROOT / folder).rglob("*") if path.is_file()}
    assert any(name.endswith(".html") for name in assets) and any(name.endswith(".js") for name in assets)
    assert not assets - shipped, f"the image's wheel lacks {sorted(assets - shipped)}"
    assert "console/server.py" in shipped


# ----------------------------------------------------------------------------------- compose

@pytest.fixture(scope="module")
def compose_schema() -> dict[str, Any]:
    ref = importlib.resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json")
    return json.loads(ref.read_text())


def megarouter_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in compose["services"].items()
            if svc.get("image", "").startswith("${MEGAROUTER_IMAGE") or "build" in svc}


def services_running(compose, subcommand: str) -> dict[str, argparse.Namespace]:
    return {name: parse_megarouter_args(svc["command"])
            for name, svc in megarouter_services(compose).items()
            if svc.get("command") and svc["command"][0] == subcommand and "entrypoint" not in svc}


COMPOSE_VARIABLE = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


def compose_env(svc: dict[str, Any], shell: dict[str, str]) -> dict[str, str]:
    """A compose service's `environment` as its container gets it, given the shell's variables:
    `${NAME}`, `${NAME:-default}` and `${NAME:?message}` interpolated (an AssertionError, naming
    the variable, where compose would refuse to start), and a bare `NAME` passed through only
    when the shell sets it."""
    environment = svc.get("environment") or {}
    if isinstance(environment, list):
        items = [(entry.partition("=")[0], entry.partition("=")[2] if "=" in entry else None)
                 for entry in environment]
    else:
        items = list(environment.items())

    def interpolate(match: re.Match) -> str:
        name, operator, argument = match.groups()
        value = shell.get(name)
        if operator in (":?", ":-") and value == "":
            value = None
        if value is not None:
            return value
        if operator in (":?", "?"):
            raise AssertionError(f"compose refuses to start without {name}: {argument}")
        return argument or ""

    env = {}
    for name, value in items:
        if value is None:
            if name in shell:
                env[name] = shell[name]
            continue
        env[name] = COMPOSE_VARIABLE.sub(interpolate, str(value))
    return env


def test_compose_validates_against_the_compose_spec(compose, compose_schema):
    validator = jsonschema.validators.validator_for(compose_schema)(compose_schema)
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)
    # A broken file must fail the same validation, or this test would prove nothing.
    broken = json.loads(json.dumps(compose))
    broken["services"]["proxy-us-east"]["helthcheck"] = broken["services"]["proxy-us-east"].pop("healthcheck")
    broken["services"]["seed"]["depends_on"] = {"controlplane-1": {"condition": 1}}
    assert {e.validator for e in validator.iter_errors(broken)}


def test_compose_services_images_and_dependencies(compose):
    services = compose["services"]
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, f"{name} has neither image nor build"
        if "image" in svc and not svc["image"].startswith("${"):
            assert re.search(r":[\w.-]+$", svc["image"]) and not svc["image"].endswith(":latest"), \
                f"{name}: pin the image tag ({svc['image']})"
        for dependency, spec in (svc.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on unknown service {dependency}"
            condition = spec.get("condition", "service_started")
            assert condition in ("service_started", "service_healthy", "service_completed_successfully")
            if condition == "service_healthy":
                assert "healthcheck" in services[dependency], f"{dependency} has no healthcheck to wait for"
            # A profile-less service must not wait for one that only starts with a profile.
            if not svc.get("profiles"):
                assert not services[dependency].get("profiles"), f"{name} needs {dependency}, which is optional"
    # No dependency cycles: a topological order exists.
    remaining = {name: set(svc.get("depends_on") or {}) for name, svc in services.items()}
    while remaining:
        ready = [name for name, deps in remaining.items() if not deps]
        assert ready, f"dependency cycle among {sorted(remaining)}"
        for name in ready:
            del remaining[name]
        for deps in remaining.values():
            deps.difference_update(ready)
    # The megarouter image is built from the repository root with deploy/Dockerfile.
    for name, svc in megarouter_services(compose).items():
        build = svc["build"]
        assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile", name


DURATION = re.compile(r"^(\d+(\.\d+)?(us|ms|s|m|h))+$")

# Long-running services that have no healthcheck, each for a stated reason: nothing inside
# their image can probe them.
NO_HEALTHCHECK = {
    "otel-collector": "the collector image is distroless (no shell, wget or curl) and the binary has no "
                      "probe command, so nothing in the container can query its health_check extension",
}


def test_compose_healthchecks_are_well_formed(compose):
    services = compose["services"]
    assert set(NO_HEALTHCHECK) <= set(services)
    for name, svc in services.items():
        if svc.get("restart") == "on-failure":  # one-shot jobs
            continue
        if name in NO_HEALTHCHECK:
            # Only third-party images may be exempt: ours always has Python to probe with.
            assert "healthcheck" not in svc and name not in megarouter_services(compose), name
            continue
        check = svc.get("healthcheck")
        assert check, f"long-running service {name} has no healthcheck"
        test = check["test"]
        assert isinstance(test, list) and test[0] in ("CMD", "CMD-SHELL") and len(test) >= 2, name
        for field in ("interval", "timeout", "start_period"):
            if field in check:
                assert DURATION.match(check[field]), f"{name}.{field}={check[field]!r}"
        assert isinstance(check.get("retries", 3), int) and check.get("retries", 3) >= 1
        if test[0] == "CMD" and test[1:3] == ["python", "-c"]:
            compile(test[3], f"{name} healthcheck", "exec")  # the inline script is valid Python
    # Each megarouter healthcheck probes the port its service listens on.
    for svc in megarouter_services(compose).values():
        if "entrypoint" in svc:
            continue
        args = parse_megarouter_args(svc["command"])
        script = svc["healthcheck"]["test"][-1]
        if svc["command"][0] == "controlplane":
            assert f"127.0.0.1:{host_port(args.listen)[1]}" in script and "HealthCheckRequest(service='')" in script
        elif svc["command"][0] == "proxy":
            assert f"http://127.0.0.1:{host_port(args.listen)[1]}/readyz" in script
        elif svc["command"][0] == "sim":
            assert f"http://127.0.0.1:{args.port}/" in script
        elif svc["command"][0] == "console":
            assert f"http://127.0.0.1:{host_port(args.listen)[1]}/readyz" in script
        else:
            pytest.fail(f"no healthcheck expectation for `megarouter {svc['command'][0]}`")


def test_compose_etcd_is_a_static_three_member_v35_cluster(compose):
    services = compose["services"]
    members = {name: svc for name, svc in services.items() if "etcd" in svc.get("image", "")}
    assert sorted(members) == ["etcd1", "etcd2", "etcd3"]
    for name, svc in members.items():
        assert re.fullmatch(r"(quay\.io/coreos|gcr\.io/etcd-development)/etcd:v3\.5\.\d+", svc["image"])
        flags = dict(arg.split("=", 1) for arg in svc["command"][1:])
        assert svc["command"][0] == "/usr/local/bin/etcd"
        cluster = dict(member.split("=", 1) for member in flags["--initial-cluster"].split(","))
        assert cluster == {m: f"http://{m}:2380" for m in members}
        assert flags["--initial-cluster-state"] == "new"
        env = svc["environment"]
        assert env["ETCD_NAME"] == name
        assert env["ETCD_INITIAL_ADVERTISE_PEER_URLS"] == cluster[name]
        assert env["ETCD_ADVERTISE_CLIENT_URLS"] == f"http://{name}:2379"
        assert any(volume.endswith(":" + flags["--data-dir"]) for volume in svc["volumes"]), "data must persist"


def test_compose_control_planes_proxies_and_simulators(compose):
    services = compose["services"]
    etcd_members = sorted(name for name, svc in services.items() if "etcd" in svc.get("image", ""))
    controlplanes = services_running(compose, "controlplane")
    assert len(controlplanes) == 2
    for args in controlplanes.values():
        assert args.store == "etcd://" + ",".join(f"{member}:2379" for member in etcd_members)
        assert host_port(args.listen) == ("0.0.0.0", CONTROLPLANE_PORT)
        assert host_port(args.metrics_listen) == ("0.0.0.0", METRICS_PORT)
    proxies = services_running(compose, "proxy")
    assert sorted(args.region for args in proxies.values()) == ["eu-west", "us-east"]
    for name, args in proxies.items():
        addresses = args.control_plane.split(",")
        assert sorted(addresses) == sorted(f"{cp}:{CONTROLPLANE_PORT}" for cp in controlplanes), name
        assert args.node_id == name
        # The table cache lives on a volume, so a recreated proxy serves before the control plane answers.
        cache_dir = str(Path(args.cache_file).parent)
        assert any(v.endswith(":" + cache_dir) for v in services[name]["volumes"]), name
    sims = services_running(compose, "sim")
    assert len(sims) == 3 and len({args.wire for args in sims.values()}) == 3
    assert all(args.host == "0.0.0.0" and args.port == SIM_PORT for args in sims.values())
    # Every control plane needs the bootstrap admin token for a new store; compose refuses to
    # start without it rather than substituting an empty value.
    for name in controlplanes:
        assert services[name]["environment"]["MEGAROUTER_ADMIN_TOKEN"].startswith("${MEGAROUTER_ADMIN_TOKEN:?")
        assert services[name]["environment"]["MEGAROUTER_PROXY_TOKEN"].startswith("${MEGAROUTER_PROXY_TOKEN:?")
        assert services[name]["environment"]["MEGAROUTER_CONSOLE_TOKEN"].startswith("${MEGAROUTER_CONSOLE_TOKEN:?")
    # ... and the proxies the same proxy credential, without which the control planes refuse them.
    for name in proxies:
        assert "MEGAROUTER_PROXY_TOKEN=${MEGAROUTER_PROXY_TOKEN:?" in " ".join(services[name]["environment"])


def test_compose_console(compose):
    services = compose["services"]
    assert list(services_running(compose, "console")) == ["console"]
    svc = services["console"]
    assert svc["command"][0] == "console" and "entrypoint" not in svc
    shell = {"MEGAROUTER_ADMIN_TOKEN": "mr-admin-x", "MEGAROUTER_PROXY_TOKEN": "mr-proxy-x",
             "MEGAROUTER_CONSOLE_TOKEN": "mr-console-x"}
    env = compose_env(svc, shell)
    args = parse_megarouter_args(svc["command"], env)
    assert host_port(args.listen) == ("0.0.0.0", CONSOLE_PORT)
    # One control-plane address (the console takes one), a compose control plane's gRPC port;
    # it starts once every control plane is healthy.
    controlplanes = services_running(compose, "controlplane")
    assert "," not in args.control_plane
    cp_name, cp_port = host_port(args.control_plane)
    assert cp_name in controlplanes and cp_port == host_port(controlplanes[cp_name].listen)[1]
    assert svc["depends_on"] == {name: {"condition": "service_healthy"} for name in controlplanes}
    # Its credential is required (compose refuses to start without it, rather than run a
    # console that can never be ready), and every control plane installs the same variable.
    assert env["MEGAROUTER_CONSOLE_TOKEN"] == shell["MEGAROUTER_CONSOLE_TOKEN"]
    with pytest.raises(AssertionError, match="without MEGAROUTER_CONSOLE_TOKEN"):
        compose_env(svc, {})
    for name in controlplanes:
        assert compose_env(services[name], shell)["MEGAROUTER_CONSOLE_TOKEN"] == shell["MEGAROUTER_CONSOLE_TOKEN"]
        with pytest.raises(AssertionError, match="without MEGAROUTER_CONSOLE_TOKEN"):
            compose_env(services[name], {**shell, "MEGAROUTER_CONSOLE_TOKEN": ""})
    # Published on localhost only, on the port it listens on; its public URL is that address,
    # and the base URL its key snippets show is a proxy's published address.
    assert svc["ports"] == [f"127.0.0.1:{CONSOLE_PORT}:{CONSOLE_PORT}"]
    assert args.public_url == f"http://127.0.0.1:{CONSOLE_PORT}"
    proxy_urls = {f"http://{ip}:{host}/v1" for name, proxy in services_running(compose, "proxy").items()
                  for ip, host, container in (m.split(":") for m in services[name]["ports"])
                  if int(container) == host_port(proxy.listen)[1]}
    assert args.proxy_url in proxy_urls, (args.proxy_url, proxy_urls)
    # The OIDC client secret is the variable the console reads, passed through only when set.
    assert args.oidc_client_secret_env == "MEGAROUTER_OIDC_CLIENT_SECRET"
    assert args.oidc_client_secret_env not in env
    assert compose_env(svc, {**shell, "MEGAROUTER_OIDC_CLIENT_SECRET": "s3"})["MEGAROUTER_OIDC_CLIENT_SECRET"] == "s3"
    # Readiness, not liveness: healthy only once the control plane accepts its credential.
    assert f"http://127.0.0.1:{CONSOLE_PORT}/readyz" in svc["healthcheck"]["test"][-1]
    assert svc["restart"] == "unless-stopped"


def test_compose_ports_and_volumes_are_sane(compose):
    services = compose["services"]
    published: set[int] = set()
    declared_volumes = set(compose.get("volumes") or {})
    used_volumes = set()
    for name, svc in services.items():
        for mapping in svc.get("ports", []):
            ip, host, container = mapping.split(":")
            assert ip == "127.0.0.1", f"{name} publishes {mapping} beyond localhost"
            assert int(host) not in published, f"host port {host} published twice"
            published.add(int(host))
            assert 0 < int(container) < 65536
        for volume in svc.get("volumes", []):
            source, target, *mode = volume.split(":")
            assert target.startswith("/"), volume
            if source.startswith((".", "/")):
                assert (DEPLOY / source).exists(), f"{name} mounts missing {source}"
                assert mode == ["ro"], f"{name}: mount config read-only ({volume})"
            else:
                assert source in declared_volumes, f"{name} uses undeclared volume {source}"
                used_volumes.add(source)
    assert used_volumes == declared_volumes, "declared volumes nobody uses"
    # Published container ports are the ones the services listen on.
    for name, svc in megarouter_services(compose).items():
        if "entrypoint" in svc or not svc.get("ports"):
            continue
        args = parse_megarouter_args(svc["command"])
        listening = {host_port(args.listen)[1]} | ({host_port(args.metrics_listen)[1]}
                                                    if hasattr(args, "metrics_listen") else set())
        assert {int(m.split(":")[2]) for m in svc["ports"]} <= listening, name
    # The megarouter containers cannot write their root filesystem nor gain privileges.
    for name, svc in megarouter_services(compose).items():
        assert svc["read_only"] is True and svc["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in svc["security_opt"], name


# ----------------------------------------------------------- compose: the observability profile

def collector_config() -> dict[str, Any]:
    return yaml.safe_load(OTEL_COLLECTOR_CONFIG.read_text())


COLLECTOR_SECTIONS = ("receivers", "processors", "exporters", "connectors", "extensions")
COMPONENT_ID = re.compile(r"^[a-z][a-z0-9_]*(/[\w.-]+)?$")


def collector_config_errors(config: dict[str, Any]) -> list[str]:
    """What the collector would refuse (or silently ignore) in a config: unknown top-level
    sections, malformed component ids, pipelines naming components that are not defined or
    missing receivers/exporters, components defined but used by no pipeline, extensions
    enabled but not defined (or defined but not enabled)."""
    errors = []
    unknown = set(config) - {*COLLECTOR_SECTIONS, "service"}
    if unknown:
        errors.append(f"unknown top-level sections {sorted(unknown)}")
    defined = {section: set(config.get(section) or {}) for section in COLLECTOR_SECTIONS}
    for section, ids in defined.items():
        errors += [f"{section}: malformed component id {cid!r}" for cid in ids if not COMPONENT_ID.match(cid)]
    service = config.get("service") or {}
    pipelines = service.get("pipelines") or {}
    if not pipelines:
        errors.append("no pipelines")
    used: dict[str, set[str]] = {section: set() for section in COLLECTOR_SECTIONS}
    for pipeline, spec in pipelines.items():
        if pipeline.split("/")[0] not in ("traces", "metrics", "logs"):
            errors.append(f"pipeline {pipeline!r}: not a traces, metrics or logs pipeline")
        for role in ("receivers", "processors", "exporters"):
            names = (spec or {}).get(role) or []
            if role != "processors" and not names:
                errors.append(f"pipeline {pipeline!r} has no {role}")
            if len(names) != len(set(names)):
                errors.append(f"pipeline {pipeline!r} lists a {role[:-1]} twice")
            # A connector is an exporter of one pipeline and a receiver of another.
            allowed = defined[role] | (defined["connectors"] if role != "processors" else set())
            for name in names:
                if name not in allowed:
                    errors.append(f"pipeline {pipeline!r} names undefined {role[:-1]} {name!r}")
                used["connectors" if name in defined["connectors"] else role].add(name)
    for section in ("receivers", "processors", "exporters", "connectors"):
        unused = defined[section] - used[section]
        if unused:
            errors.append(f"{section} defined but in no pipeline: {sorted(unused)}")
    enabled = set(service.get("extensions") or [])
    if enabled - defined["extensions"]:
        errors.append(f"extensions enabled but not defined: {sorted(enabled - defined['extensions'])}")
    if defined["extensions"] - enabled:
        errors.append(f"extensions defined but not enabled: {sorted(defined['extensions'] - enabled)}")
    return errors


def observability_services(compose) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in compose["services"].items() if "observability" in (svc.get("profiles") or [])}


def test_compose_observability_profile_services(compose):
    services = observability_services(compose)
    assert sorted(services) == ["jaeger", "otel-collector"]
    collector, jaeger = services["otel-collector"], services["jaeger"]
    # Pinned third-party images (a release tag, never latest), only with the profile.
    assert re.fullmatch(r"otel/opentelemetry-collector-contrib:\d+\.\d+\.\d+", collector["image"])
    assert re.fullmatch(r"jaegertracing/all-in-one:1\.\d+\.\d+", jaeger["image"])
    for name, svc in services.items():
        assert svc["profiles"] == ["observability"] and svc["restart"] == "unless-stopped", name
        assert svc["read_only"] is True and svc["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in svc["security_opt"], name
    # The collector reads exactly the mounted, read-only deploy/otel/collector.yaml.
    config_flag = [arg for arg in collector["command"] if arg.startswith("--config=")]
    assert len(config_flag) == 1
    config_path = config_flag[0].removeprefix("--config=")
    assert f"./otel/collector.yaml:{config_path}:ro" in collector["volumes"]
    assert (DEPLOY / "otel" / "collector.yaml").resolve() == OTEL_COLLECTOR_CONFIG
    # It publishes (on localhost) exactly the ports its OTLP receiver listens on, and starts
    # once Jaeger is healthy.
    receivers = collector_config()["receivers"]["otlp"]["protocols"]
    listening = {protocol: host_port(spec["endpoint"]) for protocol, spec in receivers.items()}
    assert listening == {"grpc": ("0.0.0.0", 4317), "http": ("0.0.0.0", 4318)}, \
        "the receivers must listen on all interfaces (their default is localhost since v0.104)"
    assert collector["ports"] == [f"127.0.0.1:{port}:{port}" for _, port in listening.values()]
    assert collector["depends_on"] == {"jaeger": {"condition": "service_healthy"}}
    # Jaeger: OTLP on, in-memory and bounded, its UI published on localhost only, and a
    # healthcheck on its admin port with the wget its Alpine-based image has.
    env = jaeger["environment"]
    assert env["COLLECTOR_OTLP_ENABLED"] == "true" and env["SPAN_STORAGE_TYPE"] == "memory"
    assert int(env["MEMORY_MAX_TRACES"]) > 0
    assert jaeger["ports"] == [f"127.0.0.1:{JAEGER_UI_PORT}:{JAEGER_UI_PORT}"]
    assert jaeger["healthcheck"]["test"] == [
        "CMD", "wget", "-q", "-O", "/dev/null", f"http://127.0.0.1:{JAEGER_ADMIN_PORT}/"]
    assert "/tmp" in jaeger["tmpfs"]
    # Nothing outside the profile needs them (a proxy must start, and serve, without traces).
    for name, svc in compose["services"].items():
        if name not in services:
            assert not set(svc.get("depends_on") or {}) & set(services), name


def test_collector_config_wires_receivers_processors_exporters(compose):
    text = OTEL_COLLECTOR_CONFIG.read_text()
    config = yaml.safe_load(text)
    assert collector_config_errors(config) == []
    pipelines = config["service"]["pipelines"]
    # MegaRouter exports traces only.
    assert list(pipelines) == ["traces"]
    traces = pipelines["traces"]
    assert traces["receivers"] == ["otlp"]
    # memory_limiter first (it must refuse data before anything else holds it), batch last.
    assert traces["processors"][0] == "memory_limiter" and traces["processors"][-1] == "batch"
    limiter = config["processors"]["memory_limiter"]
    assert limiter["check_interval"] and 0 < limiter["spike_limit_mib"] < limiter["limit_mib"]
    # Exported over OTLP/gRPC to Jaeger's OTLP port on the compose network (plaintext there).
    exporters = {name: config["exporters"][name] for name in traces["exporters"]}
    assert list(exporters) == ["otlp/jaeger"]
    host, port = host_port(exporters["otlp/jaeger"]["endpoint"])
    assert host in observability_services(compose) and host == "jaeger" and port == JAEGER_OTLP_GRPC_PORT
    assert exporters["otlp/jaeger"]["tls"] == {"insecure": True}
    # The zero-retention note: spans carry no content, so no processor strips any.
    assert "no prompt or completion content" in " ".join(text.split())
    assert not [p for p in config["processors"] if p.split("/")[0] in ("attributes", "transform", "redaction")]
    # The check above is not vacuous: a pipeline naming an undefined component, or a
    # defined component nobody uses, fails it.
    broken = json.loads(json.dumps(config))
    broken["service"]["pipelines"]["traces"]["exporters"].append("otlp/tempo")
    broken["processors"]["attributes/unused"] = {}
    errors = collector_config_errors(broken)
    assert any("undefined exporter 'otlp/tempo'" in e for e in errors)
    assert any("attributes/unused" in e for e in errors)


def traced_service_names() -> set[str]:
    """The service names MegaRouter's processes report (`tracing.configure("<name>", …)`)."""
    names = set()
    for package in SOURCE_PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            names |= set(re.findall(r"\btracing\.configure\(\s*\"([\w.-]+)\"", path.read_text()))
    return names


def test_compose_traces_and_request_log_are_off_unless_set(compose, monkeypatch):
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SERVICE_NAME"):
        monkeypatch.delenv(name, raising=False)
    assert traced_service_names() == {"megarouter-proxy", "megarouter-controlplane"}
    services = compose["services"]
    shell = {"MEGAROUTER_ADMIN_TOKEN": "mr-admin-x", "MEGAROUTER_PROXY_TOKEN": "mr-proxy-x",
             "MEGAROUTER_CONSOLE_TOKEN": "mr-console-x"}
    collector = urlsplit(DOCUMENTED_OTEL_ENDPOINT)
    http_receiver = host_port(collector_config()["receivers"]["otlp"]["protocols"]["http"]["endpoint"])
    assert collector.scheme == "http" and collector.hostname in observability_services(compose)
    assert collector.port == http_receiver[1] and collector.path == "/v1/traces"
    traced = {**services_running(compose, "controlplane"), **services_running(compose, "proxy")}
    assert len(traced) == 4
    for name in traced:
        svc = services[name]
        # Default: empty, so the flag is empty and tracing stays off (nothing to export to).
        env = compose_env(svc, shell)
        assert env["MEGAROUTER_OTEL_ENDPOINT"] == "", name
        args = parse_megarouter_args(svc["command"], env)
        assert args.otel_endpoint == "" and tracing.configure("megarouter-test", args.otel_endpoint) is False
        # The service name is the code's own: compose does not rename it.
        assert "OTEL_SERVICE_NAME" not in env and not any(n.startswith("OTEL_") for n in env), name
        # With the documented value: the collector's OTLP/HTTP receiver.
        env = compose_env(svc, {**shell, "MEGAROUTER_OTEL_ENDPOINT": DOCUMENTED_OTEL_ENDPOINT})
        assert parse_megarouter_args(svc["command"], env).otel_endpoint == DOCUMENTED_OTEL_ENDPOINT, name
    for name in services_running(compose, "proxy"):
        svc = services[name]
        assert parse_megarouter_args(svc["command"], compose_env(svc, shell)).request_log == ""
        env = compose_env(svc, {**shell, "MEGAROUTER_REQUEST_LOG": "stdout"})
        assert parse_megarouter_args(svc["command"], env).request_log == "stdout"
    readme = (DEPLOY / "README.md").read_text()
    assert f"MEGAROUTER_OTEL_ENDPOINT={DOCUMENTED_OTEL_ENDPOINT}" in readme
    assert f"MEGAROUTER_OTEL_ENDPOINT={DOCUMENTED_OTEL_ENDPOINT}" in COMPOSE_FILE.read_text()
    assert "--profile observability up" in readme and "MEGAROUTER_REQUEST_LOG=stdout" in readme


def seed_script_compose(compose) -> str:
    return compose["services"]["seed"]["command"][0]


def test_compose_seed_job_applies_the_demo_config(compose):
    seed = compose["services"]["seed"]
    assert seed["restart"] == "on-failure" and seed["entrypoint"] == ["/bin/sh", "-c"]
    assert "./examples/demo.yaml:/config/demo.yaml:ro" in seed["volumes"]
    script = seed_script_compose(compose)
    assert "megarouterctl apply -f /config/demo.yaml" in script
    assert "megarouterctl keys create demo" in script
    admin = seed["environment"]["MEGAROUTER_ADMIN"]
    assert admin.split(":")[0] in services_running(compose, "controlplane")
    assert seed["depends_on"][admin.split(":")[0]]["condition"] == "service_healthy"
    # Kubernetes runs the very same script.
    job = by_kind(load_yaml_documents(K8S / "seed-job.yaml"), "Job")["megarouter-seed"]
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == [script]


# ------------------------------------------------------------------------------- demo config

def test_demo_config_is_valid_and_matches_the_simulators(compose):
    from megarouter import resources

    parsed = parse_manifest(DEMO_CONFIG.read_text(), str(DEMO_CONFIG))
    kinds: dict[str, dict[str, Any]] = {}
    for resource in parsed:
        model_type = getattr(resources, resource.message.DESCRIPTOR.name)
        validated = model_type.model_validate(resources.proto_to_dict(resource.message))
        kinds.setdefault(resource.type.plural, {})[resource.name] = validated
    providers, models = kinds["providers"], kinds["models"]
    endpoints, routes = kinds["endpoints"], kinds["routes"]
    assert {"auto", "chat"} <= set(routes)
    for route in routes.values():
        for tier in route.tiers:
            assert set(tier.models) <= set(models), route.name
    sims = services_running(compose, "sim")
    for endpoint in endpoints.values():
        assert endpoint.model in models and endpoint.provider in providers, endpoint.name
        # The simulator behind the provider serves the endpoint's upstream model.
        assert (endpoint.upstream_model or endpoint.model) in sims[endpoint.provider].models.split(","), endpoint.name
    wire_of_kind = {"openai": "openai", "anthropic": "anthropic", "gemini": "gemini", "azure_openai": "azure"}
    for provider in providers.values():
        url = re.fullmatch(r"http://([\w-]+):(\d+)/\w+", provider.base_url)
        assert url, provider.base_url
        assert url.group(1) == provider.name and url.group(1) in sims
        assert int(url.group(2)) == sims[provider.name].port
        assert sims[provider.name].wire == wire_of_kind[provider.kind]
    # Kubernetes mounts the same text from a ConfigMap.
    configmap = by_kind(load_yaml_documents(K8S / "demo-config.yaml"), "ConfigMap")["megarouter-demo-config"]
    assert configmap["data"]["demo.yaml"] == DEMO_CONFIG.read_text(), \
        "deploy/kubernetes/demo-config.yaml must embed deploy/examples/demo.yaml verbatim"


# -------------------------------------------------- the compose topology, rehearsed on loopback

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]



def localize(argv: list[str], addresses: dict[str, str], tmp: Path) -> list[str]:
    """A compose command with its addresses made local: compose host:port -> loopback host:port,
    listen addresses -> port 0 on loopback, container paths -> the test's directory."""
    out = []
    for arg in argv:
        arg = re.sub(r"0\.0\.0\.0:\d+", "127.0.0.1:0", arg)
        arg = arg.replace("--host=0.0.0.0", "--host=127.0.0.1").replace(f"--port={SIM_PORT}", "--port=0")
        for compose_address, local in addresses.items():
            arg = re.sub(rf"(?<![\w-]){re.escape(compose_address)}(?![\w-])", local, arg)
        arg = arg.replace("/var/cache/megarouter/", f"{tmp}/")
        out.append(arg)
    return out


def healthcheck_argv(svc: dict[str, Any], port: int, local_port: int) -> list[str]:
    test = list(svc["healthcheck"]["test"])
    assert test[:2] == ["CMD", "python"]
    script = test[-1]
    assert f"127.0.0.1:{port}" in script
    return [sys.executable, *test[2:-1], script.replace(f"127.0.0.1:{port}", f"127.0.0.1:{local_port}")]


async def run(argv: list[str], env: dict[str, str] | None = None, timeout: float = 60,
              cwd: Path | None = None) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env={**os.environ, **(env or {})},
        cwd=cwd)
    output, _ = await asyncio.wait_for(process.communicate(), timeout)
    return process.returncode, output.decode()


async def chat(session: aiohttp.ClientSession, base: str, key: str, model: str) -> aiohttp.ClientResponse:
    async with session.post(f"{base}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                            json={"model": model, "messages": [{"role": "user", "content": "hi"}]}) as response:
        await response.read()
        return response


async def console_ready(port: int) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/readyz") as response:
        return response.status, await response.text()


class OtlpReceiver:
    """An OTLP/HTTP traces endpoint on loopback: the collector's receiver, for the rehearsal."""

    def __init__(self, runner: web.AppRunner, port: int, bodies: list[bytes]) -> None:
        self._runner, self.port, self._bodies = runner, port, bodies

    @classmethod
    async def start(cls) -> OtlpReceiver:
        bodies: list[bytes] = []

        async def export(request: web.Request) -> web.Response:
            bodies.append(await request.read())
            return web.Response(body=trace_service_pb2.ExportTraceServiceResponse().SerializeToString(),
                                content_type="application/x-protobuf")
        app = web.Application()
        app.router.add_post("/v1/traces", export)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return cls(runner, runner.addresses[0][1], bodies)

    def spans(self) -> list[dict[str, Any]]:
        out = []
        for body in self._bodies:
            for resource_spans in trace_service_pb2.ExportTraceServiceRequest.FromString(body).resource_spans:
                service = next((a.value.string_value for a in resource_spans.resource.attributes
                                if a.key == "service.name"), "")
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        attributes = {}
                        for attribute in span.attributes:
                            kind = attribute.value.WhichOneof("value")
                            attributes[attribute.key] = getattr(attribute.value, kind) if kind else None
                        out.append({"service": service, "name": span.name, "kind": span.kind,
                                    "trace_id": span.trace_id.hex(), "attributes": attributes})
        return out

    async def stop(self) -> None:
        await self._runner.cleanup()


async def test_compose_topology_runs_with_its_own_commands(compose, tmp_path, monkeypatch):
    services = compose["services"]
    admin_token = "mr-admin-deploy-test-" + "x" * 24
    proxy_token = "mr-proxy-deploy-test-" + "y" * 24
    console_token = "mr-console-deploy-test-" + "z" * 24
    # What the compose file interpolates from the shell. The test session's own tokens (set by
    # conftest for every other test) are removed, so each process gets only what compose gives it.
    shell = {"MEGAROUTER_ADMIN_TOKEN": admin_token, "MEGAROUTER_PROXY_TOKEN": proxy_token,
             "MEGAROUTER_CONSOLE_TOKEN": console_token}
    # Nor may the session's environment turn tracing or the request log on behind compose's back.
    for name in (*shell, "MEGAROUTER_OTEL_ENDPOINT", "MEGAROUTER_REQUEST_LOG", "OTEL_EXPORTER_OTLP_ENDPOINT",
                 "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SERVICE_NAME"):
        monkeypatch.delenv(name, raising=False)
    # Rehearsed: the profile-less topology. The profile-only services (`monitoring`: Prometheus,
    # Grafana; `observability`: the OpenTelemetry Collector, Jaeger) are deliberately not run:
    # they are third-party images that cannot run here, and nothing profile-less depends on
    # them (test_compose_services_images_and_dependencies); their configs are checked
    # statically, and the collector's part, receiving OTLP/HTTP, is played by a receiver below.
    optional = {name for name, svc in services.items() if svc.get("profiles")}
    assert optional == {"prometheus", "grafana", "otel-collector", "jaeger"}
    assert not optional & set(megarouter_services(compose)), "a megarouter service under a profile is not rehearsed"
    cluster = start_or_skip(3)
    started: list[Service] = []
    client: ConsoleClient | None = None
    otlp: OtlpReceiver | None = None
    try:
        addresses = {f"etcd{i + 1}:2379": endpoint for i, endpoint in enumerate(cluster.endpoints)}
        logs = tmp_path / "logs"
        # Simulators, exactly as compose runs them.
        sim_ports = {}
        for name in services_running(compose, "sim"):
            sim = await start_service(name, localize(services[name]["command"], addresses, tmp_path), logs)
            started.append(sim)
            sim_ports[name] = sim.port
            code, out = await run(healthcheck_argv(services[name], SIM_PORT, sim.port))
            assert code == 0, out
        # Control planes on the etcd cluster; the second starts after the first bootstraps
        # the admin token, as compose orders them.
        cp_ports = {}
        for name in ("controlplane-1", "controlplane-2"):
            argv = localize(services[name]["command"], addresses, tmp_path)
            assert any(arg.startswith("--store=etcd://127.0.0.1:") for arg in argv)
            cp = await start_service(name, argv, logs, env=compose_env(services[name], shell))
            started.append(cp)
            cp_ports[name] = cp.port
            code, out = await run(healthcheck_argv(services[name], CONTROLPLANE_PORT, cp.port))
            assert code == 0, f"{name} healthcheck failed:\n{out}"
        dead = free_port()
        code, _ = await run(healthcheck_argv(services["controlplane-1"], CONTROLPLANE_PORT, dead))
        assert code != 0, "the control-plane healthcheck passes with nothing listening"

        # The seed job's script, with the demo config's simulator URLs made local.
        demo = DEMO_CONFIG.read_text()
        for name, port in sim_ports.items():
            demo = demo.replace(f"http://{name}:{SIM_PORT}/", f"http://127.0.0.1:{port}/")
        (tmp_path / "demo.yaml").write_text(demo)
        script = seed_script_compose(compose).replace("/config/demo.yaml", str(tmp_path / "demo.yaml"))
        seed_env = {
            "MEGAROUTER_ADMIN": services["seed"]["environment"]["MEGAROUTER_ADMIN"].replace(
                f"controlplane-1:{CONTROLPLANE_PORT}", f"127.0.0.1:{cp_ports['controlplane-1']}"),
            "MEGAROUTER_ADMIN_TOKEN": admin_token,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        code, out = await run(["/bin/sh", "-c", script], seed_env, cwd=tmp_path)
        assert code == 0, out
        assert "route/auto created" in out and "route/chat created" in out
        key = re.search(r"^(sk-\S+)$", out, re.M)
        assert "apikey/demo created" in out and key, out
        # A second run (a restarted seed container) changes nothing and succeeds.
        code, again = await run(["/bin/sh", "-c", script], seed_env, cwd=tmp_path)
        assert code == 0 and "created" not in again and "route/auto unchanged" in again, again
        # Without the admin token the admin API refuses it.
        code, refused = await run(["/bin/sh", "-c", script], {**seed_env, "MEGAROUTER_ADMIN_TOKEN": ""}, cwd=tmp_path)
        assert code != 0 and "MEGAROUTER_ADMIN_TOKEN" in refused, refused

        # The proxy, given both control planes as compose gives them.
        cp_addresses = {**addresses, **{f"{name}:{CONTROLPLANE_PORT}": f"127.0.0.1:{port}"
                                        for name, port in cp_ports.items()}}
        proxy_name = "proxy-us-east"
        proxy_env = compose_env(services[proxy_name], shell)
        # Without MEGAROUTER_OTEL_ENDPOINT / MEGAROUTER_REQUEST_LOG in the shell, both are empty: off.
        assert proxy_env == {"MEGAROUTER_PROXY_TOKEN": proxy_token, "MEGAROUTER_OTEL_ENDPOINT": "",
                             "MEGAROUTER_REQUEST_LOG": ""}
        proxy = await start_service(proxy_name, [
            *localize(services[proxy_name]["command"], cp_addresses, tmp_path), "--telemetry-interval=1"], logs,
            env=proxy_env)
        started.append(proxy)
        check = healthcheck_argv(services[proxy_name], PROXY_PORT, proxy.port)

        async def healthy() -> bool:
            return (await run(check))[0] == 0
        await eventually(healthy, timeout=30, interval=0.2, what="the proxy healthcheck to pass")
        assert (tmp_path / "proxy-table.pb").exists(), "the proxy writes its table cache"
        assert "tracing on" not in proxy.log_text(), "an empty MEGAROUTER_OTEL_ENDPOINT must leave tracing off"

        async def apply_via(controlplane: str, manifest: str) -> bool:
            path = tmp_path / f"{controlplane}.yaml"
            path.write_text(manifest)
            code, _ = await run([str(Path(sys.executable).parent / "megarouterctl"), "--server",
                                 f"127.0.0.1:{cp_ports[controlplane]}", "apply", "-f", str(path)],
                                {"MEGAROUTER_ADMIN_TOKEN": admin_token}, cwd=tmp_path)
            return code == 0

        async with aiohttp.ClientSession() as session:
            async def served(model: str, base: str = f"http://127.0.0.1:{proxy.port}") -> bool:
                response = await chat(session, base, key.group(1), model)
                return response.status == 200 and response.headers["x-megarouter-endpoint"].startswith("demo-")
            # The table with the seeded key may arrive a moment after the first table.
            await eventually(lambda: served("auto"), timeout=30, interval=0.2, what="a chat reply via route auto")
            for model in ("chat", "demo-large"):  # demo-large: only the anthropic and gemini wires serve it
                assert await served(model), model

            # The console, with its compose command and environment (its control-plane address
            # made local). Its public URL still names host port 8090: that decides only the
            # cookies' Secure flag (http: off either way) and the SSO redirect, unused here.
            console_env = {name: localize([value], cp_addresses, tmp_path)[0]
                           for name, value in compose_env(services["console"], shell).items()}
            assert console_env["MEGAROUTER_CONTROL_PLANE"] == f"127.0.0.1:{cp_ports['controlplane-1']}"
            assert console_env["MEGAROUTER_CONSOLE_TOKEN"] == console_token
            console = await start_service("console", localize(services["console"]["command"], cp_addresses,
                                                              tmp_path), logs, env=console_env)
            started.append(console)
            console_check = healthcheck_argv(services["console"], CONSOLE_PORT, console.port)

            async def console_healthy() -> bool:
                return (await run(console_check))[0] == 0
            # Ready only because the control planes installed the token compose gave them.
            await eventually(console_healthy, timeout=30, interval=0.2, what="the console healthcheck to pass")
            assert await console_ready(console.port) == (200, "ready\n")
            async with session.get(f"http://127.0.0.1:{console.port}/healthz") as response:
                assert response.status == 200
            # A console whose token the control plane does not know never turns ready.
            stranger = await start_service("console-wrong-token", localize(
                services["console"]["command"], cp_addresses, tmp_path), logs,
                env={**console_env, "MEGAROUTER_CONSOLE_TOKEN": "mr-console-not-installed-" + "w" * 24})
            started.append(stranger)

            async def refused() -> bool:
                return await console_ready(stranger.port) == (503, "control plane: UNAUTHENTICATED\n")
            await eventually(refused, timeout=15, interval=0.2, what="the wrong-token console's /readyz to say 503")
            assert (await run(healthcheck_argv(services["console"], CONSOLE_PORT, stranger.port)))[0] != 0
            await stranger.stop()
            # An operator signs in with the admin token, as the compose file's header says.
            client = ConsoleClient.open(f"http://127.0.0.1:{console.port}")
            signed_in = await client.sign_in(admin_token)
            assert signed_in.status == 303 and client.session_cookie(), signed_in.status
            status, page = await client.page("/")
            assert status == 200 and "Control plane unavailable" not in page, status

            # A control plane dies: the proxy keeps serving, and a change made through the
            # other replica (same etcd) still reaches it.
            await next(s for s in started if s.name == "controlplane-1").stop(signal.SIGKILL)
            assert await served("auto") and await served("chat")
            # The console has only that address: it turns unready (and compose marks it
            # unhealthy) rather than failing requests silently.

            async def console_unready() -> bool:
                return (await console_ready(console.port))[0] == 503 and not await console_healthy()
            await eventually(console_unready, timeout=15, interval=0.2,
                             what="the console to turn unready without its control plane")
            assert await apply_via("controlplane-2", "route: {name: after-cp-loss, tiers: [{models: [demo-small]}]}")
            await eventually(lambda: served("after-cp-loss"), timeout=30, interval=0.2,
                             what="a route created through the surviving control plane to be served")

            # A proxy started now, whose first control-plane address is the dead one, finds the
            # second. It runs as `--profile observability` with the documented endpoint starts
            # it, the collector's OTLP/HTTP receiver played by one this test runs.
            otlp = await OtlpReceiver.start()
            collector = urlsplit(DOCUMENTED_OTEL_ENDPOINT).netloc
            traced_env = {name: localize([value], {collector: f"127.0.0.1:{otlp.port}"}, tmp_path)[0]
                          for name, value in compose_env(
                              services[proxy_name], {**shell, "MEGAROUTER_OTEL_ENDPOINT": DOCUMENTED_OTEL_ENDPOINT}
                          ).items()}
            assert traced_env["MEGAROUTER_OTEL_ENDPOINT"] == f"http://127.0.0.1:{otlp.port}/v1/traces"
            late = await start_service("proxy-late", [
                *localize(services[proxy_name]["command"], cp_addresses, tmp_path / "late"),
                "--node-id=proxy-late"], logs, env=traced_env)
            started.append(late)
            late_base = f"http://127.0.0.1:{late.port}"
            await eventually(lambda: served("after-cp-loss", late_base), timeout=30,
                             interval=0.2, what="a proxy whose first control plane is down to serve")
            # Its spans arrive as the dashboard's links and the Jaeger datasource expect them:
            # service megarouter-proxy, a client span per attempt naming the endpoint that
            # served, which is the `endpoint` label of that endpoint's metrics.
            response = await chat(session, late_base, key.group(1), "after-cp-loss")
            endpoint = response.headers["x-megarouter-endpoint"]

            def attempt_spans() -> list[dict[str, Any]]:
                return [span for span in otlp.spans() if span["kind"] == 3  # SPAN_KIND_CLIENT
                        and span["attributes"].get("megarouter.endpoint") == endpoint]

            async def exported() -> bool:
                return bool(attempt_spans())
            await eventually(exported, timeout=15, interval=0.2,
                             what="the traced proxy's spans to reach the OTLP receiver")
            assert {span["service"] for span in otlp.spans()} == {"megarouter-proxy"}
            attempt = attempt_spans()[0]
            assert attempt["attributes"]["gen_ai.provider.name"] in {"openai", "anthropic", "gcp.gemini"}
            assert any(span["name"] == "chat after-cp-loss" and span["trace_id"] == attempt["trace_id"]
                       and span["attributes"].get("megarouter.endpoint") == endpoint for span in otlp.spans())
            jaeger = yaml.safe_load((GRAFANA_DATASOURCES / "jaeger.yml").read_text())["datasources"][0]
            for tag in jaeger["jsonData"]["tracesToMetrics"]["tags"]:
                value = attempt["attributes"][tag["key"]]
                async with session.get(f"{late_base}/metrics") as metrics:
                    exposition = await metrics.text()
                assert f'{tag["value"]}="{value}"' in exposition, f"no metric series with {tag['value']}={value}"

            # An etcd member dies: quorum holds, writes continue and reach the proxies.
            cluster.members[0].kill()

            async def applied() -> bool:  # an operator re-runs an apply whose outcome was unknown
                return await apply_via("controlplane-2",
                                       "route: {name: after-etcd-loss, tiers: [{models: [demo-medium]}]}")
            await eventually(applied, timeout=30, interval=0.5, what="a config write with one etcd member down")
            await eventually(lambda: served("after-etcd-loss"), timeout=30, interval=0.2,
                             what="a route written with one etcd member down to be served")
    finally:
        if client is not None:
            await client.close()
        for service in reversed(started):
            with contextlib.suppress(Exception):
                await service.stop()
        if otlp is not None:
            await otlp.stop()
        cluster.stop()


# -------------------------------------------------------------------------------- Kubernetes

def test_kubernetes_manifests_match_the_openapi_schemas(k8s_objects):
    objects = [*k8s_objects, *load_yaml_documents(K8S / "secret.example.yaml")]
    assert len(objects) >= 15
    for obj in objects:
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(f"{where}: {'.'.join(map(str, exc.path))}: {exc.message}") from None
    # The validator does reject what Kubernetes would: an unknown field and a wrong type.
    deployment = json.loads(json.dumps(by_kind(k8s_objects, "Deployment")["megarouter-proxy"]))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/readyz"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)
    deployment = json.loads(json.dumps(by_kind(k8s_objects, "Deployment")["megarouter-controlplane"]))
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_kustomization_lists_every_manifest_but_the_secret_example(kustomization):
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed))
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert set(listed) == on_disk
    assert "secret.example.yaml" not in listed, "placeholder secrets must never be applied"
    namespace = by_kind(load_yaml_documents(K8S / "namespace.yaml"), "Namespace")
    assert list(namespace) == [kustomization["namespace"]] and listed[0] == "namespace.yaml"
    # The image override names the image every MegaRouter container uses.
    assert [image["name"] for image in kustomization["images"]] == ["megarouter"]


def test_kubernetes_pods_are_locked_down(k8s_objects):
    namespace = by_kind(k8s_objects, "Namespace")["megarouter"]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    templates = dict(pod_templates(k8s_objects))
    assert len(templates) >= 7
    for where, template in templates.items():
        spec = template["spec"]
        pod_security = spec["securityContext"]
        assert pod_security["runAsNonRoot"] is True and pod_security["runAsUser"] != 0, where
        assert pod_security["seccompProfile"]["type"] == "RuntimeDefault", where
        assert spec["automountServiceAccountToken"] is False, where
        for container in spec["containers"]:
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["capabilities"]["drop"] == ["ALL"], where
            resources = container["resources"]
            assert resources["requests"]["cpu"] and resources["requests"]["memory"], where
            assert resources["limits"]["memory"], where
            image = container["image"]
            assert ":" in image and not image.endswith(":latest"), where
            if image.startswith("megarouter:"):
                assert pod_security["runAsUser"] == 10001, f"{where}: the image's user is 10001"


def resolved_env(container: dict[str, Any], configmaps: dict[str, dict[str, Any]]) -> dict[str, str]:
    env = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        elif "configMapKeyRef" in var["valueFrom"]:
            ref = var["valueFrom"]["configMapKeyRef"]
            env[var["name"]] = configmaps[ref["name"]]["data"][ref["key"]]
        elif "fieldRef" in var["valueFrom"]:
            env[var["name"]] = f"<{var['valueFrom']['fieldRef']['fieldPath']}>"
        elif "secretKeyRef" in var["valueFrom"]:
            env[var["name"]] = "<secret>"
    return env


def container_of(objects, kind: str, name: str) -> dict[str, Any]:
    return by_kind(objects, kind)[name]["spec"]["template"]["spec"]["containers"][0]


def test_kubernetes_references_resolve(k8s_objects):
    configmaps = by_kind(k8s_objects, "ConfigMap")
    example_secrets = by_kind(load_yaml_documents(K8S / "secret.example.yaml"), "Secret")
    templates = dict(pod_templates(k8s_objects))
    for where, template in templates.items():
        spec = template["spec"]
        for container in spec["containers"]:
            for var in container.get("env", []):
                assert ("value" in var) != ("valueFrom" in var), f"{where} {var['name']}"
                source = var.get("valueFrom", {})
                if "configMapKeyRef" in source:
                    ref = source["configMapKeyRef"]
                    assert ref["key"] in configmaps[ref["name"]]["data"], f"{where} {var['name']}"
                if "secretKeyRef" in source:
                    ref = source["secretKeyRef"]
                    assert ref["key"] in example_secrets[ref["name"]]["stringData"], f"{where} {var['name']}"
                if re.search(r"KEY|TOKEN|SECRET|PASSWORD", var["name"]):
                    assert "secretKeyRef" in source, f"{where}: {var['name']} must come from a Secret"
            mounts = {mount["name"] for mount in container.get("volumeMounts", [])}
            assert mounts <= {volume["name"] for volume in spec.get("volumes", [])} | {
                claim["metadata"]["name"] for obj in k8s_objects if obj["kind"] == "StatefulSet"
                for claim in obj["spec"].get("volumeClaimTemplates", [])}, where
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in configmaps, where
    # Services, PodDisruptionBudgets and workloads select pods that exist, by their labels.
    for kind in ("Service", "PodDisruptionBudget", "Deployment", "StatefulSet"):
        for name, obj in by_kind(k8s_objects, kind).items():
            selector = obj["spec"]["selector"]
            selector = selector.get("matchLabels", selector)
            matching = [w for w, t in templates.items()
                        if selector.items() <= t["metadata"]["labels"].items()]
            assert matching, f"{kind}/{name} selects no pods"
            if kind == "Service":
                ports = {p["name"] for w in matching for c in templates[w]["spec"]["containers"]
                         for p in c.get("ports", [])}
                for port in obj["spec"]["ports"]:
                    assert port["targetPort"] in ports, f"Service/{name} targets unknown port {port['targetPort']}"
    for name, hpa in by_kind(k8s_objects, "HorizontalPodAutoscaler").items():
        target = hpa["spec"]["scaleTargetRef"]
        assert target["name"] in by_kind(k8s_objects, target["kind"]), name


def test_kubernetes_controlplane(k8s_objects):
    configmaps = by_kind(k8s_objects, "ConfigMap")
    deployment = by_kind(k8s_objects, "Deployment")["megarouter-controlplane"]
    assert deployment["spec"]["replicas"] >= 2
    container = container_of(k8s_objects, "Deployment", "megarouter-controlplane")
    args = parse_megarouter_args(container["args"], resolved_env(container, configmaps))
    assert host_port(args.listen) == ("0.0.0.0", CONTROLPLANE_PORT)
    assert host_port(args.metrics_listen) == ("0.0.0.0", METRICS_PORT)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": CONTROLPLANE_PORT, "metrics": METRICS_PORT}
    # Native gRPC probes against grpc.health.v1 (service "" unless named).
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == CONTROLPLANE_PORT and "service" not in container[probe]["grpc"]
    # The store: every member of the etcd StatefulSet, by its stable name, on the client port.
    etcd = by_kind(k8s_objects, "StatefulSet")["etcd"]
    members = [f"{etcd['metadata']['name']}-{i}.{etcd['spec']['serviceName']}:2379"
               for i in range(etcd["spec"]["replicas"])]
    assert args.store == "etcd://" + ",".join(members)
    service = by_kind(k8s_objects, "Service")["megarouter-controlplane"]
    grpc_port = next(p for p in service["spec"]["ports"] if p["name"] == "grpc")
    assert grpc_port["port"] == CONTROLPLANE_PORT and grpc_port["appProtocol"] == "grpc"
    pdb = by_kind(k8s_objects, "PodDisruptionBudget")["megarouter-controlplane"]
    assert pdb["spec"]["minAvailable"] < deployment["spec"]["replicas"], "a drain must be able to proceed"
    token = next(v for v in container["env"] if v["name"] == "MEGAROUTER_ADMIN_TOKEN")
    assert token["valueFrom"]["secretKeyRef"].get("optional") is not True, "a new store needs the token"
    proxy_token = next(v for v in container["env"] if v["name"] == "MEGAROUTER_PROXY_TOKEN")
    assert proxy_token["valueFrom"]["secretKeyRef"] == {"name": "megarouter-proxy-token", "key": "token"}
    console_token = next(v for v in container["env"] if v["name"] == "MEGAROUTER_CONSOLE_TOKEN")
    assert console_token["valueFrom"]["secretKeyRef"] == {"name": "megarouter-console-token", "key": "token"}


def test_kubernetes_proxy(k8s_objects):
    configmaps = by_kind(k8s_objects, "ConfigMap")
    container = container_of(k8s_objects, "Deployment", "megarouter-proxy")
    env = resolved_env(container, configmaps)
    args = parse_megarouter_args(container["args"], env)
    assert host_port(args.listen) == ("0.0.0.0", PROXY_PORT)
    assert args.node_id == "<metadata.name>", "each pod reports its own name as node id"
    # The control-plane address is the control plane's Service and gRPC port.
    service = by_kind(k8s_objects, "Service")["megarouter-controlplane"]
    assert args.control_plane == f"{service['metadata']['name']}:{CONTROLPLANE_PORT}"
    assert [p["containerPort"] for p in container["ports"]] == [PROXY_PORT]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    # The cache file is on a writable emptyDir (the root filesystem is read-only).
    template = by_kind(k8s_objects, "Deployment")["megarouter-proxy"]["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    cache_volume = mounts[str(Path(args.cache_file).parent)]
    assert "emptyDir" in next(v for v in template["volumes"] if v["name"] == cache_volume)
    # The proxy credential is required (the same Secret the control plane installs); provider
    # secrets are referenced, optional, never inline.
    proxy_token = next(v for v in container["env"] if v["name"] == "MEGAROUTER_PROXY_TOKEN")
    assert proxy_token["valueFrom"]["secretKeyRef"] == {"name": "megarouter-proxy-token", "key": "token"}
    secret_vars = [v for v in container["env"] if "secretKeyRef" in v.get("valueFrom", {})
                   and v["name"] != "MEGAROUTER_PROXY_TOKEN"]
    assert {v["name"] for v in secret_vars} >= {"OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY"}
    assert all(v["valueFrom"]["secretKeyRef"]["optional"] is True for v in secret_vars)
    hpa = by_kind(k8s_objects, "HorizontalPodAutoscaler")["megarouter-proxy"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "megarouter-proxy"}
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    cpu = [m for m in hpa["spec"]["metrics"] if m["type"] == "Resource" and m["resource"]["name"] == "cpu"]
    assert cpu and 0 < cpu[0]["resource"]["target"]["averageUtilization"] <= 100
    assert container["resources"]["requests"]["cpu"], "CPU utilization needs a CPU request"
    assert "replicas" not in by_kind(k8s_objects, "Deployment")["megarouter-proxy"]["spec"], "the HPA owns replicas"
    pdb = by_kind(k8s_objects, "PodDisruptionBudget")["megarouter-proxy"]
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]


def test_kubernetes_console(k8s_objects):
    configmaps = by_kind(k8s_objects, "ConfigMap")
    deployment = by_kind(k8s_objects, "Deployment")["megarouter-console"]
    # Two replicas: sessions live in the control plane's store, so either serves anyone.
    assert deployment["spec"]["replicas"] >= 2
    container = container_of(k8s_objects, "Deployment", "megarouter-console")
    assert container["args"] == ["console"]
    args = parse_megarouter_args(container["args"], resolved_env(container, configmaps))
    assert host_port(args.listen) == ("0.0.0.0", CONSOLE_PORT)
    # The control plane's Service and gRPC port (one address, in front of every ready replica).
    service = by_kind(k8s_objects, "Service")["megarouter-controlplane"]
    assert args.control_plane == f"{service['metadata']['name']}:{CONTROLPLANE_PORT}"
    assert urlsplit(args.public_url).scheme in ("http", "https") and urlsplit(args.public_url).hostname
    assert urlsplit(args.proxy_url).scheme in ("http", "https") and args.proxy_url.endswith("/v1")
    # Probes on the container port: ready only while the control plane accepts its credential.
    assert container["ports"] == [{"name": "http", "containerPort": CONSOLE_PORT}]
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    # A ClusterIP Service on 8090 in front of the console pods only.
    console_service = by_kind(k8s_objects, "Service")["megarouter-console"]
    assert console_service["spec"]["type"] == "ClusterIP"
    assert [(p["port"], p["targetPort"]) for p in console_service["spec"]["ports"]] == [(CONSOLE_PORT, "http")]
    selected = [w for w, tpl in pod_templates(k8s_objects)
                if console_service["spec"]["selector"].items() <= tpl["metadata"]["labels"].items()]
    assert selected == ["Deployment/megarouter-console"]
    # Its credential comes from the Secret the control plane installs as token `console`; the
    # OIDC client secret (SSO only) from an optional Secret, in the variable the console reads.
    env = {v["name"]: v for v in container["env"]}
    assert env["MEGAROUTER_CONSOLE_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "megarouter-console-token", "key": "token"}
    controlplane = container_of(k8s_objects, "Deployment", "megarouter-controlplane")
    assert next(v for v in controlplane["env"] if v["name"] == "MEGAROUTER_CONSOLE_TOKEN")["valueFrom"] == \
        env["MEGAROUTER_CONSOLE_TOKEN"]["valueFrom"]
    assert args.oidc_client_secret_env == "MEGAROUTER_OIDC_CLIENT_SECRET"
    oidc = env[args.oidc_client_secret_env]["valueFrom"]["secretKeyRef"]
    assert oidc["optional"] is True and oidc["name"] == "megarouter-oidc-client"
    # Locked down exactly like the proxy.
    proxy = by_kind(k8s_objects, "Deployment")["megarouter-proxy"]["spec"]["template"]["spec"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"] == proxy["securityContext"]
    assert container["securityContext"] == proxy["containers"][0]["securityContext"]
    assert pod["automountServiceAccountToken"] is False
    pdb = by_kind(k8s_objects, "PodDisruptionBudget")["megarouter-console"]
    assert pdb["spec"]["minAvailable"] < deployment["spec"]["replicas"], "a drain must be able to proceed"


# A pod, or an address outside the cluster, as NetworkPolicies see it: a pod in our namespace
# (`namespace` None) or in another namespace (its labels), or an IP address.
Peer = dict[str, Any]


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, f"only matchLabels is evaluated here: {selector}"
    return selector.get("matchLabels", {}).items() <= labels.items()


def _peer_matches(rule: dict[str, Any], peer: Peer, namespace_labels: dict[str, str]) -> bool:
    if "ipBlock" in rule:
        if "ip" not in peer:
            return False  # pods' addresses against ipBlocks: implementation-defined, not relied on
        address = ipaddress.ip_address(peer["ip"])
        networks = [ipaddress.ip_network(rule["ipBlock"]["cidr"])]
        excepted = [ipaddress.ip_network(cidr) for cidr in rule["ipBlock"].get("except", [])]
        return any(address.version == n.version and address in n for n in networks) and \
            not any(address.version == n.version and address in n for n in excepted)
    if "ip" in peer:
        return False
    if "namespaceSelector" in rule:
        in_namespace = _selects(rule["namespaceSelector"], peer["namespace"] or namespace_labels)
    else:
        in_namespace = peer["namespace"] is None
    return in_namespace and _selects(rule.get("podSelector", {}), peer["labels"])


def _port_matches(rule: dict[str, Any], port: int, protocol: str) -> bool:
    ports = rule.get("ports")
    if not ports:
        return True
    for entry in ports:
        assert isinstance(entry.get("port", 0), int), f"named ports are not evaluated here: {entry}"
        if entry.get("protocol", "TCP") == protocol and entry.get("port") in (None, port):
            return True
    return False


def network_allows(policies: list[dict[str, Any]], namespace_labels: dict[str, str], source: Peer,
                   destination: Peer, port: int, protocol: str = "TCP") -> bool:
    """Whether NetworkPolicies let `source` open `port` on `destination`: the source's egress
    and the destination's ingress must both allow it (a pod no policy of that direction
    selects is unrestricted in it; the policies only govern pods in our namespace)."""
    def allows(pod: Peer, direction: str, other: Peer) -> bool:
        if "ip" in pod or pod["namespace"] is not None:
            return True
        selecting = [p for p in policies if _selects(p["spec"]["podSelector"], pod["labels"])
                     and direction.capitalize() in p["spec"]["policyTypes"]]
        peers = "from" if direction == "ingress" else "to"
        return not selecting or any(
            _port_matches(rule, port, protocol)
            and (peers not in rule or any(_peer_matches(peer, other, namespace_labels) for peer in rule[peers]))
            for policy in selecting for rule in policy["spec"].get(direction, []))
    return allows(source, "egress", destination) and allows(destination, "ingress", source)


def test_kubernetes_network_policies(k8s_objects, kustomization):
    policies = list(by_kind(k8s_objects, "NetworkPolicy").values())
    namespace = {"kubernetes.io/metadata.name": kustomization["namespace"]}
    templates = dict(pod_templates(k8s_objects))

    def pod(where: str) -> Peer:
        return {"labels": templates[where]["metadata"]["labels"], "namespace": None}

    def allowed(source: Peer, destination: Peer, port: int, protocol: str = "TCP") -> bool:
        return network_allows(policies, namespace, source, destination, port, protocol)

    console, controlplane = pod("Deployment/megarouter-console"), pod("Deployment/megarouter-controlplane")
    proxy, etcd, seed = pod("Deployment/megarouter-proxy"), pod("StatefulSet/etcd"), pod("Job/megarouter-seed")
    ingress_controller = {"labels": {"app.kubernetes.io/name": "ingress-nginx"},
                          "namespace": {"kubernetes.io/metadata.name": "ingress-nginx"}}
    kube_dns = {"labels": {"k8s-app": "kube-dns"}, "namespace": {"kubernetes.io/metadata.name": "kube-system"}}
    stranger = {"labels": {"app": "other"}, "namespace": {"kubernetes.io/metadata.name": "other"}}
    identity_provider, identity_provider_v6 = {"ip": "203.0.113.7"}, {"ip": "2001:db8::7"}
    # The console: browsers (through the Ingress controller) reach it on its port ...
    assert allowed(ingress_controller, console, CONSOLE_PORT)
    # ... and it reaches the admin API, DNS and, for SSO, the identity provider over HTTPS ...
    assert allowed(console, controlplane, CONTROLPLANE_PORT)
    assert allowed(console, kube_dns, 53, "UDP") and allowed(console, kube_dns, 53, "TCP")
    assert allowed(console, identity_provider, 443) and allowed(console, identity_provider_v6, 443)
    # ... and nothing else: not etcd, not the proxies, not plain HTTP out.
    assert not allowed(console, etcd, 2379)
    assert not allowed(console, proxy, PROXY_PORT)
    assert not allowed(console, controlplane, METRICS_PORT)
    assert not allowed(console, identity_provider, 80)
    # The rest holds: MegaRouter's pods reach the admin API, nobody else does; only control
    # planes (and etcd peers) reach etcd.
    assert allowed(proxy, controlplane, CONTROLPLANE_PORT) and allowed(seed, controlplane, CONTROLPLANE_PORT)
    assert not allowed(stranger, controlplane, CONTROLPLANE_PORT) and allowed(stranger, controlplane, METRICS_PORT)
    assert allowed(controlplane, etcd, 2379) and allowed(etcd, etcd, 2380)
    assert not allowed(proxy, etcd, 2379) and not allowed(stranger, etcd, 2379)
    # The ports named are the ones the containers listen on.
    console_ports = {p["containerPort"] for p in container_of(k8s_objects, "Deployment", "megarouter-console")["ports"]}
    assert console_ports == {CONSOLE_PORT}


def test_kubernetes_etcd_statefulset(k8s_objects):
    etcd = by_kind(k8s_objects, "StatefulSet")["etcd"]
    spec = etcd["spec"]
    assert spec["replicas"] == 3 and spec["podManagementPolicy"] == "Parallel"
    service = by_kind(k8s_objects, "Service")[spec["serviceName"]]
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    container = spec["template"]["spec"]["containers"][0]
    assert re.fullmatch(r"(quay\.io/coreos|gcr\.io/etcd-development)/etcd:v3\.5\.\d+", container["image"])
    flags = dict(arg.split("=", 1) for arg in container["args"])
    names = [f"etcd-{i}" for i in range(spec["replicas"])]
    cluster = dict(member.split("=", 1) for member in flags["--initial-cluster"].split(","))
    assert cluster == {n: f"http://{n}.{spec['serviceName']}.$(POD_NAMESPACE).svc:2380" for n in names}
    assert flags["--name"] == "$(POD_NAME)"
    assert flags["--data-dir"].startswith(container["volumeMounts"][0]["mountPath"] + "/")
    env_names = {v["name"] for v in container["env"]}
    assert {"POD_NAME", "POD_NAMESPACE"} <= env_names, "the $(VAR) expansions need these"
    assert spec["volumeClaimTemplates"][0]["metadata"]["name"] == container["volumeMounts"][0]["name"]
    pdb = by_kind(k8s_objects, "PodDisruptionBudget")["etcd"]
    assert pdb["spec"]["maxUnavailable"] == 1, "never drain below quorum"


def test_kubernetes_megarouter_containers_parse_with_the_real_cli(k8s_objects):
    configmaps = by_kind(k8s_objects, "ConfigMap")
    seen = set()
    for _where, template in pod_templates(k8s_objects):
        for container in template["spec"]["containers"]:
            if container["image"].startswith("megarouter:") and "command" not in container:
                parse_megarouter_args(container["args"], resolved_env(container, configmaps))
                seen.add(container["args"][0])
    assert seen == {"controlplane", "proxy", "sim", "console"}


def test_secret_example_holds_only_placeholders(kustomization):
    secrets = load_yaml_documents(K8S / "secret.example.yaml")
    assert {s["metadata"]["name"] for s in secrets} == {"megarouter-admin-token", "megarouter-proxy-token",
                                                        "megarouter-console-token", "megarouter-oidc-client",
                                                        "megarouter-provider-keys"}
    for secret in secrets:
        assert secret["kind"] == "Secret" and "data" not in secret
        assert all(value == "REPLACE_ME_PLACEHOLDER" for value in secret["stringData"].values())
    # No real-looking secret anywhere in deploy/.
    for path in DEPLOY.rglob("*"):
        if path.is_file():
            text = path.read_text(errors="replace")
            assert not re.search(r"\bsk-(proj-|ant-)?[A-Za-z0-9]{20,}", text), path
            assert not re.search(r"AIza[0-9A-Za-z_-]{30,}", text), path


# -------------------------------------------------------------------------------- Prometheus

def test_prometheus_compose_config_scrapes_every_proxy_and_control_plane(compose):
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = {name: {t for static in job.get("static_configs", []) for t in static["targets"]}
               for name, job in jobs.items()}
    proxies = services_running(compose, "proxy")
    controlplanes = services_running(compose, "controlplane")
    assert targets["megarouter-proxy"] == {f"{name}:{host_port(a.listen)[1]}" for name, a in proxies.items()}
    assert targets["megarouter-controlplane"] == {
        f"{name}:{host_port(a.metrics_listen)[1]}" for name, a in controlplanes.items()}
    assert {f"{n}:{PROXY_PORT}" for n in proxies} | {f"{n}:{METRICS_PORT}" for n in controlplanes} <= \
        targets["megarouter-proxy"] | targets["megarouter-controlplane"]
    for name in ("megarouter-proxy", "megarouter-controlplane"):
        assert jobs[name].get("metrics_path", "/metrics") == "/metrics"
    interval = int(config["global"]["scrape_interval"].rstrip("s"))
    assert int(config["global"]["scrape_timeout"].rstrip("s")) <= interval
    # Compose mounts this file where Prometheus reads it.
    prometheus = compose["services"]["prometheus"]
    assert "./prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]


def test_prometheus_kubernetes_config_selects_the_metrics_ports(k8s_objects, kustomization):
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus-kubernetes.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    expected = {"megarouter-proxy": ("megarouter-proxy", PROXY_PORT),
                "megarouter-controlplane": ("megarouter-controlplane", METRICS_PORT)}
    for job_name, (deployment, port) in expected.items():
        job = jobs[job_name]
        sd = job["kubernetes_sd_configs"][0]
        assert sd["role"] == "pod" and sd["namespaces"]["names"] == [kustomization["namespace"]]
        labels = by_kind(k8s_objects, "Deployment")[deployment]["spec"]["template"]["metadata"]["labels"]
        keep = [r for r in job["relabel_configs"] if r.get("action") == "keep"]
        by_source = {tuple(r["source_labels"]): r["regex"] for r in keep}
        label_rule = by_source[("__meta_kubernetes_pod_label_app_kubernetes_io_name",
                                "__meta_kubernetes_pod_label_app_kubernetes_io_component")]
        assert re.fullmatch(label_rule, f"{labels['app.kubernetes.io/name']};{labels['app.kubernetes.io/component']}")
        assert by_source[("__meta_kubernetes_pod_container_port_number",)] == str(port)
        container = container_of(k8s_objects, "Deployment", deployment)
        assert port in {p["containerPort"] for p in container["ports"]}


# ----------------------------------------------------------------------------------- Grafana

GRAFANA_DURATIONS = re.compile(r"\$__(rate_interval|interval|range)\b|\$\{__(rate_interval|interval|range)\}")
GRAFANA_VARIABLE = re.compile(r"\$\{(\w+)(:\w+)?\}|\$(\w+)")


def promql_of_grafana(expr: str) -> str:
    """A Grafana query as Prometheus receives it: built-in durations and variables substituted."""
    expr = GRAFANA_DURATIONS.sub("5m", expr)
    return GRAFANA_VARIABLE.sub(".*", expr)


def dashboard_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    def walk(panels):
        for panel in panels:
            yield from walk(panel.get("panels", []))
            for target in panel.get("targets", []):
                yield panel["title"], target["expr"]
    yield from walk(dashboard["panels"])


def selectors(expr: promql_parser.Expr) -> Iterator[promql_parser.VectorSelector]:
    found = []

    def visit(node):
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)
        return True
    promql_parser.walk(expr, visit)
    yield from found


def metric_name(selector: promql_parser.VectorSelector) -> str:
    if selector.name:
        return selector.name
    names = [m.value for m in selector.matchers.matchers if m.name == "__name__"]
    assert names and names[0].isidentifier(), f"selector without a literal metric name: {selector}"
    return names[0]


def check_promql(title: str, expr: str, series: dict[str, set[str]], extra_labels: set[str]) -> set[str]:
    """Assert that `expr` is valid PromQL over exported series and their labels only; return
    the series it uses."""
    try:
        parsed = promql_parser.parse(expr)
    except ValueError as exc:
        raise AssertionError(f"{title!r}: not valid PromQL: {exc}\n{expr}") from None
    names = set()
    for selector in selectors(parsed):
        name = metric_name(selector)
        assert name in series, f"{title!r} uses {name}, which the code does not export"
        names.add(name)
        for matcher in selector.matchers.matchers:
            assert matcher.name == "__name__" or matcher.name in series[name] | extra_labels, \
                f"{title!r}: {name} has no label {matcher.name}"
    available = set().union(*(series[n] for n in names)) | extra_labels

    def check_grouping(node):
        if isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            missing = set(node.modifier.labels) - available
            assert not missing, f"{title!r} groups by {missing}, labels its metrics do not have"
        if isinstance(node, promql_parser.BinaryExpr) and node.modifier and node.modifier.matching:
            missing = set(node.modifier.matching.labels) - available
            assert not missing, f"{title!r} matches on {missing}"
        return True
    promql_parser.walk(parsed, check_grouping)
    return names


def outer_grouping(expr: str) -> set[str]:
    """The labels the first (outermost) aggregation of a query groups by: the labels its
    result series carry, for the dashboard's queries (`sum by (…)`, or a quantile or ratio of
    such sums)."""
    found: list[set[str]] = []

    def visit(node):
        if not found and isinstance(node, promql_parser.AggregateExpr):
            found.append(set(node.modifier.labels) if node.modifier else set())
        return True
    promql_parser.walk(promql_parser.parse(promql_of_grafana(expr)), visit)
    return found[0] if found else set()


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def test_metric_scan_finds_the_exported_metrics():
    families = exported_metrics()
    # The scan itself must work, or the dashboard check below would pass vacuously.
    assert len(families) >= 15
    assert families["megarouter_upstream_requests_total"] == ["Counter", "endpoint", "outcome"]
    assert families["megarouter_upstream_latency_seconds"] == ["Histogram", "endpoint"]
    assert families["megarouter_cp_connected_proxies"] == ["Gauge"]


def test_dashboard_is_well_formed(dashboard):
    assert dashboard["title"] and dashboard["uid"] and isinstance(dashboard["schemaVersion"], int)
    panels = [p for p in dashboard["panels"]]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for panel in panels:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        used = set(GRAFANA_VARIABLE.findall(" ".join(t["expr"] for t in panel["targets"])))
        for groups in used:
            name = groups[0] or groups[2]
            assert name.startswith("__") or name in variables, f"{panel['title']}: unknown variable ${name}"
    # Panels do not overlap.
    cells = set()
    for panel in panels:
        grid = panel["gridPos"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"panel {panel['title']!r} overlaps another"
                cells.add((x, y))
    # Compose provisions it, with the datasource the variable selects by default.
    provisioned = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/megarouter.yml").read_text())
    path = provisioned["providers"][0]["options"]["path"]
    grafana = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["grafana"]
    assert f"./grafana/megarouter-dashboard.json:{path}/megarouter-dashboard.json:ro" in grafana["volumes"]
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]
    datasource = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    url = datasource["datasources"][0]["url"]
    assert datasource["datasources"][0]["type"] == "prometheus" and url == "http://prometheus:9090"
    assert "prometheus" in yaml.safe_load(COMPOSE_FILE.read_text())["services"]


def test_dashboard_queries_use_only_exported_metrics_and_labels(dashboard):
    series = exported_series()
    extra_labels = target_labels()
    used: set[str] = set()
    queries = list(dashboard_queries(dashboard))
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            match = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", variable["query"]["query"])
            assert match, variable["query"]
            assert match.group(1) in series and match.group(2) in series[match.group(1)]
            used.add(match.group(1))
    assert len(queries) >= 25
    for title, expr in queries:
        used |= check_promql(title, promql_of_grafana(expr), series, extra_labels)
    families = {re.sub(r"_(bucket|sum|count|created)$", "", name) for name in used}
    required = {"megarouter_requests_total", "megarouter_upstream_requests_total",
                "megarouter_upstream_latency_seconds", "megarouter_attempts_per_request",
                "megarouter_fallback_depth", "megarouter_endpoint_ejections_total",
                "megarouter_retry_budget_exhausted_total", "megarouter_tokens_total", "megarouter_cost_usd_total",
                "megarouter_table_version", "megarouter_cp_table_version", "megarouter_cp_connected_proxies"}
    assert required <= families, f"the dashboard does not chart {sorted(required - families)}"


def provisioned_datasources() -> dict[str, dict[str, Any]]:
    """Every datasource Grafana provisions in compose, by uid."""
    found = {}
    for path in sorted(GRAFANA_DATASOURCES.glob("*.yml")):
        config = yaml.safe_load(path.read_text())
        assert config["apiVersion"] == 1, path
        for datasource in config["datasources"]:
            assert datasource["uid"] not in found, f"datasource uid {datasource['uid']} twice"
            found[datasource["uid"]] = datasource
    return found


def test_grafana_jaeger_datasource_and_trace_to_metrics(compose):
    datasources = provisioned_datasources()
    assert {ds["type"] for ds in datasources.values()} == {"prometheus", "jaeger"}
    prometheus = next(ds for ds in datasources.values() if ds["type"] == "prometheus")
    jaeger = next(ds for ds in datasources.values() if ds["type"] == "jaeger")
    assert jaeger["uid"] == "jaeger" and not jaeger.get("isDefault") and jaeger["access"] == "proxy"
    # It reads Jaeger's query API, on the port the jaeger service serves its UI on.
    url = urlsplit(jaeger["url"])
    assert url.hostname in observability_services(compose) and url.port == JAEGER_UI_PORT
    assert f"127.0.0.1:{JAEGER_UI_PORT}:{url.port}" in compose["services"][url.hostname]["ports"]
    # Trace to metrics: onto the provisioned Prometheus, with span attributes MegaRouter sets
    # (the allow-list) mapped to labels every linked query's metrics carry.
    to_metrics = jaeger["jsonData"]["tracesToMetrics"]
    assert to_metrics["datasourceUid"] == prometheus["uid"]
    for shift in ("spanStartTimeShift", "spanEndTimeShift"):
        assert DURATION.match(to_metrics[shift].lstrip("-")), shift
    mapped = {tag["key"]: tag.get("value") or tag["key"] for tag in to_metrics["tags"]}
    assert mapped and set(mapped) <= tracing.ALLOWED_ATTRIBUTES, mapped
    series, extra_labels = exported_series(), target_labels()
    assert to_metrics["queries"]
    for query in to_metrics["queries"]:
        assert query["name"] and "{$__tags}" in query["query"], query
        # Grafana replaces $__tags with the mapped tags the span has, as label matchers.
        expr = query["query"].replace("$__tags", ", ".join(f'{label}="x"' for label in mapped.values()))
        for name in check_promql(query["name"], promql_of_grafana(expr), series, extra_labels):
            missing = set(mapped.values()) - series[name]
            assert not missing, f"{query['name']!r}: {name} has no label {missing}, so the link would find nothing"
    # Grafana shows trace-to-metrics links behind this feature toggle.
    grafana_env = compose["services"]["grafana"]["environment"]
    assert "traceToMetrics" in grafana_env["GF_FEATURE_TOGGLES_ENABLE"].split(",")


LOGFMT_PAIR = re.compile(r"([\w.]+)=(\S+)")
GRAFANA_LINK_VARIABLE = re.compile(r"^\$\{(__field\.labels|__data\.fields)\.(\w+)\}$")


def dashboard_links(dashboard: dict[str, Any]) -> Iterator[tuple[dict[str, Any] | None, dict[str, Any]]]:
    """(panel or None for the dashboard's own links, link)."""
    for link in dashboard.get("links", []):
        yield None, link
    for panel in dashboard["panels"]:
        field_config = panel.get("fieldConfig") or {}
        for link in (field_config.get("defaults") or {}).get("links", []):
            yield panel, link
        for override in field_config.get("overrides", []):
            for prop in override["properties"]:
                if prop["id"] == "links":
                    for link in prop["value"]:
                        yield panel, link


def test_dashboard_trace_links(dashboard, compose):
    jaeger_uid = next(uid for uid, ds in provisioned_datasources().items() if ds["type"] == "jaeger")
    services = traced_service_names()
    linked_services: set[str] = set()
    endpoint_linked: set[int] = set()
    for panel, link in dashboard_links(dashboard):
        where = panel["title"] if panel else f"dashboard link {link['title']!r}"
        url = urlsplit(link["url"])
        params = dict(param.split("=", 1) for param in url.query.split("&"))
        if link["url"].startswith("/explore?"):
            # Explore on the provisioned Jaeger datasource: a search over the dashboard's range.
            panes = json.loads(unquote(params["panes"]))
            assert params["schemaVersion"] == "1" and len(panes) == 1, where
            pane = next(iter(panes.values()))
            assert pane["datasource"] == jaeger_uid and pane["range"] == {"from": "${__from}", "to": "${__to}"}
            (query,) = pane["queries"]
            assert query["datasource"] == {"type": "jaeger", "uid": jaeger_uid} and query["queryType"] == "search"
            service, tags = query["service"], query.get("tags", "")
        else:
            # Jaeger's own UI, where compose publishes it.
            assert f"{url.scheme}://{url.netloc}" == f"http://127.0.0.1:{JAEGER_UI_PORT}" and url.path == "/search"
            assert panel is None and link.get("targetBlank") is True, where
            service, tags = params["service"], ""
        assert service in services, f"{where}: no MegaRouter process reports service {service!r}"
        linked_services.add(service)
        pairs = LOGFMT_PAIR.findall(tags)
        assert " ".join(f"{k}={v}" for k, v in pairs) == tags, f"{where}: tags are not logfmt: {tags!r}"
        for key, value in pairs:
            # Span attributes MegaRouter sets, or Jaeger's own `error` tag (an error status).
            assert key in tracing.ALLOWED_ATTRIBUTES or (key, value) == ("error", "true"), f"{where}: tag {key}"
            variable = GRAFANA_LINK_VARIABLE.match(value)
            if variable:
                # A panel's link names a label every one of its queries' series carries (the
                # endpoint names need no escaping: they match the resources' name pattern).
                assert panel is not None, where
                label = variable.group(2)
                assert all(label in outer_grouping(t["expr"]) for t in panel["targets"]), \
                    f"{where}: not every query's series carry {label}"
                if key == "megarouter.endpoint":
                    assert label == "endpoint"
                    endpoint_linked.add(panel["id"])
    # The dashboard links reach both services' traces, and every panel whose series are all
    # per endpoint links to that endpoint's traces.
    assert linked_services == services
    per_endpoint = {panel["id"] for panel in dashboard["panels"] if panel.get("targets")
                    and all("endpoint" in outer_grouping(t["expr"]) for t in panel["targets"])}
    assert len(per_endpoint) >= 10 and per_endpoint == endpoint_linked, per_endpoint ^ endpoint_linked


def test_dashboard_has_the_per_endpoint_row(dashboard):
    rows = [panel for panel in dashboard["panels"] if panel["type"] == "row"]
    row = next(r for r in rows if r["title"].startswith("Per endpoint"))
    below = sorted((p for p in dashboard["panels"] if p["gridPos"]["y"] > row["gridPos"]["y"]),
                   key=lambda p: p["gridPos"]["y"])
    panels = below[:next((i for i, p in enumerate(below) if p["type"] == "row"), len(below))]
    assert [p["type"] for p in panels].count("table") == 1 and len(panels) >= 5
    table = next(p for p in panels if p["type"] == "table")
    # The table's queries are instant, one row per endpoint, merged on the endpoint label.
    assert all(t["instant"] and t["format"] == "table" for t in table["targets"])
    assert all(outer_grouping(t["expr"]) == {"endpoint"} or outer_grouping(t["expr"]) == {"le", "endpoint"}
               for t in table["targets"])
    assert table["transformations"][0]["id"] == "merge"
    outcomes = " ".join(t["expr"] for p in panels for t in p["targets"])
    for outcome in ('outcome="success"', 'outcome=~"rate_limited|timeout"', 'outcome="endpoint"'):
        assert outcome in outcomes, outcome


def test_dashboard_check_rejects_unknown_metrics_and_labels():
    """The checks above fail on a renamed metric or a label the metric lacks."""
    series = exported_series()
    renamed = promql_parser.parse(promql_of_grafana("sum(rate(megarouter_request_total[$__rate_interval]))"))
    assert [metric_name(s) for s in selectors(renamed)] == ["megarouter_request_total"]
    assert "megarouter_request_total" not in series
    wrong_label = promql_parser.parse('megarouter_requests_total{endpoint="x"}')
    selector = next(selectors(wrong_label))
    assert "endpoint" not in series[metric_name(selector)] | target_labels()


# ------------------------------------------------------------------------------------- README

def test_readme_documents_the_commands_and_files():
    text = (DEPLOY / "README.md").read_text()
    for needle in ("docker build -f deploy/Dockerfile", "docker compose -f deploy/docker-compose.yml",
                   "kubectl apply -k deploy/kubernetes", "MEGAROUTER_ADMIN_TOKEN", "megarouter-provider-keys",
                   "megarouter-admin-token", "MEGAROUTER_PROXY_TOKEN", "megarouter-proxy-token",
                   "MEGAROUTER_CONSOLE_TOKEN", "megarouter-console-token", "megarouter-oidc-client",
                   "MEGAROUTER_OIDC_CLIENT_SECRET", "MEGAROUTER_SSO_CONFIG", "MEGAROUTER_CONSOLE_PUBLIC_URL",
                   "http://127.0.0.1:8090", "port-forward svc/megarouter-console", "kubernetes-validate"):
        assert needle in text, f"deploy/README.md does not mention {needle}"
    # Every deploy/ path it names exists.
    named = set(re.findall(r"deploy/(?:[\w-]+/)*(?:[\w-]+\.[\w.]+|Dockerfile)", text))
    assert len(named) >= 10
    for path in named:
        assert (ROOT / path).exists(), f"deploy/README.md names missing {path}"
