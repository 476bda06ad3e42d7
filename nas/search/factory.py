"""The real search problem: a supernet's shapes, held-out accuracy, a table's latency predictor.

Accuracy is the supernet's own masked forward (with a trained supernet's adapters merged for
the shape) on the supernet's held-out batches (the token rows it stores, the same in every worker): perplexity for
decoders (minimised; ``--metric token_accuracy``: the share of next tokens predicted, maximised), mean cosine to the full model's sentence
embeddings for encoders (maximised), or a task of the user's labelled data (``--metric pairs:FILE | labels:FILE``,
:mod:`nas.supernet.tasks`, maximised). Latency is the predictor of the device/runtime table for the base model, with this machine's
calibration (``anyshape calibrate``) when ``factory_args["calibrated"]`` and one applies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from nas.errors import AnyshapeError
from nas.search.problem import SearchProblem, SearchSpace, uniform_baselines
from nas.shape import Shape
from nas.supernet.tasks import PairsTask, TaskEvaluator, load_task
from nas.workload import Workload

#: ``--metric`` names of the held-out data's own metrics, per model kind (tasks: ``pairs:FILE``, ``labels:FILE``).
BUILTIN_METRICS = {"encoder": ("cosine",), "decoder": ("perplexity", "token_accuracy")}


@dataclass
class HeldoutAccuracy:
    """Scores shapes with the supernet's masked forward on held-out batches."""

    evaluator: Any
    supernet: Any
    model: Any
    family: Any
    metric: str
    direction: Literal["maximize", "minimize"]
    smol: Any = field(default=None, init=False)

    def __post_init__(self) -> None:
        from nas.adapters.smol import smol_from_supernet

        self.smol = smol_from_supernet(self.supernet)  # a trained supernet's adapters (None: untrained)

    def __call__(self, shape: Shape) -> float:
        from nas.finetune.apply import subnet_of

        layers, cuts, hooks = subnet_of(self.supernet, self.family, self.smol, shape)
        if isinstance(self.evaluator, TaskEvaluator):
            return float(self.evaluator.score(layers, cuts=cuts, hooks=hooks))
        return float(self.evaluator.score(layers, cuts=cuts, hooks=hooks).metrics[self.metric])


class ShapeTaskScores:
    """Scores of a supernet's shapes on named tasks (``{name: "pairs:FILE" | "labels:FILE"}``), beside the base model's."""

    def __init__(self, supernet_dir: str | Path, tasks: Mapping[str, str], *, model: str | None = None, seq_len: int = 128):
        from nas.adapters.smol import smol_from_supernet
        from nas.modeling import load_model
        from nas.supernet.calibration import load_tokenizer
        from nas.supernet.cut import load_supernet_for

        self.supernet, source, _ = load_supernet_for(Path(supernet_dir), model=model)
        self.net, self.family = load_model(source)
        self.smol = smol_from_supernet(self.supernet)
        tokenizer = load_tokenizer(source.path)
        self.evaluators = {name: TaskEvaluator(self.net, self.family, self.supernet.space, tokenizer, load_task(spec), seq_len=seq_len)
                           for name, spec in tasks.items()}

    def base(self) -> dict[str, float]:
        return {name: e.base_score() for name, e in self.evaluators.items()}

    def __call__(self, shape: Shape) -> dict[str, float]:
        from nas.finetune.apply import subnet_of

        layers, cuts, hooks = subnet_of(self.supernet, self.family, self.smol, shape)
        return {name: e.score(layers, cuts=cuts, hooks=hooks) for name, e in self.evaluators.items()}


def task_evaluator(spec: str, sha256: str | None, net: Any, family: Any, supernet: Any, model_path: Path,
                   calibration: Any) -> tuple[TaskEvaluator, dict[str, Any]]:
    """The ``--metric pairs:FILE | labels:FILE`` evaluator, refusing a file changed since the study began."""
    import hashlib

    from nas.supernet.calibration import load_tokenizer

    task = load_task(spec)
    path = Path(spec.partition(":")[2])
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if sha256 is not None and digest != sha256:
        raise AnyshapeError(f"--metric file {path} changed since the study began (sha256 {sha256[:12]} -> {digest[:12]}); "
                            "use another --study name")
    evaluator = TaskEvaluator(net, family, supernet.space, load_tokenizer(model_path), task, seq_len=calibration.seq_len)
    rows = len(task.pairs) if isinstance(task, PairsTask) else len(task.examples)
    return evaluator, {"name": task.name, "metric": task.metric, "path": str(path.absolute()), "sha256": digest, "rows": rows,
                       "base_score": evaluator.base_score()}


@dataclass
class TablePredictor:
    """Adapts a fitted :class:`~nas.predictor.LatencyPredictor` to the search's protocol."""

    predictor: Any

    @property
    def source(self) -> str:
        return str(self.predictor.source)

    def predict(self, shapes: Sequence[Shape], workload: Workload) -> np.ndarray:
        return np.asarray(self.predictor.predict(list(shapes), workload))


def supernet_problem(config: Any) -> SearchProblem:
    """Factory named by ``anyshape search``: ``factory_args`` holds supernet, model, tables, table, min_depth."""
    import torch

    from nas.modeling import load_model
    from nas.predictor.api import predictor_for
    from nas.supernet.calibration import CalibrationConfig, heldout_batches
    from nas.supernet.cut import load_supernet_for
    from nas.supernet.evaluate import SubnetEvaluator

    args: Mapping[str, Any] = config.factory_args
    supernet_dir = Path(args["supernet"])
    supernet, source, sha = load_supernet_for(supernet_dir, model=args.get("model"))
    from nas.predictor.calibration import is_calibrated

    # studies made before calibrations existed have no "calibrated" argument: they keep their table's predictions
    predictor, _ = predictor_for(
        config.device, config.runtime, args.get("latency_model") or supernet.base_source,
        tables_root=args.get("tables", "latency_tables"), table=args.get("table"), allow_lut_only=True,
        calibrated=bool(args.get("calibrated", False)),
    )  # fmt: skip
    latency_calibration = predictor.record.describe() if is_calibrated(predictor, config.workload) else None
    torch.manual_seed(config.seed)
    net, family = load_model(source)
    calibration = CalibrationConfig(**dict(supernet.build_config.get("calibration") or {}))
    heldout = heldout_batches(supernet, source.path, family, int(source.config_dict().get("vocab_size") or 1 << 62))
    evaluator: Any = SubnetEvaluator(net, family, supernet.space, heldout)
    metric, direction = ("perplexity", "minimize") if family.kind == "decoder" else ("cosine", "maximize")
    task_record = None
    spec = args.get("metric")
    if spec in {m for names in BUILTIN_METRICS.values() for m in names}:
        if spec not in BUILTIN_METRICS[family.kind]:
            raise AnyshapeError(f"--metric {spec} is not a metric of {family.kind}s; they take "
                                + ", ".join(BUILTIN_METRICS[family.kind]) + (", pairs:FILE or labels:FILE" if family.kind == "encoder" else ""))
        metric, direction = spec, "minimize" if spec == "perplexity" else "maximize"
    elif spec not in (None, "default"):
        evaluator, task_record = task_evaluator(spec, args.get("metric_sha256"), net, family, supernet, source.path, calibration)
        metric, direction = evaluator.task.metric, "maximize"
    min_depth = int(args.get("min_depth") or min(r["depth"] for r in supernet.depth_tables[supernet.default_depth_table].rows))
    space = SearchSpace.from_space(supernet.space, min_depth=min_depth)
    return SearchProblem(
        space=space,
        model_space=supernet.space,
        resolve=supernet.resolve_shape,
        accuracy=HeldoutAccuracy(evaluator, supernet, net, family, metric, direction),  # type: ignore[arg-type]
        latency=TablePredictor(predictor),
        vocab_size=int(source.config_dict().get("vocab_size") or 0),
        dtype_bytes=4,
        supernet_sha256=supernet.sha256(),
        provenance={
            "base_model": {"source": supernet.base_source, "sha256": sha},
            "supernet": {"path": str(supernet_dir.absolute()), "sha256": supernet.sha256()},
            "latency_table": predictor.label,
            "latency_calibration": latency_calibration,
            **({"accuracy_task": task_record} if task_record else {}),
        },
        baseline_shapes=uniform_baselines(supernet.space, space),
    )
