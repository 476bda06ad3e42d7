"""One-off: carry the committed v1 tables over to anyshape/latency-table-v2 (rows unchanged).

v1 tables used 13 protocol combinations (probe scaling by compute share, anchors for decode
and/or prefill, fastest or middle pass). v2 has one speed reference or none:
- a table whose every row was timed beside an anchor becomes ``reference: anchor`` with the
  same baselines and ratios (exactly the v2 rule: its rows are unchanged and verify measures it
  the same way);
- every other table becomes ``reference: none``: its rows stay as v1 wrote them (raw, or scaled
  to the run's median probe speed), and ``converted`` says which, with v1's protocol and probe
  record kept beside them.
Run once from the repository root; removed from the tree afterwards (git history keeps it).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nas._io import write_json_atomic
from profilers.protocol import ProtocolConfig
from profilers.run import NOISY_HOST_SPREAD, load_entry, speed_spread
from profilers.tables import TABLE_FORMAT, TableMeta, today

V1 = "anyshape/latency-table-v1"
PROTOCOL_FIELDS = ("threads", "warmup", "repeats", "min_repeats", "max_point_seconds", "min_sample_ms", "cv_threshold",
                   "max_remeasures", "rounds", "spinning", "stagger", "pin_cpus")


def convert_entry(entry: dict, keys: list[str]) -> dict:
    entry = dict(entry)
    entry["format"] = TABLE_FORMAT
    if entry["source"] != "measured":
        return entry
    old_protocol = dict(entry.pop("protocol"))
    reference = entry.pop("reference", None)
    anchor = entry.pop("anchor", None)
    ratios = (anchor or {}).get("ratio_by_point") or {}
    fully_anchored = bool(anchor) and all(k in ratios for k in keys)
    protocol = ProtocolConfig(name="converted-v1", reference="anchor" if fully_anchored else "none",
                              **{k: old_protocol[k] for k in PROTOCOL_FIELDS if k in old_protocol})
    passes = dict(entry.pop("passes", None) or {})
    if "p50_by_point" in passes:
        passes["values_by_point"] = passes.pop("p50_by_point")
    if fully_anchored:
        measurement = {
            "reference": "anchor", "baseline_ms": anchor["baseline_ms"],
            "note": "every row is (the median of its samples' ratios to its workload's anchor, a fixed whole-model step timed "
                    "after each sample) * baseline_ms[anchor]; raw = row * anchor_ms / baseline_ms = ratio * anchor_ms",
            "anchor_by_point": anchor["anchor_by_point"], "anchor_ms_by_point": anchor["anchor_ms_by_point"],
            "ratio_by_point": anchor["ratio_by_point"],
        }
        rows_were = "timed beside their workload's anchor (ratio * the anchor's median over the run): the v2 anchor rule, unchanged"
    else:
        measurement = {"reference": "none", "baseline_ms": {}, "note": "rows as v1 wrote them (see converted.rows)"}
        scaled = bool(reference and reference.get("probe_ms_by_point"))
        if scaled and anchor:
            rows_were = ("v1 mixed: rows anchored where converted.v1.anchor lists them, the rest scaled by "
                         "(v1 probe baseline / probe) ** compute share; kept as they were, with no reference in v2")
        elif scaled:
            rows_were = "scaled by (v1 probe baseline / the probe timed beside each row) ** compute share; kept as they were"
        else:
            rows_were = "raw times (v1 timed no probe for this runtime); kept as they were"
    old_load = dict(entry.pop("load", None) or {})
    v1 = {"protocol": old_protocol, "passes_kept": passes.get("kept"), "load": old_load}
    if reference:
        v1["reference"] = reference
    if anchor and not fully_anchored:
        v1["anchor"] = anchor
    passes["kept"] = f"v1: {passes.get('kept')}" if passes else None
    share = float(old_load.get("background_cpu_share") or 0.0)
    entry.update(
        protocol=protocol.to_dict(), measurement=measurement, passes={k: v for k, v in passes.items() if v is not None},
        load=load_entry(share, bool(old_load.get("under_load")), protocol, measurement, passes),
        converted={"from": V1, "on": today(), "rows": rows_were, "v1": v1},
    )
    return entry


def main() -> int:
    root = Path("latency_tables")
    for meta_path in sorted(root.glob("*/*/meta.json")):
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != V1:
            print(f"skip {meta_path} ({meta.get('format')})")
            continue
        tables = {}
        for name, entry in meta["tables"].items():
            csv_text = (meta_path.parent / entry["file"]).read_text().splitlines()
            header = csv_text[0].split(",")
            keys = [_key(dict(zip(header, line.split(",")))) for line in csv_text[1:] if line]
            new = convert_entry(entry, keys)
            TableMeta.from_dict(new, f"{meta_path} {name}")  # must load under v2
            tables[name] = new
            m = new.get("measurement", {}).get("reference", "-")
            print(f"{meta_path.parent}/{name}: {new['source']} reference={m} noisy_host={new.get('load', {}).get('noisy_host')}")
        meta.update(format=TABLE_FORMAT, tables=tables)
        write_json_atomic(meta_path, meta)
    print(f"(noisy host above {NOISY_HOST_SPREAD:.0%}; speed_spread from {speed_spread.__name__})")
    return 0


def _key(r: dict) -> str:
    return (f"{r['block']}|{r['phase']}|b{r['batch']}|s{r['seq_len']}|c{r['context_len']}|"
            f"d{r['depth']}|h{r['heads']}|k{r['kv_heads']}|f{r['ffn']}|{r['dtype']}")


if __name__ == "__main__":
    sys.exit(main())
