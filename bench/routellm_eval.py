"""Offline evaluation of the complexity estimate on the RouteLLM data.

    .venv/bin/python bench/routellm_eval.py            # table + timing, < 2 minutes
    .venv/bin/python bench/routellm_eval.py --no-timing

Data: data/routellm/ (copied from lm-sys/RouteLLM, Apache-2.0; see its
README): per-question correctness of GPT-4 (strong) and Mixtral-8x7B (weak)
on 57 MMLU domains and on GSM8K.

Split (fixed, deterministic, documented in data/routellm/README.md): a
question belongs to the *tune* half when the first 8 hex digits of
sha256(prompt, UTF-8), read as an integer, are even, else to the *held-out*
half. Identical prompts therefore always land together. Training
(scripts/train_complexity.py), its cross-validation and every threshold use
the tune half only; this script reports on the held-out half.

Metrics (RouteLLM's definitions). A router gives each query a score; it sends
the top-scored fraction f of the queries to the strong model. For k = 0..n
queries sent, q(k) = mean correctness of the mix and
PGR(k) = (q(k) - q_weak) / (q_strong - q_weak) = G(k) / (S - W), where G(k)
is the summed (strong - weak) correctness of the k top-scored queries and S,
W the strong and weak totals. Ties in the score are broken fairly by taking
the expectation over random orderings: inside a block of tied queries G grows
linearly. APGR = ∫ PGR df over [0, 1], integrated exactly over all n + 1
ranks with the trapezoidal rule (exact for this piecewise-linear curve).
CPT(x) = the smallest k/n with PGR(k) >= x. Random routing: E[PGR(k)] = k/n,
so APGR = 0.5 and CPT(x) = ceil(x·n)/n exactly (the analytic expectation is
reported; no sampling).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / "data" / "routellm"
CHAT_FILE = ROOT / "data" / "alpaca_eval" / "preferences.csv"
WEAK = "mistralai/Mixtral-8x7B-Instruct-v0.1"
STRONG = "gpt-4-1106-preview"
DATASETS = ("chat", "mmlu", "gsm8k")
EXAMS = ("mmlu", "gsm8k")
# The AlpacaEval models compared with gpt4_1106_preview; CHAT_WEAK is the RouteLLM pair's weak model.
CHAT_MODELS = ("Mixtral-8x7B-Instruct-v0.1", "Mistral-7B-Instruct-v0.2", "gpt-3.5-turbo-0301", "gemini-pro",
               "cohere", "Ein-70B-v0.1", "Samba-CoE-v0.1", "Samba-CoE-v0.2")
CHAT_WEAK = CHAT_MODELS[0]

# Completion lengths for the cost estimate. GSM8K: the recorded responses'
# lengths (characters / 4). MMLU: no responses are recorded; the prompt asks
# for one option letter, so a short answer is assumed.
MMLU_COMPLETION_TOKENS = 5


@dataclass(frozen=True, slots=True)
class Item:
    dataset: str
    domain: str
    prompt: str
    # Exams: 1 when the model answered correctly. Chat: the judge's verdict between GPT-4-1106 and
    # Mixtral as qualities, strong = 1 (GPT-4's answer preferred), 0.5 (tie) or 0, weak = 1 - strong.
    weak: float
    strong: float
    split: str           # "tune" | "heldout"
    fold: int            # 0..4, for cross-validation inside the tune split
    weak_completion_tokens: int
    strong_completion_tokens: int
    # Chat only: (model, P(GPT-4-1106's answer preferred) 1/0.5/0, reference chars, model chars) per model.
    verdicts: tuple[tuple[str, float, int, int], ...] = ()

    @property
    def loss(self) -> float:
        """How much worse the weak model's answer is than the strong one's: P(strong strictly better)
        (exams: strong right and weak wrong; chat: the judge preferred GPT-4, a tie counting half)."""
        return self.strong if self.verdicts else self.strong * (1.0 - self.weak)


def _hash(prompt: str) -> int:
    return int(hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:8], 16)


def split_of(prompt: str) -> str:
    return "tune" if _hash(prompt) % 2 == 0 else "heldout"


def fold_of(prompt: str, folds: int = 5) -> int:
    return (_hash(prompt) // 2) % folds


def _item(dataset: str, domain: str, row: dict[str, str]) -> Item:
    prompt = row["prompt"]
    if dataset == "gsm8k":
        weak_tokens = -(-int(row[f"{WEAK}_response_chars"]) // 4)
        strong_tokens = -(-int(row[f"{STRONG}_response_chars"]) // 4)
    else:
        weak_tokens = strong_tokens = MMLU_COMPLETION_TOKENS
    return Item(dataset, domain, prompt, int(row[WEAK] == "True"), int(row[STRONG] == "True"),
                split_of(prompt), fold_of(prompt), weak_tokens, strong_tokens)


def _chat_items() -> list[Item]:
    by_prompt: dict[str, dict[str, tuple[float, int, int]]] = {}
    subsets: dict[str, str] = {}
    with CHAT_FILE.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            pref = float(row["preference"])
            strong = 1.0 if pref == 1.0 else 0.0 if pref == 2.0 else 0.5
            by_prompt.setdefault(row["instruction"], {})[row["model"]] = (
                strong, int(row["reference_output_chars"]), int(row["model_output_chars"]))
            subsets[row["instruction"]] = row["dataset"]
    items = []
    for prompt, verdicts in by_prompt.items():
        if set(verdicts) != set(CHAT_MODELS):
            raise ValueError(f"{CHAT_FILE}: an instruction lacks verdicts for some models")
        strong, ref, weak_chars = verdicts[CHAT_WEAK]
        items.append(Item("chat", subsets[prompt], prompt, 1.0 - strong, strong, split_of(prompt), fold_of(prompt),
                          -(-weak_chars // 4), -(-ref // 4),
                          tuple((m, *verdicts[m]) for m in CHAT_MODELS)))
    return items


def load(dataset: str, split: str | None = None, data_dir: Path = DATA_DIR) -> list[Item]:
    """The prompts of one dataset ("chat", "mmlu" or "gsm8k"), optionally of one split, in file order."""
    items: list[Item] = []
    if dataset == "chat":
        items = _chat_items()
    elif dataset == "mmlu":
        for path in sorted((data_dir / "mmlu").glob("mmlu_*.csv")):
            domain = path.stem[len("mmlu_"):]
            with path.open(newline="", encoding="utf-8") as fh:
                items.extend(_item("mmlu", domain, row) for row in csv.DictReader(fh))
    elif dataset == "gsm8k":
        with (data_dir / "gsm8k.csv").open(newline="", encoding="utf-8") as fh:
            items.extend(_item("gsm8k", "gsm8k", row) for row in csv.DictReader(fh))
    else:
        raise ValueError(f"unknown dataset {dataset!r}")
    return [it for it in items if split is None or it.split == split]


def payload_of(prompt: str) -> dict:
    """The chat request a client would send for one evaluation question."""
    return {"model": "auto", "messages": [{"role": "user", "content": prompt}]}


# ---------------------------------------------------------------------------
# Metrics


def pgr_curve(scores: Sequence[float], strong: Sequence[int], weak: Sequence[int]) -> list[float]:
    """PGR after sending the k top-scored queries to the strong model, k = 0..n (ties: expectation)."""
    n = len(scores)
    total = sum(strong) - sum(weak)
    if total <= 0:
        raise ValueError("the strong model must beat the weak one for PGR to be defined")
    order = sorted(range(n), key=lambda i: -scores[i])
    curve = [0.0] * (n + 1)
    k = 0
    acc = 0.0
    while k < n:
        j = k
        s0 = scores[order[k]]
        while j < n and scores[order[j]] == s0:
            j += 1
        block = sum(strong[order[t]] - weak[order[t]] for t in range(k, j))
        m = j - k
        for t in range(1, m + 1):
            curve[k + t] = (acc + block * t / m) / total
        acc += block
        k = j
    return curve


def apgr(curve: Sequence[float]) -> float:
    """Area under PGR(f), f = k/n, by the trapezoidal rule over every rank (exact for the curve)."""
    n = len(curve) - 1
    return (sum(curve) - 0.5 * (curve[0] + curve[-1])) / n


def cpt(curve: Sequence[float], x: float) -> float:
    """Smallest share of strong calls f = k/n with PGR >= x."""
    n = len(curve) - 1
    for k, value in enumerate(curve):
        if value >= x - 1e-12:
            return k / n
    return 1.0


def metrics(scores: Sequence[float], strong: Sequence[int], weak: Sequence[int]) -> dict[str, float]:
    curve = pgr_curve(scores, strong, weak)
    return {"apgr": apgr(curve), "cpt50": cpt(curve, 0.5), "cpt80": cpt(curve, 0.8)}


def random_metrics(n: int) -> dict[str, float]:
    """The analytic expectation for random routing: E[PGR(k)] = k/n."""
    return {"apgr": 0.5, "cpt50": math.ceil(0.5 * n) / n, "cpt80": math.ceil(0.8 * n) / n}


def routed_pgr(strong_calls: Sequence[bool], strong: Sequence[int], weak: Sequence[int]) -> float:
    """PGR of one concrete routing decision per query."""
    gained = sum(s - w for call, s, w in zip(strong_calls, strong, weak, strict=True) if call)
    return gained / (sum(strong) - sum(weak))


def bootstrap_apgr(scores: Sequence[float], strong: Sequence[int], weak: Sequence[int],
                   resamples: int = 200, seed: int = 0) -> tuple[float, float]:
    """95 % percentile interval of APGR over resamples of the queries (fixed seed)."""
    import random

    rng = random.Random(seed)
    n = len(scores)
    values = []
    while len(values) < resamples:
        idx = [rng.randrange(n) for _ in range(n)]
        s = [strong[i] for i in idx]
        w = [weak[i] for i in idx]
        if sum(s) <= sum(w):
            continue
        values.append(apgr(pgr_curve([scores[i] for i in idx], s, w)))
    values.sort()
    return values[int(0.025 * resamples)], values[int(0.975 * resamples) - 1]


# ---------------------------------------------------------------------------
# The report


def _machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    except OSError:
        load = "load average unknown"
    return (f"{cpu}, {os.cpu_count()} CPUs ({load}); {platform.system()} {platform.release()}; "
            f"{platform.python_implementation()} {platform.python_version()}")


def _fmt(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def routellm_apgr(scores: Sequence[float], strong: Sequence[float], weak: Sequence[float], bins: int = 10) -> float:
    """APGR by RouteLLM's own protocol (routellm/evals: evaluate.py + benchmarks.py): thresholds at
    the 11 edges of 10 equal-count bins of the scores (pandas.qcut), 'score >= edge' sent strong
    (the last edge: '>'), quality at each share of strong calls, area by the trapezoid rule
    (np.trapz in their numpy; np.trapezoid since numpy 2), normalised by the strong-weak gap over
    the shares spanned. Coarser than `apgr` (11 points instead of n + 1), so the two differ a little."""
    import numpy as np

    x = np.asarray(scores, dtype=float)
    s = np.asarray(strong, dtype=float)
    w = np.asarray(weak, dtype=float)
    edges = np.quantile(x, np.linspace(0.0, 1.0, bins + 1))
    points = []
    for i, edge in enumerate(edges):
        calls = x >= edge if i != len(edges) - 1 else x > edge
        points.append((calls.mean(), np.where(calls, s, w).mean()))
    points.sort()
    share = np.array([p[0] for p in points])
    quality = np.array([p[1] for p in points])
    span = share[-1] - share[0]
    auc = np.trapezoid(quality, share)
    return float((auc - w.mean() * span) / ((s.mean() - w.mean()) * span))


# Published APGR (GPT-4-1106 vs Mixtral-8x7B) of RouteLLM's best routers, as quoted in issue 12
# from Ong et al., "RouteLLM: Learning to Route LLMs with Preference Data" (2024). Their open-chat
# benchmark is MT-Bench; ours is the AlpacaEval held-out half — the same pair of models, not the
# same prompts or judge, so the comparison is indicative.
PUBLISHED = (
    ("chat", "RouteLLM routers, Arena preferences (published)", "0.58-0.61"),
    ("chat", "RouteLLM routers, + GPT-4-judge labels (published)", "0.75-0.80"),
    ("mmlu", "RouteLLM best router (published)", "0.60"),
    ("gsm8k", "RouteLLM best router (published)", "0.62"),
)


def _chat_pairs(items: Sequence[Item], model: str) -> tuple[list[float], list[float]]:
    k = CHAT_MODELS.index(model)
    strong = [it.verdicts[k][1] for it in items]
    return strong, [1.0 - v for v in strong]


def evaluate(resamples: int) -> None:
    from dataplane.routing.complexity import estimate, estimate_prompt_tokens, load_model

    model = load_model()
    strong_threshold = model.thresholds[2]
    print("## Routing quality on the held-out split (strong = GPT-4-1106; weak = Mixtral-8x7B)\n")
    print("Chat: AlpacaEval verdicts of a GPT-4-turbo judge (1 = GPT-4's answer preferred, 0.5 tie, 0 = "
          "Mixtral's), raw — not length-controlled. MMLU, GSM8K: correctness (RouteLLM data).\n")
    print("| dataset | n | router | APGR | APGR 95% CI | APGR, RouteLLM protocol | CPT(50%) | CPT(80%) "
          "| strong share @ needed_quality>=4 | PGR @ needed_quality>=4 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for dataset in DATASETS:
        items = load(dataset, "heldout")
        strong = [it.strong for it in items]
        weak = [it.weak for it in items]
        scores = [estimate(payload_of(it.prompt)).score for it in items]
        lengths = [float(len(it.prompt)) for it in items]
        oracle = [s - w for s, w in zip(strong, weak, strict=True)]
        calls = [s >= strong_threshold for s in scores]
        rows = [
            ("random (expectation)", random_metrics(len(items)), None, 0.5, None, None),
            ("prompt length", metrics(lengths, strong, weak),
             bootstrap_apgr(lengths, strong, weak, resamples) if resamples else None,
             routellm_apgr(lengths, strong, weak), None, None),
            ("complexity estimate", metrics(scores, strong, weak),
             bootstrap_apgr(scores, strong, weak, resamples) if resamples else None,
             routellm_apgr(scores, strong, weak), sum(calls) / len(calls), routed_pgr(calls, strong, weak)),
            ("oracle", metrics(oracle, strong, weak), None, routellm_apgr(oracle, strong, weak), None, None),
        ]
        for name, m, ci, protocol, share, pgr in rows:
            ci_text = "-" if ci is None else f"{ci[0]:.3f}-{ci[1]:.3f}"
            print(f"| {dataset} | {len(items)} | {name} | {m['apgr']:.3f} | {ci_text} | {protocol:.3f} | "
                  f"{m['cpt50']:.3f} | {m['cpt80']:.3f} | {_fmt(share)} | {_fmt(pgr)} |")
        if dataset == "chat":
            per_model = [apgr(pgr_curve(scores, *_chat_pairs(items, m))) for m in CHAT_MODELS]
            print(f"| chat | {len(items)} | complexity estimate, mean over the 8 cheaper models' verdicts "
                  f"| {statistics.mean(per_model):.3f} | {min(per_model):.3f}-{max(per_model):.3f} (range) "
                  "| - | - | - | - | - |")
        for ds, name, value in PUBLISHED:
            if ds == dataset:
                print(f"| {dataset} | - | {name} | {value} | - | {value} | - | - | - | - |")

    cv = model.meta.get("cv_tune", {})
    print("\nThe estimate's score routes strong from needed_quality >= 4, i.e. score >= "
          f"{strong_threshold:.4f} (chosen on out-of-fold predictions of the tune split: PGR >= 80 % on each "
          f"dataset there). 95% CI: percentile bootstrap over prompts, {resamples} resamples, seed 0. "
          "Tune-split 5-fold CV APGR: " + ", ".join(f"{ds} {v['apgr']:.3f}" for ds, v in cv.items()) + ".")
    quality_targets(estimate, estimate_prompt_tokens)


def quality_targets(estimate, estimate_prompt_tokens) -> None:
    """What `cost_quality_target` keeps and saves on the held-out split."""
    from dataplane.routing.complexity import quality_decision
    from megarouter.catalog import cost_usd, load_catalog

    catalog = load_catalog()
    expensive, cheap = catalog.get("openai/gpt-4o"), catalog.get("openai/gpt-4o-mini")
    print("\n## Quality targets on the held-out split (cost_quality_target)\n")
    print("Quality share = 1 - mean P(the answer served is worse than the strong model's) (exams: strong right "
          "and weak wrong; chat: the judge preferred GPT-4, a tie counting half). Thresholds are calibrated "
          "on the tune split (out-of-fold), the most demanding dataset setting each. Cost: "
          f"{expensive.key} ${expensive.input_per_mtok}/{expensive.output_per_mtok} and {cheap.key} "
          f"${cheap.input_per_mtok}/{cheap.output_per_mtok} per M input/output tokens (catalog) stand in for the "
          "strong/weak pair; prompt tokens = estimate_prompt_tokens (chars/4); completion tokens = recorded answer "
          f"chars/4 (GSM8K, chat) or {MMLU_COMPLETION_TOKENS} (MMLU, an answer letter; assumed).\n")
    print("| target | threshold | dataset | n | strong share | quality share | PGR | cost saving vs always strong |")
    print("|---|---|---|---|---|---|---|---|")
    data = {ds: load(ds, "heldout") for ds in DATASETS}
    results = {ds: [estimate(payload_of(it.prompt)) for it in items] for ds, items in data.items()}
    tokens = {ds: [estimate_prompt_tokens(payload_of(it.prompt)) for it in items] for ds, items in data.items()}
    for target in (0.8, 0.9, 0.95, 0.99):
        for ds, items in data.items():
            decisions = [quality_decision(r, target) for r in results[ds]]
            calls = [d.flagship for d in decisions]
            kept = 1.0 - sum(it.loss for it, c in zip(items, calls, strict=True) if not c) / len(items)
            always = sum(cost_usd(expensive, pt, it.strong_completion_tokens)
                         for pt, it in zip(tokens[ds], items, strict=True))
            routed = sum(cost_usd(expensive, pt, it.strong_completion_tokens) if c
                         else cost_usd(cheap, pt, it.weak_completion_tokens)
                         for pt, it, c in zip(tokens[ds], items, calls, strict=True))
            pgr = routed_pgr(calls, [it.strong for it in items], [it.weak for it in items])
            print(f"| {target} | {decisions[0].threshold:.4f} | {ds} | {len(items)} | {sum(calls) / len(calls):.3f} | "
                  f"{kept:.3f} | {pgr:.3f} | {1 - routed / always:.1%} |")


def cascade_eval() -> None:
    """`cost_mode: cascade` offline, where the data records answer lengths (GSM8K, chat)."""
    from dataplane.routing import cascade
    from dataplane.routing.complexity import estimate, estimate_prompt_tokens
    from megarouter.catalog import cost_usd, load_catalog

    catalog = load_catalog()
    expensive, cheap = catalog.get("openai/gpt-4o"), catalog.get("openai/gpt-4o-mini")
    model = cascade.load_model()
    print("\n## Cascade on the held-out split (cost_mode: cascade)\n")
    print("Mixtral answers first. The answer is kept unless the acceptance model's length check rejects it "
          f"(P(worse) >= {model.reject_p}), in which case GPT-4 answers too. Only the length check can run "
          "offline: the data records answer lengths, not texts, so the refusal, JSON, tool-call and logprob "
          "rules are not exercised here. Cost counts both calls, at the prices above. The comparison routes the "
          "same share of requests to the strong model by the complexity estimate, without a cascade.\n")
    print("| dataset | n | escalated | PGR cascade | PGR routing, same strong share | cost cascade vs always strong "
          "| cost routing vs always strong |")
    print("|---|---|---|---|---|---|---|")
    for dataset in ("gsm8k", "chat"):
        items = load(dataset, "heldout")
        results = [estimate(payload_of(it.prompt)) for it in items]
        tokens = [estimate_prompt_tokens(payload_of(it.prompt)) for it in items]
        strong_cost = [cost_usd(expensive, pt, it.strong_completion_tokens) for pt, it in zip(tokens, items,
                                                                                              strict=True)]
        weak_cost = [cost_usd(cheap, pt, it.weak_completion_tokens) for pt, it in zip(tokens, items, strict=True)]
        escalate = [model.p_worse(4 * it.weak_completion_tokens, r) >= model.reject_p
                    for it, r in zip(items, results, strict=True)]
        strong, weak = [it.strong for it in items], [it.weak for it in items]
        k = sum(escalate)
        order = sorted(range(len(items)), key=lambda i: -results[i].score)
        routed = [False] * len(items)
        for i in order[:k]:
            routed[i] = True
        always = sum(strong_cost)
        cascade_cost = sum(weak_cost) + sum(c for c, e in zip(strong_cost, escalate, strict=True) if e)
        routing_cost = sum(s if r else w for s, w, r in zip(strong_cost, weak_cost, routed, strict=True))
        print(f"| {dataset} | {len(items)} | {k / len(items):.3f} | {routed_pgr(escalate, strong, weak):.3f} | "
              f"{routed_pgr(routed, strong, weak):.3f} | {cascade_cost / always:.1%} | {routing_cost / always:.1%} |")


def generalisation() -> None:
    """Retrain on subsets (scripts/train_complexity.py's fit, the shipped hyperparameters) and
    score prompts of a kind of traffic, or MMLU subjects, the model never saw."""
    import importlib.util

    import numpy as np

    sys.modules.setdefault("routellm_eval", sys.modules[__name__])
    spec = importlib.util.spec_from_file_location("train_complexity", ROOT / "scripts" / "train_complexity.py")
    train = importlib.util.module_from_spec(spec)
    sys.modules["train_complexity"] = train
    spec.loader.exec_module(train)
    data = train.Corpus(split=None)
    tune = data.split == "tune"
    heldout = data.split == "heldout"

    def report(rows: np.ndarray, gain: np.ndarray) -> tuple[float, float, float]:
        strong, weak = list(data.strong[rows]), list(data.weak[rows])
        lengths = [float(len(data.items[i].prompt)) for i in np.flatnonzero(rows)]
        return (apgr(pgr_curve(list(gain), strong, weak)), routellm_apgr(list(gain), strong, weak),
                apgr(pgr_curve(lengths, strong, weak)))

    print("\n## Generalisation: retrained without the evaluated kind of traffic\n")
    print("Each row retrains the whole model (exam expert, chat expert, gate; the shipped hyperparameters, not "
          "re-tuned) on the tune half of what the row names and reports APGR on the held-out half of what it "
          "leaves out. With no chat data the chat expert and the gate are absent (the exam expert scores "
          "everything); with no exam data, the reverse.\n")
    print("| evaluated on (held-out) | trained on (tune) | n | APGR | APGR, RouteLLM protocol | prompt length APGR |")
    print("|---|---|---|---|---|---|")
    full = train.fit(data, tune)
    for ds in DATASETS:
        rows = heldout & (data.dataset == ds)
        a, p, length = report(rows, full.gain(data, rows))
        print(f"| {ds} | all three (as shipped) | {int(rows.sum())} | {a:.3f} | {p:.3f} | {length:.3f} |")
    subjects = len(set(data.domain[data.dataset == "mmlu"]))
    for kind, ds, rows, gain in train.left_out_runs(data, heldout):
        a, p, length = report(rows, gain)
        if kind == "leave-one-dataset-out":
            evaluated, trained = ds, " + ".join(o for o in DATASETS if o != ds) + f" ({kind})"
        else:
            evaluated = f"{ds}, subjects unseen ({kind}, {train.SUBJECT_GROUPS} groups of {subjects} subjects)"
            trained = "everything else"
        print(f"| {evaluated} | {trained} | {int(rows.sum())} | {a:.3f} | {p:.3f} | {length:.3f} |")


def _timing_payloads() -> dict[str, list[dict]]:
    mmlu = load("mmlu", "heldout")
    gsm8k = load("gsm8k", "heldout")
    step_m = max(1, len(mmlu) // 200)
    step_g = max(1, len(gsm8k) // 100)
    # A ~4k-token request: a long document (held-out MMLU law questions glued together) to summarise.
    law = [it.prompt for it in mmlu if it.domain == "professional_law"]
    doc, i = [], 0
    while sum(map(len, doc)) < 16_400:
        doc.append(law[i % len(law)])
        i += 1
    long_text = "Summarise the following case file in ten bullet points:\n\n" + "\n\n".join(doc)
    while sum(map(len, doc)) < 32_800:
        doc.append(law[i % len(law)])
        i += 1
    longer_text = "Summarise the following case file in ten bullet points:\n\n" + "\n\n".join(doc)
    tools = [{"type": "function", "function": {"name": f"tool_{k}", "description": "Look something up.",
                                                "parameters": {"type": "object",
                                                               "properties": {"q": {"type": "string"}}}}}
             for k in range(5)]
    chat = [
        {"messages": [{"role": "user", "content": "hi"}]},
        {"messages": [{"role": "system", "content": "You are a helpful assistant."},
                      {"role": "user", "content": "What's a good name for a golden retriever puppy?"}]},
        {"messages": [{"role": "system", "content": "You are a support agent for an online shop."},
                      {"role": "user", "content": "My order #1234 has not arrived."},
                      {"role": "assistant", "content": "Sorry to hear that! Let me check."},
                      {"role": "user", "content": [{"type": "text", "text": "Here is the receipt, please refund."},
                                                   {"type": "image_url", "image_url": {"url": "data:,"}}]}],
         "tools": tools, "max_tokens": 1000},
        {"messages": [{"role": "user", "content": "Extract the invoice number, date and total as JSON:\n"
                                                  "Invoice INV-2291, 3 March 2025, total due EUR 1,240.00"}],
         "response_format": {"type": "json_object"}},
        {"messages": [{"role": "user", "content": "Write a Python function that merges overlapping intervals "
                                                  "and explain its complexity.\n```python\ndef merge(xs):\n"
                                                  "    pass\n```"}]},
    ]
    return {
        "MMLU (held-out sample)": [payload_of(it.prompt) for it in mmlu[::step_m]],
        "GSM8K (held-out sample)": [payload_of(it.prompt) for it in gsm8k[::step_g]],
        "chat/tools/JSON/code": chat,
        "long (~4k tokens)": [{"messages": [{"role": "user", "content": long_text}]}],
        "long (~8k tokens)": [{"messages": [{"role": "user", "content": longer_text}]}],
    }


def timing(repeat: int) -> None:
    from dataplane.routing import complexity

    try:  # one core
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    except (AttributeError, OSError):
        pass
    t0 = time.perf_counter()
    complexity.load_model(complexity.MODEL_PATH)     # an explicit path always reads the file afresh
    load_ms = (time.perf_counter() - t0) * 1e3
    complexity.load_model()
    print("\n## Timing of estimate() (pure Python, one core)\n")
    print(f"Machine: {_machine()}. Weights file load (once per process): {load_ms:.1f} ms.\n")
    print("| requests | n | prompt tokens (est.) | p50 µs | p99 µs | max µs |")
    print("|---|---|---|---|---|---|")
    everything = []
    for name, payloads in _timing_payloads().items():
        for p in payloads:          # warm-up
            complexity.estimate(p)
        samples = []
        reps = repeat * (20 if len(payloads) < 10 else 1)
        for _ in range(reps):
            for p in payloads:
                t = time.perf_counter_ns()
                complexity.estimate(p)
                samples.append((time.perf_counter_ns() - t) / 1e3)
        everything.extend(samples)
        tokens = [complexity.estimate_prompt_tokens(p) for p in payloads]
        samples.sort()
        print(f"| {name} | {len(payloads)} | {min(tokens)}-{max(tokens)} | {statistics.median(samples):.0f} | "
              f"{samples[int(0.99 * (len(samples) - 1))]:.0f} | {samples[-1]:.0f} |")
    everything.sort()
    print(f"| all | | | {statistics.median(everything):.0f} | {everything[int(0.99 * (len(everything) - 1))]:.0f} | "
          f"{everything[-1]:.0f} |")
    print(f"\nResident memory of the loaded model: {_model_rss_mb():.1f} MB (VmRSS of a fresh interpreter after "
          "importing the proxy's app module, before and after reading the weights; one estimate run in both).")


def _model_rss_mb() -> float:
    import subprocess

    code = ("import dataplane.app\n"
            "from dataplane.routing import complexity\n"
            "def rss():\n"
            "    for line in open('/proc/self/status'):\n"
            "        if line.startswith('VmRSS:'): return int(line.split()[1])\n"
            "before = rss(); complexity.use_model(); complexity.estimate({'messages': [{'role': 'user', "
            "'content': 'hello world, how are you?'}]}); print((rss() - before) / 1024)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    return float(done.stdout.strip())


def main() -> int:
    parser = argparse.ArgumentParser(description="RouteLLM offline evaluation of the complexity estimate.")
    parser.add_argument("--no-timing", action="store_true", help="skip the timing micro-benchmark")
    parser.add_argument("--no-generalisation", action="store_true",
                        help="skip the retraining runs (leave-one-dataset-out, leave-subjects-out; needs the "
                             "train extra: numpy, scikit-learn, wordllama)")
    parser.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples for the CI (0: none)")
    parser.add_argument("--repeat", type=int, default=20, help="timing repetitions per request")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    started = time.perf_counter()
    evaluate(args.bootstrap)
    cascade_eval()
    if not args.no_generalisation:
        generalisation()
    if not args.no_timing:
        timing(args.repeat)
    print(f"\n(ran in {time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
