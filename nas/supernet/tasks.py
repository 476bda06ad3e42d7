"""Task metrics of encoder shapes on a user's labelled data, beside agreement with the base model.

Two file formats, both UTF-8 with one example per line (tab-separated; blank lines and lines
starting with ``#`` are skipped):

- **pairs** ``text1<TAB>text2<TAB>score``: a similarity judgement per pair. A shape's score is the
  Spearman correlation between the cosine similarity of its two sentence embeddings and the
  judged scores (higher is better; how sentence-similarity benchmarks such as STS or SimLex
  are scored).
- **labels** ``label<TAB>text``: a class per text. A shape's score is the accuracy of a
  logistic-regression probe on its frozen, L2-normalised embeddings, by stratified k-fold
  cross-validation with a fixed seed (higher is better; the SentEval protocol, simplified).

A task is named ``pairs:FILE`` or ``labels:FILE`` (:func:`load_task`), the form ``--metric`` takes.
Embeddings are the mean-pooled last hidden states the supernet is scored with, so a task score
sees the same subnet (masked widths, merged adapters, bias compensation) as the cosine metric.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from nas.errors import AnyshapeError

TASK_KINDS = ("pairs", "labels")
MIN_EXAMPLES = 10


class Task(Protocol):
    """What a task metric needs: its texts, and a score of their embeddings (rows in ``texts`` order)."""

    name: str
    metric: str
    texts: list[str]

    def score(self, embeddings: np.ndarray) -> float: ...


@dataclass(frozen=True)
class PairsTask:
    """Judged text pairs, scored by the Spearman correlation of embedding cosines with the judgements."""

    name: str
    pairs: list[tuple[str, str, float]]
    metric: str = "spearman"

    @property
    def texts(self) -> list[str]:
        return _unique([t for a, b, _ in self.pairs for t in (a, b)])

    def score(self, embeddings: np.ndarray) -> float:
        from scipy.stats import spearmanr

        index = {t: i for i, t in enumerate(self.texts)}
        e = _normalise(embeddings)
        cos = np.array([float(e[index[a]] @ e[index[b]]) for a, b, _ in self.pairs])
        rho = spearmanr(cos, [s for _, _, s in self.pairs]).statistic
        return 0.0 if math.isnan(rho) else float(rho)


@dataclass(frozen=True)
class LabelsTask:
    """Labelled texts, scored by a logistic-regression probe's cross-validated accuracy."""

    name: str
    examples: list[tuple[str, str]]  # (label, text)
    folds: int = 5
    seed: int = 0
    metric: str = "probe_accuracy"

    @property
    def texts(self) -> list[str]:
        return _unique([t for _, t in self.examples])

    def score(self, embeddings: np.ndarray) -> float:
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import StratifiedKFold, cross_val_score

        index = {t: i for i, t in enumerate(self.texts)}
        x = _normalise(embeddings)[[index[t] for _, t in self.examples]]
        y = np.array([label for label, _ in self.examples])
        smallest = min(np.unique(y, return_counts=True)[1])
        folds = StratifiedKFold(n_splits=min(self.folds, int(smallest)), shuffle=True, random_state=self.seed)
        return float(cross_val_score(LogisticRegression(max_iter=2000), x, y, cv=folds, scoring="accuracy").mean())


def load_task(spec: str) -> PairsTask | LabelsTask:
    """``pairs:FILE`` or ``labels:FILE`` (see the module docstring), checked line by line."""
    kind, sep, path = spec.partition(":")
    if not sep or kind not in TASK_KINDS or not path:
        raise AnyshapeError(f"task {spec!r}: give pairs:FILE (text1<TAB>text2<TAB>score) or labels:FILE (label<TAB>text)")
    rows = _read_rows(Path(path), 3 if kind == "pairs" else 2, kind)
    name = f"{kind}:{Path(path).name}"
    if kind == "pairs":
        pairs = []
        for line, (a, b, value) in rows:
            try:
                score = float(value)
            except ValueError:
                raise AnyshapeError(f"{path}:{line}: the score {value!r} is not a number") from None
            if not math.isfinite(score):
                raise AnyshapeError(f"{path}:{line}: the score {value!r} is not finite")
            pairs.append((a, b, score))
        if len({s for _, _, s in pairs}) < 2:
            raise AnyshapeError(f"{path}: every pair has the same score; a correlation needs at least two")
        return PairsTask(name, pairs)
    examples = [(label, text) for _, (label, text) in rows]
    counts: dict[str, int] = {}
    for label, _ in examples:
        counts[label] = counts.get(label, 0) + 1
    if len(counts) < 2 or min(counts.values()) < 2:
        raise AnyshapeError(f"{path}: a probe needs at least 2 labels with at least 2 texts each; found {counts}")
    return LabelsTask(name, examples)


def _read_rows(path: Path, columns: int, kind: str) -> list[tuple[int, list[str]]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AnyshapeError(f"{kind} file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise AnyshapeError(f"cannot read {kind} file {path} as UTF-8 text: {e}") from None
    rows = []
    for i, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip() or raw.startswith("#"):
            continue
        parts = raw.split("\t")
        if len(parts) != columns or not all(p.strip() for p in parts):
            form = "text1<TAB>text2<TAB>score" if kind == "pairs" else "label<TAB>text"
            raise AnyshapeError(f"{path}:{i}: expected {form}, got {len(parts)} tab-separated field(s)")
        rows.append((i, [p.strip() for p in parts]))
    if len(rows) < MIN_EXAMPLES:
        raise AnyshapeError(f"{path} has {len(rows)} example(s); a task metric needs at least {MIN_EXAMPLES}")
    return rows


def _unique(texts: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(texts))


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)


class TaskEvaluator:
    """Scores encoder shapes of one base model on a task: the texts tokenised once, embedded per shape."""

    def __init__(self, model: Any, family: Any, space: Any, tokenizer: Any, task: PairsTask | LabelsTask, *,
                 seq_len: int = 128, batch_size: int = 64):
        from nas.supernet.evaluate import SubnetEvaluator

        if family.kind != "encoder":
            raise AnyshapeError(f"task metrics ({task.name}) score sentence embeddings; {family.name} is a decoder "
                                "(its metrics are perplexity and token_accuracy)")
        self.task = task
        texts = task.texts
        # sorted by length so that each batch pads little; ``order`` maps rows back to ``texts``
        self.order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        batches = []
        for start in range(0, len(texts), batch_size):
            chunk = [texts[i] for i in self.order[start : start + batch_size]]
            enc = tokenizer(chunk, padding="longest", truncation=True, max_length=seq_len, return_tensors="pt")
            batches.append({k: v.to(torch.int64) for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")})
        self.evaluator = SubnetEvaluator(model, family, space, batches)

    def score(self, layers: tuple[int, ...], cuts: Any = None, hooks: Any = None) -> float:
        rows = self.evaluator.embeddings(layers, cuts=cuts, hooks=hooks).double().numpy()
        embeddings = np.empty_like(rows)
        embeddings[self.order] = rows
        return self.task.score(embeddings)

    def base_score(self) -> float:
        return self.score(tuple(range(self.evaluator.space.num_layers)))
