"""Train the reference decoder: a 12-layer Llama-architecture model on the offline corpus.

    anyshape corpus build english
    nohup .venv/bin/python scripts/train_reference_decoder.py --out nas/assets/ref-llama-12l \\
        --corpus english stdlib-docs --steps 1200 --warmup 60 > train.log 2>&1 &

No pretrained decoder can be downloaded here, so the supernet's quality work on decoders uses
this one. It trains its own byte-level BPE tokenizer (``tokenizers``) on the calibration pool of
the builtin corpus (``nas.supernet.data``; the held-out pool is never seen), then a
LlamaForCausalLM (hidden 256, 12 layers, 8 query heads in 4 KV groups, FFN 640, tied
embeddings, ~9.3M parameters) with AdamW and a cosine schedule. Deterministic under ``--seed``
on one thread. Writes a stock HF directory (safetensors fp32, tokenizer via
PreTrainedTokenizerFast) with a model card holding the loss curve and held-out perplexity.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from nas.supernet.data import load_corpus, split_documents

EOT = "<|endoftext|>"
PAD = "<pad>"


def train_tokenizer(texts: list[str], vocab_size: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOT, eos_token=EOT, pad_token=PAD, model_max_length=512)


def token_stream(tokenizer: Any, texts: list[str]) -> torch.Tensor:
    """All texts tokenized and joined, each followed by the end-of-text token."""
    ids: list[int] = []
    for enc in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        ids.extend(enc)
        ids.append(tokenizer.eos_token_id)
    return torch.tensor(ids, dtype=torch.int64)


def build_model(vocab_size: int, tokenizer: Any, seed: int) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=256,
        intermediate_size=640,
        num_hidden_layers=12,
        num_attention_heads=8,
        num_key_value_heads=4,
        head_dim=32,
        max_position_embeddings=512,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


@torch.no_grad()
def heldout_nll(model: Any, stream: torch.Tensor, seq_len: int, max_windows: int) -> tuple[float, int]:
    """Mean next-token NLL over non-overlapping windows of the held-out stream, and the token count."""
    model.eval()
    n = min(max_windows, (len(stream) - 1) // seq_len)
    windows = stream[: n * seq_len].view(n, seq_len)
    total, count = 0.0, 0
    for batch in windows.split(16):
        logits = model(input_ids=batch).logits[:, :-1]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="sum")
        total += float(loss)
        count += batch[:, 1:].numel()
    model.train()
    return total / count, count


def lr_at(step: int, steps: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def main() -> None:
    parser = argparse.ArgumentParser(description="Train the anyshape reference decoder on the offline corpus.")
    parser.add_argument("--out", type=Path, default=Path("nas/assets/ref-llama-12l"))
    parser.add_argument("--steps", type=int, default=320)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--log-every", type=int, default=40)
    parser.add_argument("--corpus", nargs="+", default=["stdlib-docs"], help="training corpora (the first one's held-out "
                        "pool is the headline perplexity); english: anyshape corpus build")
    parser.add_argument("--tokenizer-docs", type=int, default=40_000, help="documents the tokenizer is trained on (the first N)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    start = time.perf_counter()

    calib: list[Any] = []
    heldout: dict[str, list[Any]] = {}
    per_corpus: dict[str, dict[str, Any]] = {}
    for name in args.corpus:  # each corpus split on its own: the default calibration split of every one is never trained on
        c, h = split_documents(load_corpus(name))
        calib += c
        heldout[name] = h
        per_corpus[name] = {"train_documents": len(c), "heldout_documents": len(h)}
    tokenizer = train_tokenizer([d.text for d in calib][: args.tokenizer_docs], args.vocab_size)
    train_ids = token_stream(tokenizer, [d.text for d in calib])
    heldout_ids = {name: token_stream(tokenizer, [d.text for d in docs]) for name, docs in heldout.items()}
    print(json.dumps({"train_tokens": len(train_ids), "heldout_tokens": {k: len(v) for k, v in heldout_ids.items()}}), flush=True)
    main_heldout = heldout_ids[args.corpus[0]]

    model = build_model(len(tokenizer), tokenizer, args.seed)
    model.train()
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.95)
    )
    gen = torch.Generator().manual_seed(args.seed)
    curve: list[dict[str, float]] = []
    running, seen = 0.0, 0
    for step in range(args.steps):
        offsets = torch.randint(0, len(train_ids) - args.seq_len - 1, (args.batch,), generator=gen)
        batch = torch.stack([train_ids[o : o + args.seq_len + 1] for o in offsets.tolist()])
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.steps, args.lr, args.warmup)
        logits = model(input_ids=batch[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        running += float(loss.detach())
        seen += 1
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            point = {"step": step + 1, "train_loss": round(running / seen, 4), "minutes": round((time.perf_counter() - start) / 60, 2)}
            if (step + 1) % (args.log_every * 4) == 0 or step + 1 == args.steps:
                point["heldout_loss"] = round(heldout_nll(model, main_heldout, args.seq_len, 64)[0], 4)
            curve.append(point)
            print(json.dumps(point), flush=True)
            running, seen = 0.0, 0

    scores = {name: heldout_nll(model, ids, args.seq_len, 10_000) for name, ids in heldout_ids.items()}
    for name, (corpus_nll, corpus_tokens) in scores.items():
        per_corpus[name].update(heldout_nll=round(corpus_nll, 4), heldout_perplexity=round(math.exp(corpus_nll), 2),
                                heldout_tokens_evaluated=corpus_tokens)
    nll, tokens = scores[args.corpus[0]]  # the headline: the first corpus's held-out pool
    minutes = (time.perf_counter() - start) / 60
    args.out.mkdir(parents=True, exist_ok=True)
    model.eval()
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    report = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_tokens": len(train_ids),
        "heldout_tokens_evaluated": tokens,
        "heldout_nll": round(nll, 4),
        "heldout_perplexity": round(math.exp(nll), 2),
        "corpora": per_corpus,
        "minutes": round(minutes, 1),
        "torch": torch.__version__,
        "curve": curve,
    }
    (args.out / "training.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "README.md").write_text(model_card(report))
    print(json.dumps({k: v for k, v in report.items() if k != "curve"}), flush=True)


def model_card(report: dict[str, Any]) -> str:
    a = report["args"]
    rows = "\n".join(
        f"| {p['step']} | {p['train_loss']:.3f} | {p.get('heldout_loss', float('nan')):.3f} | {p['minutes']:.1f} |"
        for p in report["curve"]
    )
    rows = rows.replace("| nan |", "| |")
    corpora = report.get("corpora") or {}
    data = "; ".join(f"`{name}` {c['train_documents']} training / {c['heldout_documents']} held-out documents"
                     + (f", held-out perplexity {c['heldout_perplexity']}" if "heldout_perplexity" in c else "")
                     for name, c in corpora.items())
    return f"""# ref-llama-12l: anyshape's reference decoder

A small **LlamaForCausalLM** trained from scratch by `scripts/train_reference_decoder.py`, so
that supernet construction on decoders can be measured on a machine that cannot download a
pretrained one. Builtin alias: `ref-decoder`. It is a test article, not a useful language model.

- Architecture: 12 layers, hidden 256, 8 query heads of dim 32 in 4 KV groups (GQA), FFN 640 (SwiGLU),
  RoPE, tied embeddings; {report['parameters']:,} parameters, stored fp32 (safetensors).
- Tokenizer: byte-level BPE, vocabulary {a['vocab_size']}, trained with `tokenizers` on the same
  training text; saved as a stock `PreTrainedTokenizerFast` (`<|endoftext|>` = BOS/EOS, `<pad>`).
- Data: the builtin corpora {', '.join(f'`{c}`' for c in a.get('corpus', ['stdlib-docs']))} (sources and licences:
  `nas/data/README.md`), each split by `nas.supernet.data.split_documents` (split seed 0) into
  training and held-out documents never trained on: {data}; {report['train_tokens']:,} training tokens.
- Training: {a['steps']} steps of {a['batch']} random windows of {a['seq_len']} tokens
  ({a['steps'] * a['batch'] * a['seq_len']:,} tokens seen), AdamW (betas 0.9/0.95, weight decay 0.1),
  peak lr {a['lr']} with {a['warmup']} warm-up steps and cosine decay to 10%, grad clip 1.0, seed {a['seed']},
  {a['threads']} CPU thread(s), torch {report['torch']}; {report['curve'][-1]['minutes']} minutes of training and
  {report['minutes']} in all (with the held-out evaluation) on a 2-core CPU shared with other jobs.
- **Held-out perplexity: {report['heldout_perplexity']}** (mean NLL {report['heldout_nll']} nats/token over
  {report['heldout_tokens_evaluated']:,} predicted tokens in non-overlapping windows of {a['seq_len']}).

Reproduce (same seed, same thread count: same weights):

    .venv/bin/python scripts/train_reference_decoder.py --out DIR --corpus {' '.join(a.get('corpus', ['stdlib-docs']))} \\
        --steps {a['steps']} --warmup {a['warmup']} --lr {a['lr']} --threads {a['threads']}

## Loss curve

| step | train loss (mean of last {a['log_every']} steps) | held-out loss (64 windows) | minutes |
|---:|---:|---:|---:|
{rows}
"""


if __name__ == "__main__":
    main()
