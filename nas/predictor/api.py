"""The predictor commands as library functions: find the table, fit on first use, predict, evaluate."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from nas.errors import AnyshapeError
from nas.predictor.table import table_predictor, warn_about_table
from nas.shape import Shape
from nas.workload import Workload


def predictor_path(tables_root: str | Path, device: str, runtime: str, table: str) -> Path:
    return Path(tables_root) / device / runtime / f"{table}.predictor.json"


def predictor_for(
    device: str, runtime: str, model: str, *, tables_root: str | Path = "latency_tables", table: str | None = None,
    refit: bool = False, seed: int = 0, allow_lut_only: bool = False, holdout_fraction: float = 0.4,
    calibrated: bool = True, calibration: str | Path | None = None,
) -> tuple[Any, Any]:  # fmt: skip
    """The predictor for (device, runtime, model's table): this machine's calibration of it where one applies.

    Without a calibration: the table's saved predictor, fit and saved on first use
    (``holdout_fraction`` of the table's whole-model rows, a seeded split, are never fit on, so
    that ``anyshape predictor eval`` can score them). With ``calibrated`` (the default), a
    calibration of this machine in the per-user cache (``anyshape calibrate``), or the explicit
    ``calibration`` file, wraps it (:class:`~nas.predictor.calibration.CalibratedPredictor`); a
    calibration fit on another device's table (or a roofline) serves a device with no table.
    """
    from nas.predictor.calibration import find_calibration, load_calibration_file
    from profilers.run import config_sha256, resolve_model_spec
    from profilers.tables import find_tables_root

    tables_root = find_tables_root(tables_root)
    spec = resolve_model_spec(model)
    name = table or spec.name
    csv_path = Path(tables_root) / device / runtime / f"{name}.csv"
    record, why_not = None, None
    if calibration is not None:
        record = load_calibration_file(calibration)
    elif calibrated:
        record, why_not = find_calibration(device, runtime, name)
    own = record is not None and record.prior.get("kind") == "table" and (record.prior.get("device"), record.prior.get("name")) == (device, name)
    if record is not None and not own:  # fit on another device's table or a roofline: rebuild that prior
        from nas.predictor.calibration import CalibratedPredictor, prior_from_record

        return CalibratedPredictor(prior_from_record(record, dict(spec.config)), record), spec
    if not csv_path.is_file():
        others = sorted({p.parent.parent.name for p in Path(tables_root).glob(f"cpu-*/{runtime}/{name}.csv")}
                        if device.startswith("cpu-") else {p.parent.parent.name for p in Path(tables_root).glob(f"*/{runtime}/{name}.csv")})
        transfer = (f" or calibrate this machine from another device's table ({', '.join(others)}): "
                    f"anyshape calibrate --device {device} --runtime {runtime} --model {model} --prior auto") if others else ""
        raise AnyshapeError(f"no latency table {csv_path}" + (f" and no calibration ({why_not})" if why_not else "")
                            + f"; build it with: anyshape profile --device {device} --runtime {runtime} --model {model}{transfer}")
    warn_about_table(csv_path, device, name)
    predictor = table_predictor(csv_path, dict(spec.config), refit=refit, seed=seed, allow_lut_only=allow_lut_only,
                                holdout_fraction=holdout_fraction)  # fmt: skip
    if why_not:
        sys.stderr.write(f"anyshape: note: not calibrated: {why_not}\n")
    if record is None:
        return predictor, spec
    from nas.predictor.calibration import CalibratedPredictor, stale_reason

    stale = stale_reason(record, predictor, config_sha256(spec.config))
    if stale is None:
        return CalibratedPredictor(predictor, record), spec
    if calibration is not None:
        raise AnyshapeError(f"calibration {calibration} does not apply: {stale}; run anyshape calibrate again")
    sys.stderr.write(f"anyshape: note: not calibrated: this machine's calibration of {device}/{runtime}/{name} is stale ({stale}); "
                     f"run anyshape calibrate --device {device} --runtime {runtime} --model {model}\n")
    return predictor, spec


def shape_for_prediction(spec: Any, shape: dict[str, Any]) -> Shape:
    """Resolve a shape for latency (which layers are kept does not matter, only how many)."""
    data = dict(shape)
    if "depth" in data and "layers" not in data:
        depth = data.pop("depth")
        if not isinstance(depth, int) or isinstance(depth, bool):
            raise AnyshapeError(f"shape.depth must be an integer, got {depth!r}")
        data["layers"] = list(range(depth))
    return Shape.from_dict(data).resolve(spec.family.space(spec.config))


def predict_latency(
    device: str, runtime: str, model: str, shape: dict[str, Any], workload: Workload, *, tables_root: str | Path = "latency_tables",
    table: str | None = None, calibrated: bool = True, calibration: str | Path | None = None,
) -> dict[str, Any]:  # fmt: skip
    """``anyshape predictor predict``: one shape's predicted latency with its source, calibration and any flag."""
    from nas.predictor.calibration import is_calibrated

    # as search does: a table too thin to fit (a roofline estimate) predicts its lookup-table sum, with a note
    predictor, spec = predictor_for(device, runtime, model, tables_root=tables_root, table=table, calibrated=calibrated,
                                    calibration=calibration, allow_lut_only=True)  # fmt: skip
    resolved = shape_for_prediction(spec, shape)
    latency = float(predictor.predict([resolved], workload)[0])
    flag = predictor.flags([resolved], workload, predicted=[latency])[0]
    here = is_calibrated(predictor, workload)
    return {
        "latency_ms": round(latency, 6),
        "source": predictor.source,
        "table": predictor.label,
        "workload": workload.name,
        "shape": resolved.to_dict(),
        "model": predictor.chosen_for(workload),
        "calibrated": here,
        "calibration": predictor.record.describe() if here else None,
        "flag": flag,
    }
