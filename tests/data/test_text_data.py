"""Text data: tokenizers, corpus reading and its bad input, length-grouped batches, the PTB preset."""

from __future__ import annotations

import logging

import pytest
import torch

from conftest import corpus_folder, sentences, shared_data
from genkit.config import train_config
from genkit.data.base import SequenceBatches
from genkit.data.text import TextLines, decode_tokens
from genkit.errors import DataError, DataNotFoundError


def test_word_tokenizer_round_trips_and_caps_the_vocabulary(tmp_path):
    folder = corpus_folder(tmp_path)
    data = TextLines(path=str(folder))
    data.setup()
    spec = data.spec
    vocabulary = spec.vocabulary
    assert vocabulary.vocab_size == 4 + len(set(" ".join(sentences(300)).split()))
    assert [vocabulary.pad, vocabulary.bos, vocabulary.eos, vocabulary.unk] == [0, 1, 2, 3]
    test = data.splits["test"]
    assert decode_tokens(spec, test["x"], test["mask"]) == sentences(60, 2)
    ends = test["x"].gather(1, test["mask"].sum(1, keepdim=True) - 1)
    assert (ends == spec.vocabulary.eos).all(), "every example ends with </s>"

    capped = TextLines(path=str(folder), vocab_size=5)
    words = decode_tokens(capped.spec, capped.corpus[1]["test"]["x"])
    assert "<unk>" in " ".join(words) and len(set(" ".join(words).split())) <= 6
    assert capped.spec.vocabulary == TextLines(path=str(folder), vocab_size=5).spec.vocabulary


def test_bpe_tokenizer_round_trips_raw_text(tmp_path):
    lines = [f"Hello, {name}! It's {n} o'clock." for name in ("Ann", "Bob", "Eve") for n in range(40)]
    (tmp_path / "raw.txt").write_text("\n".join(lines) + "\n")
    data = TextLines(
        path=str(tmp_path / "raw.txt"), tokenizer="bpe", vocab_size=60, val_fraction=0.1, test_fraction=0.1
    )
    data.setup()
    split = data.splits["train"]
    decoded = decode_tokens(data.spec, split["x"], split["mask"])
    assert set(decoded) <= set(lines) and len(decoded) == 96
    assert split["mask"].sum(1).float().mean() < max(len(line) for line in lines), "BPE merges characters"


def test_one_file_is_split_by_a_fixed_seeded_ratio(tmp_path):
    (tmp_path / "all.txt").write_text("\n".join(sentences(200)) + "\n")
    data = TextLines(path=str(tmp_path / "all.txt"), val_fraction=0.1, test_fraction=0.2, seed=5)
    sizes = {split: len(t["x"]) for split, t in data.corpus[1].items()}
    assert sizes == {"val": 20, "test": 40, "train": 140}
    again = TextLines(path=str(tmp_path / "all.txt"), val_fraction=0.1, test_fraction=0.2, seed=9)
    assert torch.equal(again.corpus[1]["test"]["x"], data.corpus[1]["test"]["x"]), "the run seed never moves the split"


def test_bad_lines_are_skipped_counted_or_truncated_with_the_file_named(tmp_path, caplog):
    folder = tmp_path / "corpus"
    folder.mkdir()
    good = sentences(40)
    raw = "\n".join(good[:10]).encode() + b"\n\n   \nbad \xff\xfe bytes\n" + "\n".join(good[10:]).encode()
    raw += b"\n" + " ".join(["word"] * 30).encode() + b"\n"
    (folder / "train.txt").write_bytes(raw)
    (folder / "valid.txt").write_text("\n".join(good[:5]))
    (folder / "test.txt").write_text("\n".join(good[5:10]))
    with caplog.at_level(logging.INFO):
        data = TextLines(path=str(folder), max_length=12)
        data.setup()
    log = caplog.text
    assert f"{folder / 'train.txt'}: skipped 1 line(s) that are not valid utf-8 (first: line 13)" in log
    assert "skipped 2 empty line(s)" in log
    assert "train split: truncated 1 of 41 sentences to data.max_length=12 tokens" in log
    assert data.splits["train"]["x"].shape == (41, 12)


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda p: p / "nowhere", DataNotFoundError, "does not exist"),
        (lambda p: (p / "empty.txt").write_text("\n\n") and p / "empty.txt", DataError, "has no usable lines"),
        (lambda p: (p / "few.txt").write_text("one\ntwo\n") and p / "few.txt", DataError, "too few to hold out"),
    ],
)
def test_unusable_paths_are_one_clear_error(tmp_path, make, error, message):
    with pytest.raises(error, match=message):
        TextLines(path=str(make(tmp_path))).spec  # noqa: B018


def test_a_binary_file_given_as_a_corpus_is_named_with_the_encoding_to_check(tmp_path):
    """Found by scripts/fuzz_config.py: a binary file read as utf-8 is one line, and the refusal
    blamed only the held-out fractions."""
    binary = tmp_path / "binary.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(DataError, match=rf"{binary} has 1 usable line\(s\) of utf-8 text: .*set data.encoding"):
        TextLines(path=str(binary)).spec  # noqa: B018


def test_an_empty_split_file_is_named(tmp_path):
    folder = corpus_folder(tmp_path)
    (folder / "toy.valid.txt").write_text("\n   \n")
    with pytest.raises(DataError, match=r"toy\.valid\.txt \(val split\) has no usable lines"):
        TextLines(path=str(folder)).spec  # noqa: B018


def test_length_grouped_batches_cover_every_sentence_once_with_little_padding():
    torch.manual_seed(0)
    lengths = torch.randint(1, 60, (1000,))
    x = torch.arange(1000)[:, None].expand(1000, 60).clone()
    tensors = {"x": x, "mask": torch.arange(60)[None, :] < lengths[:, None]}
    batches = SequenceBatches(tensors, lengths, 16, shuffle=True, seed=1, pool_batches=20)
    seen = [b["x"][:, 0] for b in batches]
    assert sorted(torch.cat(seen).tolist()) == list(range(1000)) and len(seen) == len(batches)
    padding = sum((~b["mask"]).sum().item() for b in batches) / lengths.sum().item()
    assert padding < 0.1, f"length grouping should keep padding low, got {padding:.1%}"
    assert all(b["mask"][:, -1].any() for b in batches), "each batch is cut to its longest sentence"

    restored = SequenceBatches(tensors, lengths, 16, shuffle=True, seed=1, pool_batches=20, progress=lambda: 7)
    restored.load_state_dict({"epoch": 0, "batches_done": 7})
    assert [b["x"][:, 0].tolist() for b in restored] == [s.tolist() for s in seen[7:]]
    shards = [
        SequenceBatches(tensors, lengths, 16, shuffle=True, rank=r, world_size=2, equal_shards=True) for r in (0, 1)
    ]
    ids = [torch.cat([b["x"][:, 0] for b in shard]) for shard in shards]
    assert len(ids[0]) == len(ids[1]) == 500 and not set(ids[0].tolist()) & set(ids[1].tolist())


def test_ptb_preset_reads_the_standard_splits():
    path = shared_data("ptb")
    cfg = train_config(["experiment=text_ptb", f"data.path={path}"])
    data = TextLines(**{k: v for k, v in cfg.data.items() if not k.startswith("_")})
    splits = data.corpus[1]
    assert {s: len(t["x"]) for s, t in splits.items()} == {"train": 42068, "val": 3370, "test": 3761}
    assert {s: int(t["mask"].sum()) for s, t in splits.items()} == {"train": 929589, "val": 73760, "test": 82430}
    assert data.spec.vocabulary.vocab_size == 9998 + 4, "PTB's 10k types: 9,998 words, <unk> and </s> are ours"


def test_an_unknown_encoding_is_refused_when_the_module_is_built(tmp_path):
    with pytest.raises(ValueError, match=r"data.encoding='nope' is not a text encoding Python knows"):
        TextLines(path=str(tmp_path), encoding="nope")
