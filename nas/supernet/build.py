"""``anyshape supernet build``: calibrate a base model once and write its supernet.

Steps: tokenize seeded calibration and held-out batches; cache the full model's hidden state at
every layer's input; run the depth method(s) on the calibration loss and score every chosen
layer set on the held-out batches too; collect o_proj / down_proj input statistics and rank heads,
KV groups and FFN channels; write the artifact atomically.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from nas._io import atomic_directory, check_output_dir, write_json_atomic
from nas.cuts import WidthOrders
from nas.errors import AnyshapeError
from nas.families import ModelFamily
from nas.hub import resolve_model, weights_sha256
from nas.shape import ShapeSpace
from nas.supernet import depth as depth_mod
from nas.supernet import width as width_mod
from nas.supernet.artifact import BUILD_LOG_FILE, DepthTable, Supernet
from nas.supernet.calibration import CalibrationConfig, prepare_data
from nas.supernet.evaluate import SubnetEvaluator, run

DEPTH_METHODS = ("dp", "drop-last", "block-influence")
#: Families whose output projections can carry a compensation bias that stock transformers loads.
COMPENSATION_FAMILIES = ("bert", "llama")


@dataclass(frozen=True)
class BuildConfig:
    """How a supernet is built (recorded in ``supernet.json``)."""

    min_depth: int = field(default=1, metadata={"help": "smallest depth in the depth table (1..num_layers)"})
    depth_method: str = field(default="dp", metadata={"help": f"one of {DEPTH_METHODS}; the table `depth` shapes use"})
    beam: int = field(default=1, metadata={"help": "DP candidate sets kept per cell (1 = AmoebaLLM's greedy recurrence)"})
    baselines: bool = field(default=False, metadata={"help": "also store drop-last and block-influence tables"})
    width_method: str = field(default="fluctuation", metadata={"help": f"one of {width_mod.WIDTH_METHODS}"})
    bias_compensation: bool = field(default=False, metadata={"help": "store channel means; extraction adds FLAP's bias"})
    seed: int = field(default=0, metadata={"help": "seed of the random width baseline"})
    heldout_scores: bool = field(default=True, metadata={"help": "score every depth-table row on the held-out batches"})
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)

    def __post_init__(self) -> None:
        if self.depth_method not in DEPTH_METHODS:
            raise AnyshapeError(f"depth_method is {self.depth_method!r}; allowed: {', '.join(DEPTH_METHODS)}")
        if self.width_method not in width_mod.WIDTH_METHODS:
            raise AnyshapeError(f"width_method is {self.width_method!r}; allowed: {', '.join(width_mod.WIDTH_METHODS)}")
        if isinstance(self.beam, bool) or not isinstance(self.beam, int) or not 1 <= self.beam <= 1024:
            raise AnyshapeError(f"beam is {self.beam!r}; allowed range 1..1024")
        if isinstance(self.min_depth, bool) or not isinstance(self.min_depth, int) or self.min_depth < 1:
            raise AnyshapeError(f"min_depth is {self.min_depth!r}; allowed range 1..num_layers")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class BuildResult:
    out: Path
    supernet: Supernet
    seconds: float
    timings: dict[str, float]


def build_supernet(
    model: str, out: str | Path, config: BuildConfig | None = None, *, overwrite: bool = False, progress: bool = True
) -> BuildResult:
    """Calibrate ``model`` (path, alias or hub id) and write its supernet to ``out``."""
    from nas.modeling import load_model

    config = config or BuildConfig()
    check_output_dir(out, overwrite=overwrite)  # before minutes of calibration, not after
    start = time.perf_counter()
    timings: dict[str, float] = {}
    source = resolve_model(model)
    base_config = source.config_dict()
    from nas.families import family_for

    family = family_for(base_config)
    space = family.space(base_config)
    depth_mod.check_min_depth(config.min_depth, space.num_layers)
    if config.bias_compensation and family.name not in COMPENSATION_FAMILIES:
        raise AnyshapeError(
            f"bias compensation needs a bias on o_proj and down_proj; stock {family.name} models have none "
            f"(supported: {', '.join(COMPENSATION_FAMILIES)}); build without --bias-compensation"
        )
    sha = weights_sha256(source.path)
    net, family = load_model(source)
    data = prepare_data(source.path, family, config.calibration, int(base_config.get("vocab_size") or 1 << 62))
    timings["load_and_tokenize_s"] = time.perf_counter() - start

    with torch.no_grad():
        t = time.perf_counter()
        calib = SubnetEvaluator(net, family, space, data.calib)
        heldout = SubnetEvaluator(net, family, space, data.heldout) if config.heldout_scores else None
        timings["cache_hidden_states_s"] = time.perf_counter() - t
        t = time.perf_counter()
        tables = depth_tables(calib, heldout, space, config, progress)
        timings["depth_s"] = time.perf_counter() - t
        t = time.perf_counter()
        orders, stats = width_orders(net, family, space, data.calib, config, progress)
        timings["width_s"] = time.perf_counter() - t

    default = "dp" if config.depth_method == "dp" else config.depth_method
    supernet = Supernet(
        base_source=source.spec,
        base_sha256=sha,
        family=family.name,
        space=space,
        metric=calib.metric,
        depth_tables=tables,
        default_depth_table=default,
        width_method=config.width_method,
        orders=orders,
        calibration=data.record,
        build_config=config.to_dict(),
        bias_compensation=config.bias_compensation,
        attn_mean=stats.attn_mean if stats is not None and config.bias_compensation else None,
        ffn_mean=stats.ffn_mean if stats is not None and config.bias_compensation else None,
        heldout_inputs=data.heldout_inputs,
    )
    with atomic_directory(out, overwrite=overwrite) as tmp:
        supernet.save(tmp)
        seconds = time.perf_counter() - start
        write_json_atomic(tmp / BUILD_LOG_FILE, {"seconds": round(seconds, 2), **{k: round(v, 2) for k, v in timings.items()},
                                                 "calib_evaluations": calib.evaluations,
                                                 "threads": torch.get_num_threads()})
    out = Path(out).absolute()
    return BuildResult(out=out, supernet=Supernet.load(out), seconds=seconds, timings=timings)


def depth_tables(
    calib: SubnetEvaluator, heldout: SubnetEvaluator | None, space: ShapeSpace, config: BuildConfig, progress: bool
) -> dict[str, DepthTable]:
    """The depth tables the config asks for, each row with its calibration (and held-out) loss."""
    n, lo = space.num_layers, config.min_depth

    def removal_loss(removed: frozenset[int]) -> float:
        return calib.score(tuple(i for i in range(n) if i not in removed)).loss

    methods = set(DEPTH_METHODS) if config.baselines else {config.depth_method}
    tables: dict[str, DepthTable] = {}
    if "dp" in methods:
        with _bar(depth_mod.dp_evaluations(n, lo, config.beam), f"depth DP (beam {config.beam})", progress) as tick:
            choices = depth_mod.dp_layer_selection(n, lo, removal_loss, beam=config.beam, progress=tick)
        tables["dp"] = _table("dp", choices, heldout, {"beam": config.beam})
    if "drop-last" in methods:
        tables["drop-last"] = _table("drop-last", depth_mod.drop_last(n, lo, removal_loss), heldout, {})
    if "block-influence" in methods:
        masks = [b["attention_mask"] for b in calib.batches]
        states = calib.layer_inputs
        if calib.family.kind == "decoder":  # the last layer's output: one more forward through the last layer
            states = _with_last_output(calib)
        influence = depth_mod.block_influence(states, masks)
        choices = depth_mod.by_block_influence(influence, lo, removal_loss)
        tables["block-influence"] = _table("block-influence", choices, heldout, {"block_influence": influence})
    return tables


def _with_last_output(ev: SubnetEvaluator) -> list[list[torch.Tensor]]:
    """Layer inputs plus the last layer's output (decoders do not cache it: their loss uses logits)."""
    layers = ev.family.layers(ev.model)
    grabbed: list[torch.Tensor] = []
    handle = layers[len(layers) - 1].register_forward_hook(lambda m, a, o: grabbed.append(o[0] if isinstance(o, tuple) else o))
    try:
        for batch in ev.batches:
            run(ev.model, ev.family, batch)
    finally:
        handle.remove()
    return [[*inputs[: len(layers)], last] for inputs, last in zip(ev.layer_inputs, grabbed)]


def _table(method: str, choices: list[depth_mod.DepthChoice], heldout: SubnetEvaluator | None, params: dict[str, Any]) -> DepthTable:
    rows = []
    for c in choices:
        row = c.to_dict()
        if heldout is not None:
            score = heldout.score(c.layers)
            row["heldout_loss"] = score.loss
            row["heldout"] = score.metrics
        rows.append(row)
    return DepthTable(method=method, rows=tuple(rows), params=params)


def width_orders(
    net: Any, family: ModelFamily, space: ShapeSpace, batches: list[Any], config: BuildConfig, progress: bool
) -> tuple[WidthOrders, width_mod.ChannelStats | None]:
    stats = None
    if config.width_method == "fluctuation" or config.bias_compensation:
        with _bar(len(batches), "width statistics", progress) as tick:
            stats = width_mod.collect_stats(net, family, space, batches, progress=tick)
    if config.width_method == "fluctuation":
        assert stats is not None
        return width_mod.fluctuation_orders(net, family, space, stats), stats
    if config.width_method == "magnitude":
        return width_mod.magnitude_orders(net, family, space), stats
    return width_mod.random_orders(space, config.seed), stats


class _bar:
    """A tqdm progress bar on stderr (a no-op when ``enabled`` is false); yields ``tick(n)``."""

    def __init__(self, total: int, desc: str, enabled: bool):
        self.total, self.desc, self.enabled = total, desc, enabled
        self.bar: Any = None

    def __enter__(self) -> Callable[[int], Any]:
        if not self.enabled:
            return lambda n: None
        from tqdm.auto import tqdm

        self.bar = tqdm(total=self.total, desc=self.desc, unit="eval" if "DP" in self.desc else "batch", leave=False)
        return self.bar.update

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()
