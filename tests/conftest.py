"""Shared fixtures: tiny random models of every family, saved as stock HF directories."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

#: name -> (config class, model class, config kwargs). Sizes are tiny but keep every feature:
#: GQA (llama, qwen2, mistral), q/k/v biases (qwen2), sliding windows (qwen2, mistral),
#: tied embeddings (qwen2), per-head norms (qwen3), encoders with a pooler (bert, roberta).
TINY = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", dict(num_attention_heads=8, num_key_value_heads=4)),
    "llama-mha": ("LlamaConfig", "LlamaForCausalLM", dict(num_attention_heads=4, num_key_value_heads=4)),
    "qwen2": (
        "Qwen2Config",
        "Qwen2ForCausalLM",
        dict(num_attention_heads=8, num_key_value_heads=2, tie_word_embeddings=True,
             use_sliding_window=True, sliding_window=6, max_window_layers=2),
    ),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", dict(num_attention_heads=8, num_key_value_heads=2, head_dim=8)),
    "mistral": ("MistralConfig", "MistralForCausalLM", dict(num_attention_heads=8, num_key_value_heads=2, sliding_window=6)),
    "bert": ("BertConfig", "BertModel", dict(num_attention_heads=4)),
    "roberta": ("RobertaConfig", "RobertaModel", dict(num_attention_heads=4, pad_token_id=1)),
}
TINY_COMMON = dict(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=4, max_position_embeddings=64)


def build_tiny(name: str, path: Path, seed: int = 0) -> Path:
    """Save a tiny random model of family ``name`` under ``path`` (deterministic in ``seed``)."""
    import torch
    import transformers

    config_cls, model_cls, extra = TINY[name]
    config = getattr(transformers, config_cls)(**{**TINY_COMMON, **extra})
    torch.manual_seed(seed)
    model = getattr(transformers, model_cls)(config)
    with torch.no_grad():  # make biases and norms non-trivial so slicing mistakes show
        for pname, p in model.named_parameters():
            if pname.endswith("bias") or "norm" in pname.lower():
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``tiny_model("qwen2")`` -> a directory with a tiny random Qwen2 (built once per session)."""
    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            cache[name] = build_tiny(name, tmp_path_factory.mktemp(f"tiny-{name}"))
        return cache[name]

    return get


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    from nas.hub import resolve_model

    return resolve_model("minilm").path


def save_word_tokenizer(path: Path, vocab_size: int) -> None:
    """A word-level tokenizer with ``vocab_size`` entries, trained on the builtin corpus."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from nas.supernet.data import load_corpus

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, special_tokens=["[UNK]", "[PAD]", "[EOS]"], show_progress=False)
    tok.train_from_iterator([d.text for d in load_corpus()[:300]], trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", eos_token="[EOS]")
    fast.save_pretrained(path)


@pytest.fixture(scope="session")
def tok_model(tiny_model: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``tok_model("llama")``: the tiny model of that family, with a tokenizer beside it."""
    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            path = tmp_path_factory.mktemp(f"tok-{name}") / "model"
            shutil.copytree(tiny_model(name), path)
            save_word_tokenizer(path, 96)
            cache[name] = path
        return cache[name]

    return get


@pytest.fixture(autouse=True)
def _user_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own empty per-user cache: no calibration of the machine running the tests leaks in."""
    path = tmp_path_factory.mktemp("user-cache")
    monkeypatch.setenv("ANYSHAPE_CACHE_DIR", str(path))
    return path


@pytest.fixture
def gensim_wheel(_user_cache: Path) -> Path:
    """A stand-in for gensim's wheel holding the three human-judged sets (12 rows each) of nas.supernet.judged,
    in this test's per-user package cache (where nas.supernet.judged looks before it would download one)."""
    import zipfile

    folder = _user_cache / "corpora" / "packages"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "gensim-4.3.3-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
    pairs = "# header\n# Word 1\tWord 2\tHuman (mean)\n" + "".join(f"w{i}\tv{i}\t{i / 2}\n" for i in range(12))
    polarity = "".join(f"__label__{'pos' if i % 2 else 'neg'} sentence {i} caf\u00e9 .\n" for i in range(12))
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("gensim/test/test_data/simlex999.txt", pairs)
        z.writestr("gensim/test/test_data/wordsim353.tsv", pairs)
        z.writestr("gensim/test/test_data/pang_lee_polarity.cor", polarity.encode("cp1252"))
    return path


def supernet_and_fake_table(model: Path, root: Path, table: str, seq_len: int) -> None:
    """A supernet of ``model`` at ``root/sn`` (small calibration) and a fake-profiler latency table
    ``root/tables/<this cpu>/fake/<table>.csv`` at one sequence length: what a search needs."""
    from nas.families import family_for
    from nas.hub import load_config_dict
    from nas.supernet.build import BuildConfig, build_supernet
    from nas.supernet.calibration import CalibrationConfig
    from profilers.blocks import ModelSpec
    from profilers.environment import cpu_slug
    from profilers.fake import FakeProfiler
    from profilers.protocol import ProtocolConfig
    from profilers.run import profile
    from profilers.workload import GridConfig

    small = CalibrationConfig(num_calib=4, num_heldout=4, seq_len=16, batch_size=2, seed=0)
    build_supernet(str(model), root / "sn", BuildConfig(calibration=small), progress=False)
    config = load_config_dict(model)
    spec = ModelSpec(table, family_for(config), config)
    grid = GridConfig(seq_len=(seq_len,), context_len=(seq_len,), whole_model_samples=30)
    profiler = FakeProfiler(ProtocolConfig(warmup=0, repeats=3, min_repeats=3), noise_cv=0.01, seed=3)
    profile(spec, cpu_slug(), "fake", root / "tables", grid=grid, profiler=profiler, progress=False, bandwidth_buffer_mib=8)


@pytest.fixture(scope="session")
def search_setup() -> Callable[[Path, Path, str, int], None]:
    """:func:`supernet_and_fake_table`, for module fixtures that prepare a search."""
    return supernet_and_fake_table
