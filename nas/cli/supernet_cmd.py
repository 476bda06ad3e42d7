"""``anyshape supernet build MODEL --out DIR`` and ``anyshape supernet train SUPERNET --out DIR``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from nas.cli._app import app, print_json

supernet_app = typer.Typer(help="Build supernets: layer sets for every depth and importance-ordered widths.", no_args_is_help=True)
app.add_typer(supernet_app, name="supernet")


@supernet_app.command("build")
def build_command(
    model: str = typer.Argument(..., help="Base model: directory, builtin alias (minilm, ref-decoder) or hub id."),
    out: Path = typer.Option(..., "--out", help="Supernet directory to write; it must not exist (or pass --overwrite)."),
    min_depth: int = typer.Option(1, "--min-depth", help="Smallest depth in the depth table (1..layers)."),
    depth_method: str = typer.Option("dp", "--depth-method", help="dp | drop-last | block-influence: the table depth shapes use."),
    beam: int = typer.Option(1, "--beam", help="DP sets kept per cell: 1 = AmoebaLLM's greedy recurrence, k > 1 searches more."),
    baselines: bool = typer.Option(False, "--baselines", help="Also store drop-last and block-influence tables."),
    width_method: str = typer.Option("fluctuation", "--width-method", help="fluctuation (FLAP) | magnitude | random."),
    bias_compensation: bool = typer.Option(False, "--bias-compensation", help="FLAP bias compensation (bert, llama)."),
    calib_text: Path | None = typer.Option(None, "--calib-text", help="Calibration text / JSON-lines file or folder instead of the builtin corpus."),
    calib_dataset: str | None = typer.Option(None, "--calib-dataset", help="Hugging Face dataset NAME[:CONFIG] (needs `datasets` and network)."),
    corpus: str = typer.Option("stdlib-docs", "--corpus", help="Builtin corpus when no --calib-text / --calib-dataset: "
                                                              "stdlib-docs | english (`anyshape corpus build english`)."),
    num_calib: int = typer.Option(32, "--num-calib", help="Calibration sequences (decoders) or sentences (encoders)."),
    num_heldout: int = typer.Option(32, "--num-heldout", help="Held-out sequences or sentences."),
    seq_len: int = typer.Option(128, "--seq-len", help="Tokens per sequence."),
    batch_size: int = typer.Option(16, "--batch-size", help="Rows per forward pass."),
    seed: int = typer.Option(0, "--seed", help="Seed of data sampling and the random width baseline."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it exists (only after success)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bars."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Calibrate MODEL once and write a supernet from which any shape can be cut instantly."""
    from nas.api import build_supernet
    from nas.supernet.build import BuildConfig
    from nas.supernet.calibration import CalibrationConfig

    calibration = CalibrationConfig(
        calib_text=None if calib_text is None else str(calib_text), calib_dataset=calib_dataset, corpus=corpus, num_calib=num_calib,
        num_heldout=num_heldout, seq_len=seq_len, batch_size=batch_size, seed=seed,
    )
    config = BuildConfig(
        min_depth=min_depth, depth_method=depth_method, beam=beam, baselines=baselines, width_method=width_method,
        bias_compensation=bias_compensation, seed=seed, calibration=calibration,
    )
    result = build_supernet(model, out, config, overwrite=overwrite, progress=not no_progress)
    table = result.supernet.depth_tables[result.supernet.default_depth_table]
    if as_json:
        print_json({"out": str(result.out), "seconds": round(result.seconds, 2), "sha256": result.supernet.sha256(),
                    "metric": result.supernet.metric, "depth_table": table.to_dict()})
        return
    typer.echo(f"wrote supernet {result.out} in {result.seconds:.1f} s ({result.supernet.metric}, width {config.width_method})")
    for row in table.rows:
        held = f"  held-out {row['heldout_loss']:.4f}" if "heldout_loss" in row else ""
        typer.echo(f"  depth {row['depth']:>3}: layers {row['layers']}  calib {row['calib_loss']:.4f}{held}")


@supernet_app.command("train")
def train_command(
    supernet: Path = typer.Argument(..., help="Supernet directory (from `anyshape supernet build`)."),
    out: Path | None = typer.Option(None, "--out", help="Trained supernet directory to write (not needed with --adapter none)."),
    steps: int = typer.Option(200, "--steps", help="Optimizer steps (each: largest + smallest + n random shapes)."),
    max_minutes: float = typer.Option(0.0, "--max-minutes", help="Wall-clock budget of training (0: none); it stops there, validated."),
    adapter: str = typer.Option("smol", "--adapter", help="smol (mixture of LoRAs) | single (one shared LoRA) | none (evaluate only)."),
    experts: int = typer.Option(5, "--experts", help="SMoL: LoRA experts per linear layer (K)."),
    rank: int = typer.Option(8, "--rank", help="LoRA rank of every expert."),
    top_k: int = typer.Option(2, "--top-k", help="SMoL: experts mixed per layer."),
    num_random: int = typer.Option(2, "--num-random", help="Random shapes per step besides the largest and smallest."),
    short_spans: float | None = typer.Option(None, "--short-spans", help="Encoders: share of training sentences cut to 1-32 words "
                                             "(default: the recipe's)."),
    relation_weight: float | None = typer.Option(None, "--relation-weight", help="Encoders: weight of the batch similarity-matrix "
                                                 "loss (default: the recipe's)."),
    data: str | None = typer.Option(None, "--data", help="Training text: a corpus name (english: `anyshape corpus build`) or a "
                                                         "text / JSON-lines FILE or DIR; default: the builtin corpus's calibration pool."),
    num_train: int = typer.Option(256, "--num-train", help="Training sequences (decoders) or sentences (encoders)."),
    batch_size: int = typer.Option(8, "--batch-size", help="Rows per step."),
    seq_len: int = typer.Option(0, "--seq-len", help="Tokens per sequence (0: the supernet's calibration length)."),
    lr: float = typer.Option(1e-3, "--lr", help="AdamW peak learning rate."),
    lr_schedule: str = typer.Option("cosine", "--lr-schedule", help="cosine (warm-up, then decay to a tenth; over the steps, or "
                                                                     "the time of --max-minutes where that ends sooner) | constant."),
    teacher: str = typer.Option("base", "--teacher", help="What the students learn from: base (the frozen base model) | "
                                                          "largest (AmoebaLLM's in-place distillation)."),
    task_weight: float = typer.Option(0.0, "--task-weight", help="Decoders, teacher base: next-token loss weight "
                                                                 "added to the largest's distillation loss."),
    balance: str = typer.Option("largest", "--balance", help="Loss-magnitude balancing of the students: largest "
                                                             "(AmoebaLLM) | mean (the mean student loss) | none."),
    mlfs: bool = typer.Option(False, "--mlfs", help="MLFS gradient scaling of small subnets."),
    no_guard: bool = typer.Option(False, "--no-guard", help="Keep the last state even where a shape got worse than untrained."),
    num_val: int = typer.Option(32, "--num-val", help="Guard: validation sequences / sentences (never trained on)."),
    guard_task: list[str] = typer.Option([], "--guard-task", help="Encoders: the guard also keeps every eval shape's score on "
                                                                  "this task (pairs:FILE | labels:FILE | judged: the human-judged "
                                                                  "sets) from falling; repeatable."),
    eval_every: int = typer.Option(0, "--eval-every", help="Guard: steps between validations (0: a tenth of --steps, >= 10)."),
    seed: int = typer.Option(0, "--seed", help="Seed of init, data order, shape sampling and gate noise."),
    checkpoint_every: int = typer.Option(50, "--checkpoint-every", help="Steps between checkpoints (0: none)."),
    checkpoint_dir: Path | None = typer.Option(None, "--checkpoint-dir", help="Where checkpoints go (default: OUT.checkpoint)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the last checkpoint of the same run."),
    model: str | None = typer.Option(None, "--model", help="Base model, if not where the supernet says (checked by sha256)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it exists (only after success)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Fine-tune SUPERNET so every shape improves at once (SMoL, distillation from the base, sandwich rule, guard)."""
    from nas.finetune.config import AdapterConfig, FinetuneConfig
    from nas.finetune.train import train_supernet

    if adapter == "single":
        adapter_config = AdapterConfig.single(rank=rank)
    else:
        adapter_config = AdapterConfig(mode=adapter, num_experts=experts, rank=rank, top_k=top_k)
    config = FinetuneConfig(
        adapter=adapter_config, steps=steps, max_minutes=max_minutes, lr=lr, lr_schedule=lr_schedule, batch_size=batch_size, num_train=num_train, seq_len=seq_len,
        data=data, num_random=num_random, teacher=teacher, task_weight=task_weight,
        **recipe_overrides(short_spans=short_spans, relation_weight=relation_weight),
        balance=balance, grad_scale="mlfs" if mlfs else "none", seed=seed, checkpoint_every=checkpoint_every,
        guard=not no_guard, num_val=num_val, eval_every=eval_every, guard_tasks=guard_task_specs(guard_task),
    )
    result = train_supernet(supernet, out, config, model=model, resume=resume, checkpoint_dir=checkpoint_dir,
                            overwrite=overwrite, progress=not no_progress)
    if as_json:
        print_json({"out": None if result.out is None else str(result.out), "seconds": round(result.seconds, 2),
                    "steps": result.steps, "heldout": result.heldout, "shapes": result.shapes,
                    "kept_step": result.guard.get("kept_step", result.steps), "notes": result.notes})
        return
    where = f"wrote {result.out}" if result.out is not None else "evaluated (nothing written)"
    typer.echo(f"{where}: {result.steps} steps in {result.seconds:.1f} s ({adapter})")
    for note in result.notes:
        typer.echo(f"  {note}")
    for name, metrics in result.heldout.items():
        values = "  ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        typer.echo(f"  {name:>8} {result.shapes[name]}: {values}")


def recipe_overrides(**values: float | None) -> dict[str, Any]:
    """The recipe fields given on the command line (None: keep the recipe's default)."""
    return {k: v for k, v in values.items() if v is not None}


def guard_task_specs(values: list[str]) -> tuple[str, ...]:
    """``--guard-task`` values; ``judged`` stands for the human-judged sets of :mod:`nas.supernet.judged`."""
    specs: list[str] = []
    for value in values:
        if value == "judged":
            from nas.supernet.judged import judged_sets

            specs += judged_sets().values()
        else:
            specs.append(value)
    return tuple(specs)
