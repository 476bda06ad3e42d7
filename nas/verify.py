"""``anyshape verify``: measure what the search predicted, and write it back beside the prediction.

For one exported subnet config: extract the checkpoint, score it on the supernet's held-out
data (the accuracy metric the search used, now of the real extracted model), and measure its
latency for the config's workload with the profilers' protocol on this device (the same
runtime and the same whole-model measurement that the latency tables hold). The measured
numbers are written into the config (atomically) and, when the study is reachable, into the
study attribute ``verified`` under the trial's number (finished trials are read-only in Optuna).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nas.config import SubnetConfig
from nas.errors import AnyshapeError
from nas.workload import Workload


@dataclass
class VerifyResult:
    config: Path
    shape: dict[str, Any]
    workload: str
    metric: str
    predicted_accuracy: float | None
    measured_accuracy: float
    predicted_latency_ms: float | None
    measured_latency_ms: float
    measured_latency_ms_p10: float
    measured_latency_ms_p90: float
    latency_source: str | None
    study_updated: bool
    seconds: float
    checkpoint: Path | None = None
    notes: list[str] = field(default_factory=list)
    #: The measurement as the prediction's table holds its rows (its
    #: :class:`profilers.protocol.MeasurementModel`: an anchored table's ratio to the anchor times
    #: the anchor's median over the table's run), the like-for-like number to set beside an
    #: uncalibrated prediction on a shared machine; None where the table's rows are raw times.
    measured_latency_ms_table_speed: float | None = None
    #: The prediction was calibrated to this machine (``anyshape calibrate``): compare it with the raw measurement.
    calibrated: bool = False

    @property
    def latency_error(self) -> float | None:
        if not self.predicted_latency_ms:
            return None
        return self.predicted_latency_ms / self.measured_latency_ms - 1.0

    @property
    def table_speed_error(self) -> float | None:
        """Prediction error against the measurement scaled to the table's machine speed."""
        if not self.predicted_latency_ms or not self.measured_latency_ms_table_speed:
            return None
        return self.predicted_latency_ms / self.measured_latency_ms_table_speed - 1.0


def verify(
    config_path: str | Path,
    device: str,
    runtime: str,
    *,
    out: str | Path | None = None,
    storage: str | None = None,
    studies_dir: str | Path = "studies",
    protocol: Any = None,
    tables_root: str | Path = "latency_tables",
    progress: bool = False,
) -> VerifyResult:
    """Extract, measure accuracy and latency on this device, and record them beside the prediction
    (``progress``: a timed line per phase on stderr)."""
    from nas._progress import phase
    from nas.supernet.cut import extract_from_supernet, load_supernet_for
    from profilers.devices import check_device_name
    from profilers.workload import anchor_point

    start = time.perf_counter()
    config_path = Path(config_path)
    config = SubnetConfig.load(config_path)
    if config.supernet is None:
        raise AnyshapeError(f"{config_path} names no supernet; verify needs the supernet's held-out data (export configs name one)")
    kind = check_device_name(device)
    key, workload, predicted_latency, source = _latency_entry(config, device, runtime)
    supernet, source_model, _ = load_supernet_for(config.supernet.path, sha256=config.supernet.sha256)
    shape = supernet.resolve_shape(config.shape)

    with tempfile.TemporaryDirectory(prefix="anyshape-verify-") as scratch:
        target = Path(out) if out is not None else Path(scratch) / "checkpoint"
        with phase("verify: extract the subnet", progress):
            extract_from_supernet(config.supernet.path, shape, target, config=config, overwrite=out is not None)
        with phase("verify: held-out accuracy", progress):
            metric, measured_accuracy, family = _heldout_accuracy(supernet, source_model, target)
        point = whole_model_point(shape, workload)
        anchor = anchor_point(family.space(source_model.config_dict()), point).key
        predicted_entry = dict((config.objectives.get("latency") or {}).get(key) or {})
        calibrated = bool(predicted_entry.get("calibrated"))
        # calibrated to this machine's raw speed: measured the way the calibration was (the live preset);
        # else the way the prediction's table was (its protocol), and expressed as its rows are
        model = live_model() if calibrated else table_model(predicted_entry.get("table") or source,
                                                            predicted_entry.get("tables_root") or tables_root)
        measure_with = protocol or model.protocol
        with phase(f"verify: latency on this {kind} ({runtime}, {workload.name}, protocol {measure_with.name})", progress):
            measurement = measure_latency(source_model, family, shape, workload, runtime, kind, measure_with)

    predicted_accuracy = (config.objectives.get("accuracy") or {}).get("value")
    table_speed = None
    if model.protocol.anchored and measurement.anchor_ratio is not None and anchor in model.baselines:
        table_speed = model.at_table_speed(measurement, anchor)
    objectives = _with_measurements(config.objectives, key, metric, measured_accuracy, measurement, measure_with.name, table_speed)
    updated = SubnetConfig(config.base_model, config.shape, config.supernet, objectives, config.format)
    updated.save(config_path)
    study_updated = _write_to_study(objectives, storage, Path(studies_dir), measured_accuracy, measurement.latency_ms_p50)
    return VerifyResult(
        config=config_path,
        shape=shape.to_dict(),
        workload=workload.name,
        metric=metric,
        predicted_accuracy=predicted_accuracy,
        measured_accuracy=measured_accuracy,
        predicted_latency_ms=predicted_latency,
        measured_latency_ms=measurement.latency_ms_p50,
        measured_latency_ms_p10=measurement.latency_ms_p10,
        measured_latency_ms_p90=measurement.latency_ms_p90,
        latency_source=source,
        study_updated=study_updated,
        measured_latency_ms_table_speed=table_speed,
        calibrated=calibrated,
        seconds=time.perf_counter() - start,
        checkpoint=Path(out).absolute() if out is not None else None,
    )


def live_model() -> Any:
    """The measurement model of the ``live`` preset (raw time): what ``anyshape calibrate`` measured."""
    from profilers.protocol import MeasurementModel, live_protocol

    return MeasurementModel(live_protocol())


def table_model(source: str | None, tables_root: str | Path) -> Any:
    """The measurement model of the prediction's table (``source``: its label ``device/runtime/name (measured)``).

    Built from the table's meta (:meth:`profilers.tables.TableMeta.measurement_model`), the object
    the profiler wrote its rows with; the ``quiet`` preset (raw time) where there is no measured table.
    """
    from profilers.protocol import MeasurementModel, load_protocol
    from profilers.tables import find_tables_root, table_csv_path, table_meta

    tables_root = find_tables_root(tables_root)
    parts = (source or "").split(" ")[0].split("/")
    if len(parts) == 3:
        try:
            meta = table_meta(table_csv_path(tables_root, *parts))
        except AnyshapeError:
            meta = None
        model = meta.measurement_model() if meta is not None else None
        if model is not None:
            return model
    return MeasurementModel(load_protocol("quiet"))


def _latency_entry(config: SubnetConfig, device: str, runtime: str) -> tuple[str, Workload, float | None, str | None]:
    """The config's prediction for this device and runtime (and its workload)."""
    latency = dict(config.objectives.get("latency") or {})
    for key, entry in latency.items():
        parts = str(key).split("/")
        if len(parts) == 3 and parts[0] == device and parts[1] == runtime:
            return key, Workload.parse(parts[2]), (entry or {}).get("predicted_ms"), (entry or {}).get("source")
    known = ", ".join(latency) or "none"
    if latency:
        raise AnyshapeError(f"the config has no prediction for {device}/{runtime} (it has: {known}); verify on the device it was searched for")
    workload = Workload()
    return f"{device}/{runtime}/{workload.name}", workload, None, None


def whole_model_point(shape: Any, workload: Workload) -> Any:
    """:func:`profilers.workload.whole_model_point` (imported on use: verify's import stays free of torch)."""
    from profilers.workload import whole_model_point as point

    return point(shape, workload)


def _heldout_accuracy(supernet: Any, source_model: Any, checkpoint: Path) -> tuple[str, float, Any]:
    """(metric, value, family): the extracted checkpoint scored against the base on the supernet's own held-out pool."""
    import torch

    from nas.modeling import load_model
    from nas.supernet.calibration import heldout_batches
    from nas.supernet.evaluate import SubnetEvaluator

    with torch.no_grad():
        base, family = load_model(source_model)
        heldout = heldout_batches(supernet, source_model.path, family, int(source_model.config_dict().get("vocab_size") or 1 << 62))
        evaluator = SubnetEvaluator(base, family, supernet.space, heldout)
        extracted, _ = load_model(str(checkpoint))
        metric = "perplexity" if family.kind == "decoder" else "cosine"
        return metric, float(evaluator.score_model(extracted).metrics[metric]), family


def _with_measurements(objectives: Any, key: str, metric: str, accuracy: float, measurement: Any, protocol: str,
                       table_speed: float | None) -> dict[str, Any]:
    """A copy of a config's objectives with the measured accuracy and latency written beside the predictions."""
    out = _deep_copy(objectives)
    recorded = out.setdefault("accuracy", {})
    recorded["measured"] = round(accuracy, 6)
    recorded.setdefault("metric", metric)
    entry = out.setdefault("latency", {}).setdefault(key, {})
    entry.update(
        measured_ms=round(measurement.latency_ms_p50, 4),
        measured_ms_p10=round(measurement.latency_ms_p10, 4),
        measured_ms_p90=round(measurement.latency_ms_p90, 4),
        measured_repeats=measurement.repeats,
        measured_noisy=bool(measurement.noisy),
        measured_on=time.strftime("%Y-%m-%d"),
        measured_protocol=protocol,
    )
    if table_speed is not None:
        entry["measured_ms_table_speed"] = round(table_speed, 4)
        entry["measured_anchor_ratio"] = round(float(measurement.anchor_ratio), 6)
    return out


def measure_latency(source: Any, family: Any, shape: Any, workload: Workload, runtime: str, kind: str, protocol: Any) -> Any:
    """Whole-model latency of ``shape`` for ``workload``, with the profilers' runtime and ``protocol``, on this device.

    ``protocol.rounds`` passes on one built model, the middle one kept (the raw p50 judged, or
    the ratio to the workload's anchor where the protocol anchors).
    """
    from profilers.blocks import ModelSpec
    from profilers.run import make_profiler

    profiler = make_profiler(runtime, kind, protocol)  # type: ignore[arg-type]
    profiler.check_available()
    spec = ModelSpec(Path(str(source.path)).name, family, source.config_dict())
    profiler.setup()
    try:
        return profiler.measure_rounds(spec, whole_model_point(shape, workload))
    finally:
        profiler.teardown()


def _write_to_study(objectives: dict[str, Any], storage: str | None, studies_dir: Path, accuracy: float, latency_ms: float) -> bool:
    info = objectives.get("study") or {}
    name, number = info.get("name"), info.get("trial")
    if name is None or number is None:
        return False
    url = storage or f"sqlite:///{(studies_dir / name / 'study.db').absolute()}"
    try:
        from nas.search.storage import load_study

        study = load_study(url, name)
    except AnyshapeError:
        return False
    if not any(t.number == number for t in study.get_trials(deepcopy=False)):
        return False
    # finished trials are read-only in Optuna: measurements go to the study attribute "verified",
    # keyed by trial number, which optuna-dashboard shows beside the trials
    verified = dict(study.user_attrs.get("verified") or {})
    verified[str(number)] = {"measured_latency_ms": latency_ms, "measured_accuracy": accuracy, "date": time.strftime("%Y-%m-%d")}
    study.set_user_attr("verified", verified)
    return True


def _deep_copy(data: Any) -> Any:
    import copy

    return copy.deepcopy(dict(data))
