"""Train the cascade's acceptance model (dataplane/routing/cascade_model.json).

    .venv/bin/python scripts/train_cascade.py

The cascade (`cost_mode: cascade`) calls the cheapest model first and escalates to the
flagship when the cheap answer fails dataplane/routing/cascade.py's acceptance check. Most of
that check is rules (truncated, empty, refusal, invalid JSON or tool calls, low logprobs);
the learned part is what answer *length* says. The evaluation data records how long each
model's answer was — GSM8K (RouteLLM) and AlpacaEval chat, not MMLU — so, on the tune split
only:

1. expected answer length: log(strong answer chars) ~ log(4 · estimated prompt tokens) + exam-likeness
   (the complexity estimate's gate), least squares;
2. P(the cheap answer is worse than the strong one's) ~ r + r² + exam-likeness, logistic,
   where r = log(cheap answer chars) - expected.

Deterministic; writes the same file on every run. Held-out figures: bench/routellm_eval.py.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
from sklearn.linear_model import LinearRegression, LogisticRegression

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dataplane.routing import cascade, complexity  # noqa: E402

if "routellm_eval" not in sys.modules:
    _spec = importlib.util.spec_from_file_location("routellm_eval", ROOT / "bench" / "routellm_eval.py")
    sys.modules["routellm_eval"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules["routellm_eval"])
ev = sys.modules["routellm_eval"]

DATASETS = ("chat", "gsm8k")   # the ones with recorded answer lengths
REJECT_P = 0.5                 # escalate when P(worse) >= this (a convention, not tuned)
MIN_MEAN_LOGPROB = -1.0        # escalate when the answer's mean token logprob is below (judgement)


def features(split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(prompt features, log strong chars, log cheap chars, loss, dataset) of a split."""
    x, strong, cheap, loss, dataset = [], [], [], [], []
    for name in DATASETS:
        for it in ev.load(name, split):
            estimate = complexity.estimate(ev.payload_of(it.prompt))
            x.append([math.log1p(4 * estimate.prompt_tokens), estimate.exam_like])
            strong.append(math.log1p(4 * it.strong_completion_tokens))
            cheap.append(math.log1p(4 * it.weak_completion_tokens))
            loss.append(it.loss)
            dataset.append(name)
    return np.array(x), np.array(strong), np.array(cheap), np.array(loss), np.array(dataset)


def main() -> int:
    x, strong, cheap, loss, _ = features("tune")
    length = LinearRegression().fit(x, strong)
    ratio = cheap - length.predict(x)
    f = np.c_[ratio, ratio ** 2, x[:, 1]]
    # A tied verdict (loss 0.5) is half a row of each class.
    y = np.r_[np.ones(len(loss)), np.zeros(len(loss))]
    w = np.r_[loss, 1.0 - loss]
    worse = LogisticRegression(C=1.0).fit(np.r_[f, f][w > 0], y[w > 0], sample_weight=w[w > 0])
    model = {
        "format": cascade.FORMAT,
        "about": "Cascade acceptance: expected answer length and P(cheap answer worse | length); see "
                 "dataplane/routing/cascade.py. Made by scripts/train_cascade.py from the tune split of "
                 "RouteLLM GSM8K and AlpacaEval answer lengths.",
        "expected_log_chars": {"bias": round(float(length.intercept_), 6),
                               "log_prompt_chars": round(float(length.coef_[0]), 6),
                               "exam_like": round(float(length.coef_[1]), 6)},
        "worse": {"bias": round(float(worse.intercept_[0]), 6), "ratio": round(float(worse.coef_[0][0]), 6),
                  "ratio_squared": round(float(worse.coef_[0][1]), 6),
                  "exam_like": round(float(worse.coef_[0][2]), 6)},
        "reject_p": REJECT_P,
        "min_mean_logprob": MIN_MEAN_LOGPROB,
    }
    text = json.dumps(model, indent=1) + "\n"
    cascade.MODEL_PATH.write_text(text, encoding="utf-8")
    print(f"length R² {length.score(x, strong):.3f}; wrote {cascade.MODEL_PATH}")
    print(json.dumps(model["worse"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
