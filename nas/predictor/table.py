"""A latency table's fitted predictor: saved beside the table (or in the per-user cache where the
table's folder is read-only), fit on first use, with warnings about tables that may not hold here.

Below :mod:`nas.predictor.api` (the commands) and :mod:`nas.predictor.calibration` (this machine's
correction of a prior), which both start from a table's predictor.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from nas.errors import AnyshapeError
from nas.predictor.model import LatencyPredictor, fit_predictor, load_predictor


def table_predictor(csv_path: Path, model_config: dict[str, Any], *, refit: bool = False, seed: int = 0,
                    allow_lut_only: bool = False, holdout_fraction: float = 0.4) -> LatencyPredictor:  # fmt: skip
    """The table's saved predictor (beside it, or in the per-user cache where its folder is read-only,
    as the tables shipped in the package are), fit and saved on first use or with ``refit``."""
    path = predictor_file(csv_path)
    if path.is_file() and not refit:
        predictor = load_predictor(path)
        if predictor.refit_reason:
            sys.stderr.write(f"anyshape: note: predictor {path.name} was {predictor.refit_reason}\n")
        return predictor
    predictor = fit_predictor(csv_path, model_config, seed=seed, allow_lut_only=allow_lut_only, holdout_fraction=holdout_fraction)
    if predictor.refit_reason:
        sys.stderr.write(f"anyshape: note: {csv_path.name}: {predictor.refit_reason}\n")
    predictor.save(path)
    return predictor


def predictor_file(csv_path: Path) -> Path:
    """Where the predictor of the table at ``csv_path`` is saved: beside it, else ``<cache>/predictors/<device>/<runtime>/``."""
    import os

    beside = csv_path.with_name(f"{csv_path.stem}.predictor.json")
    if os.access(csv_path.parent, os.W_OK):
        return beside
    from nas._io import cache_dir

    return cache_dir() / "predictors" / csv_path.parent.parent.name / csv_path.parent.name / beside.name


def warn_about_table(csv_path: Path, device: str, name: str) -> None:
    """Say so when a measured table's latencies may not hold: measured on another CPU model than this
    machine's slug names, on a noisy host with raw rows (its meta.json load.note says what to do), or
    (ONNX Runtime) on a model whose equal layers the runtime shared."""
    from profilers.environment import cpu_mismatch, cpu_slug
    from profilers.tables import table_meta

    try:
        meta = table_meta(csv_path)
    except AnyshapeError:
        return
    if not meta.measured:
        return
    runtime = csv_path.parent.name
    redo = f"re-measure it with anyshape profile --device {device} --runtime {runtime} ... --overwrite"
    mismatch = cpu_mismatch(dict(meta.fingerprint)) if device == cpu_slug() else None
    if mismatch:
        sys.stderr.write(f"anyshape: warning: {device}/{runtime}/{name} was {mismatch}; its latencies may not "
                         f"hold here (prefill can differ 2x across CPU generations): {redo}\n")
    if meta.noisy_host and not (meta.protocol and meta.protocol.anchored):  # anchored rows hold up there
        sys.stderr.write(f"anyshape: warning: {device}/{runtime}/{name} was measured on a noisy host (its passes "
                         f"disagreed by {float(meta.load.get('speed_spread') or 0):.0%}): expect larger errors; "
                         f"its meta.json load.note says what to do\n")
    if runtime == "onnxruntime" and "weights" not in meta.runtime_info:
        sys.stderr.write(f"anyshape: warning: {device}/{runtime}/{name} was measured on models whose layers held equal "
                         f"weights, which ONNX Runtime shares (its decode rows read too fast): {redo}\n")
