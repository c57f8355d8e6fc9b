"""Routing decision time: the router over a 1,000-endpoint, 200-model table.

Builds a routing table the way a proxy loads it (200 catalog models, each
served by 5 endpoints across providers and regions = 1,000 endpoints), warms
live health with random latencies and failures, then times `router.plan`
for every strategy over routes of different pool sizes, and separately the
complexity estimate. Prints p50/p99 in microseconds.

    .venv/bin/python bench/routing_bench.py [--iterations N]
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dataplane.health import HealthRegistry  # noqa: E402
from dataplane.routing import router  # noqa: E402
from dataplane.routing.needs import chat_needs  # noqa: E402
from dataplane.table import RuntimeTable  # noqa: E402
from megarouter.resources import resource_to_proto  # noqa: E402
from megarouter.v1 import routing_pb2  # noqa: E402

PROVIDERS = [("east", "us-east"), ("west", "us-west"), ("eu", "eu-west"), ("asia", "ap-south"), ("backup", "us-east")]
POOL_SIZES = (5, 25, 100)   # endpoints a route chooses among (models x 5 endpoints)
PAYLOAD = {"model": "x", "messages": [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Summarise the following meeting notes in three bullet points. " * 20},
], "max_tokens": 300}


def build_table() -> tuple[RuntimeTable, list[str]]:
    from controlplane.catalog_models import catalog_models

    chat_models = [m for m in catalog_models().values() if not m.capabilities.embeddings][:200]
    table = routing_pb2.RoutingTable(version=1)
    for name, region in PROVIDERS:
        table.providers.add(name=name, kind=routing_pb2.PROVIDER_KIND_OPENAI,
                            base_url=f"http://{name}.invalid/v1", region=region)
    for model in chat_models:
        table.models.append(resource_to_proto(model, routing_pb2.Model))
        for provider, _ in PROVIDERS:
            table.endpoints.add(name=f"{model.name}@{provider}", model=model.name, provider=provider)
    names = [m.name for m in chat_models]
    for size in POOL_SIZES:
        models = names[: size // len(PROVIDERS)]
        table.routes.add(name=f"pool-{size}", tiers=[routing_pb2.Tier(models=models[:-1]),
                                                      routing_pb2.Tier(models=models[-1:])])
    return RuntimeTable.load(table, secrets=lambda ref: None), names


def warm_health(table: RuntimeTable, rng: random.Random) -> HealthRegistry:
    health = HealthRegistry()
    for target in table.targets.values():
        for endpoint in target.endpoints:
            for _ in range(rng.randint(0, 20)):
                health.started(endpoint.name)
                health.finished(endpoint.name, rng.random() > 0.05, rng.uniform(0.05, 3.0), None)
    return health


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=5000)
    args = parser.parse_args()
    rng = random.Random(1)
    table, _ = build_table()
    health = warm_health(table, rng)
    needs = chat_needs(PAYLOAD)
    print(f"table: {len(table.proto.models)} models, {len(table.proto.endpoints)} endpoints")
    print(f"machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}")
    print()
    print("| pool (endpoints) | strategy | p50 µs | p99 µs |")
    print("|---:|---|---:|---:|")
    for size in POOL_SIZES:
        target = table.resolve(f"pool-{size}")
        assert target is not None
        for strategy in router.STRATEGIES:
            samples = []
            for _ in range(args.iterations):
                start = time.perf_counter_ns()
                router.plan(target, needs, strategy, health, table.default_weights, rng)
                samples.append((time.perf_counter_ns() - start) / 1000)
            print(f"| {len(target.endpoints)} | {strategy} | {percentile(samples, 0.5):.1f} | "
                  f"{percentile(samples, 0.99):.1f} |")
    try:
        from dataplane.routing.complexity import estimate
    except ImportError:
        print("\ncomplexity estimate: not available")
        return 0
    samples = []
    for _ in range(args.iterations):
        start = time.perf_counter_ns()
        estimate(PAYLOAD)
        samples.append((time.perf_counter_ns() - start) / 1000)
    print(f"\ncomplexity estimate (~{needs.prompt_tokens}-token prompt): p50 {statistics.median(samples):.1f} µs, "
          f"p99 {percentile(samples, 0.99):.1f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
