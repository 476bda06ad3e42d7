"""A learned end-to-end latency predictor for one device, runtime and model, fit on a table.

Features are the shape and workload numbers plus the lookup-table sum of the blocks, the
analytic FLOPs and bytes; the target is ``log(latency / lut_sum)``, a correction of the
lookup-table estimate, so that trees and networks never have to extrapolate absolute
latencies. Candidates (gradient-boosted trees, an MLP, a ridge fit, and an additive
non-negative fit of overhead + blocks + FLOPs + bytes + layers) are compared by
cross-validated error on the fitting rows and the best is kept, separately for each workload
(prefill and decode differ in what their latency follows), with one model over all workloads
for a workload too thin to fit alone.

Portability. A saved predictor is its *recipe* (table path and sha256, candidates, seed,
held-out split) in JSON plus the fitted model in a joblib file stamped with the scikit-learn
version. Loading under another scikit-learn version (or a file that fails to load) never
unpickles across versions: it refits from the recipe, deterministically, and says so.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from nas._io import write_json_atomic
from nas.errors import AnyshapeError
from nas.predictor.lut import BlockLUT, workload_keys
from nas.shape import Shape
from nas.workload import Workload

FORMAT = "anyshape/latency-predictor-v1"
FEATURES = (
    "depth", "heads", "kv_heads", "ffn", "hidden", "decode", "batch", "seq_len", "context_len",
    "log_lut_ms", "log_flops", "log_bytes",
)  # fmt: skip
CANDIDATES = ("gbt", "mlp", "ridge", "additive")
#: The feature columns that name a row's workload (rows of one workload share them).
WORKLOAD_COLUMNS = [FEATURES.index(f) for f in ("decode", "batch", "seq_len", "context_len")]


@dataclass(frozen=True)
class FitRecipe:
    """Everything needed to refit the same predictor from the same table."""

    table: str  # path of the CSV
    table_sha256: str
    model_config: dict[str, Any]  # config.json of the base model (family, sizes)
    candidates: tuple[str, ...] = CANDIDATES
    holdout_fraction: float = 0.4
    seed: int = 0
    cv_folds: int = 5
    #: With too few whole-model rows, predict the plain lookup-table sum instead of failing.
    allow_lut_only: bool = False

    def __post_init__(self) -> None:
        unknown = [c for c in self.candidates if c not in CANDIDATES]
        if unknown or not self.candidates:
            raise AnyshapeError(f"predictor candidates {list(self.candidates)}; allowed: {', '.join(CANDIDATES)}")
        if not 0.0 <= self.holdout_fraction < 1.0:
            raise AnyshapeError(f"holdout_fraction is {self.holdout_fraction}; allowed range [0, 1)")
        if self.cv_folds < 2:
            raise AnyshapeError("cv_folds must be at least 2")


@dataclass
class LatencyPredictor:
    """Predicts end-to-end latency (ms) for shapes and workloads of one table."""

    recipe: FitRecipe
    chosen: str
    cv_mape: dict[str, float]
    source: str  # the table's: "measured" | "roofline-estimate"
    label: str  # where the numbers come from, for display
    bandwidth_gb_s: float | None
    holdout_keys: list[str] = field(default_factory=list)
    #: The candidate each workload (by name, "*" for the model over all workloads) chose, and
    #: every candidate's cross-validated MAPE there.
    chosen_by_workload: dict[str, str] = field(default_factory=dict)
    cv_mape_by_workload: dict[str, dict[str, float]] = field(default_factory=dict)
    _model: Any = field(default=None, repr=False)
    _lut: BlockLUT | None = field(default=None, repr=False)
    _costs: Any = field(default=None, repr=False)
    refit_reason: str | None = None

    # ------------------------------------------------------------------ predict
    def chosen_for(self, workload: Workload) -> str:
        """The candidate that predicts ``workload``: its own, or the model over all workloads."""
        by = self.chosen_by_workload
        return by.get(workload.name) or by.get("*") or self.chosen

    def predict(self, shapes: Sequence[Shape], workload: Workload) -> np.ndarray:
        """Latency in ms of each resolved shape (one batch call; thousands per second)."""
        if not shapes:
            return np.zeros(0)
        x, lut = self._features(shapes, workload)
        correction = self._model.predict(x)
        return np.asarray(lut * np.exp(correction), dtype=float)

    def bandwidth_bound_ms(self, shapes: Sequence[Shape], workload: Workload) -> np.ndarray:
        """Weight bytes / memory bandwidth: no run can be faster (0 where bandwidth is unknown)."""
        if not self.bandwidth_gb_s:
            return np.zeros(len(shapes))
        weight_bytes = np.array([self._cost(s, workload).weight_bytes for s in shapes])
        return weight_bytes / (self.bandwidth_gb_s * 1e9) * 1e3

    def flags(self, shapes: Sequence[Shape], workload: Workload, predicted: np.ndarray | None = None) -> list[str | None]:
        """A warning per shape whose prediction beats the memory-bandwidth bound (else None)."""
        predicted = self.predict(shapes, workload) if predicted is None else predicted
        bound = self.bandwidth_bound_ms(shapes, workload)
        return [
            f"below the memory-bandwidth bound ({b:.3g} ms at {self.bandwidth_gb_s:g} GB/s)" if b > 0 and p < b else None
            for p, b in zip(predicted, bound)
        ]

    # ------------------------------------------------------------------ features
    def _features(self, shapes: Sequence[Shape], workload: Workload) -> tuple[np.ndarray, np.ndarray]:
        """Feature rows and lookup-table sums; costs are linear in depth, so they are computed
        once per width (``outside + depth * per_layer``) and the rest is vectorised."""
        assert self._lut is not None
        self._lut.check(workload)
        phase, batch, seq_len, context_len = workload_keys(workload)
        widths: dict[tuple[int, int, int], int] = {}
        index = np.empty(len(shapes), dtype=np.int64)
        depth = np.empty(len(shapes))
        for i, s in enumerate(shapes):
            assert s.layers is not None and s.heads is not None and s.kv_heads is not None and s.ffn is not None
            index[i] = widths.setdefault((s.heads, s.kv_heads, s.ffn), len(widths))
            depth[i] = len(s.layers)
        # per width: (lut outside, lut per layer, flops outside, flops per layer, bytes outside, bytes per layer)
        table = np.empty((len(widths), 6))
        for (heads, kv, ffn), j in widths.items():
            one = Shape(layers=(0,), heads=heads, kv_heads=kv, ffn=ffn)
            two = Shape(layers=(0, 1), heads=heads, kv_heads=kv, ffn=ffn)
            l1, l2 = self._lut.total_ms(one, workload), self._lut.total_ms(two, workload)
            c1, c2 = self._cost(one, workload), self._cost(two, workload)
            b1, b2 = c1.weight_bytes + c1.activation_bytes, c2.weight_bytes + c2.activation_bytes
            table[j] = (2 * l1 - l2, l2 - l1, 2 * c1.flops - c2.flops, c2.flops - c1.flops, 2 * b1 - b2, b2 - b1)
        t = table[index]
        lut = t[:, 0] + depth * t[:, 1]
        flops = t[:, 2] + depth * t[:, 3]
        nbytes = t[:, 4] + depth * t[:, 5]
        w = np.array(list(widths))[index]
        rows = np.column_stack(
            [
                depth, w[:, 0], w[:, 1], w[:, 2], np.full(len(shapes), self._costs.hidden),
                np.full(len(shapes), float(phase == "decode")), np.full(len(shapes), batch),
                np.full(len(shapes), seq_len), np.full(len(shapes), context_len),
                np.log(lut), np.log(np.maximum(flops, 1.0)), np.log(np.maximum(nbytes, 1.0)),
            ]
        )  # fmt: skip
        return rows, lut

    def _cost(self, shape: Shape, workload: Workload) -> Any:
        from profilers.cost import whole_model_cost
        from profilers.workload import BlockPoint

        assert shape.layers is not None and shape.heads is not None and shape.kv_heads is not None and shape.ffn is not None
        phase, batch, seq_len, context_len = workload_keys(workload)
        point = BlockPoint("whole-model", phase, batch, seq_len, context_len, len(shape.layers), shape.heads, shape.kv_heads, shape.ffn)  # type: ignore[arg-type]
        return whole_model_cost(self._costs, point)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write ``path`` (JSON recipe and metrics) and ``path.with_suffix('.joblib')`` (the model)."""
        import joblib
        import sklearn

        path = Path(path)
        blob = path.with_suffix(".joblib")
        tmp = blob.with_name(f".{blob.name}.tmp")
        path.parent.mkdir(parents=True, exist_ok=True)
        joblib.dump(self._model, tmp)
        tmp.replace(blob)
        write_json_atomic(
            path,
            {
                "format": FORMAT,
                "recipe": asdict(self.recipe),
                "chosen": self.chosen,
                "cv_mape": self.cv_mape,
                "source": self.source,
                "label": self.label,
                "bandwidth_gb_s": self.bandwidth_gb_s,
                "holdout_keys": self.holdout_keys,
                "chosen_by_workload": self.chosen_by_workload,
                "cv_mape_by_workload": self.cv_mape_by_workload,
                "sklearn_version": sklearn.__version__,
                "model_sha256": hashlib.sha256(blob.read_bytes()).hexdigest(),
            },
        )
        return path


# ---------------------------------------------------------------------- fitting
def fit_predictor(table_path: str | Path, model_config: dict[str, Any], *, seed: int = 0, holdout_fraction: float = 0.4,
                  candidates: Sequence[str] = CANDIDATES, allow_lut_only: bool = False) -> LatencyPredictor:  # fmt: skip
    """Fit on the table's whole-model rows (less a seeded held-out share), picking the best candidate."""
    from profilers.tables import load_table

    table = load_table(table_path, check_software=False)
    recipe = FitRecipe(str(Path(table_path)), _sha256(Path(table_path)), dict(model_config), tuple(candidates), holdout_fraction, seed,
                       allow_lut_only=allow_lut_only)
    return _fit(recipe, table)


def _fit(recipe: FitRecipe, table: Any) -> LatencyPredictor:
    from nas.families import family_for
    from profilers.cost import ModelDims

    family = family_for(recipe.model_config)
    dims = ModelDims.from_config(family, recipe.model_config)
    lut = BlockLUT(table.rows, family.kind)
    whole = [r for r in table.rows if r["block"] == "whole-model"]
    fit_rows, holdout = split_rows(whole, recipe.holdout_fraction, recipe.seed)
    if len(fit_rows) < recipe.cv_folds * 2 and not recipe.allow_lut_only:
        raise AnyshapeError(
            f"table {table.path} has {len(fit_rows)} whole-model rows to fit on (after holding out {len(holdout)}); "
            f"need at least {recipe.cv_folds * 2}: profile with a larger --grid whole_model_samples"
        )
    bandwidth = table_bandwidth_gb_s(table)
    predictor = LatencyPredictor(
        recipe=recipe, chosen="", cv_mape={}, source=table.source, label=table.label,
        bandwidth_gb_s=bandwidth, holdout_keys=[row_shape_key(r) for r in holdout],
    )  # fmt: skip
    predictor._lut, predictor._costs = lut, dims
    if len(fit_rows) < recipe.cv_folds * 2:  # too few measured whole models: the plain lookup-table sum
        from sklearn.dummy import DummyRegressor

        predictor.chosen = "lut-sum"
        predictor.refit_reason = f"only {len(fit_rows)} whole-model rows: predicting the lookup-table sum, uncorrected"
        predictor._model = DummyRegressor(strategy="constant", constant=0.0).fit(np.zeros((1, len(FEATURES))), [0.0])
        return predictor
    from threadpoolctl import threadpool_limits

    # One thread: a few hundred rows gain nothing from more, and OpenMP's spinning barriers
    # (gradient-boosted trees) crawl when the machine is busy (minutes instead of seconds).
    groups = sorted(_by_workload(fit_rows).items(), key=lambda kv: kv[0].name)
    models: dict[tuple[float, ...], Any] = {}
    scores_by_workload: dict[str, dict[str, float]] = {}
    rows_by_workload: dict[str, int] = {}
    with threadpool_limits(limits=1):
        for workload, items in groups:
            if len(items) < recipe.cv_folds * 2:  # too thin to fit alone: the model over all workloads
                continue
            x, y = _design(predictor, items)
            model, scores = _choose(recipe, x, y)
            models[tuple(x[0, PerWorkload.GROUP])] = model
            scores_by_workload[workload.name], rows_by_workload[workload.name] = scores, len(items)
        if len(groups) == 1 and models:  # one workload: its model is the model over all workloads
            fallback = next(iter(models.values()))
        else:
            # the model over all workloads: for thin workloads, and any the table has no fitting rows of
            fallback, scores_by_workload["*"] = _choose(recipe, *_design(predictor, fit_rows))
            rows_by_workload["*"] = len(fit_rows) - sum(rows_by_workload.values())  # the thin workloads' rows
    predictor._model = PerWorkload(models, fallback)
    predictor.cv_mape_by_workload = {w: {k: round(v, 5) for k, v in sc.items()} for w, sc in scores_by_workload.items()}
    predictor.chosen_by_workload = {w: min(sc, key=lambda n: (sc[n], n)) for w, sc in scores_by_workload.items()}
    total = sum(rows_by_workload.values())
    predictor.cv_mape = {
        name: round(sum(sc[name] * rows_by_workload[w] for w, sc in scores_by_workload.items()) / total, 5)
        for name in recipe.candidates
    }  # row-weighted over the models that predict the fitting rows
    used = {w: c for w, c in predictor.chosen_by_workload.items() if rows_by_workload[w]}
    distinct = sorted(set(used.values()))
    predictor.chosen = distinct[0] if len(distinct) == 1 else ", ".join(f"{w} {c}" for w, c in used.items())
    return predictor


def _choose(recipe: FitRecipe, x: np.ndarray, y: np.ndarray) -> tuple[Any, dict[str, float]]:
    """The candidate with the lowest cross-validated MAPE, fit on all of ``x``, and every candidate's score."""
    scores = {name: _cv_mape(name, x, y, recipe) for name in recipe.candidates}
    best = min(scores, key=lambda n: (scores[n], n))
    return _make(best, recipe.seed).fit(x, y), scores


class PerWorkload:
    """One fitted candidate per workload, and a fallback fit over all workloads for the others."""

    GROUP: ClassVar[list[int]] = WORKLOAD_COLUMNS

    def __init__(self, models: dict[tuple[float, ...], Any], fallback: Any):
        self.models = {tuple(float(v) for v in k): m for k, m in models.items()}
        self.fallback = fallback

    def predict(self, x: np.ndarray) -> np.ndarray:
        groups = x[:, self.GROUP]
        if len(x) and (groups == groups[0]).all():  # the usual call: one workload
            return np.asarray(self.models.get(tuple(float(v) for v in groups[0]), self.fallback).predict(x))
        keys, inverse = np.unique(groups, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        out = np.empty(len(x))
        for j, key in enumerate(keys):
            rows = inverse == j
            out[rows] = self.models.get(tuple(float(v) for v in key), self.fallback).predict(x[rows])
        return out


def _design(predictor: LatencyPredictor, rows: Sequence[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for group, items in _by_workload(rows).items():
        shapes = [row_shape(r) for r in items]
        x, lut = predictor._features(shapes, group)
        xs.append(x)
        ys.append(np.log(np.array([r["latency_ms_p50"] for r in items]) / lut))
    return np.vstack(xs), np.concatenate(ys)


def _cv_mape(name: str, x: np.ndarray, y: np.ndarray, recipe: FitRecipe) -> float:
    from sklearn.model_selection import KFold

    errors = []
    for train, test in KFold(recipe.cv_folds, shuffle=True, random_state=recipe.seed).split(x):
        model = _make(name, recipe.seed).fit(x[train], y[train])
        errors.extend(np.abs(np.exp(model.predict(x[test]) - y[test]) - 1.0))
    return float(np.mean(errors))


def _make(name: str, seed: int) -> Any:
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.linear_model import Ridge
    from sklearn.neural_network import MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if name == "gbt":
        return HistGradientBoostingRegressor(max_iter=150, learning_rate=0.08, min_samples_leaf=5, random_state=seed)
    if name == "mlp":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return make_pipeline(StandardScaler(), MLPRegressor(hidden_layer_sizes=(32, 32), alpha=1e-3, max_iter=800, random_state=seed))
    if name == "additive":
        return AdditiveLatency()
    return make_pipeline(StandardScaler(), Ridge(alpha=1.0))


class AdditiveLatency:
    """Latency as a non-negative sum of physical terms, one fit per workload.

    ``latency = c0 + c1 * lut_ms + c2 * flops + c3 * bytes + c4 * depth``, least squares on the
    relative error with every coefficient >= 0 (a fixed overhead, the blocks as measured, compute,
    memory traffic, a per-layer cost). Where the trees and the ridge learn a multiplicative
    correction of the lookup-table sum, this one keeps the additive structure latency has: with
    few rows, on big models whose latency is close to linear in FLOPs and bytes, it extrapolates
    where they cannot. Same interface as the other candidates: it reads the feature matrix and
    predicts ``log(latency / lut_ms)``.

    Each row's squared error is weighted by ``latency ** -(2 * power)``: power 1 fits relative
    error (every shape counts alike), 0 absolute error (the slow shapes dominate), 0.5 between.
    Which suits a workload depends on how its noise scales with latency, so each workload picks
    its power from :attr:`POWERS` by cross-validated relative error on its own rows. On the
    Qwen2.5-0.5B torch table (36 fitting shapes) decode chose 0 and prefill 0.5: held-out
    shapes within 10 % went from 89 to 96 % (decode) and stayed at 95 % (prefill); the MiniLM
    tables keep 1.
    """

    POWERS: ClassVar[tuple[float, ...]] = (1.0, 0.5, 0.0)
    #: Folds of the per-workload choice of power (fewer rows: leave-one-out).
    FOLDS: ClassVar[int] = 5

    _GROUP: ClassVar[list[int]] = WORKLOAD_COLUMNS
    _DEPTH, _LUT, _FLOPS, _BYTES = (FEATURES.index(f) for f in ("depth", "log_lut_ms", "log_flops", "log_bytes"))

    def _terms(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lut = np.exp(x[:, self._LUT])
        terms = np.column_stack([np.ones(len(x)), lut, np.exp(x[:, self._FLOPS]), np.exp(x[:, self._BYTES]), x[:, self._DEPTH]])
        return terms, lut

    def fit(self, x: np.ndarray, y: np.ndarray) -> AdditiveLatency:
        terms, lut = self._terms(x)
        latency = lut * np.exp(y)
        self.scale_ = np.maximum(np.abs(terms).max(axis=0), 1e-12)
        self.coef_: dict[tuple[float, ...], np.ndarray] = {}
        self.power_: dict[tuple[float, ...], float] = {}
        groups = [tuple(row) for row in x[:, self._GROUP]]
        for key in [*sorted(set(groups)), None]:  # one fit per workload, and one over all for a new workload
            mask = np.ones(len(x), dtype=bool) if key is None else np.array([g == key for g in groups])
            a, b = terms[mask] / self.scale_, latency[mask]
            power = self._choose_power(a, b)
            self.power_[key if key is not None else ()] = power
            self.coef_[key if key is not None else ()] = self._solve(a, b, power) / self.scale_
        return self

    @staticmethod
    def _solve(a: np.ndarray, latency: np.ndarray, power: float) -> np.ndarray:
        from scipy.optimize import nnls

        weight = latency**-power  # divide each row by latency ** power
        coef, _ = nnls(a * weight[:, None], latency * weight)
        return np.asarray(coef)

    def _choose_power(self, a: np.ndarray, latency: np.ndarray) -> float:
        """The power of :attr:`POWERS` with the lowest cross-validated relative error on these rows."""
        n = len(latency)
        if n < 4:
            return self.POWERS[0]
        folds = np.arange(n) % min(self.FOLDS, n)  # rows arrive in table order: interleaved folds, deterministic
        errors = []
        for power in self.POWERS:
            error = 0.0
            for k in np.unique(folds):
                train, test = folds != k, folds == k
                coef = self._solve(a[train], latency[train], power)
                error += float(np.abs(a[test] @ coef / latency[test] - 1.0).sum())
            errors.append(error)
        return self.POWERS[int(np.argmin(errors))]

    def predict(self, x: np.ndarray) -> np.ndarray:
        terms, lut = self._terms(x)
        keys, inverse = np.unique(x[:, self._GROUP], axis=0, return_inverse=True)
        coefs = np.array([self.coef_.get(tuple(k), self.coef_[()]) for k in keys])
        out = np.einsum("ij,ij->i", terms, coefs[inverse.reshape(-1)])
        return np.asarray(np.log(np.maximum(out, 1e-9) / lut))


def table_bandwidth_gb_s(table: Any) -> float | None:
    """The memory bandwidth a table's device reads weights at: measured (meta.json), else the spec sheet."""
    measured = (table.meta.memory_bandwidth or {}).get("read_gb_s")
    if measured:
        return float(measured)
    try:
        from profilers.devices import device_spec

        return float(device_spec(table.device).memory_bandwidth_gb_s)
    except (AnyshapeError, ImportError, AttributeError):
        return None


# ---------------------------------------------------------------------- loading
def load_predictor(path: str | Path) -> LatencyPredictor:
    """Load a saved predictor; refit from its recipe (saying why) when the model file cannot be used."""
    import sklearn

    path = Path(path)
    try:
        saved = json.loads(path.read_text())
    except FileNotFoundError:
        raise AnyshapeError(f"no saved predictor at {path}; fit one with anyshape predictor fit") from None
    except (OSError, json.JSONDecodeError) as e:
        raise AnyshapeError(f"predictor file {path} is unreadable: {e}") from None
    if saved.get("format") != FORMAT:
        raise AnyshapeError(f"{path} is not an anyshape latency predictor ({FORMAT})")
    recipe_data = saved["recipe"]
    recipe_data["candidates"] = tuple(recipe_data["candidates"])
    recipe = FitRecipe(**recipe_data)
    from profilers.tables import load_table

    beside = path.parent / Path(recipe.table).name  # tables travel with their predictors (a copied or moved folder)
    table_path = beside if beside.is_file() else Path(recipe.table)
    if table_path != Path(recipe.table):
        recipe = FitRecipe(**{**asdict(recipe), "table": str(table_path)})
    if not table_path.is_file():
        raise AnyshapeError(f"predictor {path} was fit on {recipe.table}, which is missing; fit it again on an existing table")
    table = load_table(table_path, check_software=False)
    reason = None
    if _sha256(table_path) != recipe.table_sha256:  # the table was re-measured: the same recipe on the new rows
        recipe = FitRecipe(**{**asdict(recipe), "table_sha256": _sha256(table_path)})
        reason = "its table was re-measured since"
    blob = path.with_suffix(".joblib")
    if reason is not None:
        pass
    elif saved.get("sklearn_version") != sklearn.__version__:
        reason = f"saved with scikit-learn {saved.get('sklearn_version')}, this is {sklearn.__version__}"
    elif not blob.is_file() or hashlib.sha256(blob.read_bytes()).hexdigest() != saved.get("model_sha256"):
        reason = "its model file is missing or changed"
    if reason is None:
        try:
            import joblib

            model = joblib.load(blob)
        except Exception as e:  # a model file that will not load is refit, not fatal
            reason = f"its model file failed to load ({type(e).__name__})"
    if reason is not None:
        predictor = _fit(recipe, table)
        predictor.refit_reason = f"refit from the recipe: {reason}"
        predictor.save(path)
        return predictor
    predictor = _fit_shell(recipe, table, saved)
    predictor._model = model
    return predictor


def _fit_shell(recipe: FitRecipe, table: Any, saved: dict[str, Any]) -> LatencyPredictor:
    from nas.families import family_for
    from profilers.cost import ModelDims

    family = family_for(recipe.model_config)
    predictor = LatencyPredictor(
        recipe=recipe, chosen=saved["chosen"], cv_mape=saved["cv_mape"], source=table.source, label=table.label,
        bandwidth_gb_s=saved.get("bandwidth_gb_s"), holdout_keys=saved.get("holdout_keys", []),
        chosen_by_workload=saved.get("chosen_by_workload", {}), cv_mape_by_workload=saved.get("cv_mape_by_workload", {}),
    )  # fmt: skip
    predictor._lut = BlockLUT(table.rows, family.kind)
    predictor._costs = ModelDims.from_config(family, recipe.model_config)
    return predictor


# ---------------------------------------------------------------------- rows
def row_shape(row: dict[str, Any]) -> Shape:
    return Shape(layers=tuple(range(row["depth"])), heads=row["heads"], kv_heads=row["kv_heads"], ffn=row["ffn"])


def row_workload(row: dict[str, Any]) -> Workload:
    if row["phase"] == "prefill":
        return Workload("prefill", row["batch"], row["seq_len"])
    return Workload("decode", row["batch"], row["context_len"])


def row_shape_key(row: dict[str, Any]) -> str:
    return f"{row_workload(row).name}|d{row['depth']}|h{row['heads']}|k{row['kv_heads']}|f{row['ffn']}"


def split_rows(rows: Sequence[dict[str, Any]], holdout_fraction: float, seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A seeded split by shape key (stable under row order): fitting rows, held-out rows."""
    fit: list[dict[str, Any]] = []
    held: list[dict[str, Any]] = []
    for row in rows:
        digest = hashlib.sha256(f"{seed}|{row_shape_key(row)}".encode()).digest()
        (held if int.from_bytes(digest[:8], "big") / 2**64 < holdout_fraction else fit).append(row)
    return fit, held


def _by_workload(rows: Sequence[dict[str, Any]]) -> dict[Workload, list[dict[str, Any]]]:
    groups: dict[Workload, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row_workload(row), []).append(row)
    return groups


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
