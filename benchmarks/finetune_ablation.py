"""Supernet fine-tuning ablation: what the recipe and each of its parts do to every shape.

    .venv/bin/python benchmarks/finetune_ablation.py --models minilm --steps 60 --json /tmp/ft-minilm.json
    .venv/bin/python benchmarks/finetune_ablation.py --models ref-decoder --steps 60 --json /tmp/ft-dec.json
    .venv/bin/python benchmarks/finetune_ablation.py --report /tmp/ft-minilm.json /tmp/ft-dec.json --write-docs

For each model: build its supernet once (default DP greedy, fluctuation orders; held-out depth
scores skipped), then train it once per cell at the same step budget (:data:`CELLS`: the recipe,
AmoebaLLM's in-place distillation as it was, and the recipe with one part changed) and score the
largest, three middle and the smallest shape (:func:`nas.finetune.distill.eval_shapes`) on the
supernet's held-out pool (documents no training or validation row comes from). Decoders: held-out
perplexity (lower is better); encoders: cosine of mean-pooled embeddings to the frozen base model
(higher is better). A cell's "worse" row counts the shapes below the untrained supernet. Every cell
but ``in-place, no guard`` and ``no guard`` runs with the guard, whose notes (roll-backs, stops)
are reported. ``--report`` merges result files of separate runs (one model per process: on a
2-core machine two runs at one thread each); ``--write-docs`` replaces the section
"## Supernet fine-tuning" of docs/BENCHMARKS.md and nothing else.
"""

from __future__ import annotations

import argparse
import datetime
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from _docs import replace_section

from nas.finetune.config import AdapterConfig, FinetuneConfig
from nas.finetune.train import train_supernet
from nas.supernet.build import BuildConfig, build_supernet
from nas.supernet.calibration import CalibrationConfig
from profilers.environment import cpu_slug

SECTION = "## Supernet fine-tuning"
SHAPES = ("largest", "mid-75", "mid-50", "mid-25", "smallest")
#: cell name -> FinetuneConfig fields over the recipe's (``adapter`` is "smol" | "single" | "none";
#: ``full_is_base``: the AdapterConfig field).
CELLS: dict[str, dict[str, Any]] = {
    "untrained": {"adapter": "none"},
    "recipe": {},
    "in-place, no guard": {"teacher": "largest", "balance": "largest", "guard": False, "full_is_base": False},
    "no guard": {"guard": False},
    "balance mean": {"balance": "mean"},
    "balance none": {"balance": "none"},
    "MLFS scaling": {"grad_scale": "mlfs"},
    "single LoRA": {"adapter": "single"},
    "lr x3": {"lr": 3e-3},
    "constant lr": {"lr_schedule": "constant"},
    "no short spans": {"short_spans": 0.0},  # encoders only: decoders train on token windows
    "no relational loss": {"relation_weight": 0.0},  # encoders only
}


def cell_config(overrides: dict[str, Any], steps: int, rank: int, batch_size: int, seq_len: int, seed: int) -> FinetuneConfig:
    fields = dict(overrides)
    mode = fields.pop("adapter", "smol")
    full_is_base = fields.pop("full_is_base", True)
    adapter = {"none": AdapterConfig(mode="none"), "single": AdapterConfig.single(rank=rank, full_is_base=full_is_base),
               "smol": AdapterConfig(rank=rank, full_is_base=full_is_base)}[mode]
    return FinetuneConfig(adapter=adapter, steps=steps, batch_size=batch_size, seq_len=seq_len, seed=seed, checkpoint_every=0,
                          **fields)


def run_model(spec: str, cells: list[str], steps: int, rank: int, batch_size: int, seq_len: int, num_calib: int, seed: int,
              work: Path, corpus: str = "stdlib-docs") -> dict[str, Any]:
    t = time.perf_counter()
    calibration = CalibrationConfig(num_calib=num_calib, num_heldout=num_calib, seed=seed, corpus=corpus)
    sn_dir = work / f"{spec}-supernet"
    build_supernet(spec, sn_dir, BuildConfig(heldout_scores=False, calibration=calibration), progress=False)
    result: dict[str, Any] = {"model": spec, "corpus": corpus, "steps": steps, "rank": rank, "batch_size": batch_size, "seq_len": seq_len,
                              "num_calib": num_calib, "threads": torch.get_num_threads(), "date": datetime.date.today().isoformat(),
                              "machine": cpu_slug(), "build_s": round(time.perf_counter() - t, 1),
                              "recipe": FinetuneConfig().to_dict(), "cells": {}}
    for name in cells:
        config = cell_config(CELLS[name], steps, rank, batch_size, seq_len, seed)
        out = None if config.adapter.mode == "none" else work / f"{spec}-{len(result['cells'])}"
        trained = train_supernet(sn_dir, out, config, progress=False)  # seconds: load + data + training, not evaluation
        result["cells"][name] = {"train_s": round(trained.seconds, 1), "heldout": trained.heldout, "shapes": trained.shapes,
                                 "steps_done": trained.steps, "guard": trained.guard, "last_losses": trained.losses[-3:]}
        print(json.dumps({"model": spec, "cell": name, "train_s": round(trained.seconds, 1), "notes": trained.notes,
                          "heldout": trained.heldout}), flush=True)
    return result


def mean_gain(untrained: dict[str, Any], trained: dict[str, Any], metric: str, decoder: bool) -> float:
    """Over the shapes but the largest: decoders' mean relative perplexity reduction, encoders' mean cosine gain."""
    smaller = [s for s in SHAPES if s != "largest"]
    if decoder:
        return sum(1 - trained[s][metric] / untrained[s][metric] for s in smaller) / len(smaller)
    return sum(trained[s][metric] - untrained[s][metric] for s in smaller) / len(smaller)


def markdown(results: list[dict[str, Any]]) -> str:
    lines = [SECTION, "",
             "    .venv/bin/python benchmarks/finetune_ablation.py --models MODEL --corpus CORPUS --steps N --threads 1 --json FILE   # one per model",
             "    .venv/bin/python benchmarks/finetune_ablation.py --report FILE... --write-docs", "",
             "Each cell trains the same supernet for the same steps (batch 8, the calibration pool of the corpus named "
             "per model: 256 training rows and 32 validation rows, seed 0) and is scored on the supernet's held-out pool (disjoint "
             "documents). Every step trains the largest, the smallest and 2 random shapes (sandwich rule). The recipe: "
             "SMoL (K = 5 experts, rank 8, top-2, shape-only gate, gate noise in training only, routing amplitude "
             "1 - params/params_full so the full shape is the base exactly), every shape distilled from the frozen base "
             "model (`teacher: base`), loss-magnitude balancing to the largest (AmoebaLLM's rule: the largest's "
             "next-token loss on decoders; on encoders the largest is the base, its loss is 0 and the rule does "
             "nothing, so `balance none` equals the recipe there), on encoders half the training sentences cut to "
             "spans of 1-32 words and a relational loss (weight 1: the batch's cosine-similarity matrix against the "
             "base's) beside the embedding loss, AdamW lr 1e-3 with the cosine schedule (5 % warm-up, decay to a tenth), "
             "and the guard (validation every "
             "tenth of the run; the best state with no shape worse than untrained is kept, training stops after 2 "
             "harmful validations in a row). `in-place, no guard` is AmoebaLLM's in-place distillation as it ran "
             "before (the largest on the task loss and trained like the others, the students on its outputs); every "
             "other cell changes one part of the recipe. Bold: the best of the row; `worse`: shapes below untrained. "
             "Wall times are of two such runs side by side on 2 cores: compare them within a table only.", ""]
    for r in results:
        cells = r["cells"]
        names = [n for n in CELLS if n in cells]
        decoder = "perplexity" in next(iter(cells[names[0]]["heldout"].values()))
        metric = "perplexity" if decoder else "cosine"
        base = cells.get("untrained")
        seq = r.get("seq_len") or 128
        lines += [f"### {r['model']}: {r['steps']} steps, batch {r['batch_size']} x {seq} tokens, rank {r['rank']}, "
                  f"{r.get('threads', '?')} thread(s), {r.get('machine', '?')}, {r.get('date', '?')}", "",
                  f"Supernet build {r['build_s']} s on `{r.get('corpus', 'stdlib-docs')}` (its calibration pool trains, its "
                  f"held-out pool scores). Held-out {metric} ({'lower' if decoder else 'higher'} is better).", "",
                  "| shape | depth / heads / ffn | " + " | ".join(names) + " |",
                  "|---|---|" + "---:|" * len(names)]
        for shape in SHAPES:
            s = cells[names[0]]["shapes"][shape]
            values = [cells[n]["heldout"][shape][metric] for n in names]
            best = min(values) if decoder else max(values)
            row = [f"**{v:.4f}**" if v == best else f"{v:.4f}" for v in values]
            lines.append(f"| {shape} | {s['depth']} / {s['heads']} / {s['ffn']} | " + " | ".join(row) + " |")
        if base is not None:
            sign = 1 if decoder else -1
            worse = [sum(sign * (cells[n]["heldout"][s][metric] - base["heldout"][s][metric]) > 1e-9 for s in SHAPES) for n in names]
            lines.append("| worse than untrained | | " + " | ".join(map(str, worse)) + " |")
        if base is not None:
            label = "mean perplexity reduction, 4 smaller shapes" if decoder else "mean cosine gain, 4 smaller shapes"
            gains = [mean_gain(base["heldout"], cells[n]["heldout"], metric, decoder) for n in names]
            lines.append(f"| {label} | | " + " | ".join(f"{g:+.1%}" if decoder else f"{g:+.4f}" for g in gains) + " |")
        lines.append("| steps run / kept | | " + " | ".join(
            f"{cells[n]['steps_done']} / {cells[n]['guard'].get('kept_step', cells[n]['steps_done'])}" for n in names) + " |")
        lines.append("| wall time (load, data, training) | | " + " | ".join(f"{cells[n]['train_s']} s" for n in names) + " |")
        notes = [f"- {n}: {note}" for n in names for note in cells[n]["guard"].get("notes", [])]
        if notes:
            lines += ["", "Guard notes:", "", *notes]
        lines.append("")
    return "\n".join(lines)



def main() -> None:
    parser = argparse.ArgumentParser(description="Supernet fine-tuning ablation.")
    parser.add_argument("--models", nargs="*", default=["minilm", "ref-decoder"])
    parser.add_argument("--cells", nargs="*", default=list(CELLS), choices=list(CELLS), metavar="CELL")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=64, help="training tokens per sequence (0: the supernet's, 128)")
    parser.add_argument("--num-calib", type=int, default=32, help="calibration and held-out sequences of the supernet")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--corpus", default="stdlib-docs", help="builtin corpus of the supernets (english: anyshape corpus build)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="write the raw results here (after every model)")
    parser.add_argument("--report", type=Path, nargs="*", default=None, help="report these result files instead of running")
    parser.add_argument("--write-docs", action="store_true", help="replace this benchmark's section of docs/BENCHMARKS.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results: list[dict[str, Any]] = []
    if args.report is not None:
        for path in args.report:
            results += json.loads(path.read_text())
    else:
        with tempfile.TemporaryDirectory(prefix="anyshape-ft-") as work:
            for spec in args.models:
                results.append(run_model(spec, args.cells, args.steps, args.rank, args.batch_size, args.seq_len, args.num_calib,
                                         args.seed, Path(work), args.corpus))
                if args.json:
                    args.json.write_text(json.dumps(results, indent=1) + "\n")
    text = markdown(results)
    print(text)
    if args.write_docs:
        replace_section(SECTION, text)


if __name__ == "__main__":
    main()
