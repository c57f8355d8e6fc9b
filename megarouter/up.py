"""`megarouter up`: the whole system on one machine, ready for an OpenAI SDK.

Starts three simulated providers, the control plane (embedded store in
./.megarouter/), one proxy on http://127.0.0.1:8080/v1 and the web console on
http://127.0.0.1:8090/; seeds a demo configuration and a dev API key; prints
how to sign in and how to call it. Ctrl-C stops all.
Each service is a child process, exactly as it runs in production.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import grpc

from megarouter.admin_client import admin_channel
from megarouter.manifest import apply_resources, describe_rpc_error, parse_manifest
from megarouter.runtime import announce_ready, child_env, env_default, run_service, stop_event
from megarouter.v1 import admin_pb2, admin_pb2_grpc

# name, region, upstream model ids it serves, and its simulated behaviour.
SIMULATORS = [
    ("sim-east", "us-east", ["demo-small", "demo-medium", "demo-embed"], ["--latency-ms", "30", "--ttft-ms", "20"]),
    ("sim-west", "us-west", ["demo-small", "demo-medium"], ["--latency-ms", "60", "--ttft-ms", "40"]),
    ("sim-eu", "eu-west", ["demo-medium", "demo-large", "demo-embed"], ["--latency-ms", "120", "--ttft-ms", "80"]),
]

DEMO_MODELS = """
models:
  - {name: demo-small, input_price_per_mtok: 0.15, output_price_per_mtok: 0.60, context_window: 128000,
     max_output_tokens: 16384, quality_tier: 2,
     capabilities: {tools: true, json_mode: true, streaming: true}}
  - {name: demo-medium, input_price_per_mtok: 2.50, output_price_per_mtok: 10.00, context_window: 128000,
     max_output_tokens: 16384, quality_tier: 4,
     capabilities: {tools: true, vision: true, json_mode: true, streaming: true}}
  - {name: demo-large, input_price_per_mtok: 15.00, output_price_per_mtok: 60.00, context_window: 200000,
     max_output_tokens: 32768, quality_tier: 5,
     capabilities: {tools: true, vision: true, json_mode: true, streaming: true, reasoning: true}}
  - {name: demo-embed, input_price_per_mtok: 0.02, context_window: 8192,
     capabilities: {embeddings: true}}
---
endpoints:
  - {name: demo-small-east, model: demo-small, provider: sim-east}
  - {name: demo-small-west, model: demo-small, provider: sim-west}
  - {name: demo-medium-west, model: demo-medium, provider: sim-west}
  - {name: demo-medium-eu, model: demo-medium, provider: sim-eu}
  - {name: demo-large-eu, model: demo-large, provider: sim-eu}
  - {name: demo-embed-east, model: demo-embed, provider: sim-east}
  - {name: demo-embed-eu, model: demo-embed, provider: sim-eu}
---
routes:
  - name: auto
    description: capable first, cheaper fallback
    tiers: [{models: [demo-medium]}, {models: [demo-small]}]
    retry: {max_attempts: 3, per_try_timeout_s: 30, total_timeout_s: 90}
  - name: chat
    description: cheap interactive chat, escalating when the cheap tier is down
    tiers: [{models: [demo-small]}, {models: [demo-medium]}]
    retry: {max_attempts: 3, per_try_timeout_s: 30, total_timeout_s: 90}
  - name: embed
    description: embeddings, served in us-east and eu-west
    tiers: [{models: [demo-embed]}]
    retry: {max_attempts: 3, per_try_timeout_s: 30, total_timeout_s: 90}
"""


def demo_manifest(sim_ports: dict[str, int]) -> str:
    providers = "\n".join(
        f"  - {{name: {name}, kind: openai, base_url: 'http://127.0.0.1:{sim_ports[name]}/v1', region: {region}}}"
        for name, region, _models, _flags in SIMULATORS
    )
    return f"providers:\n{providers}\n---\n{DEMO_MODELS}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", default=env_default("DATA_DIR", "./.megarouter"),
                        help="store, proxy cache and dev key live here [MEGAROUTER_DATA_DIR]")
    parser.add_argument("--store", default=None,
                        help="store URL, e.g. etcd://127.0.0.1:2379 (default: SQLite in the data dir)")
    parser.add_argument("--admin-listen", default="127.0.0.1:50051",
                        help="the first control plane's gRPC address; more replicas take the next ports")
    parser.add_argument("--proxy-listen", default="127.0.0.1:8080")
    parser.add_argument("--metrics-listen", default="127.0.0.1:9464")
    parser.add_argument("--console-listen", default="127.0.0.1:8090",
                        help="the web console's address")
    parser.add_argument("--sso-config", default="",
                        help="enable OIDC single sign-on in the console (the control plane's --sso-config; "
                             "the console reads the client secret from MEGAROUTER_OIDC_CLIENT_SECRET)")
    parser.add_argument("--controlplanes", type=int, default=1, metavar="N",
                        help="control-plane replicas (more than one needs --store etcd://...): they elect "
                             "a leader and the proxy is given every one of them")


def run(args: argparse.Namespace) -> int:
    return run_service(up(args))


@dataclass
class Child:
    name: str
    process: asyncio.subprocess.Process
    ready: dict


async def _start(name: str, argv: list[str]) -> Child:
    """Start `megarouter <argv>` and wait for its ready line."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "megarouter", *argv, stdout=asyncio.subprocess.PIPE, env=child_env()
    )
    assert process.stdout is not None
    while True:
        line = await process.stdout.readline()
        if not line:
            code = await process.wait()
            raise RuntimeError(f"{name} exited with code {code} before becoming ready (see its log above)")
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == "ready":
            return Child(name, process, event)


def dev_key(data_dir: Path) -> str:
    """MEGAROUTER_DEV_KEY, else the key saved by an earlier run, else a new one."""
    given = os.environ.get("MEGAROUTER_DEV_KEY")
    if given:
        return given
    path = data_dir / "dev-key"
    if path.exists():
        return path.read_text().strip()
    key = "sk-mr-dev-" + secrets.token_urlsafe(24)
    path.write_text(key + "\n")
    path.chmod(0o600)
    return key


async def seed(admin_address: str, sim_ports: dict[str, int], key: str) -> None:
    async with admin_channel(admin_address) as channel:
        stub = admin_pb2_grpc.AdminStub(channel)
        await apply_resources(stub, parse_manifest(demo_manifest(sim_ports), "demo config"))
        # The dev key is re-imported each start so MEGAROUTER_DEV_KEY can change.
        try:
            await stub.DeleteApiKey(admin_pb2.DeleteRequest(name="dev"))
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise
        await stub.CreateApiKey(admin_pb2.CreateApiKeyRequest(name="dev", principal="dev", secret=key))


async def wait_ready(url: str, stop: asyncio.Event) -> None:
    """Poll the proxy's /readyz until it has a routing table."""
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)


def _nth_address(address: str, index: int) -> str:
    """The address of replica `index`: the next ports after the first (port 0 stays 0)."""
    host, _, port = address.rpartition(":")
    return address if index == 0 or port == "0" else f"{host}:{int(port) + index}"


async def up(args: argparse.Namespace) -> int:
    if args.controlplanes < 1:
        print("megarouter up: --controlplanes must be at least 1", file=sys.stderr)
        return 2
    if args.controlplanes > 1 and not (args.store or "").startswith("etcd://"):
        print("megarouter up: several control planes share their store, which the embedded SQLite store "
              "cannot do: add --store etcd://host:2379", file=sys.stderr)
        return 2
    stop = stop_event()
    data_dir = Path(args.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    children: list[Child] = []
    try:
        for name, _region, models, flags in SIMULATORS:
            children.append(await _start(name, ["sim", "--name", name, "--models", ",".join(models), *flags]))
        sim_ports = {child.name: child.ready["port"] for child in children}
        admins = []
        for index in range(args.controlplanes):  # one by one: the first bootstraps the admin token
            name = "controlplane" if args.controlplanes == 1 else f"controlplane-{index + 1}"
            children.append(await _start(name, [
                "controlplane", "--listen", _nth_address(args.admin_listen, index),
                "--store", args.store or str(data_dir / "store"),
                "--metrics-listen", _nth_address(args.metrics_listen, index),
                "--admin-token-file", str(data_dir / "admin-token"), "--replica-id", name,
                "--proxy-token-file", str(data_dir / "proxy-token"),
                "--console-token-file", str(data_dir / "console-token"),
                *(["--sso-config", args.sso_config] if args.sso_config else []),
            ]))
            admins.append(f"127.0.0.1:{children[-1].ready['port']}")
        admin = admins[0]
        # The control plane wrote (or had) the bootstrap admin token; ctl finds it there too.
        os.environ.setdefault("MEGAROUTER_ADMIN_TOKEN_FILE", str(data_dir / "admin-token"))
        key = dev_key(data_dir)
        await seed(admin, sim_ports, key)
        children.append(await _start("proxy", [
            "proxy", "--listen", args.proxy_listen, "--control-plane", ",".join(admins), "--node-id", "local-proxy",
            "--cache-file", str(data_dir / "proxy-table.pb"), "--proxy-token-file", str(data_dir / "proxy-token"),
        ]))
        base_url = f"http://127.0.0.1:{children[-1].ready['port']}/v1"
        await wait_ready(base_url.removesuffix("/v1") + "/readyz", stop)
        children.append(await _start("console", [
            "console", "--listen", args.console_listen, "--control-plane", admin, "--proxy-url", base_url,
            "--console-token-file", str(data_dir / "console-token"),
        ]))
        console_url = children[-1].ready["url"]
        if not stop.is_set():
            print(_banner(base_url, key, admin, str(data_dir / "admin-token"), admins, console_url), flush=True)
            announce_ready("up", base_url=base_url, admin=admin, controlplanes=admins, console=console_url)
        exited = [asyncio.create_task(child.process.wait()) for child in children]
        stopping = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({stopping, *exited}, return_when=asyncio.FIRST_COMPLETED)
        if stopping not in done:
            dead = next(c for c, t in zip(children, exited, strict=True) if t in done)
            print(f"megarouter up: {dead.name} exited with code {dead.process.returncode}; stopping",
                  file=sys.stderr)
            return 1
        return 0
    except grpc.aio.AioRpcError as exc:
        print(f"megarouter up: seeding the demo config failed: {describe_rpc_error(exc)}", file=sys.stderr)
        return 1
    except RuntimeError as exc:
        print(f"megarouter up: {exc}", file=sys.stderr)
        return 1
    finally:
        await _stop_all(children)


async def _stop_all(children: list[Child]) -> None:
    for child in reversed(children):  # proxy first, simulators last
        if child.process.returncode is None:
            child.process.send_signal(signal.SIGTERM)
    for child in children:
        try:
            await asyncio.wait_for(child.process.wait(), timeout=10)
        except TimeoutError:
            child.process.kill()
            await child.process.wait()


def _banner(base_url: str, key: str, admin: str, token_file: str, admins: list[str], console_url: str) -> str:
    replicas = (f"\n  Control planes  : {', '.join(admins)} (one leads: megarouterctl controlplanes)"
                if len(admins) > 1 else "")
    return f"""
MegaRouter is running.

  Console         : {console_url}/
                    sign in with the operator token in {token_file}
                    (cat {token_file}), then create an API key there
  OpenAI base URL : {base_url}
  API key         : {key}
  Admin API       : {admin}   (megarouterctl --server {admin} get routes;
                    its operator token is in {token_file}){replicas}
  Routes          : auto, chat, embed
  Models          : demo-small, demo-medium, demo-large (chat); demo-embed (embeddings)

  from openai import OpenAI
  client = OpenAI(base_url="{base_url}", api_key="{key}")
  print(client.chat.completions.create(model="auto",
        messages=[{{"role": "user", "content": "Hello!"}}]).choices[0].message.content)
  print(client.responses.create(model="auto", input="Hello!").output_text)
  print(len(client.embeddings.create(model="embed", input="Hello!").data[0].embedding))

  Anthropic SDK : anthropic.Anthropic(base_url="{base_url.removesuffix('/v1')}", api_key="{key}")
  Claude Code   : ANTHROPIC_BASE_URL={base_url.removesuffix('/v1')} ANTHROPIC_AUTH_TOKEN={key} \\
                  ANTHROPIC_MODEL=auto claude

Press Ctrl-C to stop.
"""
