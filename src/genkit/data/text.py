"""Text: one sentence per line, tokenized by a tokenizer trained on the training split.

The tokenizer (word level with a capped vocabulary, or BPE; both from the ``tokenizers``
library) travels in the data spec, hence in every checkpoint, so a model decodes its
token ids on another machine without the corpus.
"""

from __future__ import annotations

import codecs
import hashlib
import logging
import re
from collections import Counter
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from genkit.data.base import SPLIT_SEED, Example, InMemoryDataModule, Recipe, SequenceBatches, Split
from genkit.errors import DataError, DataNotFoundError
from genkit.registry import register_data
from genkit.spec import DataSpec, Vocabulary

log = logging.getLogger(__name__)

#: Special tokens, in id order: padding, beginning and end of sentence, unknown word.
PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)
ID_NAMES = ("pad", "bos", "eos", "unk")
TOKENIZERS = ("word", "bpe")
#: File-name words that mark a split in a corpus folder (PTB: ptb.train.txt, ptb.valid.txt, ptb.test.txt).
SPLIT_WORDS = {"train": ("train",), "val": ("valid", "val", "dev"), "test": ("test",)}


#: genkit 0.1's name of ``Vocabulary``: ``TokenIds.of(spec)`` gives its ids and size.
TokenIds = Vocabulary


@cache
def tokenizer_from_json(text: str) -> Any:
    from tokenizers import Tokenizer

    return Tokenizer.from_str(text)


def decode_tokens(spec: DataSpec, ids: Tensor, mask: Tensor | None = None) -> list[str]:
    """Token ids ``[B, T]`` back to strings, stopping at the end-of-sentence token."""
    vocabulary = Vocabulary.of(spec)
    tokenizer = tokenizer_from_json(vocabulary.tokenizer)
    eos = vocabulary.eos
    texts = []
    for row, keep in zip(ids.tolist(), (mask.tolist() if mask is not None else [None] * len(ids))):
        tokens = [t for t, real in zip(row, keep or [True] * len(row)) if real]
        if eos in tokens:
            tokens = tokens[: tokens.index(eos)]
        texts.append(tokenizer.decode(tokens, skip_special_tokens=False))
    return texts


def train_tokenizer(lines: list[str], kind: str, vocab_size: int, lowercase: bool) -> Any:
    """A tokenizer fitted on ``lines``, special tokens first (ids 0-3).

    ``word``: whitespace-split words, the ``vocab_size`` most frequent kept (ties by
    spelling, so the vocabulary is reproducible), the rest ``<unk>``; a literal ``<unk>``
    in the text (PTB's) is the same token. ``bpe``: byte-pair merges up to ``vocab_size`` pieces.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    if kind == "word":
        counts = Counter(word for line in lines for word in (line.lower() if lowercase else line).split())
        words = sorted((w for w in counts if w not in SPECIAL_TOKENS), key=lambda w: (-counts[w], w))[:vocab_size]
        tokenizer = Tokenizer(models.WordLevel({t: i for i, t in enumerate([*SPECIAL_TOKENS, *words])}, unk_token=UNK))
        tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    else:
        tokenizer = Tokenizer(models.BPE(unk_token=UNK))
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
        tokenizer.decoder = decoders.Metaspace()
    if lowercase:
        tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
    if kind == "bpe":
        total = vocab_size + len(SPECIAL_TOKENS)
        trainer = trainers.BpeTrainer(vocab_size=total, special_tokens=list(SPECIAL_TOKENS), show_progress=False)
        tokenizer.train_from_iterator(lines, trainer)
    return tokenizer


def text_spec(tokenizer: Any, max_length: int) -> DataSpec:
    """The spec of token sequences: the tokenizer itself (JSON) and its special ids travel with it."""
    vocabulary = Vocabulary(
        tokenizer=tokenizer.to_str(),
        vocab_size=tokenizer.get_vocab_size(),
        **{name: tokenizer.token_to_id(token) for name, token in zip(ID_NAMES, SPECIAL_TOKENS)},
    )
    return DataSpec("text", (max_length,), "categorical", variable_length=True, vocabulary=vocabulary)


@dataclass
class LineCounts:
    """What reading a file skipped, for one warning per file."""

    empty: int = 0
    undecodable: int = 0
    first_undecodable: int = 0


def read_lines(path: Path, encoding: str) -> list[str]:
    """The non-empty lines of a file; lines that do not decode are skipped and counted, with a warning."""
    counts = LineCounts()
    lines = []
    for number, raw in enumerate(path.read_bytes().splitlines(), start=1):
        try:
            line = raw.decode(encoding).strip()
        except UnicodeDecodeError:
            counts.undecodable += 1
            counts.first_undecodable = counts.first_undecodable or number
            continue
        if line:
            lines.append(line)
        else:
            counts.empty += 1
    if counts.undecodable:
        log.warning(
            "%s: skipped %d line(s) that are not valid %s (first: line %d); set data.encoding if the file uses another",
            path,
            counts.undecodable,
            encoding,
            counts.first_undecodable,
        )
    if counts.empty:
        log.info("%s: skipped %d empty line(s)", path, counts.empty)
    return lines


def split_files(folder: Path) -> dict[str, Path]:
    """A corpus folder's train/val/test files, found by the words in their names."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix != ".md")
    if not files:
        raise DataNotFoundError(f"{folder} has no text files; give a corpus folder or a text file as data.path")
    found: dict[str, Path] = {}
    for split, words in SPLIT_WORDS.items():
        matches = [p for p in files if set(re.split(r"[^a-z]+", p.name.lower())) & set(words)]
        if len(matches) > 1:
            raise DataError(f"{folder} has several {split} files ({', '.join(p.name for p in matches)}); keep one")
        if matches:
            found[split] = matches[0]
    if not found and len(files) == 1:  # one text file in a folder: split it like a file given directly
        return {"all": files[0]}
    return found


@register_data("text_lines")
class TextLines(InMemoryDataModule):
    """Sentences, one per line: a folder with train/valid/test files (PTB's layout, any names
    containing ``train``, ``valid``/``val``/``dev`` and ``test``), or one file split by a seeded ratio.

    Each example is the sentence's tokens followed by ``</s>``; the decoder reads ``<s>`` first.
    Batches carry ``x`` (token ids) and ``mask`` ``[B, T]``, grouped by length and cut to their
    longest sentence. Empty lines and lines that do not decode are skipped and counted; lines
    longer than ``max_length`` are truncated and counted.

    Args:
        path: a corpus folder or a single text file.
        tokenizer: ``word`` (whitespace-split words; PTB convention) or ``bpe`` (byte-pair
            encoding, for raw text).
        vocab_size: words (or BPE pieces) kept, besides the 4 special tokens; the rest
            become ``<unk>``. PTB's 10k vocabulary is 10000.
        lowercase: lower-case the text before tokenizing.
        max_length: longest example in tokens, ``</s>`` included.
        val_fraction, test_fraction: held-out shares when ``path`` is a single file.
        encoding: the files' text encoding.
        batch_size: training batch size, in sentences.
        eval_batch_size: validation/test batch size (0: 4x batch_size).
        seed: the run's seed (wired by genkit): batch order.
        on_device: keep the token ids on the accelerator when they fit.
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        path: str = "",
        tokenizer: str = "word",
        vocab_size: int = 10000,
        lowercase: bool = False,
        max_length: int = 64,
        val_fraction: float = 0.05,
        test_fraction: float = 0.05,
        encoding: str = "utf-8",
        batch_size: int = 32,
        eval_batch_size: int = 0,
        on_device: bool = True,
    ) -> None:
        super().__init__(seed, batch_size=batch_size, eval_batch_size=eval_batch_size, on_device=on_device)
        if tokenizer not in TOKENIZERS:
            raise ValueError(f"data.tokenizer must be one of {TOKENIZERS}, got {tokenizer!r}")
        if vocab_size < 1:
            raise ValueError(f"data.vocab_size must be at least 1, got {vocab_size}")
        if max_length < 2:
            raise ValueError(f"data.max_length must be at least 2 (a token and </s>), got {max_length}")
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise ValueError(
                f"data.encoding={encoding!r} is not a text encoding Python knows (utf-8, latin-1, ...)"
            ) from None
        self.path = path
        self.tokenizer_kind = tokenizer
        self.vocab_size = vocab_size
        self.lowercase = lowercase
        self.max_length = max_length
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.encoding = encoding

    def corpus_lines(self) -> dict[str, list[str]]:
        """Each split's sentences, as text."""
        if not self.path:
            raise DataNotFoundError("data.path is not set: give a corpus folder or a text file (data.path=DIR_OR_FILE)")
        path = Path(self.path).expanduser()
        if not path.exists():
            raise DataNotFoundError(f"data.path {path} does not exist; give a corpus folder or a text file")
        files = {"all": path} if path.is_file() else split_files(path)
        if "all" in files:
            return self.split_one_file(files["all"])
        if "train" not in files:
            raise DataError(
                f"{path} has no training file (a name containing 'train'); name the splits *train*, *valid* and "
                "*test*, or give one file as data.path to split it by data.val_fraction and data.test_fraction"
            )
        lines = {split: read_lines(file, self.encoding) for split, file in files.items()}
        for split in ("val", "test"):
            if split not in lines:
                share = self.fraction(split)
                log.warning("%s has no %s file: holding out %s of the training lines", path, split, share)
        if "val" not in lines or "test" not in lines:
            held = self.hold_out(lines.pop("train"), "val" not in lines, "test" not in lines, files["train"])
            lines = {**held, **lines}
        for split, file in files.items():
            if not lines[split]:
                raise DataError(f"{file} ({split} split) has no usable lines")
        return lines

    def fraction(self, split: str) -> float:
        return self.val_fraction if split == "val" else self.test_fraction

    def split_one_file(self, path: Path) -> dict[str, list[str]]:
        lines = read_lines(path, self.encoding)
        if not lines:
            raise DataError(f"{path} has no usable lines (all empty or not {self.encoding})")
        return self.hold_out(lines, True, True, path)

    def hold_out(self, lines: list[str], val: bool, test: bool, source: Path) -> dict[str, list[str]]:
        """A seeded share of ``lines`` (read from ``source``) held out as validation and/or test sets."""
        n = len(lines)
        sizes = {s: round(n * self.fraction(s)) for s, wanted in (("val", val), ("test", test)) if wanted}
        if any(size < 1 for size in sizes.values()) or n - sum(sizes.values()) < 1:
            raise DataError(
                f"{source} has {n} usable line(s) of {self.encoding} text: too few to hold out "
                f"data.val_fraction={self.val_fraction} and data.test_fraction={self.test_fraction}; give a "
                "longer file or separate split files, or set data.encoding if the file uses another"
            )
        order = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED)).tolist()
        out, start = {}, 0
        for split, size in sizes.items():
            out[split] = [lines[i] for i in order[start : start + size]]
            start += size
        out["train"] = [lines[i] for i in order[start:]]
        return out

    def fitted_tokenizer(self, lines: dict[str, list[str]]) -> Any:
        return train_tokenizer(lines["train"], self.tokenizer_kind, self.vocab_size, self.lowercase)

    def example_ids(self, tokenizer: Any, ids: list[int]) -> list[int]:
        """A sentence's token ids as an example: cut to ``max_length - 1``, then ``</s>``."""
        return ids[: self.max_length - 1] + [tokenizer.token_to_id(EOS)]

    def recipe(self) -> Recipe:
        """Each sentence tokenized (by the tokenizer fitted on the training lines) in a worker process,
        stored as int32 ids; the tokenizer travels in the spec."""
        lines = self.corpus_lines()
        tokenizer = self.fitted_tokenizer(lines)
        settings = (self.tokenizer_kind, self.vocab_size, self.lowercase, self.max_length, self.encoding)
        digest = hashlib.sha256(f"{settings} {self.val_fraction} {self.test_fraction}".encode())
        for split, texts in lines.items():
            digest.update(split.encode() + "\n".join(texts).encode())

        def encode(split: str, line: str) -> Example:
            return {"x": np.array(self.example_ids(tokenizer, tokenizer.encode(line).ids), dtype=np.int32)}

        return Recipe(
            source=f"text_lines {Path(self.path).expanduser().resolve()}",
            spec=text_spec(tokenizer, self.max_length),
            items=lines,
            decode=encode,
            fingerprint=digest.hexdigest(),
            describe=lambda line: repr(line[:40]),
        )

    @cached_property
    def corpus(self) -> tuple[Any, dict[str, Split]]:
        """The tokenizer (fitted on the training split only) and every split as padded ids and masks."""
        lines = self.corpus_lines()
        tokenizer = self.fitted_tokenizer(lines)
        pad = tokenizer.token_to_id(PAD)
        splits = {}
        for split, texts in lines.items():
            rows = [encoding.ids for encoding in tokenizer.encode_batch(texts)]
            long = sum(len(row) >= self.max_length for row in rows)
            if long:
                log.warning(
                    "%s split: truncated %d of %d sentences to data.max_length=%d tokens (raise it to keep them whole)",
                    split,
                    long,
                    len(rows),
                    self.max_length,
                )
            rows = [self.example_ids(tokenizer, row) for row in rows]
            longest = max(len(row) for row in rows)
            x = torch.full((len(rows), longest), pad, dtype=torch.long)
            for i, row in enumerate(rows):
                x[i, : len(row)] = torch.tensor(row)
            lengths = torch.tensor([len(row) for row in rows])
            splits[split] = {"x": x, "mask": torch.arange(longest)[None, :] < lengths[:, None]}
        return tokenizer, splits

    @cached_property
    def spec(self) -> DataSpec:
        return text_spec(self.corpus[0], self.max_length)

    @classmethod
    def probe_spec(cls) -> DataSpec:
        """A word-level spec fitted on a few made-up sentences (the real one needs the corpus)."""
        lines = ["the cat sat on the mat", "a dog saw the cat", "the mat was red"]
        return text_spec(train_tokenizer(lines, "word", 100, False), max_length=16)

    def load_splits(self) -> dict[str, Split]:
        return self.corpus[1]

    def batches(self, split: str, batch_size: int, train: bool, **options: Any) -> SequenceBatches:
        tensors = self.splits[split]
        lengths = self.corpus[1][split]["mask"].sum(1)
        return SequenceBatches(tensors, lengths, batch_size, shuffle=train, equal_shards=train, **options)
