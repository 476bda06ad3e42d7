"""Ship a trained MiniLM supernet with the package: ``nas/assets/minilm-supernet/``, which the quickstart uses.

    .venv/bin/python benchmarks/minilm_quality.py --minutes 30 --lr 3e-3 --num-train 8192 --batch-size 16 \\
        --eval-every 100 --corpus english --data english --work /tmp/mq --json /tmp/mq.json
    .venv/bin/python scripts/ship_minilm_supernet.py /tmp/mq/minilm-trained --report /tmp/mq.json

The source must be a trained supernet (adapters) of the builtin MiniLM's exact weights that
carries its held-out rows (every supernet built since they are stored does), so that the
quickstart's search scores shapes on them without the corpus it was calibrated on. Its files
are copied atomically and a README is written from its training record and the benchmark's
results (``--report``).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from nas._io import atomic_directory
from nas.errors import AnyshapeError
from nas.hub import resolve_model, weights_sha256
from nas.supernet.artifact import Supernet

TARGET = Path(__file__).resolve().parents[1] / "nas" / "assets" / "minilm-supernet"


def readme(supernet: Supernet, log: dict, report: dict | None) -> str:
    training = dict((supernet.adapters or {}).get("training") or {})
    lines = ["# Fine-tuned MiniLM supernet (shipped)", "",
             "The supernet `anyshape quickstart` searches: sentence-transformers/all-MiniLM-L6-v2 (the builtin `minilm`)",
             f"made any-shape on the `{supernet.calibration.get('corpus')}` corpus (its held-out rows, stored in the supernet, "
             "are what the quickstart's cosine is measured on), then fine-tuned with anyshape's recipe (SMoL adapters distilled",
             "from the frozen base, guard). Made by `scripts/ship_minilm_supernet.py` (its docstring has the commands).", "",
             f"- supernet sha256: `{supernet.sha256()}`; base weights sha256: `{supernet.base_sha256}`",
             f"- training: {training.get('steps_done')} steps (kept step {training.get('kept_step')}), "
             f"{log.get('seconds', 0) / 60:.1f} min on {log.get('threads')} thread(s), lr {training.get('lr')}, "
             f"batch {training.get('batch_size')}, data `{training.get('data') or 'stdlib-docs'}` "
             f"({training.get('num_train')} sentences), adapter rank {(training.get('adapter') or {}).get('rank')}",
             "- the data's sources and licences: nas/data/README.md; the base model's licence: Apache-2.0 "
             "(sentence-transformers/all-MiniLM-L6-v2)"]
    notes = (log.get("guard") or {}).get("notes") or []
    if notes:
        lines.append("- guard: " + "; ".join(notes))
    if report is not None:
        lines += ["", "Held-out cosine to the base model (untrained -> trained), from `benchmarks/minilm_quality.py`:", ""]
        for name, row in report["runs"]["trained"]["shapes"].items():
            before = report["runs"]["untrained"]["shapes"].get(name)
            lines.append(f"- {name} ({row['shape']}): {before['cosine']:.4f} -> {row['cosine']:.4f}" if before
                         else f"- {name} ({row['shape']}): {row['cosine']:.4f}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description="Ship a trained MiniLM supernet with the package.")
    parser.add_argument("source", type=Path, help="a trained supernet directory")
    parser.add_argument("--report", type=Path, default=None, help="benchmarks/minilm_quality.py --json output")
    args = parser.parse_args()
    supernet = Supernet.load(args.source)
    if supernet.adapters is None:
        raise AnyshapeError(f"{args.source} is not a trained supernet (no adapters); run anyshape supernet train first")
    if supernet.heldout_inputs is None:
        raise AnyshapeError(f"{args.source} stores no held-out rows (built by an older anyshape); rebuild and retrain it")
    if supernet.base_sha256 != weights_sha256(resolve_model("minilm").path):
        raise AnyshapeError(f"{args.source} is a supernet of other base weights than the builtin minilm")
    log_path = args.source / "train_log.json"
    log = json.loads(log_path.read_text()) if log_path.is_file() else {}
    report = json.loads(args.report.read_text()) if args.report is not None else None
    with atomic_directory(TARGET, overwrite=True) as tmp:
        for file in sorted(args.source.iterdir()):
            if file.is_file() and file.suffix in (".json", ".safetensors") and file.name != "train_log.json":
                shutil.copy2(file, tmp / file.name)
        (tmp / "README.md").write_text(readme(supernet, log, report))
    shipped = Supernet.load(TARGET)
    assert shipped.sha256() == supernet.sha256()
    print(f"shipped {TARGET} (sha256 {shipped.sha256()[:12]}, {sum(f.stat().st_size for f in TARGET.iterdir()) / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
