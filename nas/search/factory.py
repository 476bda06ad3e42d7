"""The real search problem: a supernet's shapes, held-out accuracy, a table's latency predictor.

Accuracy is the supernet's own masked forward (with a trained supernet's adapters merged for
the shape) on the held-out batches of its calibration record (the same data in every worker, rebuilt from the recorded config): perplexity for
decoders (minimised), mean cosine to the full model's sentence embeddings for encoders
(maximised). Latency is the predictor of the device/runtime table for the base model, with this machine's
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
from nas.workload import Workload


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
        from nas.finetune.smol import smol_from_supernet

        self.smol = smol_from_supernet(self.supernet)  # a trained supernet's adapters (None: untrained)

    def __call__(self, shape: Shape) -> float:
        from nas.cuts import plan_cuts
        from nas.finetune.apply import shape_hooks

        assert shape.layers is not None
        cuts = plan_cuts(self.supernet.space, shape, self.supernet.orders)
        hooks = shape_hooks(self.supernet, self.family, self.smol, shape, cuts)  # merged adapters, bias compensation
        score = self.evaluator.score(tuple(shape.layers), cuts=cuts, hooks=hooks)
        return float(score.metrics[self.metric])


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
    from nas.supernet.calibration import CalibrationConfig, prepare_data
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
    data = prepare_data(source.path, family, calibration, int(source.config_dict().get("vocab_size") or 1 << 62))
    if data.record.get("heldout_sha256") and data.record.get("heldout_sha256") != (supernet.calibration or {}).get("heldout_sha256"):
        raise AnyshapeError("the held-out data rebuilt from the supernet's record differs from the one it was built with")
    evaluator = SubnetEvaluator(net, family, supernet.space, data.heldout)
    metric, direction = ("perplexity", "minimize") if family.kind == "decoder" else ("cosine", "maximize")
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
        },
        baseline_shapes=uniform_baselines(supernet.space, space),
    )
