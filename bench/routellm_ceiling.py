"""How much routing signal cheap prompt features can find in the RouteLLM data at all.

    .venv/bin/pip install -e '.[train]'   # numpy, scipy, scikit-learn
    .venv/bin/python bench/routellm_ceiling.py

APGR by 5-fold cross-validation inside the *tune* split only (the same folds as
scripts/train_complexity.py; the held-out split is not read), for scores that use
information a router does not have, to bound what the complexity estimate could reach:

* MMLU, the question's **domain** (which of the 57 files it came from): the mean gain of
  that domain in the training folds; and the domain plus structure features of the
  question and its options (lengths, numeric options, NOT/EXCEPT, "Statement 1", ...).
* GSM8K, the **length of each model's actual answer** (a proxy for the number of
  reasoning steps, known only after answering), and arithmetic features of the problem
  (numbers, percentages, fractions, rate words) with two logistic heads.

Prompt length and random routing are printed for reference.
"""

from __future__ import annotations

import importlib.util
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("routellm_eval", ROOT / "bench" / "routellm_eval.py")
ev = importlib.util.module_from_spec(_spec)
sys.modules["routellm_eval"] = ev
_spec.loader.exec_module(ev)

FOLDS = 5
_OPTION = re.compile(r"^[A-D]\. ")
_NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")
_RATE_WORDS = ("each", "per", "times", "twice", "half", "total", "more", "less", "left", "remaining", "every",
               "average", "percent", "%", "profit", "discount", "interest", "hour", "minute", "week", "day",
               "month", "year", "cost", "$", "third", "quarter", "double", "triple", "ratio", "rest", "after",
               "then", "if", "how many", "how much", "than", "only", "instead", "difference", "increase",
               "decrease")


def mmlu_structure(prompt: str) -> list[float]:
    lines = prompt.split("\n")
    options = [line[3:] for line in lines if _OPTION.match(line)]
    question = "\n".join(line for line in lines if not _OPTION.match(line) and line != "Answer:")
    low = question.lower()
    return [
        math.log1p(len(prompt)), math.log1p(len(question)), math.log1p(sum(map(len, options))),
        sum(any(c.isdigit() for c in option) for option in options),
        float(" not " in low or "except" in low), float("statement 1" in low), low.count("?"),
        sum(c.isdigit() for c in question) / (len(question) + 1), float("which of the following" in low),
        len(question.split(". ")),
        float(any(o.strip().lower() in ("all of the above", "none of the above") for o in options)),
        sum(len(option) > 60 for option in options),
    ]


def gsm8k_arithmetic(prompt: str) -> list[float]:
    low = prompt.lower()
    numbers = _NUMBER.findall(prompt)
    return [
        math.log1p(len(prompt)), math.log1p(len(low.split())), len(numbers), len(set(numbers)),
        prompt.count(". ") + prompt.count("? "), sum("." in n for n in numbers),
        sum(len(n.replace(",", "")) >= 3 for n in numbers), low.count("%") + low.count("percent"),
        sum(low.count(w) for w in ("half", "third", "quarter", "/")),
        *(low.count(word) for word in _RATE_WORDS),
    ]


class Data:
    def __init__(self, dataset: str) -> None:
        self.items = ev.load(dataset, "tune")
        self.strong = np.array([item.strong for item in self.items])
        self.weak = np.array([item.weak for item in self.items])
        self.folds = np.array([item.fold for item in self.items])

    def apgr(self, scores: np.ndarray) -> float:
        """Mean over the folds of each fold's APGR (scores out of fold)."""
        return float(np.mean([
            ev.metrics(list(scores[self.folds == k]), list(self.strong[self.folds == k]),
                       list(self.weak[self.folds == k]))["apgr"]
            for k in range(FOLDS)
        ]))

    def out_of_fold(self, fit_predict: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> np.ndarray:
        scores = np.zeros(len(self.items))
        for k in range(FOLDS):
            train, test = self.folds != k, self.folds == k
            scores[test] = fit_predict(train, test)
        return scores

    def two_heads(self, features: np.ndarray, c: float) -> np.ndarray:
        """gain = P(strong right) - P(weak right), two standardised logistic regressions."""
        def fit_predict(train: np.ndarray, test: np.ndarray) -> np.ndarray:
            mean, std = features[train].mean(0), features[train].std(0) + 1e-9
            z = (features - mean) / std
            heads = [LogisticRegression(C=c, max_iter=3000).fit(z[train], y[train]) for y in (self.strong, self.weak)]
            return heads[0].predict_proba(z[test])[:, 1] - heads[1].predict_proba(z[test])[:, 1]
        return self.out_of_fold(fit_predict)


def main() -> int:
    rows: list[tuple[str, str, float]] = []
    mmlu = Data("mmlu")
    lengths = np.array([len(item.prompt) for item in mmlu.items], float)
    rows.append(("mmlu", "prompt length", mmlu.apgr(lengths)))
    domains = np.array([item.domain for item in mmlu.items])

    def domain_prior(train: np.ndarray, test: np.ndarray) -> np.ndarray:
        prior = {d: mmlu.strong[train & (domains == d)].mean() - mmlu.weak[train & (domains == d)].mean()
                 for d in set(domains)}
        return np.array([prior[d] for d in domains[test]])
    rows.append(("mmlu", "known domain (its mean gain)", mmlu.apgr(mmlu.out_of_fold(domain_prior))))
    one_hot = (domains[:, None] == np.array(sorted(set(domains)))[None, :]).astype(float)
    structure = np.array([mmlu_structure(item.prompt) for item in mmlu.items])
    rows.append(("mmlu", "structure features only", mmlu.apgr(mmlu.two_heads(structure, 1.0))))
    rows.append(("mmlu", "known domain + structure features",
                 mmlu.apgr(mmlu.two_heads(np.hstack([one_hot, structure]), 0.1))))

    gsm = Data("gsm8k")
    rows.append(("gsm8k", "prompt length", gsm.apgr(np.array([len(i.prompt) for i in gsm.items], float))))
    rows.append(("gsm8k", "actual answer length, GPT-4",
                 gsm.apgr(np.array([i.strong_completion_tokens for i in gsm.items], float))))
    rows.append(("gsm8k", "actual answer length, Mixtral",
                 gsm.apgr(np.array([i.weak_completion_tokens for i in gsm.items], float))))
    arithmetic = np.array([gsm8k_arithmetic(item.prompt) for item in gsm.items])
    rows.append(("gsm8k", "arithmetic features", gsm.apgr(gsm.two_heads(arithmetic, 0.01))))

    print(f"Tune split only, {FOLDS}-fold CV (mean of per-fold APGR); random routing = 0.500.\n")
    print("| dataset | n (tune) | score | APGR |")
    print("|---|---|---|---|")
    sizes = {"mmlu": len(mmlu.items), "gsm8k": len(gsm.items)}
    for dataset, name, value in rows:
        print(f"| {dataset} | {sizes[dataset]} | {name} | {value:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
