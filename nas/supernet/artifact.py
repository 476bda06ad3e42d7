"""The supernet artifact: ``supernet.json`` plus ``supernet.safetensors`` in one directory.

    supernet.json         format, base model (source, sha256), family, shape space, metric,
                          depth tables (layers and calibration / held-out loss per depth),
                          width method, bias compensation, calibration record, build config
    supernet.safetensors  orders.heads / orders.kv_heads / orders.ffn (int64, one row per layer);
                          with bias compensation: stats.attn_mean (L, H*head_dim), stats.ffn_mean (L, F);
                          heldout.input_ids / heldout.attention_mask (...): the held-out token rows the
                          search and verify score shapes on, so the supernet needs none of its calibration
                          text where it is used (supernets built before they were stored rebuild them)
    adapters.safetensors  only in a trained supernet (``anyshape supernet train``): the SMoL LoRA
                          experts and gate; ``supernet.json`` then has an ``adapters`` section
                          (format, mode, K, rank, top-k, gate, targets, training config, data hash)

Both files are a pure function of the base weights, the data and the build config (timings go
to ``build_log.json`` beside them), so the same seed gives the same bytes. A subnet config names
a supernet by path and :meth:`Supernet.sha256` (over the two files, and the adapters file if any).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nas.cuts import WidthOrders
from nas.errors import AnyshapeError
from nas.shape import Shape, ShapeSpace

FORMAT = "anyshape/supernet-v1"
SUPERNET_FILE = "supernet.json"
TENSORS_FILE = "supernet.safetensors"
BUILD_LOG_FILE = "build_log.json"
ADAPTERS_FILE = "adapters.safetensors"
HELDOUT_PREFIX = "heldout."


@dataclass(frozen=True)
class DepthTable:
    """Per depth, the base layers kept, with the calibration loss (and held-out loss) of that subnet."""

    method: str
    rows: tuple[Mapping[str, Any], ...]
    params: Mapping[str, Any] = field(default_factory=dict)

    def layers_for(self, depth: int) -> tuple[int, ...]:
        for row in self.rows:
            if row["depth"] == depth:
                return tuple(row["layers"])
        depths = [row["depth"] for row in self.rows]
        raise AnyshapeError(
            f"shape.depth is {depth}; this supernet's depth table ({self.method}) covers {min(depths)}..{max(depths)}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, **dict(self.params), "rows": [dict(r) for r in self.rows]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DepthTable:
        params = {k: v for k, v in data.items() if k not in ("method", "rows")}
        return cls(method=str(data["method"]), rows=tuple(dict(r) for r in data["rows"]), params=params)


@dataclass(frozen=True)
class Supernet:
    """A calibrated base model: layer sets per depth and width orders, so any shape is a lookup."""

    base_source: str
    base_sha256: str
    family: str
    space: ShapeSpace
    metric: str
    depth_tables: Mapping[str, DepthTable]
    default_depth_table: str
    width_method: str
    orders: WidthOrders
    calibration: Mapping[str, Any]
    build_config: Mapping[str, Any]
    bias_compensation: bool = False
    attn_mean: torch.Tensor | None = field(default=None, compare=False)
    ffn_mean: torch.Tensor | None = field(default=None, compare=False)
    path: Path | None = field(default=None, compare=False)
    format: str = FORMAT
    #: the ``adapters`` section of a trained supernet (None: untrained) and its tensors
    adapters: Mapping[str, Any] | None = None
    adapter_tensors: Mapping[str, torch.Tensor] | None = field(default=None, compare=False)
    #: The held-out token rows (input_ids, attention_mask, ...), checked against ``calibration.heldout_sha256``.
    heldout_inputs: Mapping[str, torch.Tensor] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.default_depth_table not in self.depth_tables:
            raise AnyshapeError(f"default depth table {self.default_depth_table!r} is not one of {sorted(self.depth_tables)}")
        self.orders.validate(self.space)
        if self.bias_compensation and (self.attn_mean is None or self.ffn_mean is None):
            raise AnyshapeError("a supernet with bias compensation needs the channel means (stats.attn_mean, stats.ffn_mean)")
        if self.adapters is not None and self.adapter_tensors is None:
            raise AnyshapeError(f"a trained supernet needs its adapter tensors ({ADAPTERS_FILE})")

    # ---- shapes -------------------------------------------------------------------------
    def resolve_shape(self, shape: Shape | Mapping[str, Any], table: str | None = None) -> Shape:
        """Turn ``depth`` into ``layers`` with the depth table, then resolve and validate the shape."""
        shape = shape if isinstance(shape, Shape) else Shape.from_dict(shape)
        if "depth" in shape.extra:
            if shape.layers is not None:
                raise AnyshapeError("give shape.depth or shape.layers, not both")
            depth = shape.extra["depth"]
            if isinstance(depth, bool) or not isinstance(depth, int):
                raise AnyshapeError(f"shape.depth must be an integer, got {depth!r}")
            name = table or self.default_depth_table
            if name not in self.depth_tables:
                raise AnyshapeError(f"depth table {name!r} is not in this supernet; it has {sorted(self.depth_tables)}")
            layers = self.depth_tables[name].layers_for(depth)
            shape = Shape(layers=layers, heads=shape.heads, kv_heads=shape.kv_heads, ffn=shape.ffn)
        return shape.resolve(self.space)

    # ---- files --------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "base_model": {"source": self.base_source, "sha256": self.base_sha256},
            "family": self.family,
            "shape_space": {**self.space.to_dict(), "heads_note": self.space.heads_note},
            "metric": self.metric,
            "depth": {
                "default": self.default_depth_table,
                "tables": {name: t.to_dict() for name, t in self.depth_tables.items()},
            },
            "width": {"method": self.width_method, "bias_compensation": self.bias_compensation,
                      "tensors": TENSORS_FILE},
            "calibration": dict(self.calibration),
            "build_config": dict(self.build_config),
            **({"adapters": dict(self.adapters)} if self.adapters is not None else {}),
        }

    def tensors(self) -> dict[str, torch.Tensor]:
        out = self.orders.to_tensors()
        if self.bias_compensation:
            assert self.attn_mean is not None and self.ffn_mean is not None
            out["stats.attn_mean"] = self.attn_mean.float().contiguous()
            out["stats.ffn_mean"] = self.ffn_mean.float().contiguous()
        for key, value in (self.heldout_inputs or {}).items():
            out[f"{HELDOUT_PREFIX}{key}"] = value.to(torch.int64).contiguous()
        return out

    def save(self, directory: Path) -> None:
        """Write both files into ``directory`` (an existing, empty staging directory)."""
        from safetensors.torch import save_file

        (directory / SUPERNET_FILE).write_text(json.dumps(self.to_json(), indent=1) + "\n")
        save_file(self.tensors(), str(directory / TENSORS_FILE), metadata={"format": FORMAT})
        if self.adapter_tensors is not None:
            tensors = {k: v.detach().float().contiguous() for k, v in self.adapter_tensors.items()}
            save_file(tensors, str(directory / ADAPTERS_FILE), metadata={"format": FORMAT})

    @classmethod
    def load(cls, directory: str | Path) -> Supernet:
        directory = Path(directory)
        path = directory / SUPERNET_FILE
        if not path.is_file():
            raise AnyshapeError(f"{directory} is not a supernet directory (no {SUPERNET_FILE}); build one with `anyshape supernet build`")
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise AnyshapeError(f"cannot read {path}: {e}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, dict) else None
            raise AnyshapeError(f"{path} has format {found!r}; this version of anyshape reads {FORMAT!r}")
        from safetensors.torch import load_file

        try:
            tensors = load_file(str(directory / TENSORS_FILE))
        except (OSError, Exception) as e:
            raise AnyshapeError(f"cannot read {directory / TENSORS_FILE}: {e}") from None
        adapters = data.get("adapters")
        adapter_tensors = None
        if adapters is not None:
            try:
                adapter_tensors = load_file(str(directory / ADAPTERS_FILE))
            except (OSError, Exception) as e:
                raise AnyshapeError(f"cannot read {directory / ADAPTERS_FILE}: {e}") from None
        width = data["width"]
        depth = data["depth"]
        return cls(
            base_source=data["base_model"]["source"],
            base_sha256=data["base_model"]["sha256"],
            family=data["family"],
            space=space_from_dict(data["shape_space"]),
            metric=data["metric"],
            depth_tables={name: DepthTable.from_dict(t) for name, t in depth["tables"].items()},
            default_depth_table=depth["default"],
            width_method=width["method"],
            orders=WidthOrders.from_tensors(tensors),
            calibration=data["calibration"],
            build_config=data["build_config"],
            bias_compensation=bool(width["bias_compensation"]),
            attn_mean=tensors.get("stats.attn_mean"),
            ffn_mean=tensors.get("stats.ffn_mean"),
            path=directory.resolve(),
            adapters=adapters,
            adapter_tensors=adapter_tensors,
            heldout_inputs={k[len(HELDOUT_PREFIX):]: v for k, v in tensors.items() if k.startswith(HELDOUT_PREFIX)} or None,
        )

    def sha256(self) -> str:
        """The identity of a saved supernet: sha256 over its two files."""
        if self.path is None:
            raise AnyshapeError("this supernet has not been saved; it has no sha256 yet")
        return supernet_sha256(self.path)


def supernet_sha256(directory: Path) -> str:
    h = hashlib.sha256()
    for name in (SUPERNET_FILE, TENSORS_FILE, ADAPTERS_FILE):
        if name == ADAPTERS_FILE and not (directory / name).is_file():
            continue  # untrained supernets keep the sha256 they always had
        h.update(name.encode())
        h.update(hashlib.sha256((directory / name).read_bytes()).digest())
    return h.hexdigest()


def is_supernet_dir(path: str | Path) -> bool:
    return (Path(path) / SUPERNET_FILE).is_file()


def space_from_dict(data: Mapping[str, Any]) -> ShapeSpace:
    import dataclasses

    names = {f.name for f in dataclasses.fields(ShapeSpace) if f.init}
    required = ("family", "num_layers", "num_heads", "num_kv_heads", "head_dim", "hidden_size", "ffn_size")
    missing = [k for k in required if k not in data]
    if missing:
        raise AnyshapeError(f"supernet shape_space lacks {missing}")
    return ShapeSpace(**{k: v for k, v in data.items() if k in names})


def inspect_supernet(path: str | Path) -> dict[str, Any]:
    """A JSON-ready summary of a supernet directory: base, calibration, depth tables, width orders."""
    supernet = Supernet.load(path)
    return {
        "kind": "supernet",
        "path": str(supernet.path),
        "format": supernet.format,
        "sha256": supernet.sha256(),
        "base_model": supernet.base_source,
        "base_sha256": supernet.base_sha256,
        "family": supernet.family,
        "metric": supernet.metric,
        "shape_space": supernet.space.to_dict(),
        "calibration": dict(supernet.calibration),
        "default_depth_table": supernet.default_depth_table,
        "depth_tables": {name: t.to_dict() for name, t in supernet.depth_tables.items()},
        "width_method": supernet.width_method,
        "bias_compensation": supernet.bias_compensation,
        "adapters": None if supernet.adapters is None else {k: v for k, v in supernet.adapters.items() if k != "targets"},
        "orders": {"heads": [list(o) for o in supernet.orders.heads], "kv_heads": [list(o) for o in supernet.orders.kv_heads],
                   "ffn": [list(o) for o in supernet.orders.ffn]},
    }
