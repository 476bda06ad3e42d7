"""Supernet construction quality: build time, depth methods, width orders (issue 3).

    .venv/bin/python benchmarks/supernet_quality.py --models minilm ref-decoder --write-docs

For each model: the wall time of a default ``anyshape supernet build`` (DP greedy, fluctuation
orders); the held-out metric at every depth for the DP (greedy, beam 4) vs drop-last vs block
influence; and, at full depth, the held-out metric at FFN widths 100/87.5/75/62.5/50% (and at
head widths that keep whole KV groups, where heads can be cut) for fluctuation vs magnitude vs
random orders, each with and without FLAP bias compensation. Decoders report held-out
perplexity (lower is better), encoders the cosine of mean-pooled embeddings to the full
model's (higher is better). ``--write-docs`` replaces the section "## Supernet construction
(issue 3)" of docs/BENCHMARKS.md and nothing else.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from _docs import replace_section

from nas.cuts import plan_cuts
from nas.hub import resolve_model
from nas.modeling import load_model
from nas.shape import Shape
from nas.supernet import width as W
from nas.supernet.build import BuildConfig, build_supernet, depth_tables
from nas.supernet.calibration import CalibrationConfig, prepare_data
from nas.supernet.evaluate import Score, SubnetEvaluator

FRACTIONS = (1.0, 0.875, 0.75, 0.625, 0.5)
SECTION = "## Supernet construction (issue 3)"


def shown(kind: str, score: Score) -> float:
    return score.metrics["perplexity"] if kind == "decoder" else score.metrics["cosine"]


def run_model(spec: str, beam: int, seed: int, num_calib: int) -> dict[str, Any]:
    source = resolve_model(spec)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        calib_cfg = CalibrationConfig(num_calib=num_calib, num_heldout=num_calib)
        built = build_supernet(spec, Path(tmp) / "sn", BuildConfig(calibration=calib_cfg), progress=False)
        build_s = time.perf_counter() - t
    model, family = load_model(source)
    space = family.space(source.config_dict())
    data = prepare_data(source.path, family, calib_cfg, int(model.config.vocab_size))
    out: dict[str, Any] = {"model": spec, "kind": family.kind, "beam": beam, "num_calib": num_calib, "layers": space.num_layers, "build_s": build_s,
                           "build_timings": built.timings, "calibration": data.record}
    with torch.no_grad():
        calib = SubnetEvaluator(model, family, space, data.calib)
        heldout = SubnetEvaluator(model, family, space, data.heldout)
        full = heldout.full_score()
        out["full"] = shown(family.kind, full)
        t = time.perf_counter()
        tables = depth_tables(calib, heldout, space, BuildConfig(baselines=True), progress=False)
        out["depth_greedy_s"] = time.perf_counter() - t
        t = time.perf_counter()
        beam_tables = depth_tables(calib, heldout, space, BuildConfig(beam=beam), progress=False)
        out["depth_beam_s"] = time.perf_counter() - t
        depth: dict[str, list[dict[str, Any]]] = {}
        for name, table in (("dp greedy", tables["dp"]), (f"dp beam {beam}", beam_tables["dp"]),
                            ("drop-last", tables["drop-last"]), ("block influence", tables["block-influence"])):
            depth[name] = [{"depth": r["depth"], "layers": r["layers"], "calib_loss": r["calib_loss"],
                            "heldout": r["heldout"]["perplexity" if family.kind == "decoder" else "cosine"]} for r in table.rows]
        out["depth"] = depth

        stats = W.collect_stats(model, family, space, data.calib)
        orders = {
            "fluctuation": W.fluctuation_orders(model, family, space, stats),
            "magnitude": W.magnitude_orders(model, family, space),
            "random": W.random_orders(space, seed),
        }
        widths: list[tuple[str, float, Shape]] = [("ffn", f, Shape(ffn=max(1, round(space.ffn_size * f)))) for f in FRACTIONS]
        if space.heads_cuttable:
            for heads, kv in sorted({p for p in space.head_choices() if p[1] * space.group_size == p[0]}, reverse=True):
                widths.append(("heads", heads / space.num_heads, Shape(heads=heads, kv_heads=kv)))
        rows = []
        for axis, fraction, shape in widths:
            resolved = shape.resolve(space)
            row: dict[str, Any] = {"axis": axis, "fraction": fraction, "shape": resolved.to_dict()}
            for method, order in orders.items():
                cuts = plan_cuts(space, resolved, order)
                row[method] = shown(family.kind, heldout.score(tuple(range(space.num_layers)), cuts=cuts))
                shifts = W.compensation_biases(model, family, space, cuts, stats)
                row[f"{method}+bc"] = shown(family.kind, heldout.score(
                    tuple(range(space.num_layers)), cuts=cuts, hooks=lambda m, s=shifts: W.compensated(m, family, s)))
            rows.append(row)
        out["width"] = rows
    return out


def markdown(results: list[dict[str, Any]]) -> str:
    cpu = platform.processor() or platform.machine()
    lines = [SECTION, "",
             f"`benchmarks/supernet_quality.py` on this machine (2-core CPU, {cpu}, torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads, shared with other jobs). Calibration: the builtin `stdlib-docs` corpus, "
             "N calibration and N held-out sequences (N per model below; decoders: windows of 128 tokens; encoders: one "
             "document each, at most 128 tokens), seed 0; held-out documents are disjoint from calibration (and from the "
             "reference decoder's training data).", ""]
    for r in results:
        metric = "held-out perplexity (lower is better)" if r["kind"] == "decoder" else \
            "held-out cosine of mean-pooled embeddings to the full model (higher is better)"
        better = min if r["kind"] == "decoder" else max
        beam = r["beam"]
        lines += [f"### {r['model']} ({r['kind']}, {r['layers']} layers; N = {r['num_calib']})", "",
                  f"- Build time (default `anyshape supernet build {r['model']}`: DP greedy, fluctuation orders, held-out "
                  f"scores of every row): **{r['build_s']:.1f} s** "
                  f"({', '.join(f'{k} {v:.1f}' for k, v in r['build_timings'].items())}).",
                  f"- DP greedy with both baselines: {r['depth_greedy_s']:.1f} s; DP beam {beam}: {r['depth_beam_s']:.1f} s.",
                  f"- Full model: {r['full']:.4f}.", "",
                  f"Depth — {metric}; the layers the DP (greedy) and block influence keep in the last columns.", ""]
        names = list(r["depth"])
        lines.append("| depth | " + " | ".join(names) + " | dp greedy layers | block-influence layers |")
        lines.append("|---:|" + "---:|" * len(names) + "---|---|")
        for i, row in enumerate(r["depth"][names[0]]):
            values = [r["depth"][n][i]["heldout"] for n in names]
            best = better(values)
            cells = [f"**{v:.4f}**" if v == best else f"{v:.4f}" for v in values]
            extra = [",".join(map(str, r["depth"][n][i]["layers"])) for n in (names[0], names[-1])]
            lines.append(f"| {row['depth']} | " + " | ".join(cells) + f" | {extra[0]} | {extra[1]} |")
        lines += ["", f"Width at full depth — {metric}; `+bc` = FLAP bias compensation.", ""]
        methods = ["fluctuation", "magnitude", "random", "fluctuation+bc", "magnitude+bc", "random+bc"]
        lines.append("| cut | width | shape | " + " | ".join(methods) + " |")
        lines.append("|---|---:|---|" + "---:|" * len(methods))
        for row in r["width"]:
            values = [row[m] for m in methods]
            best = better(values)
            cells = [f"**{v:.4f}**" if v == best else f"{v:.4f}" for v in values]
            shape = ", ".join(f"{k} {v}" for k, v in row["shape"].items() if k != "layers")
            lines.append(f"| {row['axis']} | {row['fraction']:.1%} | {shape} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)



def main() -> None:
    parser = argparse.ArgumentParser(description="Supernet construction quality benchmark (issue 3).")
    parser.add_argument("--models", nargs="*", default=["minilm", "ref-decoder"])
    parser.add_argument("--beam", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="also write the raw results here")
    parser.add_argument("--previous", type=Path, default=None, help="results JSON of an earlier run (other models) to report too")
    parser.add_argument("--num-calib", type=int, default=32, help="calibration and held-out sequences")
    parser.add_argument("--write-docs", action="store_true", help="replace this benchmark's section of docs/BENCHMARKS.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = json.loads(args.previous.read_text()) if args.previous else []
    for spec in args.models:
        results.append(run_model(spec, args.beam, args.seed, args.num_calib))
        print(json.dumps({k: v for k, v in results[-1].items() if k in ("model", "build_s", "full")}), flush=True)
    text = markdown(results)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str) + "\n")
    if args.write_docs:
        replace_section(SECTION, text)


if __name__ == "__main__":
    main()
