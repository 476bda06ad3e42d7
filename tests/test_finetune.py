"""Supernet fine-tuning on tiny models: SMoL gate and merge, balancing, sandwich training, resume, extraction."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import save_word_tokenizer

from nas.adapters.smol import SMoL, adapted, lora_targets, smol_from_supernet
from nas.errors import AnyshapeError
from nas.finetune.config import AdapterConfig, FinetuneConfig
from nas.finetune.distill import ShapeSampler, balance, eval_shapes, forward_shape
from nas.finetune.train import train_supernet
from nas.modeling import example_inputs, load_model
from nas.supernet.artifact import Supernet
from nas.supernet.build import BuildConfig, build_supernet
from nas.supernet.calibration import CalibrationConfig
from nas.supernet.evaluate import run

SMALL = CalibrationConfig(num_calib=4, num_heldout=4, seq_len=16, batch_size=2, seed=0)
QUICK = dict(steps=4, batch_size=2, num_train=4, num_random=1, checkpoint_every=2, lr=1e-2, guard=False, num_val=2)


@pytest.fixture(scope="module")
def supernet_of(tiny_model: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``supernet_of("llama")``: a tiny supernet (min depth 2, bias compensation where the family has it)."""
    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            root = tmp_path_factory.mktemp(f"ft-{name}")
            shutil.copytree(tiny_model(name), root / "model")
            save_word_tokenizer(root / "model", 96)
            config = BuildConfig(min_depth=2, bias_compensation=name in ("llama", "bert"), calibration=SMALL)
            build_supernet(str(root / "model"), root / "supernet", config, progress=False)
            cache[name] = root / "supernet"
        return cache[name]

    return get


def _smol(supernet: Supernet, seed: int = 0, config: AdapterConfig | None = None) -> tuple[SMoL, torch.nn.Module, object]:
    from nas.hub import resolve_model

    net, family = load_model(resolve_model(supernet.base_source))
    targets = [t for t, _ in lora_targets(net, family)]
    smol = SMoL(supernet.space, targets, config or AdapterConfig(), seed=seed)
    with torch.no_grad():  # non-zero B so the adapters change the outputs
        gen = torch.Generator().manual_seed(seed + 7)
        for p in smol.B.values():
            p.copy_(0.05 * torch.randn(p.shape, generator=gen))
    return smol, net, family


def test_configs_round_trip_and_validate() -> None:
    config = FinetuneConfig(adapter=AdapterConfig(num_experts=3, rank=4, top_k=2), steps=7, grad_scale="mlfs")
    assert FinetuneConfig.from_dict(config.to_dict()) == config
    assert AdapterConfig.from_dict(AdapterConfig.single().to_dict()) == AdapterConfig.single()
    with pytest.raises(AnyshapeError, match="top_k"):
        AdapterConfig(num_experts=2, top_k=3)
    with pytest.raises(AnyshapeError, match="rank"):
        AdapterConfig(rank=0)
    with pytest.raises(AnyshapeError, match="mode"):
        AdapterConfig(mode="moe")
    with pytest.raises(AnyshapeError, match="grad_scale"):
        FinetuneConfig(grad_scale="big")
    for bad, match in (({"teacher": "oracle"}, "teacher"), ({"balance": "max"}, "balance"), ({"patience": 0}, "patience"),
                       ({"task_weight": -1.0}, "task_weight"), ({"guard": "yes"}, "guard"), ({"num_val": 0}, "num_val")):
        with pytest.raises(AnyshapeError, match=match):
            FinetuneConfig(**bad)  # type: ignore[arg-type]
    # a config recorded before balancing had modes reads as it meant
    assert FinetuneConfig(balance=True).balance == "largest" and FinetuneConfig(balance=False).balance == "none"  # type: ignore[arg-type]
    assert FinetuneConfig(steps=300).validation_interval == 30 and FinetuneConfig(steps=40).validation_interval == 10
    assert FinetuneConfig(steps=40, eval_every=4).validation_interval == 4


def test_lr_schedule_warms_up_then_decays_and_old_records_read_as_constant() -> None:
    cosine = FinetuneConfig(lr=1e-3, warmup=0.1, min_lr_ratio=0.1)
    assert cosine.lr_schedule == "cosine"
    assert cosine.lr_at(0.05) == pytest.approx(5e-4) and cosine.lr_at(0.1) == pytest.approx(1e-3)  # linear warm-up to the peak
    assert cosine.lr_at(0.55) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5)) and cosine.lr_at(1.0) == pytest.approx(1e-4)
    lrs = [cosine.lr_at(p / 20) for p in range(2, 21)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))  # never rises after the warm-up
    assert FinetuneConfig(lr_schedule="constant").lr_at(0.9) == 1e-3
    record = FinetuneConfig().to_dict()
    del record["lr_schedule"]  # trained before schedules: a constant learning rate
    assert FinetuneConfig.from_dict(record).lr_schedule == "constant"
    for bad, match in (({"lr_schedule": "step"}, "lr_schedule"), ({"warmup": 0.9}, "warmup"), ({"min_lr_ratio": 2.0}, "min_lr_ratio")):
        with pytest.raises(AnyshapeError, match=match):
            FinetuneConfig(**bad)  # type: ignore[arg-type]


def test_guard_keeps_the_best_harmless_state_and_stops() -> None:
    from nas.finetune.train import Guard

    smol = torch.nn.Linear(2, 2)
    scores = iter([{"a": 1.0, "b": 2.0},                 # untrained
                   {"a": 0.9, "b": 1.9},                 # better everywhere: kept
                   {"a": 0.5, "b": 2.1},                 # b worse: not kept, however good a is
                   {"a": 0.8, "b": 1.8},                 # better than step 10: kept
                   {"a": 1.2, "b": 1.0},                 # a worse
                   {"a": 1.3, "b": 1.0}])                # a worse again: patience 2 reached
    guard = Guard(lambda: next(scores), FinetuneConfig(patience=2, guard_tolerance=0.0))
    guard.start(smol)  # type: ignore[arg-type]
    states = {}
    for step in (10, 20, 30, 40, 50):
        with torch.no_grad():
            smol.weight.fill_(step)
        states[step] = smol.weight.detach().clone()
        guard.check(step, smol)  # type: ignore[arg-type]
        assert guard.stopped == (step == 50)
    assert guard.kept_step == 30
    guard.restore(smol)  # type: ignore[arg-type]
    assert torch.equal(smol.weight, states[30])
    record = guard.record()
    assert [v["worse"] for v in record["validations"]] == [[], [], ["b"], [], ["a"], ["a"]]
    assert "stopped at step 50" in record["notes"][0] and "kept step 30 of 50" in record["notes"][1]
    # every validation harmful: back to the untrained state, said so
    again = Guard(lambda: {"a": 2.0}, FinetuneConfig(patience=5))
    again.history = [{"step": 0, "loss": {"a": 1.0}, "worse": []}]
    again.kept_state = {k: torch.zeros_like(v) for k, v in smol.state_dict().items()}
    again.check(10, smol)  # type: ignore[arg-type]
    again.restore(smol)  # type: ignore[arg-type]
    assert again.kept_step == 0 and "rolled back to the untrained state" in again.notes[-1]
    assert float(smol.weight.detach().abs().sum()) == 0.0


@pytest.mark.parametrize("name", ["llama", "bert"])
def test_guarded_training_never_leaves_a_shape_worse(supernet_of: Callable[[str], Path], tmp_path: Path, name: str) -> None:
    """A learning rate that wrecks the adapters: the guard validates, stops, and rolls back; resume replays it."""
    from nas.finetune.train import default_checkpoint_dir

    wreck = FinetuneConfig(**{**QUICK, "steps": 8, "lr": 5.0, "guard": True, "eval_every": 2, "patience": 2,  # type: ignore[arg-type]
                              "max_grad_norm": 0.0, "checkpoint_every": 1})
    result = train_supernet(supernet_of(name), tmp_path / "t", wreck, progress=False)
    vals = result.guard["validations"]
    untrained, kept = vals[0]["loss"], next(v["loss"] for v in vals if v["step"] == result.guard["kept_step"])
    assert all(kept[s] <= untrained[s] + wreck.guard_tolerance for s in untrained)
    assert any(v["worse"] for v in vals[1:]) and result.notes
    assert result.steps == 8 or result.guard["stopped"]  # it ran every step unless the guard stopped it (possibly at the last)
    sn = Supernet.load(tmp_path / "t")
    assert sn.adapters is not None and sn.adapters["training"]["kept_step"] == result.guard["kept_step"]
    log = __import__("json").loads((tmp_path / "t" / "train_log.json").read_text())
    assert log["guard"]["notes"] == result.notes
    # the guard's state is in the checkpoint: a run cut short and resumed decides the same
    shutil.rmtree(default_checkpoint_dir(tmp_path / "t"))
    part = train_supernet(supernet_of(name), tmp_path / "r", wreck, progress=False, evaluate=False, stop_after=3)
    assert part.out is None and part.steps == 3  # patience 2 at every 2 steps: no stop before step 4
    done = train_supernet(supernet_of(name), tmp_path / "r", wreck, progress=False, resume=True)
    assert done.guard == result.guard and done.steps == result.steps
    assert (tmp_path / "r" / "adapters.safetensors").read_bytes() == (tmp_path / "t" / "adapters.safetensors").read_bytes()


def test_teacher_and_balance_modes_change_the_step(supernet_of: Callable[[str], Path], tmp_path: Path) -> None:
    runs = {}
    for key, extra in {"base": {}, "largest": {"teacher": "largest"}, "mean": {"balance": "mean"},
                       "none": {"balance": "none"}, "task": {"task_weight": 1.0}}.items():
        # full_is_base off: with it the largest is the base, and the largest's outputs *are* the base's
        config = FinetuneConfig(**{**QUICK, "steps": 3, "checkpoint_every": 0, "adapter": AdapterConfig(full_is_base=False),  # type: ignore[arg-type]
                                   **extra})
        runs[key] = train_supernet(supernet_of("llama"), tmp_path / key, config, evaluate=False, progress=False).losses
    # step 0: the largest is the base (B = 0), so its KL to the base is 0; in-place its loss is the next-token loss
    assert runs["base"][0]["largest"] == pytest.approx(0.0, abs=1e-6)
    assert runs["largest"][0]["largest"] == pytest.approx(runs["base"][0]["largest_task"], rel=1e-6)
    assert runs["task"][0]["largest"] == pytest.approx(runs["task"][0]["largest_task"], rel=1e-6)
    # the students' targets differ (base vs the largest's outputs) from step 1 on; balancing changes the updates
    assert runs["base"][1]["smallest"] != runs["largest"][1]["smallest"]
    assert runs["base"][2]["smallest"] != runs["mean"][2]["smallest"] != runs["none"][2]["smallest"]


def test_gate_is_deterministic_at_eval_and_noisy_only_in_training(supernet_of: Callable[[str], Path]) -> None:
    sn = Supernet.load(supernet_of("llama"))
    smol, _, _ = _smol(sn)
    shapes = list(eval_shapes(sn).values())
    same = [SMoL(sn.space, smol.targets, AdapterConfig(), seed=s).state_dict() for s in (4, 4, 5)]
    assert all(torch.equal(same[0][k], same[1][k]) for k in same[0])  # seeded init
    assert not all(torch.equal(same[0][k], same[2][k]) for k in same[0])
    smol.eval()
    for shape in shapes:
        a = smol.routing(shape, torch.Generator().manual_seed(1))
        b = smol.routing(shape, torch.Generator().manual_seed(2))
        assert torch.equal(a, b)
        assert torch.allclose(a.sum(-1), torch.full((sn.space.num_layers,), smol.amplitude(shape)))
        assert int((a > 0).sum(-1).max()) <= 2  # top-2
    smol.train()
    noisy1 = smol.routing(shapes[-1], torch.Generator().manual_seed(1))  # the smallest (the largest's amplitude is 0)
    noisy1b = smol.routing(shapes[-1], torch.Generator().manual_seed(1))
    noisy2 = smol.routing(shapes[-1], torch.Generator().manual_seed(2))
    assert torch.equal(noisy1, noisy1b) and not torch.equal(noisy1, noisy2)
    # the gate reads only the shape: different shapes route differently
    smol.eval()
    assert not torch.equal(smol.routing(shapes[0]), smol.routing(shapes[-1]))


@pytest.mark.parametrize("name", ["llama", "bert", "qwen2"])
def test_merged_equals_unmerged(supernet_of: Callable[[str], Path], name: str) -> None:
    sn = Supernet.load(supernet_of(name))
    smol, net, family = _smol(sn)
    smol.eval()
    batch = example_inputs(family, 96, 2, 12, seed=3)  # type: ignore[arg-type]
    for shape in eval_shapes(sn).values():
        with torch.no_grad():
            unmerged = forward_shape(net, family, sn, smol, shape, batch, None)  # type: ignore[arg-type]
            base = forward_shape(net, family, sn, None, shape, batch, None)  # type: ignore[arg-type]
            with adapted(net, family, smol, shape):  # type: ignore[arg-type]
                merged = forward_shape(net, family, sn, None, shape, batch, None)  # type: ignore[arg-type]
        assert (unmerged - merged).abs().max() <= 1e-5
        if shape == sn.space.full_shape():  # full_is_base: the largest is the base model exactly
            assert torch.equal(unmerged, base)
        else:
            assert (unmerged - base).abs().max() > 1e-3  # the adapters do something
    # adapted() restores the weights exactly
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with adapted(net, family, smol, eval_shapes(sn)["mid-50"]):  # type: ignore[arg-type]
        pass
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_amplitude_keeps_the_full_shape_the_base_and_old_records_read_as_trained(supernet_of: Callable[[str], Path]) -> None:
    from nas.adapters.smol import amplitude, block_params

    sn = Supernet.load(supernet_of("llama"))
    shapes = eval_shapes(sn)
    amps = [amplitude(sn.space, shapes[n]) for n in ("largest", "mid-75", "mid-50", "mid-25", "smallest")]
    assert amps[0] == 0.0 and amps == sorted(amps) and 0 < amps[-1] < 1
    assert amps[-1] == pytest.approx(1 - block_params(sn.space, shapes["smallest"]) / block_params(sn.space, sn.space.full_shape()))
    off, _, _ = _smol(sn, config=AdapterConfig(full_is_base=False))
    assert off.amplitude(shapes["largest"]) == 1.0 and float(off.routing(shapes["largest"]).sum().detach()) == pytest.approx(sn.space.num_layers)
    # a supernet trained before the field existed (no full_is_base in its record) merges as it was trained: unscaled
    record = AdapterConfig().to_dict()
    del record["full_is_base"]
    assert AdapterConfig.from_dict(record).full_is_base is False
    assert AdapterConfig.from_dict(AdapterConfig().to_dict()) == AdapterConfig()


def test_balancing_scales_gradients_as_specified() -> None:
    w = torch.tensor([1.0, -2.0, 0.5], requires_grad=True)
    loss_i = (w**2).sum() * 3.0  # value 15.75
    loss_ref = torch.tensor(2.5, requires_grad=True)
    balanced = balance(loss_i, loss_ref)
    assert balanced.detach().item() == pytest.approx(2.5)
    balanced.backward()
    expected = 3.0 * 2 * torch.tensor([1.0, -2.0, 0.5]) * (2.5 / 15.75)
    assert torch.allclose(w.grad, expected, atol=1e-6)
    assert loss_ref.grad is None  # the reference is detached


def test_shape_sampler_is_seeded(supernet_of: Callable[[str], Path]) -> None:
    sn = Supernet.load(supernet_of("llama"))
    a = [s.to_dict() for s in ShapeSampler(sn, 3).sandwich(6)]
    b = [s.to_dict() for s in ShapeSampler(sn, 3).sandwich(6)]
    c = [s.to_dict() for s in ShapeSampler(sn, 4).sandwich(6)]
    assert a == b and a != c
    assert a[0] == sn.space.full_shape().to_dict()
    assert len(a[1]["layers"]) == 2


@pytest.mark.parametrize("name", ["llama", "bert"])
def test_resumed_run_ends_identical(supernet_of: Callable[[str], Path], tmp_path: Path, name: str) -> None:
    config = FinetuneConfig(**QUICK)  # type: ignore[arg-type]
    full = train_supernet(supernet_of(name), tmp_path / "full", config, evaluate=False, progress=False)
    assert full.steps == 4 and all(v >= -1e-6 for h in full.losses for v in h.values())  # 1 - cos of equal outputs: ~1e-8
    part = train_supernet(supernet_of(name), tmp_path / "resumed", config, evaluate=False, progress=False, stop_after=3)
    assert part.out is None and part.steps == 3 and (tmp_path / "resumed.checkpoint" / "state.pt").is_file()
    assert not (tmp_path / "resumed").exists()
    with pytest.raises(AnyshapeError, match="--resume"):
        train_supernet(supernet_of(name), tmp_path / "resumed", config, evaluate=False, progress=False)
    with pytest.raises(AnyshapeError, match="different settings"):
        train_supernet(supernet_of(name), tmp_path / "resumed", FinetuneConfig(**{**QUICK, "lr": 0.5}),  # type: ignore[arg-type]
                       evaluate=False, progress=False, resume=True)
    done = train_supernet(supernet_of(name), tmp_path / "resumed", config, evaluate=False, progress=False, resume=True)
    assert done.steps == 4 and done.losses == full.losses
    a, b = (tmp_path / "full" / "adapters.safetensors").read_bytes(), (tmp_path / "resumed" / "adapters.safetensors").read_bytes()
    assert a == b
    trained = Supernet.load(tmp_path / "full")
    assert trained.adapters is not None and trained.adapters["mode"] == "smol"
    assert trained.sha256() != Supernet.load(supernet_of(name)).sha256()
    assert Supernet.load(supernet_of(name)).adapters is None  # the untrained supernet is untouched
    smol = smol_from_supernet(trained)
    assert smol is not None and any(p.detach().abs().max().item() > 0 for p in smol.B.values())


def test_training_reduces_distillation_loss_and_single_mode(supernet_of: Callable[[str], Path], tmp_path: Path) -> None:
    config = FinetuneConfig(**{**QUICK, "steps": 6, "checkpoint_every": 0})  # type: ignore[arg-type]
    none = train_supernet(supernet_of("llama"), None, FinetuneConfig(adapter=AdapterConfig(mode="none")), progress=False)
    smol = train_supernet(supernet_of("llama"), tmp_path / "smol", config, progress=False)
    single = train_supernet(supernet_of("llama"), tmp_path / "single",
                            FinetuneConfig(**{**QUICK, "steps": 6, "checkpoint_every": 0, "adapter": AdapterConfig.single()}),  # type: ignore[arg-type]
                            progress=False)
    assert set(none.heldout) == {"largest", "mid-75", "mid-50", "mid-25", "smallest"}
    assert none.steps == 0 and none.out is None
    # held-out metrics changed with training (direction at 6 steps on random weights is not asserted)
    assert smol.heldout["smallest"]["nll"] != none.heldout["smallest"]["nll"]
    assert Supernet.load(tmp_path / "single").adapters["mode"] == "single"  # type: ignore[index]
    assert single.heldout["smallest"]["nll"] != smol.heldout["smallest"]["nll"]
    assert smol.heldout["largest"] == none.heldout["largest"]  # full_is_base: the largest is the base


def test_mismatched_base_model_is_a_clear_error(supernet_of: Callable[[str], Path], tiny_model: Callable[[str], Path],
                                                tmp_path: Path) -> None:
    with pytest.raises(AnyshapeError, match="sha256"):
        train_supernet(supernet_of("llama"), tmp_path / "x", FinetuneConfig(**QUICK), model=str(tiny_model("qwen2")),  # type: ignore[arg-type]
                       progress=False)


def test_extraction_from_trained_supernet_is_stock_and_matches(supernet_of: Callable[[str], Path], tmp_path: Path) -> None:
    import transformers

    from nas.supernet.cut import extract_from_supernet

    for name, cls in (("llama", "LlamaForCausalLM"), ("bert", "BertModel")):
        trained_dir = tmp_path / f"{name}-trained"
        train_supernet(supernet_of(name), trained_dir, FinetuneConfig(**{**QUICK, "checkpoint_every": 0}),  # type: ignore[arg-type]
                       evaluate=False, progress=False)
        sn = Supernet.load(trained_dir)
        smol = smol_from_supernet(sn)
        shape = eval_shapes(sn)["mid-50"]
        out = tmp_path / f"{name}-sub"
        extract_from_supernet(trained_dir, {"depth": len(shape.layers or ()), "heads": shape.heads, "kv_heads": shape.kv_heads,
                                            "ffn": shape.ffn}, out)
        assert not any(p.name.startswith("adapter") for p in out.iterdir())
        sub = getattr(transformers, cls).from_pretrained(out).eval()
        from nas.hub import resolve_model

        net, family = load_model(resolve_model(sn.base_source))
        batch = example_inputs(family, 96, 2, 12, seed=5)
        with torch.no_grad():
            want = forward_shape(net, family, sn, smol, shape, batch, None)
            got = run(sub, family, batch)
        got_t = got.logits if family.kind == "decoder" else got.last_hidden_state
        valid = batch["attention_mask"].bool()
        assert (want[valid] - got_t[valid]).abs().max() <= 1e-4


def test_search_scores_a_trained_supernet_with_its_adapters(supernet_of: Callable[[str], Path], tmp_path: Path) -> None:
    from nas.cuts import plan_cuts
    from nas.hub import resolve_model
    from nas.search.factory import HeldoutAccuracy
    from nas.supernet.evaluate import SubnetEvaluator

    trained = train_supernet(supernet_of("llama"), tmp_path / "t", FinetuneConfig(**{**QUICK, "checkpoint_every": 0}),  # type: ignore[arg-type]
                             progress=False)
    sn, base = Supernet.load(tmp_path / "t"), Supernet.load(supernet_of("llama"))
    net, family = load_model(resolve_model(sn.base_source))
    from nas.finetune.train import heldout_data

    evaluator = SubnetEvaluator(net, family, sn.space, heldout_data(resolve_model(sn.base_source).path, family, sn, 96))
    shape = eval_shapes(sn)["mid-50"]
    with_adapters = HeldoutAccuracy(evaluator, sn, net, family, "nll", "minimize")
    untrained = HeldoutAccuracy(evaluator, base, net, family, "nll", "minimize")
    assert with_adapters.smol is not None and untrained.smol is None
    assert with_adapters(shape) == pytest.approx(trained.heldout["mid-50"]["nll"], abs=1e-9)
    assert untrained(shape) != with_adapters(shape)
    # the untrained path is what it always was: the masked forward with bias compensation hooks only
    from nas.supernet import width
    from nas.supernet.cut import compensation_shifts

    cuts = plan_cuts(base.space, shape, base.orders)
    shifts = compensation_shifts(base, net, family, cuts)
    assert shape.layers is not None
    old = evaluator.score(tuple(shape.layers), cuts=cuts, hooks=lambda m: width.compensated(m, family, shifts))
    assert untrained(shape) == old.metrics["nll"]


@pytest.mark.slow
def test_two_process_data_parallel_run_on_cpu(supernet_of: Callable[[str], Path], tmp_path: Path) -> None:
    """torchrun with 2 CPU processes (gloo): gradients all-reduced, ranks end in sync, rank 0 writes once."""
    import json
    import subprocess
    import sys

    script = tmp_path / "run.py"
    script.write_text(
        "import sys\n"
        "from nas.finetune.config import FinetuneConfig\n"
        "from nas.finetune.train import train_supernet\n"
        f"r = train_supernet(sys.argv[1], sys.argv[2], FinetuneConfig(**{QUICK!r}), progress=False)\n"
        "print('steps', r.steps)\n"
    )
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
           str(supernet_of("llama")), str(tmp_path / "out")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    log = json.loads((tmp_path / "out" / "train_log.json").read_text())
    assert log["world_size"] == 2 and log["steps"] == 4
    single = train_supernet(supernet_of("llama"), tmp_path / "one", FinetuneConfig(**QUICK), evaluate=False,  # type: ignore[arg-type]
                            progress=False)
    assert single.steps == 4  # one process reads other batches, so its adapters differ; both runs complete
    assert (tmp_path / "out" / "adapters.safetensors").read_bytes() != (tmp_path / "one" / "adapters.safetensors").read_bytes()


def test_cli_train_inspect_extract(supernet_of: Callable[[str], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from nas.cli import main

    sn = str(supernet_of("llama"))
    out = tmp_path / "trained"
    assert main(["supernet", "train", sn, "--out", str(out), "--steps", "2", "--batch-size", "2", "--num-train", "4",
                 "--num-random", "1", "--experts", "3", "--rank", "4", "--checkpoint-every", "1", "--no-progress", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["steps"] == 2 and set(result["heldout"]) == {"largest", "mid-75", "mid-50", "mid-25", "smallest"}
    assert (tmp_path / "trained.checkpoint" / "state.pt").is_file()
    assert main(["inspect", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["adapters"]["mode"] == "smol" and info["adapters"]["config"]["num_experts"] == 3
    trained = Supernet.load(out)  # the trained artifact round-trips: same json, same adapter bytes, same sha256
    (tmp_path / "copy").mkdir()
    trained.save(tmp_path / "copy")
    again = Supernet.load(tmp_path / "copy")
    assert again == trained and again.to_json() == trained.to_json() and again.sha256() == trained.sha256()
    # a trained supernet cannot be trained again; --adapter smol needs --out; wrong values name the field
    assert main(["supernet", "train", str(out), "--out", str(tmp_path / "again"), "--no-progress"]) == 1
    assert "already trained" in capsys.readouterr().err
    assert main(["supernet", "train", sn, "--no-progress"]) == 1
    assert "--out" in capsys.readouterr().err
    assert main(["supernet", "train", sn, "--out", str(tmp_path / "x"), "--top-k", "9", "--no-progress"]) == 1
    assert "top_k" in capsys.readouterr().err
    assert main(["extract", "--supernet", str(out), "--shape", '{"depth": 2, "ffn": 24}', "--out", str(tmp_path / "sub")]) == 0
    assert json.loads((tmp_path / "sub" / "config.json").read_text())["num_hidden_layers"] == 2


def test_a_time_budget_stops_training_and_says_so(supernet_of: Callable[[str], Path], tmp_path: Path, monkeypatch) -> None:
    """--max-minutes: the loop stops at the budget, validates where it stopped and writes a complete trained supernet."""
    import nas.finetune.train as train_module

    budget = FinetuneConfig(**{**QUICK, "steps": 50, "guard": True, "eval_every": 100, "max_minutes": 1.0})  # type: ignore[arg-type]
    clock = iter(range(0, 10_000, 20))  # every call to the clock is 20 s later: the 60 s budget ends after 2 steps
    monkeypatch.setattr(train_module.time, "perf_counter", lambda: float(next(clock)))
    result = train_supernet(supernet_of("llama"), tmp_path / "t", budget, progress=False)
    assert 0 < result.steps < 50 and result.out is not None
    assert any(n.startswith("time budget of 1 min reached at step") for n in result.notes)
    assert result.guard["validations"][-1]["step"] == result.steps


def test_training_text_from_a_folder_or_a_corpus_name(supernet_of: Callable[[str], Path], tmp_path: Path) -> None:
    """--data takes a folder of text / JSON-lines files or a builtin corpus name; a bad one is a one-line error naming --data."""
    import json

    from nas.supernet.data import load_corpus

    texts = [d.text for d in load_corpus()[:400]]
    folder = tmp_path / "texts"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("\n\n".join(texts[:200]))
    (folder / "sub" / "b.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in texts[200:]))
    result = train_supernet(supernet_of("llama"), tmp_path / "t", FinetuneConfig(**{**QUICK, "data": str(folder)}), progress=False)  # type: ignore[arg-type]
    data = Supernet.load(tmp_path / "t").adapters["data"]  # type: ignore[index]
    assert result.steps == QUICK["steps"] and data["corpus"] == "text:texts"
    named = train_supernet(supernet_of("llama"), tmp_path / "n", FinetuneConfig(**{**QUICK, "data": "stdlib-docs"}), progress=False)  # type: ignore[arg-type]
    assert named.steps == QUICK["steps"]
    with pytest.raises(AnyshapeError, match="--data") as err:
        train_supernet(supernet_of("llama"), tmp_path / "x", FinetuneConfig(**{**QUICK, "data": str(tmp_path / "none")}), progress=False)  # type: ignore[arg-type]
    assert "\n" not in str(err.value)


def test_guard_tasks_gate_harm_with_their_own_tolerance() -> None:
    """A guard task's score (stored as minus the score) may fall by guard_task_tolerance; more is harm, said as a score."""
    from nas.finetune.train import TASK_KEY, Guard

    smol = torch.nn.Linear(2, 2)
    key = f"{TASK_KEY}pairs:p.tsv mid-50"
    scores = iter([{"a": 1.0, key: -0.50},   # untrained: score 0.50
                   {"a": 0.9, key: -0.495},  # score 0.495: within 0.01, harmless, kept
                   {"a": 0.5, key: -0.40}])  # score 0.40: harmful however good a is
    guard = Guard(lambda: next(scores), FinetuneConfig(patience=1, guard_tolerance=0.0, guard_task_tolerance=0.01))
    guard.start(smol)  # type: ignore[arg-type]
    guard.check(10, smol)  # type: ignore[arg-type]
    guard.check(20, smol)  # type: ignore[arg-type]
    assert guard.kept_step == 10 and guard.stopped
    assert "pairs:p.tsv mid-50 score (0.5000 -> 0.4000)" in guard.notes[0]


def test_guard_tasks_are_validated_during_training(supernet_of: Callable[[str], Path], tmp_path: Path) -> None:
    import random

    rng = random.Random(0)
    words = ["the", "of", "and", "to", "a", "in", "is", "that", "for", "it", "as", "with", "was", "on", "be", "by", "this", "are", "or", "from"]
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("".join(f"{' '.join(rng.sample(words, 3))}\t{' '.join(rng.sample(words, 3))}\t{rng.random():.3f}\n"
                             for _ in range(12)))
    config = FinetuneConfig(**{**QUICK, "guard": True, "eval_every": 2, "guard_tasks": [f"pairs:{pairs}"]})  # type: ignore[arg-type]
    assert config.guard_tasks == (f"pairs:{pairs}",) and FinetuneConfig.from_dict(config.to_dict()) == config
    result = train_supernet(supernet_of("bert"), tmp_path / "t", config, progress=False)
    keys = set(result.guard["validations"][0]["loss"])
    assert {"largest", "smallest", "task:pairs:pairs.tsv largest", "task:pairs:pairs.tsv smallest"} <= keys
    with pytest.raises(AnyshapeError, match="decoder"):
        train_supernet(supernet_of("llama"), tmp_path / "d", config, progress=False)
    with pytest.raises(AnyshapeError, match="need the guard"):
        FinetuneConfig(guard=False, guard_tasks=(f"pairs:{pairs}",))


def test_short_spans_cut_the_last_share_to_seeded_word_spans() -> None:
    from nas.supernet.data import MAX_SPAN_WORDS, short_spans

    texts = [" ".join(f"w{i}_{j}" for j in range(60)) for i in range(40)]
    cut = short_spans(texts, 0.25, seed=3)
    assert cut == short_spans(texts, 0.25, seed=3) and cut != short_spans(texts, 0.25, seed=4)
    assert cut[:30] == texts[:30]  # passages first, spans last (so their batches are short too)
    lengths = [len(t.split()) for t in cut[30:]]
    assert all(1 <= n <= MAX_SPAN_WORDS for n in lengths) and min(lengths) < 8 < max(lengths)
    assert all(span in source for span, source in zip(cut[30:], texts[30:]))  # contiguous words of its own text
    assert short_spans(texts, 0.0, seed=3) == texts


def test_trimmed_padding_gives_the_same_outputs(tiny_model: Callable[[str], Path]) -> None:
    from nas.hub import resolve_model
    from nas.supernet.evaluate import trim_padding

    net, family = load_model(resolve_model(str(tiny_model("bert"))))
    ids = torch.randint(5, 90, (3, 12))
    mask = torch.zeros(3, 12, dtype=torch.int64)
    mask[0, :5], mask[1, :7], mask[2, :3] = 1, 1, 1
    batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    trimmed = trim_padding(batch)
    assert trimmed["input_ids"].shape == (3, 7)
    with torch.no_grad():
        full, short = run(net, family, batch).last_hidden_state, run(net, family, trimmed).last_hidden_state
    torch.testing.assert_close(short[mask[:, :7].bool()], full[mask.bool()], atol=1e-5, rtol=1e-4)
    left = {**batch, "attention_mask": mask.flip(1)}
    assert trim_padding(left) is left  # left padding: nothing is trimmed


def test_relational_loss_reads_the_batch_similarity_structure() -> None:
    from nas.finetune.distill import embedding_loss

    gen = torch.Generator().manual_seed(0)
    target = torch.randn(6, 5, 8, generator=gen)
    batch = {"attention_mask": torch.ones(6, 5, dtype=torch.int64)}
    same = embedding_loss(target, target, batch, relation_weight=1.0)
    assert float(same) == pytest.approx(0.0, abs=1e-6)
    hidden = (target + 0.5 * torch.randn(6, 5, 8, generator=gen)).requires_grad_()
    plain = embedding_loss(hidden, target, batch)
    related = embedding_loss(hidden, target, batch, relation_weight=2.0)
    assert float(related.detach()) > float(plain.detach()) > 0
    related.backward()
    assert hidden.grad is not None and float(hidden.grad.abs().sum()) > 0


def test_validation_rows_mix_passages_and_short_spans(supernet_of: Callable[[str], Path]) -> None:
    from nas.families import family_for
    from nas.finetune.train import training_data
    from nas.hub import resolve_model

    sn = Supernet.load(supernet_of("bert"))
    source = resolve_model(sn.base_source)
    family = family_for(source.config_dict())
    config = FinetuneConfig(batch_size=4, num_train=24, num_val=8, short_spans=0.5, seq_len=32)
    train, val, record = training_data(source.path, family, sn, config, 96)
    lengths = [int(n) for b in val for n in b["attention_mask"].sum(dim=1)]
    assert record["num_val"] == 8 and record["short_spans"] == 0.5 and len(lengths) == 8
    eval_len = int(sn.build_config["calibration"]["seq_len"])  # 16: shorter than the training rows' 32
    assert min(lengths) < 12 and max(lengths) == eval_len < config.seq_len  # both kinds, at the length the search scores at
    assert max(int(n) for b in train for n in b["attention_mask"].sum(dim=1)) > 20
    assert any(b["input_ids"].shape[1] < 20 for b in train)  # batches of spans are short


def test_guard_validates_on_documents_no_step_trains_on(supernet_of: Callable[[str], Path], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Each document repeats one word of its own: the validation windows share no word with the
    training windows, so the guard sees text from documents the adapters never fit."""
    import json

    from nas.finetune.train import training_data
    from nas.hub import resolve_model
    from nas.modeling import load_model

    sn = Supernet.load(supernet_of("llama"))
    source = resolve_model(sn.base_source)
    vocab = json.loads((source.path / "tokenizer.json").read_text())["model"]["vocab"]
    words = [w for w in vocab if w not in ("[UNK]", "[PAD]", "[EOS]") and w.isalpha()][:80]
    text = tmp_path / "docs.txt"
    text.write_text("\n\n".join(" ".join([word] * 60) for word in words))
    _, family = load_model(source)
    config = FinetuneConfig(data=str(text), num_train=24, num_val=6, seq_len=16, batch_size=4)
    train, val, record = training_data(source.path, family, sn, config, 96)
    special = {vocab["[EOS]"], vocab["[PAD]"], vocab["[UNK]"]}
    seen = {int(t) for b in train for t in b["input_ids"].flatten()} - special
    checked = {int(t) for b in val for t in b["input_ids"].flatten()} - special
    assert seen and checked and not seen & checked
    assert record["validation"].startswith("documents") and record["num_val"] == 6
    # a pool too small to set a tenth of its documents aside (here: a share that leaves none): rows spread over the training ones
    monkeypatch.setattr("nas.finetune.train.VALIDATION_FRACTION", 1e-9)
    _, val, record = training_data(source.path, family, sn, config, 96)
    assert record["validation"].startswith("rows") and sum(b["input_ids"].shape[0] for b in val) == 6
