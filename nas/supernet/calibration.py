"""Token batches for calibration and held-out evaluation, and their recorded identity.

Decoders get windows of ``seq_len`` tokens cut from the documents joined with the end-of-text
token; encoders get one sentence group per document (its first ``seq_len`` tokens, padded).
Calibration batches come from the calibration pool, held-out batches from the held-out pool
(:func:`nas.supernet.data.split_documents`), both drawn with ``seed``.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nas.errors import AnyshapeError
from nas.families import ModelFamily
from nas.supernet import data as corpus
from nas.supernet.data import DEFAULT_CORPUS, KNOWN_CORPORA
from nas.supernet.evaluate import Batch, iter_batches


@dataclass(frozen=True)
class CalibrationConfig:
    """Which text, how much of it, and how it is cut."""

    calib_text: str | None = field(default=None, metadata={"help": "text / JSON-lines file or directory instead of the builtin corpus"})
    calib_dataset: str | None = field(default=None, metadata={"help": "Hugging Face dataset NAME[:CONFIG] (needs network)"})
    corpus: str = field(default=DEFAULT_CORPUS, metadata={"help": "builtin corpus used when no text or dataset is given"})
    num_calib: int = field(default=32, metadata={"help": "calibration sequences (decoders) or sentences (encoders)"})
    num_heldout: int = field(default=32, metadata={"help": "held-out sequences or sentences"})
    seq_len: int = field(default=128, metadata={"help": "tokens per sequence (decoders) or at most per sentence (encoders)"})
    batch_size: int = field(default=16, metadata={"help": "rows per forward pass"})
    seed: int = field(default=0, metadata={"help": "seed of the sampling of sequences"})
    short_spans: float = field(default=0.0, metadata={"help": "encoders: share of the calibration sentences cut to a span of "
                                                              "1-32 words (words and queries beside passages)"})

    def __post_init__(self) -> None:
        if self.calib_text is not None and self.calib_dataset is not None:
            raise AnyshapeError("give --calib-text or --calib-dataset, not both")
        if self.corpus not in KNOWN_CORPORA:
            raise AnyshapeError(f"calibration corpus is {self.corpus!r}; known: {', '.join(KNOWN_CORPORA)}")
        if self.corpus != DEFAULT_CORPUS and (self.calib_text is not None or self.calib_dataset is not None):
            raise AnyshapeError("give --corpus or --calib-text / --calib-dataset, not both")
        for name, low, high in (("num_calib", 1, 100_000), ("num_heldout", 1, 100_000), ("seq_len", 8, 8192), ("batch_size", 1, 4096)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise AnyshapeError(f"calibration {name} is {value!r}; allowed range {low}..{high}")
        if isinstance(self.short_spans, bool) or not isinstance(self.short_spans, (int, float)) or not 0 <= self.short_spans <= 1:
            raise AnyshapeError(f"calibration short_spans is {self.short_spans!r}; allowed range 0..1")

    @property
    def corpus_name(self) -> str:
        if self.calib_text is not None:
            return f"text:{Path(self.calib_text).name}"
        if self.calib_dataset is not None:
            return f"dataset:{self.calib_dataset}"
        return self.corpus


@dataclass
class CalibrationData:
    """Calibration and held-out batches, and the record that identifies them."""

    calib: list[Batch]
    heldout: list[Batch]
    record: dict[str, Any]
    heldout_inputs: dict[str, torch.Tensor] | None = None  # the held-out rows before batching


def load_tokenizer(model_path: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model_path)
    except Exception as e:  # missing or broken tokenizer files
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise AnyshapeError(
            f"the model at {model_path} has no usable tokenizer ({first}); calibration needs the tokenizer files beside the weights"
        ) from None


def prepare_data(model_path: Path, family: ModelFamily, config: CalibrationConfig, vocab_size: int, *,
                 text_option: str = "--calib-text") -> CalibrationData:
    """Tokenize the configured text into seeded, disjoint calibration and held-out batches.

    ``text_option`` is the command-line option ``config.calib_text`` came from (``--data`` when
    fine-tuning), so that errors about that path name it.
    """
    calib_docs, heldout_docs = corpus.split_documents(documents(config, text_option))
    tokenizer = load_tokenizer(model_path)
    calib = token_rows(tokenizer, family, calib_docs, config.num_calib, config.seq_len, config.seed, vocab_size, config.short_spans)
    heldout = token_rows(tokenizer, family, heldout_docs, config.num_heldout, config.seq_len, config.seed + 1, vocab_size)
    record = {
        "corpus": config.corpus_name,
        "split": {"seed": corpus.SPLIT_SEED, "heldout_fraction": corpus.HELDOUT_FRACTION,
                  "calib_documents": len(calib_docs), "heldout_documents": len(heldout_docs)},
        "seed": config.seed,
        "seq_len": config.seq_len,
        **({"short_spans": config.short_spans} if config.short_spans else {}),
        "num_calib": int(calib["input_ids"].shape[0]),
        "num_heldout": int(heldout["input_ids"].shape[0]),
        "calib_tokens": int(calib["attention_mask"].sum()),
        "heldout_tokens": int(heldout["attention_mask"].sum()),
        "calib_sha256": tokens_sha256(calib),
        "heldout_sha256": tokens_sha256(heldout),
    }
    if config.calib_text is not None:
        record["calib_text_sha256"] = corpus.documents_sha256(config.calib_text)
    return CalibrationData(
        calib=list(iter_batches(calib, config.batch_size)),
        heldout=list(iter_batches(heldout, config.batch_size)),
        record=record,
        heldout_inputs=heldout,
    )


def heldout_batches(supernet: Any, model_path: Path, family: ModelFamily, vocab_size: int) -> list[Batch]:
    """The supernet's held-out batches, what the search, verify and fine-tuning score shapes on: the
    token rows stored in the supernet, else rebuilt from its calibration record (older supernets;
    their text must be on this machine). Either way they must hash to the recorded ``heldout_sha256``."""
    config = CalibrationConfig(**dict(supernet.build_config.get("calibration") or {}))
    expected = (supernet.calibration or {}).get("heldout_sha256")
    if supernet.heldout_inputs is not None:
        inputs = dict(supernet.heldout_inputs)
        if expected and tokens_sha256(inputs) != expected:
            raise AnyshapeError("the supernet's stored held-out rows do not match its record (heldout_sha256); rebuild the supernet")
        return list(iter_batches(inputs, config.batch_size))
    data = prepare_data(model_path, family, config, vocab_size)
    if expected and data.record.get("heldout_sha256") != expected:
        raise AnyshapeError("the held-out data rebuilt from the supernet's record differs from the one it was built with")
    return data.heldout


def documents(config: CalibrationConfig, text_option: str = "--calib-text") -> list[corpus.Document]:
    """The configured text as documents: a text / JSON-lines file or folder, a Hugging Face dataset, or a builtin corpus."""
    if config.calib_text is not None:
        return corpus.load_documents(config.calib_text, option=text_option)
    if config.calib_dataset is not None:
        return corpus.load_hf_dataset(config.calib_dataset)
    return corpus.load_corpus(config.corpus)


def token_rows(tokenizer: Any, family: ModelFamily, docs: list[corpus.Document], count: int, seq_len: int, seed: int,
               vocab_size: int, short_spans: float = 0.0) -> dict[str, torch.Tensor]:
    """``count`` seeded rows of ``docs``: token windows (decoders) or padded sentences (encoders)."""
    if family.kind == "decoder":
        return _windows(tokenizer, [d.text for d in docs], count, seq_len, seed, vocab_size)
    return _sentences(tokenizer, docs, count, seq_len, seed, vocab_size, short_spans)


def tokens_sha256(inputs: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(inputs):
        h.update(key.encode())
        h.update(inputs[key].to(torch.int64).contiguous().numpy().tobytes())
    return h.hexdigest()


def _windows(tokenizer: Any, texts: list[str], count: int, seq_len: int, seed: int, vocab_size: int) -> dict[str, torch.Tensor]:
    eos = tokenizer.eos_token_id
    ids: list[int] = []
    for enc in tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]:
        ids.extend(enc)
        if eos is not None:
            ids.append(eos)
    available = len(ids) // seq_len
    if available < 1:
        raise AnyshapeError(f"the text gives {len(ids)} tokens, fewer than one window of seq_len {seq_len}")
    picks = sorted(random.Random(seed).sample(range(available), min(count, available)))
    stream = torch.tensor(ids[: available * seq_len], dtype=torch.int64).view(available, seq_len)
    input_ids = stream[picks]
    _check_vocab(input_ids, vocab_size)
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}


def _sentences(tokenizer: Any, docs: list[corpus.Document], count: int, seq_len: int, seed: int, vocab_size: int,
               short_spans: float = 0.0) -> dict[str, torch.Tensor]:
    texts = corpus.sample_segments(docs, count, seed=seed, max_chars=seq_len * 8)
    if short_spans:
        texts = corpus.short_spans(texts, short_spans, seed=seed)
    enc = tokenizer(texts, padding="longest", truncation=True, max_length=seq_len, return_tensors="pt")
    inputs = {k: v.to(torch.int64) for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    _check_vocab(inputs["input_ids"], vocab_size)
    return inputs


def _check_vocab(input_ids: torch.Tensor, vocab_size: int) -> None:
    top = int(input_ids.max())
    if top >= vocab_size:
        raise AnyshapeError(f"the tokenizer produced token id {top}, outside the model's vocabulary of {vocab_size}")
