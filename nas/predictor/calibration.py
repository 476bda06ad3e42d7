"""Few-shot calibration: a table's predictor corrected to *this* machine with K measurements.

A latency table ranks shapes well on every machine of its kind, but its level does not travel:
a fresh VM of the same CPU kind ran 4-66 % slower than the table's predictions (issue 20). So
``anyshape calibrate`` times K whole-model shapes here and now, spread over the predicted
latency range (the full model included), and fits a small correction of the prior's
predictions per workload, in log space::

    none          log t = log p
    level         log t = log p + a
    level+slope   log t = log p + a + (b - 1) (log p - mean log p)

``a`` and ``b - 1`` are shrunk toward the prior (ridge), and the correction with the lowest
leave-one-out error on the K shapes is kept: ``none`` is always a candidate, so a calibration
can never score worse than the uncalibrated predictor on its own measurements. The prior is the
machine's own table; on a device with no table, another device's table or a roofline estimate
(:func:`calibrate` ``prior``), which is how an A5000 or Jetson owner gets a usable predictor in
minutes instead of a full profile.

A calibration is a record in a per-user cache (``$ANYSHAPE_CACHE_DIR``, else
``$XDG_CACHE_HOME/anyshape`` or ``~/.cache/anyshape``), never in the repository: it holds the
machine's fingerprint, date, K, the measurements and the residuals before and after. It applies
only on the machine that made it and only to the prior it was fit on; predictions say whether
they are calibrated.

Measurements use the ``live`` protocol preset (:func:`profilers.protocol.live_protocol`): raw
wall-clock time with no speed reference, each shape the median of five passes interleaved over
all the shapes: what a user timing the model sees, and what ``verify`` then measures against a
calibrated prediction.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nas._io import cache_dir, write_json_atomic
from nas.errors import AnyshapeError
from nas.shape import Shape
from nas.workload import Workload

FORMAT = "anyshape/calibration-v1"
#: Correction kinds, simplest first (ties in leave-one-out error go to the simpler one).
KINDS = ("none", "level", "level+slope")
#: Ridge strengths (squared noise over squared prior spread): ~5 % measurement noise against a
#: level that may differ by ~50 % (almost free), and a slope that rarely moves by more than ~10 %.
LEVEL_RIDGE = (0.05 / 0.5) ** 2
SLOPE_RIDGE = (0.05 / 0.1) ** 2
#: A slope outside this range would no longer be a correction of the prior but a new model.
SLOPE_RANGE = (0.5, 2.0)
DEFAULT_SHAPES = 10
MIN_SHAPES = 3
#: Shapes drawn from the space to choose the K calibration shapes from (by predicted latency).
POOL = 400


# --------------------------------------------------------------------------- the correction


@dataclass(frozen=True)
class Correction:
    """``log t = log p + offset + (slope - 1) * (log p - pivot)``; ``kind`` says which terms were fit."""

    kind: str = "none"
    offset: float = 0.0
    slope: float = 1.0
    pivot: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise AnyshapeError(f"calibration correction kind {self.kind!r}; allowed: {', '.join(KINDS)}")
        if not SLOPE_RANGE[0] <= self.slope <= SLOPE_RANGE[1] or not np.isfinite(self.offset) or not np.isfinite(self.pivot):
            raise AnyshapeError(f"calibration correction is out of range (offset {self.offset}, slope {self.slope})")

    def apply(self, prior_ms: np.ndarray | Sequence[float]) -> np.ndarray:
        if self.kind == "none":  # the prior's numbers as they are, bit for bit
            return np.array(prior_ms, dtype=float)
        lp = np.log(np.maximum(np.asarray(prior_ms, dtype=float), 1e-12))
        return np.asarray(np.exp(lp + self.offset + (self.slope - 1.0) * (lp - self.pivot)))

    @property
    def scale_at_pivot(self) -> float:
        """How much slower (> 1) or faster this machine runs a shape of the calibration's typical size."""
        return float(np.exp(self.offset))


def fit_correction(prior_ms: Sequence[float] | np.ndarray, measured_ms: Sequence[float] | np.ndarray, kind: str) -> Correction:
    """Least squares in log space, shrunk toward the prior (:data:`LEVEL_RIDGE`, :data:`SLOPE_RIDGE`)."""
    p = np.log(np.asarray(prior_ms, dtype=float))
    r = np.log(np.asarray(measured_ms, dtype=float)) - p
    if kind == "none" or len(p) == 0:
        return Correction()
    pivot = float(p.mean())
    if kind == "level":
        return Correction("level", float(r.sum() / (len(r) + LEVEL_RIDGE)), 1.0, pivot)
    centred = p - pivot
    slope = 1.0 + float((centred * (r - r.mean())).sum() / ((centred**2).sum() + SLOPE_RIDGE))
    slope = float(np.clip(slope, *SLOPE_RANGE))
    return Correction("level+slope", float(r.sum() / (len(r) + LEVEL_RIDGE)), slope, pivot)


def leave_one_out(prior_ms: Sequence[float] | np.ndarray, measured_ms: Sequence[float] | np.ndarray, kind: str) -> np.ndarray:
    """Each shape's relative error ``predicted / measured - 1`` when the correction is fit on the others."""
    prior, measured = np.asarray(prior_ms, dtype=float), np.asarray(measured_ms, dtype=float)
    out = np.empty(len(prior))
    for i in range(len(prior)):
        keep = np.arange(len(prior)) != i
        correction = fit_correction(prior[keep], measured[keep], kind)
        out[i] = float(correction.apply(prior[i : i + 1])[0] / measured[i] - 1.0)
    return out


def choose_correction(prior_ms: Sequence[float], measured_ms: Sequence[float]) -> tuple[Correction, dict[str, float]]:
    """The correction kind with the lowest leave-one-out MAPE, fit on all shapes, and every kind's LOO MAPE.

    ``level+slope`` needs 4 shapes (3 left to fit two terms in each leave-one-out fold).
    """
    if len(prior_ms) < MIN_SHAPES:
        raise AnyshapeError(f"a calibration needs at least {MIN_SHAPES} measured shapes, got {len(prior_ms)}")
    kinds = [k for k in KINDS if k != "level+slope" or len(prior_ms) >= 4]
    scores = {k: round(float(np.mean(np.abs(leave_one_out(prior_ms, measured_ms, k)))), 6) for k in kinds}
    best = min(kinds, key=lambda k: (scores[k], KINDS.index(k)))
    return fit_correction(prior_ms, measured_ms, best), scores


# --------------------------------------------------------------------------- the record


@dataclass
class WorkloadCalibration:
    """One workload's K measurements, the prior's predictions for them and the correction chosen."""

    workload: str
    shapes: list[dict[str, int]]  # depth, heads, kv_heads, ffn
    measured_ms: list[float]
    prior_ms: list[float]
    correction: Correction
    loo_mape: dict[str, float]  # per correction kind

    def __post_init__(self) -> None:  # what is kept is what is written: 6 significant digits
        self.measured_ms = [float(f"{v:.6g}") for v in self.measured_ms]
        self.prior_ms = [float(f"{v:.6g}") for v in self.prior_ms]

    @property
    def k(self) -> int:
        return len(self.measured_ms)

    def residuals(self, which: str) -> list[float]:
        """``predicted / measured - 1`` per shape: ``before`` (the prior), ``after`` (in-sample), ``loo``."""
        prior, measured = np.asarray(self.prior_ms), np.asarray(self.measured_ms)
        if which == "before":
            values = prior / measured - 1.0
        elif which == "after":
            values = self.correction.apply(prior) / measured - 1.0
        elif which == "loo":
            values = leave_one_out(prior, measured, self.correction.kind)
        else:
            raise ValueError(which)
        return [round(float(v), 5) for v in values]

    def summary(self) -> dict[str, Any]:
        """MAPE and share within 10 %: the prior's, and leave-one-out after the correction."""
        out: dict[str, Any] = {"workload": self.workload, "k": self.k, "correction": self.correction.kind,
                               "scale": round(self.correction.scale_at_pivot, 4), "slope": round(self.correction.slope, 4)}
        for name, which in (("before", "before"), ("after_loo", "loo")):
            errors = np.abs(np.asarray(self.residuals(which)))
            out[f"mape_{name}"] = round(float(errors.mean()), 4)
            out[f"within_10pct_{name}"] = round(float((errors <= 0.10).mean()), 4)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "workload": self.workload, "k": self.k, "shapes": self.shapes,
            "measured_ms": self.measured_ms, "prior_ms": self.prior_ms,
            "correction": asdict(self.correction), "loo_mape": self.loo_mape,
            "residuals_before": self.residuals("before"), "residuals_after": self.residuals("after"),
            "residuals_loo": self.residuals("loo"),
        }  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorkloadCalibration:
        try:
            Workload.parse(str(data["workload"]))
            measured, prior = [float(v) for v in data["measured_ms"]], [float(v) for v in data["prior_ms"]]
            if len(measured) != len(prior) or len(measured) != len(data["shapes"]) or min(measured + prior) <= 0:
                raise ValueError("measured_ms, prior_ms and shapes must be positive and of one length")
            return cls(str(data["workload"]), [dict(s) for s in data["shapes"]], measured, prior,
                       Correction(**data["correction"]), {str(k): float(v) for k, v in data["loo_mape"].items()})
        except (KeyError, TypeError, ValueError) as e:
            raise AnyshapeError(f"calibration workload entry is malformed ({e})") from None


@dataclass
class CalibrationRecord:
    """What ``anyshape calibrate`` stores: where, when, against which prior, and what it measured."""

    device: str
    runtime: str
    table: str  # the model's table name (the cache key beside device and runtime)
    model_config_sha256: str
    machine: dict[str, Any]
    prior: dict[str, Any]  # kind (table | roofline), label, source, and what identifies it
    protocol: dict[str, Any]
    workloads: dict[str, WorkloadCalibration]
    created: str = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    seconds: float = 0.0
    #: With ``prior="auto"``: every candidate prior's leave-one-out MAPE over all workloads.
    candidates: list[dict[str, Any]] = field(default_factory=list)
    format: str = FORMAT

    @property
    def id(self) -> str:
        content = self.to_dict(with_id=False)
        for entry in content["workloads"].values():  # derived from the rest (and not bit-stable through a round trip)
            for key in ("residuals_before", "residuals_after", "residuals_loo"):
                entry.pop(key)
        digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
        return digest[:12]

    def covers(self, workload: Workload) -> bool:
        return workload.name in self.workloads

    def describe(self) -> dict[str, Any]:
        """The short form predictions carry (``"calibration"`` in ``--json``)."""
        return {
            "id": self.id, "created": self.created, "prior": self.prior.get("label"),
            "workloads": {name: w.summary() for name, w in self.workloads.items()},
        }  # fmt: skip

    def to_dict(self, *, with_id: bool = True) -> dict[str, Any]:
        data = {
            "format": self.format, "device": self.device, "runtime": self.runtime, "table": self.table,
            "model_config_sha256": self.model_config_sha256, "created": self.created, "seconds": round(self.seconds, 2),
            "machine": self.machine, "prior": self.prior, "protocol": self.protocol, "candidates": self.candidates,
            "workloads": {name: w.to_dict() for name, w in self.workloads.items()},
        }  # fmt: skip
        if with_id:
            data["id"] = self.id
        return data

    @classmethod
    def from_dict(cls, data: Any, where: str = "calibration") -> CalibrationRecord:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise AnyshapeError(f"{where} is not an {FORMAT} record")
        try:
            record = cls(
                device=str(data["device"]), runtime=str(data["runtime"]), table=str(data["table"]),
                model_config_sha256=str(data["model_config_sha256"]), machine=dict(data["machine"]),
                prior=dict(data["prior"]), protocol=dict(data["protocol"]),
                workloads={str(k): WorkloadCalibration.from_dict(v) for k, v in dict(data["workloads"]).items()},
                created=str(data["created"]), seconds=float(data.get("seconds") or 0.0),
                candidates=list(data.get("candidates") or []),
            )  # fmt: skip
        except (KeyError, TypeError, ValueError) as e:
            raise AnyshapeError(f"{where} is malformed ({type(e).__name__}: {e}); run anyshape calibrate again") from None
        except AnyshapeError as e:
            raise AnyshapeError(f"{where}: {e}") from None
        if not record.workloads:
            raise AnyshapeError(f"{where} holds no calibrated workload; run anyshape calibrate again")
        if data.get("id") not in (None, record.id):
            raise AnyshapeError(f"{where} was edited after it was written (its id does not match); run anyshape calibrate again")
        return record

    def save(self, path: str | Path) -> Path:
        return write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> CalibrationRecord:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise AnyshapeError(f"no calibration at {path}; make one with anyshape calibrate") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise AnyshapeError(f"calibration {path} is unreadable ({e}); run anyshape calibrate again") from None
        return cls.from_dict(data, str(path))


# --------------------------------------------------------------------------- this machine and the cache


def machine_identity() -> dict[str, Any]:
    """What makes a calibration this machine's: the CPU (vendor, family, model, cores, memory), GPU, host and machine id."""
    from profilers.environment import device_fingerprint

    fingerprint = device_fingerprint(gpu=_has_cuda())
    machine_id = ""
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            machine_id = Path(path).read_text().strip()
            break
        except OSError:
            continue
    return {**fingerprint, "hostname": platform.node(), "machine_id": machine_id}


#: The fields two identities must share for a calibration to apply (memory may read a little differently).
IDENTITY_FIELDS = ("cpu_model", "cpu_vendor", "cpu_family", "cpu_model_id", "logical_cores", "machine", "gpu_name",
                   "hostname", "machine_id")


def other_machine(recorded: dict[str, Any], here: dict[str, Any] | None = None) -> str | None:
    """How ``recorded`` differs from this machine (a one-line reason), or None when it is this machine."""
    here = machine_identity() if here is None else here
    differing = [k for k in IDENTITY_FIELDS if str(recorded.get(k) or "") != str(here.get(k) or "")]
    if not differing:
        return None
    shown = ", ".join(f"{k} {recorded.get(k)!r} here {here.get(k)!r}" for k in differing[:2])
    return f"it was made on another machine ({shown})"


def calibration_path(device: str, runtime: str, table: str, root: str | Path | None = None) -> Path:
    """``<cache>/calibrations/<device>/<runtime>/<table>.json`` (names checked as table paths are)."""
    from profilers.tables import table_csv_path

    return table_csv_path(Path(root or cache_dir()) / "calibrations", device, runtime, table).with_suffix(".json")


def list_calibrations(root: str | Path | None = None) -> list[dict[str, Any]]:
    """Every calibration in the cache, with whether it applies on this machine (``status``)."""
    folder = Path(root or cache_dir()) / "calibrations"
    here = machine_identity()
    out: list[dict[str, Any]] = []
    for path in sorted(folder.glob("*/*/*.json")) if folder.is_dir() else []:
        try:
            record = CalibrationRecord.load(path)
        except AnyshapeError as e:
            out.append({"path": str(path), "status": str(e)})
            continue
        reason = other_machine(record.machine, here)
        out.append({"path": str(path), "device": record.device, "runtime": record.runtime, "table": record.table,
                    "created": record.created, "prior": record.prior.get("label"), "id": record.id,
                    "workloads": sorted(record.workloads), "status": f"not for this machine: {reason}" if reason else "ok"})
    return out


def _has_cuda() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:  # pragma: no cover - torch is a dependency
        return False


# --------------------------------------------------------------------------- priors and the calibrated predictor


class RooflinePrior:
    """A prior with no table: ``max(bytes / bandwidth, flops / compute) + kernels * launch`` per whole model.

    On a CPU the roofs are measured here (copy bandwidth, fp32 GEMM rate); on a GPU they come from
    its published specs (``profilers.devices``). The calibration then corrects level and slope.
    """

    source = "roofline-estimate"
    chosen = "roofline"

    def __init__(self, model_config: dict[str, Any], bandwidth_gb_s: float, gflops: float, efficiency: dict[str, Any],
                 origin: str) -> None:  # fmt: skip
        from nas.families import family_for
        from profilers.cost import ModelDims
        from profilers.roofline import Efficiency

        self.family = family_for(model_config)
        self.dims = ModelDims.from_config(self.family, model_config)
        self.bandwidth_gb_s, self.gflops = float(bandwidth_gb_s), float(gflops)
        self.efficiency = Efficiency(**efficiency)
        self.origin = origin

    @classmethod
    def for_device(cls, device: str, kind: str, model_config: dict[str, Any]) -> RooflinePrior:
        from profilers.roofline import GPU_PRIOR, JETSON_PRIOR

        if kind == "cpu":
            from profilers.environment import best_bandwidth, measure_matmul_gflops

            return cls.for_cpu(model_config, best_bandwidth(256).bound_gb_s, measure_matmul_gflops(), "this CPU")
        from profilers.devices import device_spec

        spec = device_spec(device)
        eff = asdict(JETSON_PRIOR if device.startswith("jetson") else GPU_PRIOR)
        return cls(model_config, spec.memory_bandwidth_gb_s, spec.fp16_dense_tflops * 1e3, eff, f"roofline of the {spec.name} spec sheet")

    @classmethod
    def for_cpu(cls, model_config: dict[str, Any], bandwidth_gb_s: float, gflops: float, which: str) -> RooflinePrior:
        """A CPU's roofline from its measured copy bandwidth and fp32 GEMM rate (``which`` names the CPU)."""
        eff = {"memory": 0.8, "compute": 0.6, "launch_ms": 0.01, "source": f"CPU prior (roofs measured on {which})"}
        return cls(model_config, bandwidth_gb_s, gflops, eff, f"roofline of {which} ({bandwidth_gb_s:.0f} GB/s, {gflops:.0f} GFLOP/s)")

    @property
    def label(self) -> str:
        return f"{self.origin} (roofline-estimate)"

    def describe(self) -> dict[str, Any]:
        return {"kind": "roofline", "label": self.label, "source": self.source, "bandwidth_gb_s": round(self.bandwidth_gb_s, 3),
                "gflops": round(self.gflops, 3), "efficiency": asdict(self.efficiency), "origin": self.origin}

    def chosen_for(self, workload: Workload) -> str:
        return self.chosen

    def predict(self, shapes: Sequence[Shape], workload: Workload) -> np.ndarray:
        from profilers.roofline import roofline_ms
        from profilers.workload import whole_model_point

        return np.array([roofline_ms(self.dims, whole_model_point(s, workload), self.bandwidth_gb_s, self.gflops, self.efficiency)
                         for s in shapes], dtype=float)

    def flags(self, shapes: Sequence[Shape], workload: Workload, predicted: Any = None) -> list[str | None]:
        return [None] * len(shapes)


def table_prior_identity(predictor: Any) -> dict[str, Any]:
    """What identifies a table prior: its table's label, path and sha256 (a re-measured table voids the calibration)."""
    recipe = predictor.recipe
    table_path = Path(recipe.table)
    return {"kind": "table", "label": predictor.label, "source": predictor.source, "table": str(table_path.absolute()),
            "device": table_path.parent.parent.name, "name": table_path.stem, "table_sha256": recipe.table_sha256}


class CalibratedPredictor:
    """A prior predictor (a table's :class:`~nas.predictor.LatencyPredictor` or a :class:`RooflinePrior`) times
    this machine's correction, for the workloads the calibration covers (the prior's own numbers elsewhere)."""

    def __init__(self, prior: Any, record: CalibrationRecord) -> None:
        self.prior = prior
        self.record = record

    calibrated = True

    def __getattr__(self, name: str) -> Any:  # recipe, chosen, holdout_keys, bandwidth_gb_s, ...: the prior's
        if name in ("prior", "record"):
            raise AttributeError(name)
        return getattr(self.prior, name)

    @property
    def source(self) -> str:
        return str(self.prior.source)

    @property
    def label(self) -> str:
        return f"{self.prior.label}, calibrated on this machine {self.record.created[:10]} (calibration {self.record.id})"

    def covers(self, workload: Workload) -> bool:
        return self.record.covers(workload)

    def predict(self, shapes: Sequence[Shape], workload: Workload) -> np.ndarray:
        prior = np.asarray(self.prior.predict(shapes, workload), dtype=float)
        entry = self.record.workloads.get(workload.name)
        return prior if entry is None or not len(prior) else entry.correction.apply(prior)

    def flags(self, shapes: Sequence[Shape], workload: Workload, predicted: np.ndarray | None = None) -> list[str | None]:
        predicted = self.predict(shapes, workload) if predicted is None else predicted
        return list(self.prior.flags(shapes, workload, predicted=predicted))


def is_calibrated(predictor: Any, workload: Workload | None = None) -> bool:
    """Whether ``predictor`` carries this machine's calibration (for ``workload``, when given)."""
    if not getattr(predictor, "calibrated", False):
        return False
    return workload is None or bool(predictor.covers(workload))


def prior_from_record(record: CalibrationRecord, model_config: dict[str, Any]) -> Any:
    """Rebuild the prior a record was fit on (search workers do this from the record in the study's arguments)."""
    prior = record.prior
    if prior.get("kind") == "roofline":
        return RooflinePrior(model_config, prior["bandwidth_gb_s"], prior["gflops"], prior["efficiency"], prior["origin"])
    from nas.predictor.table import table_predictor

    predictor = table_predictor(Path(str(prior.get("table"))), model_config, allow_lut_only=True)
    if predictor.recipe.table_sha256 != prior.get("table_sha256"):
        raise AnyshapeError(f"calibration {record.id} was fit on {prior.get('label')}, which was re-measured since; "
                            f"run anyshape calibrate --device {record.device} --runtime {record.runtime} again")
    return predictor


def stale_reason(record: CalibrationRecord, predictor: Any, model_config_sha256: str) -> str | None:
    """Why ``record`` does not apply to ``predictor`` (the table prior it would correct), or None."""
    if record.model_config_sha256 != model_config_sha256:
        return "it was made for another model config"
    if record.prior.get("kind") == "table" and record.prior.get("table_sha256") != getattr(predictor.recipe, "table_sha256", None):
        return f"it was fit on {record.prior.get('label')}, not on {predictor.label} as it is now"
    return None


# --------------------------------------------------------------------------- choosing and measuring the shapes


def calibration_shapes(prior: Any, space: Any, workload: Workload, k: int, seed: int = 0) -> list[Shape]:
    """``k`` distinct shapes spanning the prior's predicted latency: the full model, the fastest, and even steps between (log scale)."""
    from profilers.workload import GridConfig, sample_shapes

    available = space.num_layers * len(space.head_choices()) * len(space.ffn_choices(16))
    pool = sample_shapes(space, GridConfig(whole_model_samples=min(POOL, available), whole_model_ffn_steps=16, seed=seed))
    if len(pool) < k:
        raise AnyshapeError(f"this model's shape space holds {len(pool)} distinct shapes; ask for --shapes {len(pool)} or fewer")
    predicted = np.log(np.asarray(prior.predict(pool, workload), dtype=float))
    return [pool[i] for i in spanning_indices(predicted, k, first=0)]  # sample_shapes puts the full model first


def spanning_indices(log_predicted: np.ndarray, k: int, first: int) -> list[int]:
    """``k`` indices: ``first`` (the full model), then the nearest to even steps from the fastest up to it (log scale)."""
    chosen = [first]
    for target in np.linspace(log_predicted.min(), log_predicted[first], k)[:-1]:
        free = [i for i in range(len(log_predicted)) if i not in chosen]
        chosen.append(min(free, key=lambda i: (abs(log_predicted[i] - target), i)))
    return chosen


def shape_numbers(shape: Shape) -> dict[str, int]:
    assert shape.layers is not None and shape.heads is not None and shape.kv_heads is not None and shape.ffn is not None
    return {"depth": len(shape.layers), "heads": shape.heads, "kv_heads": shape.kv_heads, "ffn": shape.ffn}


def numbers_shape(numbers: dict[str, int]) -> Shape:
    return Shape(layers=tuple(range(int(numbers["depth"]))), heads=int(numbers["heads"]), kv_heads=int(numbers["kv_heads"]),
                 ffn=int(numbers["ffn"]))


# --------------------------------------------------------------------------- anyshape calibrate


@dataclass
class CalibrationResult:
    record: CalibrationRecord
    path: Path | None

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path) if self.path else None, "id": self.record.id, "device": self.record.device,
                "runtime": self.record.runtime, "table": self.record.table, "prior": self.record.prior.get("label"),
                "seconds": round(self.record.seconds, 1), "candidates": self.record.candidates,
                "workloads": {name: w.summary() for name, w in self.record.workloads.items()}}


def calibrate(
    device: str,
    runtime: str,
    model: str,
    *,
    tables_root: str | Path = "latency_tables",
    table: str | None = None,
    prior: str = "table",
    shapes: int = DEFAULT_SHAPES,
    workloads: Sequence[Workload] | None = None,
    seed: int = 0,
    progress: bool = True,
    cache: str | Path | None = None,
    save: bool = True,
    profiler: Any = None,
    say: Callable[[str], None] = lambda message: None,
) -> CalibrationResult:
    """Time ``shapes`` whole models here and fit this machine's correction of a prior predictor.

    ``prior``: ``table`` (this device's own table), ``auto`` (the best by leave-one-out error of this
    device's table, every other device's table of this runtime and model, and the roofline),
    ``roofline``, a device slug whose table to take, or the path of a table CSV. ``workloads``:
    default every workload the prior's table has whole-model rows of (prefill:b1:s128 for
    encoders; decode:b1:c128 too for decoders without a table). ``profiler``: measure with this one
    instead of ``runtime``'s (tests pass a fake).
    """
    from profilers.devices import check_device_name
    from profilers.protocol import live_protocol
    from profilers.run import config_sha256, make_profiler, resolve_model_spec
    from profilers.workload import whole_model_point

    start = time.perf_counter()
    if not MIN_SHAPES <= shapes <= 100:
        raise AnyshapeError(f"--shapes is {shapes}; allowed range {MIN_SHAPES}..100 (about 10 is enough)")
    kind = check_device_name(device)
    _check_here(device, kind, fake=profiler is not None)
    from profilers.tables import find_tables_root

    tables_root = find_tables_root(tables_root)
    spec = resolve_model_spec(model)
    name = table or spec.name
    candidates = _candidate_priors(device, runtime, model, spec, kind, tables_root, name, prior)
    if not candidates:
        raise AnyshapeError(_no_prior_message(device, runtime, model, tables_root, name, prior))
    loads = list(workloads or _default_workloads(candidates[0], spec))
    space = spec.family.space(spec.config)
    protocol = live_protocol(rounds=1)
    passes = live_protocol().rounds
    profiler = profiler or make_profiler(runtime, kind, protocol)
    profiler.check_available()
    plan = {w.name: calibration_shapes(candidates[0], space, w, shapes, seed) for w in loads}
    say(f"calibrate: timing {shapes} whole-model shapes x {len(loads)} workload(s), {passes} interleaved passes, on "
        f"{device}/{runtime} (prior: {candidates[0].label if len(candidates) == 1 else f'best of {len(candidates)}'})")
    points = {w.name: [whole_model_point(s, w) for s in plan[w.name]] for w in loads}
    bar = _progress(shapes * len(loads) * passes, f"calibrate {device}/{runtime}/{name}", progress)
    try:
        measured = {w: measure_interleaved(profiler, spec, pts, passes, bar.update) for w, pts in points.items()}
    finally:
        bar.close()
    fits = [_fit_workloads(candidate, plan, measured) for candidate in candidates]
    scores = [float(np.mean([w.loo_mape[w.correction.kind] for w in fit.values()])) for fit in fits]
    best = int(np.argmin(scores))
    chosen = candidates[best]
    record = CalibrationRecord(
        device=device, runtime=runtime, table=name, model_config_sha256=config_sha256(spec.config), machine=machine_identity(),
        prior=_describe_prior(chosen), protocol={**protocol.to_dict(), "passes": passes, "kept": "median of the interleaved passes' raw p50"}, workloads=fits[best],
        seconds=time.perf_counter() - start,
        candidates=[{"prior": c.label, "loo_mape": round(s, 5)} for c, s in zip(candidates, scores)] if len(candidates) > 1 else [],
    )  # fmt: skip
    path = None
    if save:
        path = record.save(calibration_path(device, runtime, name, cache))
    return CalibrationResult(record, path)


def measure_interleaved(profiler: Any, spec: Any, points: Sequence[Any], passes: int,
                        tick: Callable[[int], Any] = lambda n: None) -> list[float]:
    """Each point's raw per-call p50, the median over ``passes`` passes over all of them (one built model at a time).

    On a shared VM the machine's speed wanders by 10-20 % over seconds (the 2-core Zen 3 VM: medians
    of 20 MiniLM calls 34-51 ms within 30 s); passes over every shape in turn let every shape see
    the same moments, so that their levels agree with each other, whatever moment the machine has.
    """
    runs: list[list[float]] = [[] for _ in points]
    profiler.setup()
    try:
        for _ in range(passes):
            for i, point in enumerate(points):
                runs[i].append(float(profiler.measure(spec, point).latency_ms_p50))
                tick(1)
    finally:
        profiler.teardown()
    return [float(np.median(r)) for r in runs]


def find_calibration(device: str, runtime: str, table: str, *, cache: str | Path | None = None) -> tuple[CalibrationRecord | None, str | None]:
    """This machine's calibration for (device, runtime, table), or None and why not (None: there is none)."""
    path = calibration_path(device, runtime, table, cache)
    if not path.is_file():
        return None, None
    try:
        record = CalibrationRecord.load(path)
    except AnyshapeError as e:
        return None, str(e)
    reason = other_machine(record.machine)
    if reason:
        return None, f"calibration {path} does not apply: {reason}"
    return record, None


def load_calibration_file(path: str | Path) -> CalibrationRecord:
    """An explicit calibration file (``--calibration FILE``): refused, in one line, when it is another machine's."""
    record = CalibrationRecord.load(path)
    reason = other_machine(record.machine)
    if reason:
        raise AnyshapeError(f"calibration {path} does not apply here: {reason}; run anyshape calibrate on this machine")
    return record


def _check_here(device: str, kind: str, *, fake: bool) -> None:
    """Only the machine you are on can be calibrated: a GPU slug must be this GPU's (``check_device_name``
    already refuses a CPU slug that is not this CPU's)."""
    if fake or kind == "cpu":
        return
    from profilers.run import check_gpu_is

    check_gpu_is(device)


def _candidate_priors(device: str, runtime: str, model: str, spec: Any, kind: str, root: Path, name: str, prior: str) -> list[Any]:
    from nas.predictor.table import table_predictor, warn_about_table

    def table_prior(table_device: str, tables: Path = root, table_name: str = name) -> Any:
        csv_path = tables / table_device / runtime / f"{table_name}.csv"
        warn_about_table(csv_path, table_device, table_name)
        return table_predictor(csv_path, dict(spec.config), allow_lut_only=True)

    own = root / device / runtime / f"{name}.csv"
    if prior == "table":
        return [table_prior(device)] if own.is_file() else []
    if prior == "roofline":
        return [RooflinePrior.for_device(device, kind, dict(spec.config))]
    if prior == "auto":
        out = []
        for csv_path in sorted(root.glob(f"*/{runtime}/{name}.csv")):
            if _device_kind(csv_path.parent.parent.name) != kind:  # a GPU table does not rank CPU shapes, nor the reverse
                continue
            try:
                out.append(table_prior(csv_path.parent.parent.name))
            except AnyshapeError:
                continue  # a table that does not load (other software version, too few rows) is no candidate
        out.sort(key=lambda p: (Path(p.recipe.table).parent.parent.name != device,))  # this device's own table first
        out.append(RooflinePrior.for_device(device, kind, dict(spec.config)))
        return out
    path = Path(prior)
    if path.suffix == ".csv":
        if not path.is_file():
            raise AnyshapeError(f"--prior {prior}: no such table")
        return [table_prior(path.parent.parent.name, path.parent.parent.parent, path.stem)]
    if (root / prior / runtime / f"{name}.csv").is_file():
        return [table_prior(prior)]
    raise AnyshapeError(f"--prior {prior!r}: no table {root / prior / runtime / f'{name}.csv'}; give table, auto, roofline, "
                        "a device slug with a table, or a table's .csv path")


def _device_kind(slug: str) -> str:
    from profilers.devices import DEVICES

    return "cuda" if slug in DEVICES else "cpu"


def _no_prior_message(device: str, runtime: str, model: str, root: Path, name: str, prior: str) -> str:
    others = sorted({p.parent.parent.name for p in root.glob(f"*/{runtime}/{name}.csv")
                     if _device_kind(p.parent.parent.name) == _device_kind(device)})
    hint = (f"calibrate from another device's table ({', '.join(others)}) with --prior auto" if others
            else "calibrate from a roofline estimate with --prior roofline")
    return f"no latency table {root / device / runtime / f'{name}.csv'} to calibrate; {hint}, or build one with anyshape profile"


def _default_workloads(prior: Any, spec: Any) -> list[Workload]:
    """Per phase, the workload the prior's table has most whole-model rows of (its main one; prefill first);
    for a roofline, the ARCHITECTURE defaults. Other workloads are calibrated when named (``--workload``)."""
    from collections import Counter

    from nas.predictor.model import row_workload

    recipe = getattr(prior, "recipe", None)
    if recipe is not None:  # once per calibration: the table's whole-model rows name its workloads
        from profilers.tables import load_table

        rows = load_table(recipe.table, check_software=False).rows
        counts = Counter(row_workload(r) for r in rows if r["block"] == "whole-model")
        main: dict[str, Workload] = {}
        for w in sorted(counts, key=lambda w: (-counts[w], w.name)):
            main.setdefault(w.phase, w)
        if main:
            return sorted(main.values(), key=lambda w: (w.phase != "prefill", w.name))
    if spec.family.kind == "decoder":
        return [Workload("prefill", 1, 128), Workload("decode", 1, 128)]
    return [Workload()]


def _fit_workloads(prior: Any, plan: dict[str, list[Shape]], measured: dict[str, list[float]]) -> dict[str, WorkloadCalibration]:
    out = {}
    for name, shapes in plan.items():
        predicted = [float(v) for v in prior.predict(shapes, Workload.parse(name))]
        correction, scores = choose_correction(predicted, measured[name])
        out[name] = WorkloadCalibration(name, [shape_numbers(s) for s in shapes], measured[name], predicted, correction, scores)
    return out


def _describe_prior(prior: Any) -> dict[str, Any]:
    return prior.describe() if isinstance(prior, RooflinePrior) else table_prior_identity(prior)


def _progress(total: int, label: str, enabled: bool) -> Any:
    from profilers.run import progress_bar

    return progress_bar(total, 0, label, enabled)
