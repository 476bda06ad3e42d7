"""``anyshape supernet train``: the fine-tuning loop, its checkpoints and ``--resume``.

A run is a pure function of the supernet, the base weights, the data and the
:class:`~nas.finetune.config.FinetuneConfig` (seed included) on one CPU thread count: the
adapters are initialised from the seed, step ``s`` reads batch ``s`` of a seeded per-epoch
permutation, shapes come from a seeded sampler and gate noise from a seeded generator. A
checkpoint (every ``checkpoint_every`` steps, written atomically) holds the adapters and gate,
the optimizer, the sampler / noise / torch RNG states and the step, so a resumed run ends
bit-identical to an uninterrupted one and a crash loses at most one interval.

Several processes (data parallel): launched by ``torchrun --nproc_per_node N`` (or ``accelerate
launch``, which sets the same ``WORLD_SIZE`` / ``RANK`` / ``LOCAL_RANK`` variables), each process
holds a replica of the frozen base model (on ``cuda:LOCAL_RANK`` when CUDA is available, else
the CPU with the gloo backend), trains the same sandwich shapes on its own batch (global batch
index ``step * world + rank``) and all-reduces the adapter and gate gradients (mean) before the
step; rank 0 alone writes checkpoints, the output and the evaluation, and the run ends with a
check that every rank holds the same adapters. Verified here on CPU with gloo (2 processes);
the CUDA/NCCL path is the same code but has not been run (no GPU on this machine). The base
model is replicated, not sharded: it must fit one device.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from nas._io import atomic_directory, check_output_dir, write_json_atomic
from nas.adapters.smol import ADAPTERS_FORMAT, SMoL, adapter_tensors, lora_targets, targets_to_json
from nas.errors import AnyshapeError
from nas.finetune.config import FinetuneConfig
from nas.finetune.distill import ShapeSampler, eval_shapes, mean_losses, sandwich_step
from nas.supernet.evaluate import Batch

STATE_FILE = "state.pt"
#: The guard's validation documents: this share of the training pool's documents, by a keyed hash (seed).
VALIDATION_FRACTION = 0.1
VALIDATION_SPLIT_SEED = 1
TRAIN_LOG_FILE = "train_log.json"


@dataclass
class TrainResult:
    out: Path | None
    seconds: float
    steps: int
    losses: list[dict[str, float]]
    heldout: dict[str, dict[str, float]] = field(default_factory=dict)  # eval shape -> metrics
    shapes: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: The guard's record (:meth:`Guard.record`): validations, the step kept, what it said.
    guard: dict[str, Any] = field(default_factory=dict)

    @property
    def notes(self) -> list[str]:
        return list(self.guard.get("notes", []))


def default_checkpoint_dir(out: Path) -> Path:
    return out.with_name(f"{out.name}.checkpoint")


def train_supernet(
    supernet_dir: str | Path,
    out: str | Path | None,
    config: FinetuneConfig | None = None,
    *,
    model: str | None = None,
    resume: bool = False,
    checkpoint_dir: str | Path | None = None,
    overwrite: bool = False,
    evaluate: bool = True,
    progress: bool = True,
    stop_after: int | None = None,
) -> TrainResult:
    """Fine-tune ``supernet_dir`` and write the trained supernet to ``out`` (mode ``none``: evaluate only).

    ``stop_after`` ends the run (after writing a checkpoint) once that many steps are done, without
    writing ``out``: a time-boxed run, continued later with ``resume=True``.
    """
    from nas.modeling import load_model
    from nas.supernet.cut import load_supernet_for

    config = config or FinetuneConfig()
    start = time.perf_counter()
    mode = config.adapter.mode
    if mode != "none":
        if out is None:
            raise AnyshapeError("supernet train needs --out DIR for the trained supernet")
        out = check_output_dir(out, overwrite=overwrite)
    supernet, source, _ = load_supernet_for(supernet_dir, model=model)  # checks the base weights' sha256
    if supernet.adapters is not None:
        raise AnyshapeError(f"supernet {supernet_dir} is already trained ({supernet.adapters.get('mode')}); "
                            "train from the untrained supernet it came from")
    rank, world, device, joined = distributed()
    torch.manual_seed(config.seed)
    net, family = load_model(source)
    for p in net.parameters():
        p.requires_grad_(False)
    net.to(device)
    vocab = int(source.config_dict().get("vocab_size") or 1 << 62)
    train_batches, val_batches, data_record = training_data(source.path, family, supernet, config, vocab)
    train_batches = [{k: v.to(device) for k, v in b.items()} for b in train_batches]
    val_batches = [{k: v.to(device) for k, v in b.items()} for b in val_batches]
    evaluate = evaluate and rank == 0
    heldout = [{k: v.to(device) for k, v in b.items()} for b in heldout_data(source.path, family, supernet, vocab)] if evaluate else []

    run: _Run | None = None
    if mode != "none" and config.steps > 0:
        assert out is not None
        ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else default_checkpoint_dir(Path(out))
        run = _Run.start(config, supernet, net, family, source.path, train_batches, val_batches, ckpt, resume, rank, world, device)
        timed_out = run.steps(stop_after, progress and rank == 0, mode)
        if world > 1:
            check_in_sync(run.smol)
        leave_process_group(joined)
        if stop_after is not None and run.steps_done < config.steps and not (run.guard is not None and run.guard.stopped):
            if rank == 0:
                run.checkpoint()
            return TrainResult(out=None, seconds=time.perf_counter() - start, steps=run.steps_done, losses=run.losses)
        run.finish(timed_out)
    leave_process_group(joined)
    guard = run.guard if run is not None else None
    smol = run.smol if run is not None else None
    result = TrainResult(out=None, seconds=time.perf_counter() - start, steps=run.steps_done if run else 0,
                         losses=run.losses if run else [], guard=guard.record() if guard is not None else {})
    if evaluate:
        result.heldout, result.shapes = evaluate_shapes(net, family, supernet, smol, heldout)
    if run is None or out is None or rank != 0:
        return result
    _write_trained(Path(out), overwrite, run, data_record, result, device)
    result.out = Path(out)
    return result


@dataclass
class _Run:
    """The state of one adapter training: what a checkpoint holds, and what the loop steps."""

    config: FinetuneConfig
    supernet: Any
    net: Any
    family: Any
    smol: SMoL
    sampler: ShapeSampler
    noise: torch.Generator
    optimizer: torch.optim.Optimizer
    ckpt: Path
    guard: Guard | None
    train_batches: list[Batch]
    rank: int
    world: int
    steps_done: int = 0
    losses: list[dict[str, float]] = field(default_factory=list)

    @classmethod
    def start(cls, config: FinetuneConfig, supernet: Any, net: Any, family: Any, model_path: Path, train_batches: list[Batch],
              val_batches: list[Batch], ckpt: Path, resume: bool, rank: int, world: int, device: torch.device) -> _Run:
        """Fresh adapters (or the checkpoint's, with ``resume``) and the guard's untrained baseline."""
        targets = [t for t, _ in lora_targets(net, family)]
        smol = SMoL(supernet.space, targets, config.adapter, seed=config.seed).to(device)
        guard = None
        if config.guard:
            tasks = guard_tasks(net, family, supernet, model_path, config)
            guard = Guard(lambda: validation_losses(net, family, supernet, smol, val_batches, tasks), config)
        run = cls(config, supernet, net, family, smol, ShapeSampler(supernet, config.seed),
                  torch.Generator().manual_seed(config.seed + 1),
                  torch.optim.AdamW(smol.parameters(), lr=config.lr, weight_decay=config.weight_decay), ckpt, guard,
                  train_batches, rank, world)
        if resume:
            run.steps_done, run.losses = load_checkpoint(ckpt, config, supernet.sha256(), smol, run.optimizer, run.sampler,
                                                         run.noise, guard)
        elif (ckpt / STATE_FILE).exists():
            raise AnyshapeError(f"{ckpt} holds a checkpoint of an earlier run; pass --resume to continue it "
                                "or remove it to start over")
        if guard is not None and not guard.history:
            guard.start(smol)
        return run

    def steps(self, stop_after: int | None, progress: bool, mode: str) -> bool:
        """Train until the steps, ``stop_after``, the guard or the time budget end it; True when time ended it."""
        config, smol = self.config, self.smol
        teacher = base_outputs(self.net, self.family, self.train_batches)
        smol.train()
        bar = _progress(config.steps, self.steps_done, mode, progress)
        started = time.perf_counter()
        try:
            for step in range(self.steps_done, config.steps):
                if (stop_after is not None and step >= stop_after) or (self.guard is not None and self.guard.stopped):
                    return False
                spent = _time_spent(started, config.max_minutes, self.world)
                if spent >= 1.0:
                    return True
                for group in self.optimizer.param_groups:  # the step's own progress: a short run needs no zero-lr step
                    group["lr"] = config.lr_at(max((step + 1) / config.steps, spent))
                b = batch_index(step * self.world + self.rank, len(self.train_batches), config.seed)
                self.optimizer.zero_grad(set_to_none=True)
                shapes = self.sampler.sandwich(config.num_random)
                step_losses = sandwich_step(self.net, self.family, self.supernet, smol, shapes, self.train_batches[b],
                                            teacher(b), config, self.noise, self.losses[-1] if self.losses else None)
                if self.world > 1:
                    all_reduce_gradients(smol, self.world)
                if config.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(smol.parameters(), config.max_grad_norm)
                self.optimizer.step()
                self.losses.append(step_losses)
                self.steps_done = step + 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(largest=f"{step_losses['largest']:.4f}", smallest=f"{step_losses['smallest']:.4f}")
                self._validate(bar)
                if config.checkpoint_every and self.steps_done % config.checkpoint_every == 0 and self.rank == 0:
                    self.checkpoint()
        finally:
            if bar is not None:
                bar.close()
        return False

    def _validate(self, bar: Any) -> None:
        guard, done = self.guard, self.steps_done
        if guard is None or not (done % self.config.validation_interval == 0 or done == self.config.steps):
            return
        self.smol.eval()
        guard.check(done, self.smol)
        self.smol.train()
        if bar is not None and guard.stopped:
            bar.write(guard.notes[-1])

    def checkpoint(self) -> None:
        save_checkpoint(self.ckpt, self.config, self.supernet.sha256(), self.steps_done, self.losses, self.smol, self.optimizer,
                        self.sampler, self.noise, self.guard)

    def finish(self, timed_out: bool) -> None:
        """Validate the last step, note a time budget, and keep the guard's best state."""
        self.smol.eval()
        guard = self.guard
        if guard is None:
            return
        if guard.history[-1]["step"] != self.steps_done:  # a run stopped early was validated at its last step
            guard.check(self.steps_done, self.smol)
        if timed_out:
            guard.notes.append(f"time budget of {self.config.max_minutes:g} min reached at step {self.steps_done} of {self.config.steps}")
        guard.restore(self.smol)


def _write_trained(out: Path, overwrite: bool, run: _Run, data_record: dict[str, Any], result: TrainResult,
                   device: torch.device) -> None:
    """The trained supernet (adapters and their record in supernet.json) and its train_log.json, atomically."""
    config, supernet, smol, guard = run.config, run.supernet, run.smol, run.guard
    section = {
        "format": ADAPTERS_FORMAT, "mode": config.adapter.mode, "config": config.adapter.to_dict(), "file": "adapters.safetensors",
        "gate": {"input": "layer-active mask (L) + width fractions (heads, kv_heads, ffn)",
                 "architecture": f"Linear({supernet.space.num_layers + 3},{config.adapter.gate_hidden})-Tanh-"
                                 f"Linear({config.adapter.gate_hidden},{supernet.space.num_layers}x{config.adapter.num_experts})",
                 "routing": f"per base layer top-{config.adapter.top_k} softmax; noise in training only"},
        "training": {**config.to_dict(), "steps_done": run.steps_done,
                     "kept_step": guard.kept_step if guard is not None else run.steps_done}, "data": data_record,
        "base_sha256": supernet.base_sha256, "parent_supernet_sha256": supernet.sha256(),
        "targets": targets_to_json(smol.targets),
    }
    trained = replace(supernet, adapters=section, adapter_tensors=adapter_tensors(smol))
    with atomic_directory(out, overwrite=overwrite) as tmp:
        trained.save(tmp)
        write_json_atomic(tmp / TRAIN_LOG_FILE, {"seconds": round(result.seconds, 2), "threads": torch.get_num_threads(),
                                                 "world_size": run.world, "device": str(device),
                                                 "steps": run.steps_done, "mean_losses": mean_losses(run.losses),
                                                 "losses": run.losses, "heldout": result.heldout, "guard": result.guard})


# ---- processes -------------------------------------------------------------------------------
def distributed() -> tuple[int, int, torch.device, bool]:
    """(rank, world size, device, joined) of this process; joins the process group under torchrun.

    ``joined`` says this call started the group (so the run ends it); a group the caller set up
    (accelerate, a launcher of its own) is left as it was.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local}") if cuda else torch.device("cpu")
    if world <= 1:
        return 0, 1, device, False
    import torch.distributed as dist

    joined = not dist.is_initialized()
    if joined:
        if cuda:
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return dist.get_rank(), dist.get_world_size(), device, joined


def leave_process_group(joined: bool) -> None:
    """End the process group this run joined, once the ranks are done talking (else a no-op).

    A rank that exits with the group alive aborts in gloo's teardown ("terminate called without an
    active exception") while rank 0 is still evaluating; leaving first makes the exit clean.
    """
    import torch.distributed as dist

    if joined and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def all_reduce_gradients(smol: SMoL, world: int) -> None:
    """Mean of every adapter / gate gradient over the processes (parameters without a gradient count as 0)."""
    import torch.distributed as dist

    for p in smol.parameters():
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)
        p.grad /= world


def _time_spent(started: float, max_minutes: float, world: int) -> float:
    """The share of the time budget spent (0 without one); with several workers rank 0's clock decides
    for all, so every rank runs the same steps at the same learning rate."""
    if not max_minutes:
        return 0.0
    spent = (time.perf_counter() - started) / (60.0 * max_minutes)
    if world == 1:
        return spent
    import torch.distributed as dist

    share = torch.tensor([spent])
    dist.broadcast(share, src=0)
    return float(share.item())


def check_in_sync(smol: SMoL) -> None:
    """Every rank must hold the same adapters after training (else a rank skipped a reduction)."""
    import torch.distributed as dist

    total = torch.stack([p.detach().double().sum() for p in smol.parameters()]).sum().reshape(1)
    gathered = [torch.zeros_like(total) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, total)
    if any(not torch.equal(g, gathered[0]) for g in gathered):
        raise RuntimeError(f"adapters differ between ranks after training: {[float(g) for g in gathered]}")


# ---- data ------------------------------------------------------------------------------------
def training_data(model_path: Path, family: Any, supernet: Any, config: FinetuneConfig,
                  vocab: int) -> tuple[list[Batch], list[Batch], dict[str, Any]]:
    """Training and validation batches from the calibration pool (or ``config.data``), never the held-out pool.

    The guard's ``num_val`` validation rows come from documents no training row comes from (a
    seeded tenth of the pool's documents), at the supernet's own sequence length (the one the
    search scores at, whatever ``seq_len`` training uses), so that a state which only fits the
    training documents, or the training length, better does not pass for one that generalises; a text of too few documents to split gives them
    from rows spread over the training rows instead, and the record says which. Batches carry no
    padding column that none of their rows uses.
    """
    from nas.supernet import data as corpus
    from nas.supernet.calibration import CalibrationConfig, documents, load_tokenizer, token_rows, tokens_sha256
    from nas.supernet.evaluate import iter_batches, trim_padding

    base = dict(supernet.build_config.get("calibration") or {})
    eval_len = int(base.get("seq_len") or 128)
    seq_len = config.seq_len or eval_len
    text = {"corpus": config.data} if config.data in corpus.KNOWN_CORPORA else {"calib_text": config.data}
    spans = config.short_spans if family.kind == "encoder" else 0.0
    calib = CalibrationConfig(**text, num_calib=config.num_train, num_heldout=1, seq_len=seq_len, batch_size=config.batch_size,
                              seed=config.seed, short_spans=spans)
    pool, _ = corpus.split_documents(documents(calib, "--data"))  # the held-out documents are never trained or validated on
    tokenizer = load_tokenizer(model_path)
    try:
        fit_docs, val_docs = corpus.split_documents(pool, seed=VALIDATION_SPLIT_SEED, heldout_fraction=VALIDATION_FRACTION)
        train = token_rows(tokenizer, family, fit_docs, config.num_train, seq_len, config.seed, vocab, spans)
        # at the length the search scores shapes at: a state that fits short training windows can lose further on
        val = token_rows(tokenizer, family, val_docs, config.num_val, eval_len, config.seed + 2, vocab, spans)
        validation = "documents no training row comes from"
    except AnyshapeError:  # too few documents (or too little text) to set a tenth aside
        rows = token_rows(tokenizer, family, pool, config.num_train + config.num_val, seq_len, config.seed, vocab, spans)
        n = next(iter(rows.values())).shape[0]
        if n <= config.num_val:
            raise AnyshapeError(f"the training text gives {n} sequences of {seq_len} tokens, not more than the "
                                f"{config.num_val} validation ones (--num-val); give more text or a smaller --num-val") from None
        held = torch.zeros(n, dtype=torch.bool)
        held[torch.linspace(0, n - 1, config.num_val).round().long()] = True
        train, val = {k: v[~held] for k, v in rows.items()}, {k: v[held] for k, v in rows.items()}
        validation = "rows spread over the training documents (too few documents to set some aside)"
    record = {"corpus": calib.corpus_name, "seed": config.seed, "seq_len": seq_len, "calib_tokens": int(train["attention_mask"].sum()),
              "calib_sha256": tokens_sha256(train), "num_calib": int(train["input_ids"].shape[0]),
              "num_val": int(val["input_ids"].shape[0]), "short_spans": spans, "validation": validation}
    return ([trim_padding(b) for b in iter_batches(train, config.batch_size)],
            [trim_padding(b) for b in iter_batches(val, config.batch_size)], record)


def heldout_data(model_path: Path, family: Any, supernet: Any, vocab: int) -> list[Batch]:
    """The supernet's own held-out batches, as the search uses."""
    from nas.supernet.calibration import heldout_batches

    return heldout_batches(supernet, model_path, family, vocab)


def batch_index(step: int, n: int, seed: int) -> int:
    """Batch of ``step``: position ``step % n`` of a permutation seeded by (seed, epoch)."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + step // n)
    return int(torch.randperm(n, generator=gen)[step % n])


def base_outputs(net: Any, family: Any, batches: list[Batch]) -> Callable[[int], torch.Tensor]:
    """The frozen base model's output of training batch ``b``, the teacher: encoders' last hidden
    state (computed on first use and kept), decoders' logits (computed every time: a vocabulary's
    logits per token are too big to keep for every batch)."""
    from nas.supernet.evaluate import run

    cache: dict[int, torch.Tensor] = {}

    def output(b: int) -> torch.Tensor:
        if b in cache:
            return cache[b]
        with torch.no_grad():
            out = run(net, family, batches[b])
        if family.kind == "decoder":
            return out.logits
        cache[b] = out.last_hidden_state
        return cache[b]

    return output


#: Guard entries of task scores are keyed ``TASK_KEY + task name + " " + shape`` and hold minus the score.
TASK_KEY = "task:"


def guard_tasks(net: Any, family: Any, supernet: Any, model_path: Path, config: FinetuneConfig) -> dict[str, Any]:
    """The guard's task evaluators (``--guard-task``), by task name; encoders only."""
    if not config.guard_tasks:
        return {}
    from nas.supernet.calibration import load_tokenizer
    from nas.supernet.tasks import TaskEvaluator, load_task

    tokenizer = load_tokenizer(model_path)
    seq_len = config.seq_len or int(dict(supernet.build_config.get("calibration") or {}).get("seq_len") or 128)
    evaluators = {}
    for spec in config.guard_tasks:
        task = load_task(spec)
        evaluators[task.name] = TaskEvaluator(net, family, supernet.space, tokenizer, task, seq_len=seq_len)
    return evaluators


def validation_losses(net: Any, family: Any, supernet: Any, smol: SMoL | None, batches: list[Batch],
                      tasks: dict[str, Any] | None = None) -> dict[str, float]:
    """Validation loss (nll, or 1 - cosine to the base) of every eval shape with merged adapters, and minus
    its score on every guard task; lower is better."""
    from nas.finetune.apply import subnet_of
    from nas.supernet.evaluate import SubnetEvaluator

    evaluator = SubnetEvaluator(net, family, supernet.space, batches)
    out: dict[str, float] = {}
    for name, shape in eval_shapes(supernet).items():
        layers, cuts, hooks = subnet_of(supernet, family, smol, shape)
        out[name] = float(evaluator.score(layers, cuts=cuts, hooks=hooks).loss)
        for task, task_evaluator in (tasks or {}).items():
            out[f"{TASK_KEY}{task} {name}"] = -float(task_evaluator.score(layers, cuts=cuts, hooks=hooks))
    return out


class Guard:
    """Fine-tuning that cannot make a shape worse: validate, keep the best harmless state, stop when none is.

    Before the first step and every ``validation_interval`` steps the eval shapes (largest, three
    middle, smallest) are scored on validation rows no step trains on. A state is harmless when no
    shape's loss is above its untrained loss by more than ``guard_tolerance``; the harmless state
    with the lowest mean relative loss is kept (the untrained one, step 0, is harmless by
    definition), and :meth:`restore` puts it back at the end. After ``patience`` harmful
    validations in a row training stops. Every decision is said in :attr:`notes`.
    """

    def __init__(self, validate: Callable[[], dict[str, float]], config: FinetuneConfig):
        self.validate, self.config = validate, config
        self.history: list[dict[str, Any]] = []
        self.kept_step = 0
        self.kept_state: dict[str, torch.Tensor] = {}
        self.kept_score = 0.0
        self.bad_streak = 0
        self.stopped = False
        self.notes: list[str] = []

    @property
    def untrained(self) -> dict[str, float]:
        return dict(self.history[0]["loss"])

    def start(self, smol: SMoL) -> None:
        """Validate the untrained state (step 0) and keep it."""
        self.history = [{"step": 0, "loss": self.validate(), "worse": []}]
        self.kept_state = _copy_state(smol)

    def check(self, step: int, smol: SMoL) -> None:
        losses = self.validate()
        base = self.untrained
        worse = sorted(name for name, v in losses.items() if v > base[name] + self._tolerance(name))
        self.history.append({"step": step, "loss": losses, "worse": worse})
        if worse:
            self.bad_streak += 1
            if self.bad_streak >= self.config.patience:
                self.stopped = True
                self.notes.append(f"guard: stopped at step {step}: {_describe(worse, losses, base)} worse than untrained "
                                  f"in {self.bad_streak} validations in a row")
            return
        self.bad_streak = 0
        shapes = [n for n in losses if not n.startswith(TASK_KEY)]  # task scores gate harm; agreement ranks the states
        score = sum((losses[n] - base[n]) / max(base[n], 1e-3) for n in shapes) / len(shapes)
        if score < self.kept_score:
            self.kept_step, self.kept_score, self.kept_state = step, score, _copy_state(smol)

    def _tolerance(self, name: str) -> float:
        return self.config.guard_task_tolerance if name.startswith(TASK_KEY) else self.config.guard_tolerance

    def restore(self, smol: SMoL) -> None:
        """Put the kept state back (said in :attr:`notes` unless it is the last one)."""
        last = self.history[-1]["step"]
        if self.kept_step != last:
            smol.load_state_dict(self.kept_state)
            if self.kept_step == 0:
                self.notes.append(f"guard: rolled back to the untrained state: no validation up to step {last} left every "
                                  "shape at least as good as untrained")
            else:
                self.notes.append(f"guard: kept step {self.kept_step} of {last} (the best state with no shape worse "
                                  "than untrained on validation)")

    def record(self) -> dict[str, Any]:
        return {"tolerance": self.config.guard_tolerance, "kept_step": self.kept_step, "stopped": self.stopped,
                "validations": self.history, "notes": list(self.notes)}

    def state(self) -> dict[str, Any]:
        return {"history": self.history, "kept_step": self.kept_step, "kept_score": self.kept_score,
                "kept_state": self.kept_state, "bad_streak": self.bad_streak, "stopped": self.stopped, "notes": self.notes}

    def set_state(self, state: dict[str, Any]) -> None:
        self.history, self.kept_step, self.kept_score = list(state["history"]), int(state["kept_step"]), float(state["kept_score"])
        self.kept_state, self.bad_streak = dict(state["kept_state"]), int(state["bad_streak"])
        self.stopped, self.notes = bool(state["stopped"]), list(state["notes"])


def _copy_state(smol: SMoL) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in smol.state_dict().items()}


def _describe(worse: list[str], losses: dict[str, float], base: dict[str, float]) -> str:
    def one(n: str) -> str:
        if n.startswith(TASK_KEY):  # stored as minus the score
            return f"{n.removeprefix(TASK_KEY)} score ({-base[n]:.4f} -> {-losses[n]:.4f})"
        return f"{n} ({base[n]:.4f} -> {losses[n]:.4f})"

    return ", ".join(one(n) for n in worse)


def evaluate_shapes(net: Any, family: Any, supernet: Any, smol: SMoL | None,
                    heldout: list[Batch]) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, Any]]]:
    """Held-out metrics of the largest, three middle and the smallest shape, with merged adapters."""
    from nas.finetune.apply import subnet_of
    from nas.supernet.evaluate import SubnetEvaluator

    evaluator = SubnetEvaluator(net, family, supernet.space, heldout)
    metrics: dict[str, dict[str, float]] = {}
    shapes: dict[str, dict[str, Any]] = {}
    for name, shape in eval_shapes(supernet).items():
        layers, cuts, hooks = subnet_of(supernet, family, smol, shape)
        metrics[name] = evaluator.score(layers, cuts=cuts, hooks=hooks).metrics
        assert shape.layers is not None
        shapes[name] = {"depth": len(shape.layers), "heads": shape.heads, "kv_heads": shape.kv_heads, "ffn": shape.ffn}
    return metrics, shapes


# ---- checkpoints -----------------------------------------------------------------------------
def save_checkpoint(directory: Path, config: FinetuneConfig, supernet_sha: str, step: int, losses: list[dict[str, float]],
                    smol: SMoL, optimizer: torch.optim.Optimizer, sampler: ShapeSampler, noise: torch.Generator,
                    guard: Guard | None = None) -> None:
    """Write ``state.pt`` atomically (temporary file, fsync, rename)."""
    directory.mkdir(parents=True, exist_ok=True)
    state = {"step": step, "config": config.to_dict(), "supernet_sha256": supernet_sha, "losses": losses,
             "smol": smol.state_dict(), "optimizer": optimizer.state_dict(), "sampler": sampler.state(),
             "noise": noise.get_state(), "torch_rng": torch.get_rng_state(),
             "guard": guard.state() if guard is not None else None}
    tmp = directory / f".{STATE_FILE}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, directory / STATE_FILE)


def load_checkpoint(directory: Path, config: FinetuneConfig, supernet_sha: str, smol: SMoL, optimizer: torch.optim.Optimizer,
                    sampler: ShapeSampler, noise: torch.Generator, guard: Guard | None = None) -> tuple[int, list[dict[str, float]]]:
    path = directory / STATE_FILE
    if not path.is_file():
        raise AnyshapeError(f"--resume: no checkpoint at {path}; start without --resume")
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state["supernet_sha256"] != supernet_sha:
        raise AnyshapeError(f"--resume: the checkpoint at {path} is for another supernet")
    if state["config"] != config.to_dict():
        changed = sorted(k for k in state["config"] if state["config"][k] != config.to_dict().get(k))
        raise AnyshapeError(f"--resume: the checkpoint at {path} was made with different settings ({', '.join(changed)})")
    smol.load_state_dict(state["smol"])
    optimizer.load_state_dict(state["optimizer"])
    sampler.set_state(state["sampler"])
    noise.set_state(state["noise"])
    torch.set_rng_state(state["torch_rng"])
    if guard is not None and state.get("guard"):
        guard.set_state(state["guard"])
    return int(state["step"]), list(state["losses"])


def _progress(total: int, initial: int, mode: str, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=f"supernet train ({mode})", unit="step")
