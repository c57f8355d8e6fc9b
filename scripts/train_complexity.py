"""Train the complexity estimate's weights (dataplane/routing/complexity_model.json).

    .venv/bin/python scripts/train_complexity.py            # train, cross-validate, write the weights
    .venv/bin/python scripts/train_complexity.py --cv-only  # only print the cross-validation

Offline and deterministic: reads data/routellm/ and data/alpaca_eval/ (the *tune* split
only, see bench/routellm_eval.py) and the pinned wordllama wheel's token table
(dataplane/routing/embedding.py), uses numpy/scikit-learn (training-only dependencies, the
`train` extra: the gateway reads the JSON in pure Python) and writes the same file byte for
byte on every run.

The model: a mixture of two experts and a gate, each over features of
`dataplane.routing.complexity.features()`:

- exam expert (trained on MMLU + GSM8K, where correctness is known): two L2-regularised
  logistic regressions (liblinear) over binary word uni+bigrams of the last user message
  (L2-normalised, document frequency >= MIN_DF) and standardised dense structure/task
  features, one predicting "the strong model (GPT-4) answers correctly", one "the weak
  model (Mixtral) answers correctly"; exam gain = P_strong - P_weak.
- chat expert (trained on AlpacaEval, open-ended instructions judged pairwise): a ridge
  regression over the prompt's mean token embedding (WordLlama, 256-d) and the dense
  features, predicting chat gain = P(strong answer preferred) - P(weak answer preferred),
  pooled over the 8 cheaper models and *length-controlled*: the judge favours longer
  answers, so each verdict is corrected by a per-model logistic on log(strong chars /
  weak chars), fitted on the tune split, to what it would be at equal lengths.
- gate: a logistic regression over the same embedding + dense features, P(the prompt
  looks like an exam question rather than open-ended chat), classes balanced.

gain = g · exam gain + (1 - g) · chat gain. Both experts estimate the same quantity,
P(strong strictly better) - P(weak strictly better), so the mixture is in one unit.

Each embedding head is linear in the mean embedding, so its 256 weights are folded into
one number per vocabulary piece (table · w): the proxy averages those, see embedding.py.

Everything chosen from data is chosen on the tune split only:
- hyperparameters by 5-fold cross-validation inside the tune split (folds from the prompt
  hash; vocabulary rebuilt in each fold), printed with --search;
- Platt scaling (a, b) of gain against P(strong strictly better than Mixtral), fitted on
  the out-of-fold gains, each dataset weighted equally;
- the needed_quality thresholds and the quality-target table, read off the out-of-fold
  scores (per dataset; the most demanding dataset sets each threshold).
The held-out split is never read here. `fit()` and `Corpus` are also used by
bench/routellm_eval.py to retrain on subsets (leave-one-dataset-out, leave-subjects-out).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression, Ridge

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dataplane.routing import complexity as cx  # noqa: E402
from dataplane.routing import embedding  # noqa: E402

if "routellm_eval" in sys.modules:
    ev = sys.modules["routellm_eval"]
else:
    _spec = importlib.util.spec_from_file_location("routellm_eval", ROOT / "bench" / "routellm_eval.py")
    ev = importlib.util.module_from_spec(_spec)
    sys.modules["routellm_eval"] = ev
    _spec.loader.exec_module(ev)

# Exam expert (unchanged from the exam-only model; grid in the previous version's notes).
C = 0.3            # inverse L2 strength of both heads
MIN_DF = 3         # n-grams seen in fewer tune questions are dropped
PRUNE = 5e-4       # n-grams whose two weights are both smaller are not shipped
EXAM_EMBED_SCALE = 0.0   # the exam heads' embedding block (0: no embedding; --generalisation)
# Chat expert and gate (--search; see bench/RESULTS.md for the grid's numbers).
CHAT_ALPHA = 10000.0       # ridge penalty on the embedding + dense block
CHAT_NGRAM_ALPHA = 10.0    # ... and on the n-gram block
CHAT_MIN_DF = 2            # chat n-grams seen in fewer tune instructions are dropped
GATE_C = 0.01
FOLDS = 5
DIGITS = 4         # exam weights are rounded to this many decimals
PIECE_DIGITS = 6   # per-piece head weights
FIXED_THRESHOLDS = (0.05, 0.10)   # needed_quality 2 and 3 start here (conventions)
STRONG_PGR = 0.80  # needed_quality 4: the tune split reaches this PGR on every dataset
TOP_PGR = 0.50     # needed_quality 5: ... and this PGR with tier 5 alone
QUALITY_TARGETS = tuple(round(0.50 + 0.01 * k, 2) for k in range(50))   # 0.50 .. 0.99


def _round(x: float, digits: int = DIGITS) -> float:
    return float(round(float(x), digits)) + 0.0   # + 0.0 turns -0.0 into 0.0


# ---------------------------------------------------------------------------
# Data


class Corpus:
    """Items of the given datasets and split, with their features (computed once)."""

    def __init__(self, datasets: Sequence[str] = ev.DATASETS, split: str | None = "tune") -> None:
        self.items = [it for ds in datasets for it in ev.load(ds, split)]
        self.feats = [cx.features(ev.payload_of(it.prompt)) for it in self.items]
        self.dataset = np.array([it.dataset for it in self.items])
        self.domain = np.array([it.domain for it in self.items])
        self.split = np.array([it.split for it in self.items])
        self.fold = np.array([it.fold for it in self.items])
        self.strong = np.array([it.strong for it in self.items], dtype=float)
        self.weak = np.array([it.weak for it in self.items], dtype=float)
        self.loss = np.array([it.loss for it in self.items], dtype=float)
        self.exam = np.isin(self.dataset, ev.EXAMS)
        self.dense = np.array([f.dense for f in self.feats], dtype=float)
        self.norm = np.array([1.0 / math.sqrt(len(f.ngrams)) if f.ngrams else 0.0 for f in self.feats])
        self.pieces, table = embedding.load_table()
        segmenter = embedding.Segmenter(self.pieces)
        self.table = table
        self.embedded = np.zeros((len(self.items), embedding.DIM))
        for i, f in enumerate(self.feats):
            ids = segmenter.pieces(cx.embedding_text(f.parsed.user))
            if ids:
                self.embedded[i] = table[ids].mean(0, dtype=np.float64)
        self.chat_gain = np.zeros(len(self.items))
        chat = ~self.exam
        if (chat & (self.split == "tune")).any():   # the training target; fitted on the tune split only
            control = LengthControl([self.items[i] for i in np.flatnonzero(chat & (self.split == "tune"))])
            self.chat_gain[chat] = [control.gain(self.items[i]) for i in np.flatnonzero(chat)]

    def rows(self, datasets: Sequence[str] | None = None, split: str | None = None) -> np.ndarray:
        mask = np.ones(len(self.items), dtype=bool)
        if datasets is not None:
            mask &= np.isin(self.dataset, list(datasets))
        if split is not None:
            mask &= self.split == split
        return mask


class LengthControl:
    """The judge's verdicts at equal answer lengths: per model m, logit P(strong preferred) =
    a_m + b · log(strong chars / weak chars), fitted on the given chat items; a verdict v
    becomes clip(v - P(len) + P(equal len), 0, 1)."""

    def __init__(self, items: Sequence[ev.Item]) -> None:
        rows, labels, weights = [], [], []
        for it in items:
            for k, (_, strong, ref, out) in enumerate(it.verdicts):
                x = [0.0] * len(ev.CHAT_MODELS) + [math.log(max(ref, 1) / max(out, 1))]
                x[k] = 1.0
                for label, weight in ((1, strong), (0, 1.0 - strong)):
                    if weight:
                        rows.append(x)
                        labels.append(label)
                        weights.append(weight)
        fit = LogisticRegression(C=10.0, fit_intercept=False, max_iter=2000)
        fit.fit(np.array(rows), np.array(labels), sample_weight=np.array(weights))
        self.intercepts = fit.coef_[0][:-1]
        self.slope = float(fit.coef_[0][-1])

    def gain(self, item: ev.Item) -> float:
        values = []
        for k, (_, strong, ref, out) in enumerate(item.verdicts):
            z0 = self.intercepts[k]
            z = z0 + self.slope * math.log(max(ref, 1) / max(out, 1))
            adjusted = min(1.0, max(0.0, strong - _sigmoid(z) + _sigmoid(z0)))
            values.append(2.0 * adjusted - 1.0)
        return float(np.mean(values))


def _sigmoid(z: np.ndarray | float) -> np.ndarray | float:
    return 1.0 / (1.0 + np.exp(-z))


# ---------------------------------------------------------------------------
# The three heads


class ExamExpert:
    """Vocabulary, standardisation and the two correctness heads."""

    def __init__(self, data: Corpus, rows: np.ndarray) -> None:
        self.vocab = _vocabulary(data, rows, MIN_DF)
        dense = self._dense(data, rows)
        self.mean = dense.mean(0)
        std = dense.std(0)
        self.scale = np.where(std > 1e-12, 1.0 / np.where(std > 1e-12, std, 1.0), 0.0)
        # The embedding block's penalty: its standardised columns are scaled by EXAM_EMBED_SCALE.
        self.scale[len(cx.dense_names()):] *= EXAM_EMBED_SCALE
        x = self.matrix(data, rows)
        self.heads = []
        for y in (data.strong[rows], data.weak[rows]):
            head = LogisticRegression(C=C, solver="liblinear", random_state=0, max_iter=1000)
            head.fit(x, y.astype(int))
            self.heads.append(head)
        # What ships: n-gram weights rounded and pruned; evaluate exactly that in cross-validation too.
        nv = len(self.vocab)
        small = np.maximum(*(np.abs(np.round(h.coef_[0][:nv], DIGITS)) for h in self.heads)) < PRUNE
        for h in self.heads:
            coef = np.round(h.coef_[0], DIGITS)
            coef[:nv][small] = 0.0
            h.coef_[0] = coef

    def matrix(self, data: Corpus, rows: np.ndarray) -> sp.csr_matrix:
        dense = (self._dense(data, rows) - self.mean) * self.scale
        return sp.hstack([_ngram_matrix(data, rows, self.vocab), sp.csr_matrix(dense)]).tocsr()

    @staticmethod
    def _dense(data: Corpus, rows: np.ndarray) -> np.ndarray:
        if not EXAM_EMBED_SCALE:
            return data.dense[rows]
        return np.hstack([data.dense[rows], data.embedded[rows]])

    def gain(self, data: Corpus, rows: np.ndarray) -> np.ndarray:
        x = self.matrix(data, rows)
        return self.heads[0].predict_proba(x)[:, 1] - self.heads[1].predict_proba(x)[:, 1]

    def export(self, table: np.ndarray) -> dict:
        coef_s, coef_w = self.heads[0].coef_[0], self.heads[1].coef_[0]
        nv = len(self.vocab)
        ngrams = {}
        for key, j in sorted(self.vocab.items()):
            ws, ww = _round(coef_s[j]), _round(coef_w[j])
            if ws or ww:
                ngrams[key] = [ws, ww]
        # Fold the standardisation into the dense weights and the biases, and the embedding
        # block's weights into one number per piece (table · w).
        dense_s, dense_w = coef_s[nv:] * self.scale, coef_w[nv:] * self.scale
        nd = len(cx.dense_names())
        pieces = {}
        if EXAM_EMBED_SCALE:
            pieces = {"strong": [_round(x, PIECE_DIGITS) for x in table.astype(np.float64) @ dense_s[nd:]],
                      "weak": [_round(x, PIECE_DIGITS) for x in table.astype(np.float64) @ dense_w[nd:]]}
        return {
            "pieces": pieces,
            "dense": {"strong": [_round(x) for x in dense_s[:nd]], "weak": [_round(x) for x in dense_w[:nd]]},
            "bias": {"strong": _round(self.heads[0].intercept_[0] - float((dense_s * self.mean).sum())),
                     "weak": _round(self.heads[1].intercept_[0] - float((dense_w * self.mean).sum()))},
            "ngrams": ngrams,
        }


def _ngram_matrix(data: Corpus, rows: np.ndarray, vocab: dict[str, int]) -> sp.csr_matrix:
    """Binary n-grams of the rows over `vocab`, each row L2-normalised as the proxy does."""
    idx = np.flatnonzero(rows)
    indptr, indices, values = [0], [], []
    for i in idx:
        cols = sorted(vocab[k] for k in data.feats[i].ngrams if k in vocab)
        indices.extend(cols)
        values.extend([data.norm[i]] * len(cols))
        indptr.append(len(indices))
    return sp.csr_matrix((values, indices, indptr), shape=(len(idx), len(vocab)))


def _vocabulary(data: Corpus, rows: np.ndarray, min_df: int) -> dict[str, int]:
    df: dict[str, int] = {}
    for i in np.flatnonzero(rows):
        for key in data.feats[i].ngrams:
            df[key] = df.get(key, 0) + 1
    return {k: j for j, k in enumerate(sorted(k for k, v in df.items() if v >= min_df))}


class EmbeddingHead:
    """A linear model over [mean embedding, dense features] (standardised), and for the chat
    expert also the n-grams: ridge regression with one penalty per block (chat expert), or
    balanced logistic regression (gate)."""

    def __init__(self, data: Corpus, rows: np.ndarray, target: np.ndarray, kind: str) -> None:
        x = np.hstack([data.embedded[rows], data.dense[rows]])
        self.mean = x.mean(0)
        std = x.std(0)
        self.scale = np.where(std > 1e-9, 1.0 / np.where(std > 1e-9, std, 1.0), 0.0)
        self.kind = kind
        self.vocab: dict[str, int] = {}
        if kind == "ridge":
            # Ridge with penalty alpha_b on block b == ridge with penalty 1 on block b / sqrt(alpha_b).
            self.scale = self.scale / math.sqrt(CHAT_ALPHA)
            self.vocab = _vocabulary(data, rows, CHAT_MIN_DF)
            self.ngram_scale = 1.0 / math.sqrt(CHAT_NGRAM_ALPHA)
            fit = Ridge(alpha=1.0).fit(self._matrix(data, rows), target[rows])
            self.coef, self.intercept = fit.coef_, float(fit.intercept_)
        else:
            z = (x - self.mean) * self.scale
            fit = LogisticRegression(C=GATE_C, class_weight="balanced", max_iter=5000).fit(z, target[rows])
            self.coef, self.intercept = fit.coef_[0], float(fit.intercept_[0])

    def _matrix(self, data: Corpus, rows: np.ndarray) -> sp.csr_matrix:
        x = (np.hstack([data.embedded[rows], data.dense[rows]]) - self.mean) * self.scale
        return sp.hstack([_ngram_matrix(data, rows, self.vocab) * self.ngram_scale, sp.csr_matrix(x)]).tocsr()

    def linear(self, data: Corpus, rows: np.ndarray) -> np.ndarray:
        if self.kind == "ridge":
            return self._matrix(data, rows) @ self.coef + self.intercept
        x = np.hstack([data.embedded[rows], data.dense[rows]])
        return ((x - self.mean) * self.scale) @ self.coef + self.intercept

    def export(self, table: np.ndarray) -> tuple[dict, list[float], dict[str, float]]:
        """(dense weights and bias, one weight per vocabulary piece, n-gram weights)."""
        nv = len(self.vocab)
        ngrams = {key: _round(self.coef[j] * self.ngram_scale, 6) for key, j in self.vocab.items()} if nv else {}
        w = self.coef[nv:] * self.scale
        dim = table.shape[1]
        bias = self.intercept - float(w @ self.mean)
        per_piece = table.astype(np.float64) @ w[:dim]
        return ({"dense": [_round(x, 6) for x in w[dim:]], "bias": _round(bias, 6)},
                [_round(x, PIECE_DIGITS) for x in per_piece], {k: v for k, v in ngrams.items() if v})


@dataclass
class Fitted:
    exam: ExamExpert | None
    chat: EmbeddingHead | None
    gate: EmbeddingHead | None

    def parts(self, data: Corpus, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(exam gain, chat gain, gate) of the rows."""
        n = int(rows.sum())
        exam = self.exam.gain(data, rows) if self.exam else np.zeros(n)
        chat = self.chat.linear(data, rows) if self.chat else np.zeros(n)
        if self.exam and self.chat:
            gate = _sigmoid(self.gate.linear(data, rows))
        else:
            gate = np.full(n, 1.0 if self.exam else 0.0)
        return exam, chat, gate

    def gain(self, data: Corpus, rows: np.ndarray) -> np.ndarray:
        exam, chat, gate = self.parts(data, rows)
        return gate * exam + (1.0 - gate) * chat


def fit(data: Corpus, rows: np.ndarray) -> Fitted:
    """The three heads trained on `rows` (an expert is absent when its kind of data is)."""
    exam_rows, chat_rows = rows & data.exam, rows & ~data.exam
    exam = ExamExpert(data, exam_rows) if exam_rows.any() else None
    chat = EmbeddingHead(data, chat_rows, data.chat_gain, "ridge") if chat_rows.any() else None
    gate = EmbeddingHead(data, rows, data.exam.astype(int), "logistic") if exam and chat else None
    return Fitted(exam, chat, gate)


def out_of_fold(data: Corpus, rows: np.ndarray) -> np.ndarray:
    """Gain of every row from a model trained on the other folds of `rows`."""
    gain = np.zeros(len(data.items))
    for k in range(FOLDS):
        test = rows & (data.fold == k)
        gain[test] = fit(data, rows & ~test).gain(data, test)
    return gain[rows]


# ---------------------------------------------------------------------------
# Calibration


def pgr_threshold(scores: np.ndarray, strong: np.ndarray, weak: np.ndarray, target: float) -> float:
    """The score at which routing score >= it first reaches PGR >= target (on these queries)."""
    curve = ev.pgr_curve(list(scores), list(strong), list(weak))
    k = next(k for k, v in enumerate(curve) if v >= target - 1e-12)
    return float(np.sort(scores)[::-1][max(k - 1, 0)])


def quality_threshold(scores: np.ndarray, loss: np.ndarray, target: float) -> float:
    """The highest score threshold t such that sending score >= t to the strong model keeps a
    quality share >= target: 1 - mean(loss of the queries left to the weak model) >= target."""
    order = np.argsort(-scores, kind="stable")
    ordered, lost = scores[order], loss[order]
    n = len(scores)
    # left[k]: total loss when the k top-scored go strong (the rest weak).
    left = np.concatenate([[lost.sum()], lost.sum() - np.cumsum(lost)])
    for k in range(n + 1):
        # A threshold can only split between distinct scores.
        if k < n and 0 < k and ordered[k] == ordered[k - 1]:
            continue
        if 1.0 - left[k] / n >= target - 1e-12:
            # exactly the k top-scored reach it (k = 0: none does)
            return float(ordered[k - 1]) if k else float(np.nextafter(ordered[0], np.inf))
    return float(ordered[-1])


def measured_share(scores: np.ndarray, data: Corpus, rows: np.ndarray, threshold: float) -> dict[str, float]:
    calls = scores >= threshold
    return {"quality_share": _round(1.0 - float((data.loss[rows] * ~calls).sum()) / len(calls)),
            "strong_share": _round(float(calls.mean()))}


def calibrate(data: Corpus, rows: np.ndarray, gain: np.ndarray) -> dict:
    """Platt scaling, needed_quality thresholds and the quality-target table from out-of-fold gains."""
    datasets = [ds for ds in ev.DATASETS if (data.dataset[rows] == ds).any()]
    ds_of = data.dataset[rows]
    loss = data.loss[rows]
    # Each dataset weighs the same; a fractional loss (a tied verdict) is two weighted rows.
    weight = np.zeros(len(gain))
    for ds in datasets:
        weight[ds_of == ds] = 1.0 / (ds_of == ds).sum()
    x = np.concatenate([gain, gain]).reshape(-1, 1)
    y = np.concatenate([np.ones(len(gain)), np.zeros(len(gain))])
    w = np.concatenate([weight * loss, weight * (1.0 - loss)])
    platt = LogisticRegression(C=1e6, solver="lbfgs", max_iter=1000).fit(x[w > 0], y[w > 0], sample_weight=w[w > 0])
    a, b = _round(platt.coef_[0][0]), _round(platt.intercept_[0])
    scores = 0.01 + 0.98 * _sigmoid(a * gain + b)

    tuned = []
    for target in (STRONG_PGR, TOP_PGR):
        tuned.append(min(pgr_threshold(scores[ds_of == ds], data.strong[rows][ds_of == ds],
                                       data.weak[rows][ds_of == ds], target) for ds in datasets))
    thresholds = [*FIXED_THRESHOLDS, *tuned]
    if thresholds != sorted(thresholds):
        raise SystemExit(f"thresholds out of order: {thresholds}")

    table = []
    for target in QUALITY_TARGETS:
        threshold = min(quality_threshold(scores[ds_of == ds], loss[ds_of == ds], target) for ds in datasets)
        table.append({"target": target, "threshold": threshold, "measured": {
            ds: measured_share(scores[ds_of == ds], data, np.flatnonzero(rows)[ds_of == ds], threshold)
            for ds in datasets}})
    return {"platt": {"a": a, "b": b}, "thresholds": thresholds, "quality_targets": table, "oof_scores": scores}


def per_dataset(data: Corpus, rows: np.ndarray, scores: np.ndarray) -> dict[str, dict[str, float]]:
    out = {}
    ds_of = data.dataset[rows]
    for ds in ev.DATASETS:
        m = ds_of == ds
        if m.any():
            out[ds] = ev.metrics(list(scores[m]), list(data.strong[rows][m]), list(data.weak[rows][m]))
    return out


# ---------------------------------------------------------------------------


def export(data: Corpus, rows: np.ndarray, final: Fitted, calibration: dict, cv: dict) -> dict:
    assert final.exam and final.chat and final.gate
    chat, chat_pieces, chat_ngrams = final.chat.export(data.table)
    gate, gate_pieces, _ = final.gate.export(data.table)
    exam = final.exam.export(data.table)
    exam_pieces = exam.pop("pieces")
    # One n-gram map: [exam strong, exam weak, chat] per n-gram.
    ngrams = {key: [*exam["ngrams"].get(key, (0.0, 0.0)), chat_ngrams.get(key, 0.0)]
              for key in sorted(exam["ngrams"].keys() | chat_ngrams.keys())}
    exam["ngrams"] = ngrams
    return {
        "format": "megarouter-complexity/2",
        "about": "Complexity estimate weights: an exam expert (two logistic heads P(strong right), P(weak right) "
                 "over word uni+bigrams and dense features), a chat expert (ridge over the mean WordLlama token "
                 "embedding and dense features) and a gate; see dataplane/routing/complexity.py.",
        "trained_on": "tune split only (sha256(prompt) even) of RouteLLM (lm-sys/RouteLLM, Apache-2.0) MMLU + GSM8K "
                      "correctness of gpt-4-1106-preview and Mixtral-8x7B-Instruct, and AlpacaEval (tatsu-lab, "
                      "Apache-2.0) GPT-4-turbo verdicts between gpt4_1106_preview and 8 cheaper models; token table "
                      "of wordllama 0.4.0.post1 (MIT); made by scripts/train_complexity.py",
        "hyperparameters": {"C": C, "min_df": MIN_DF, "prune": PRUNE, "chat_alpha": CHAT_ALPHA,
                            "chat_ngram_alpha": CHAT_NGRAM_ALPHA, "chat_min_df": CHAT_MIN_DF, "gate_c": GATE_C,
                            "folds": FOLDS, "digits": DIGITS},
        "cv_tune": {ds: {k: round(v, 4) for k, v in m.items()} for ds, m in cv.items()},
        "dense_names": cx.dense_names(),
        "platt": calibration["platt"],
        "thresholds": calibration["thresholds"],
        "quality_targets": calibration["quality_targets"],
        "exam": exam,
        "chat": chat,
        "gate": gate,
        "pieces": data.pieces,
        "piece_weights": {"chat": chat_pieces, "gate": gate_pieces, **exam_pieces},
    }


SUBJECT_GROUPS = 5   # MMLU leave-subjects-out: subjects in groups by the hash of their name


def left_out_runs(data: Corpus, scored: np.ndarray):
    """Yield (kind, dataset, rows, gain) for each generalisation split: the whole model retrained
    on the tune rows outside what is left out, scoring the `scored` rows of what is left out.
    Leave-one-dataset-out per dataset, then MMLU leave-subjects-out (each group of subjects
    scored by a model trained without any question of its subjects)."""
    tune = data.split == "tune"
    for ds in ev.DATASETS:
        left_out = data.dataset == ds
        rows = scored & left_out
        yield "leave-one-dataset-out", ds, rows, fit(data, tune & ~left_out).gain(data, rows)
    mmlu = data.dataset == "mmlu"
    subjects = sorted(set(data.domain[mmlu]))
    rows = scored & mmlu
    gain = np.zeros(len(data.items))
    for g in range(SUBJECT_GROUPS):
        unseen = mmlu & np.isin(data.domain, [s for s in subjects if ev._hash(s) % SUBJECT_GROUPS == g])
        gain[rows & unseen] = fit(data, tune & ~unseen).gain(data, rows & unseen)
    yield "leave-subjects-out", "mmlu", rows, gain[rows]


def generalisation_dev(data: Corpus) -> None:
    """Development versions of bench/routellm_eval.py's generalisation table, inside the tune
    split only (train on the tune half of the rest, score the tune half of what is left out):
    design choices are made on these, never on the held-out figures."""
    rows = data.rows()
    cv = per_dataset(data, rows, out_of_fold(data, rows))
    print("in-distribution 5-fold CV: " + "  ".join(f"{ds} {v['apgr']:.4f}" for ds, v in cv.items()))
    for kind, ds, scored, gain in left_out_runs(data, rows):
        m = ev.metrics(list(gain), list(data.strong[scored]), list(data.weak[scored]))
        print(f"{kind} {ds}: APGR {m['apgr']:.4f}")


def main() -> int:
    global CHAT_ALPHA, CHAT_NGRAM_ALPHA, EXAM_EMBED_SCALE
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cv-only", action="store_true", help="print cross-validation, write nothing")
    parser.add_argument("--search", action="store_true", help="cross-validate the chat expert's penalties")
    parser.add_argument("--generalisation", action="store_true",
                        help="leave-one-dataset-out and MMLU leave-subjects-out inside the tune split")
    parser.add_argument("--exam-embed-scale", type=float, default=EXAM_EMBED_SCALE)
    parser.add_argument("--out", type=Path, default=cx.MODEL_PATH)
    args = parser.parse_args()
    EXAM_EMBED_SCALE = args.exam_embed_scale

    data = Corpus()
    rows = data.rows()
    print("tune split: " + ", ".join(f"{int((data.dataset == ds).sum())} {ds}" for ds in ev.DATASETS))

    if args.generalisation:
        generalisation_dev(data)
        return 0

    if args.search:
        for alpha in (1000.0, 3000.0, 10000.0):
            for ngram_alpha in (3.0, 10.0, 30.0):
                CHAT_ALPHA, CHAT_NGRAM_ALPHA = alpha, ngram_alpha
                cv = per_dataset(data, rows, out_of_fold(data, rows))
                mean = sum(v["apgr"] for v in cv.values()) / len(cv)
                print(f"chat alpha={alpha:<7} n-gram alpha={ngram_alpha:<5} " + "  ".join(
                    f"{ds} APGR {v['apgr']:.4f}" for ds, v in cv.items()) + f"  mean {mean:.4f}", flush=True)
        return 0

    oof_gain = out_of_fold(data, rows)
    cv = per_dataset(data, rows, oof_gain)
    for ds, v in cv.items():
        print(f"{FOLDS}-fold CV on tune, {ds}: APGR {v['apgr']:.4f}  CPT50 {v['cpt50']:.3f}  CPT80 {v['cpt80']:.3f}")
    calibration = calibrate(data, rows, oof_gain)
    scores = calibration["oof_scores"]
    print(f"Platt: {calibration['platt']}; thresholds: {calibration['thresholds']}")
    for ds in ev.DATASETS:
        m = data.dataset[rows] == ds
        calls = scores[m] >= calibration["thresholds"][2]
        pgr = ev.routed_pgr(list(calls), list(data.strong[rows][m]), list(data.weak[rows][m]))
        print(f"tune OOF {ds}: needed_quality>=4 share {calls.mean():.3f}, PGR {pgr:.3f}")
    for row in calibration["quality_targets"]:
        if row["target"] in (0.8, 0.9, 0.95):
            print(f"quality target {row['target']}: threshold {row['threshold']:.4f} " + json.dumps(row["measured"]))
    if args.cv_only:
        return 0

    final = fit(data, rows)
    model = export(data, rows, final, calibration, cv)
    text = json.dumps(model, ensure_ascii=False, separators=(",", ":")) + "\n"
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out} ({len(text.encode()) / 1e6:.2f} MB, {len(model['exam']['ngrams'])} n-grams, "
          f"{len(data.pieces)} pieces)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
