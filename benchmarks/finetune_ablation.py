"""Supernet fine-tuning ablation (issue 4): no fine-tuning vs one shared LoRA vs SMoL.

    .venv/bin/python benchmarks/finetune_ablation.py --models minilm ref-decoder --steps 100 --write-docs

For each model: build its supernet (default DP greedy, fluctuation orders; held-out scores of the
depth rows skipped), then run ``anyshape supernet train`` three ways at the same step budget --
``--adapter none`` (evaluation only), ``--adapter single`` (one shared LoRA, rank r) and
``--adapter smol`` (K = 5 experts, rank r, top-2) -- and report the held-out metric of the
largest, three middle and the smallest shape (the shapes of :func:`nas.finetune.distill.eval_shapes`)
with the training wall time. Decoders: held-out perplexity (lower is better); encoders: cosine of
mean-pooled embeddings to the frozen full model (higher is better). ``--write-docs`` replaces the
section "## Supernet fine-tuning (issue 4)" of docs/BENCHMARKS.md and nothing else.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from nas.finetune.config import AdapterConfig, FinetuneConfig
from nas.finetune.train import train_supernet
from nas.supernet.build import BuildConfig, build_supernet
from nas.supernet.calibration import CalibrationConfig

SECTION = "## Supernet fine-tuning (issue 4)"
SHAPES = ("largest", "mid-75", "mid-50", "mid-25", "smallest")


def run_model(spec: str, steps: int, rank: int, batch_size: int, seq_len: int, num_calib: int, seed: int,
              work: Path) -> dict[str, Any]:
    t = time.perf_counter()
    calibration = CalibrationConfig(num_calib=num_calib, num_heldout=num_calib, seed=seed)
    sn_dir = work / f"{spec}-supernet"
    build_supernet(spec, sn_dir, BuildConfig(heldout_scores=False, calibration=calibration), progress=False)
    result: dict[str, Any] = {"model": spec, "steps": steps, "rank": rank, "batch_size": batch_size, "seq_len": seq_len,
                              "num_calib": num_calib, "threads": torch.get_num_threads(),
                              "build_s": round(time.perf_counter() - t, 1), "modes": {}}
    adapters = {"none": AdapterConfig(mode="none"), "single": AdapterConfig.single(rank=rank), "smol": AdapterConfig(rank=rank)}
    for mode, adapter in adapters.items():
        config = FinetuneConfig(adapter=adapter, steps=steps, batch_size=batch_size, seq_len=seq_len, seed=seed, checkpoint_every=0)
        out = None if mode == "none" else work / f"{spec}-{mode}"
        trained = train_supernet(sn_dir, out, config, progress=False)  # seconds: load + data + training, not evaluation
        result["modes"][mode] = {"train_s": round(trained.seconds, 1), "heldout": trained.heldout, "shapes": trained.shapes,
                                 "first_losses": trained.losses[:1], "last_losses": trained.losses[-5:]}
        print(json.dumps({"model": spec, "mode": mode, "train_s": result["modes"][mode]["train_s"],
                          "heldout": trained.heldout}), flush=True)
    return result


def markdown(results: list[dict[str, Any]], argv: str) -> str:
    lines = [SECTION, "",
             f"`{argv}` on this machine ({platform.machine()}, torch {torch.__version__}; "
             f"a 2-core CPU shared with other engineers' jobs, so times are noisy and pessimistic), "
             f"{datetime.date.today().isoformat()}. Training data: the builtin corpus's calibration pool "
             "(256 sequences/sentences, seed 0); evaluation: the supernet's held-out pool (disjoint documents). "
             "Each step trains the largest, the smallest and 2 random shapes (sandwich rule, in-place distillation, "
             "loss-magnitude balancing). SMoL: K = 5 experts, top-2, shape-only gate; single: one shared LoRA; same rank.", ""]
    for r in results:
        modes = r["modes"]
        any_mode = next(iter(modes.values()))
        decoder = "perplexity" in next(iter(any_mode["heldout"].values()))
        metric = "perplexity" if decoder else "cosine"
        better = "lower is better" if decoder else "higher is better"
        seq = r.get("seq_len") or 128
        lines += [f"### {r['model']} — {r['steps']} steps, batch {r['batch_size']} x {seq} tokens, rank {r['rank']}, "
                  f"{r.get('threads', '?')} thread(s)", "",
                  f"Supernet build (no held-out depth scores): {r['build_s']} s. Held-out {metric} ({better}); "
                  "training wall time in the last row.", "",
                  "| shape | depth / heads / ffn | none | single LoRA | SMoL |", "|---|---|---:|---:|---:|"]
        for name in SHAPES:
            s = any_mode["shapes"][name]
            values = [modes[m]["heldout"][name][metric] for m in ("none", "single", "smol")]
            best = min(values) if decoder else max(values)
            cells = [f"**{v:.4f}**" if v == best else f"{v:.4f}" for v in values]
            lines.append(f"| {name} | {s['depth']} / {s['heads']} / {s['ffn']} | " + " | ".join(cells) + " |")
        lines.append(f"| wall time (load, data, training) | | {modes['none']['train_s']} s | {modes['single']['train_s']} s "
                     f"| {modes['smol']['train_s']} s |")
        lines.append("")
    return "\n".join(lines)


def write_docs(text: str, path: Path) -> None:
    doc = path.read_text()
    if SECTION not in doc:
        path.write_text(doc.rstrip() + "\n\n" + text.rstrip() + "\n")
        return
    start = doc.index(SECTION)
    end = doc.find("\n## ", start + len(SECTION))
    path.write_text(doc[:start] + text.rstrip() + "\n" + ("" if end == -1 else "\n" + doc[end + 1 :]))


def main() -> None:
    import sys

    parser = argparse.ArgumentParser(description="Supernet fine-tuning ablation (issue 4).")
    parser.add_argument("--models", nargs="*", default=["minilm", "ref-decoder"])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=0, help="training tokens per sequence (0: the supernet's, 128)")
    parser.add_argument("--num-calib", type=int, default=32, help="calibration and held-out sequences of the supernet")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="also write the raw results here")
    parser.add_argument("--previous", type=Path, default=None, help="results JSON of an earlier run (other models) to report too")
    parser.add_argument("--write-docs", action="store_true", help="replace this benchmark's section of docs/BENCHMARKS.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = json.loads(args.previous.read_text()) if args.previous else []
    with tempfile.TemporaryDirectory(prefix="anyshape-ft-") as work:
        for spec in args.models:
            results.append(run_model(spec, args.steps, args.rank, args.batch_size, args.seq_len, args.num_calib, args.seed,
                                     Path(work)))
            if args.json:
                args.json.write_text(json.dumps(results, indent=1) + "\n")
    text = markdown(results, "python benchmarks/finetune_ablation.py " + " ".join(sys.argv[1:]))
    print(text)
    if args.write_docs:
        write_docs(text, Path(__file__).resolve().parents[1] / "docs" / "BENCHMARKS.md")


if __name__ == "__main__":
    main()
