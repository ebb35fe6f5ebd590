"""Text: tokenizers, corpus reading and its bad input, length-grouped batches, masking,
sequence parts, generation, and a sentence VAE trained end to end and reloaded."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import pytest
import torch

import genkit
from conftest import FAST, run, script, shared_data, wandb_records
from genkit.compose import build_model, train_config
from genkit.data.base import SequenceBatches
from genkit.data.text import TextLines, decode_tokens
from genkit.errors import DataError, DataNotFoundError
from genkit.sequences import sample_top_p

SUBJECTS = ["the cat", "a dog", "my friend", "the old man", "a small bird", "the teacher"]
VERBS = ["sees", "likes", "chases", "finds", "helps", "watches"]
OBJECTS = ["the ball", "a tree", "the house", "some food", "the river", "a book"]
ENDINGS = ["", "today", "again", "slowly", "in the morning"]
#: Small parts, so a model builds and trains in moments.
SMALL = [
    "encoder.hidden=32",
    "encoder.embedding_dim=16",
    "decoder.hidden=32",
    "decoder.embedding_dim=16",
    "model.latent_dim=4",
]
TRANSFORMER = ["width=32", "heads=2", "layers=1", "feedforward=64"]
SMALL_RNN = ["hidden=32", "embedding_dim=16"]


def sentences(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [
        " ".join(filter(None, [rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(OBJECTS), rng.choice(ENDINGS)]))
        for _ in range(n)
    ]


def corpus_folder(tmp_path: Path, n: int = 300) -> Path:
    folder = tmp_path / "corpus"
    folder.mkdir()
    for name, count, seed in (("train", n, 0), ("valid", n // 5, 1), ("test", n // 5, 2)):
        (folder / f"toy.{name}.txt").write_text("\n".join(sentences(count, seed)) + "\n")
    return folder


def test_word_tokenizer_round_trips_and_caps_the_vocabulary(tmp_path):
    folder = corpus_folder(tmp_path)
    data = TextLines(path=str(folder))
    data.setup()
    spec = data.spec
    assert spec.extra["vocab_size"] == 4 + len(set(" ".join(sentences(300)).split()))
    assert [spec.extra[f"{name}_id"] for name in ("pad", "bos", "eos", "unk")] == [0, 1, 2, 3]
    test = data.splits["test"]
    assert decode_tokens(spec, test["x"], test["mask"]) == sentences(60, 2)
    ends = test["x"].gather(1, test["mask"].sum(1, keepdim=True) - 1)
    assert (ends == spec.extra["eos_id"]).all(), "every example ends with </s>"

    capped = TextLines(path=str(folder), vocab_size=5)
    words = decode_tokens(capped.spec, capped.corpus[1]["test"]["x"])
    assert "<unk>" in " ".join(words) and len(set(" ".join(words).split())) <= 6
    assert capped.spec.extra["tokenizer"] == TextLines(path=str(folder), vocab_size=5).spec.extra["tokenizer"]


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


def text_model(folder: Path, encoder: str, decoder: str, *extra: str) -> tuple[genkit.VAE, TextLines]:
    """A small sentence VAE for the corpus in ``folder``, in eval mode, and its data module."""
    overrides = ["experiment=text", f"data.path={folder}", f"encoder={encoder}", f"decoder={decoder}"]
    for kind, name in (("encoder", encoder), ("decoder", decoder)):
        overrides += [f"{kind}.{o}" for o in (TRANSFORMER if name == "transformer" else SMALL_RNN)]
    cfg = train_config([*overrides, "model.latent_dim=4", *extra])
    data = TextLines(path=str(folder))
    return build_model(cfg, data.spec).eval(), data


@pytest.mark.parametrize(("encoder", "decoder"), [("gru", "gru"), ("lstm", "transformer"), ("transformer", "lstm")])
def test_padding_never_changes_features_logits_or_the_loss(tmp_path, encoder, decoder):
    model, data = text_model(corpus_folder(tmp_path), encoder, decoder)
    data.setup()
    batch = next(iter(data.val_dataloader()))
    x, mask = batch["x"][:8], batch["mask"][:8]
    junk = torch.randint(4, data.spec.extra["vocab_size"], (8, 7))
    x_padded = torch.cat([x.masked_fill(~mask, 5), junk], 1)
    mask_padded = torch.cat([mask, torch.zeros(8, 7, dtype=torch.bool)], 1)
    features = model.encoder(x, mask)
    assert features.shape == (8, model.encoder.out_features)
    torch.testing.assert_close(model.encoder(x_padded, mask_padded), features, atol=1e-5, rtol=1e-5)
    z = model.encode(x, mask).mean
    logits = model.decoder(z, x, mask)
    assert logits.shape == (8, x.shape[1], data.spec.extra["vocab_size"])
    padded_logits = model.decoder(z, x_padded, mask_padded)
    torch.testing.assert_close(padded_logits[:, : x.shape[1]][mask], logits[mask], atol=1e-5, rtol=1e-5)
    torch.manual_seed(3)
    nelbo = model.elbo_terms(x, mask).nelbo
    torch.manual_seed(3)
    torch.testing.assert_close(model.elbo_terms(x_padded, mask_padded).nelbo, nelbo, atol=1e-4, rtol=1e-5)


def test_bidirectional_encoder_and_a_decoder_without_z(tmp_path):
    model, data = text_model(
        corpus_folder(tmp_path), "lstm", "gru", "encoder.bidirectional=true", "decoder.conditioning=none"
    )
    assert model.encoder.out_features == 64
    x = data.corpus[1]["val"]["x"][:4]
    z = torch.randn(2, 4, 4)
    torch.testing.assert_close(model.decoder(z[0], x), model.decoder(z[1], x))  # conditioning=none: a plain LM


@pytest.mark.parametrize("decoder", ["lstm", "transformer"])
def test_generation_stops_at_eos_and_respects_max_length(tmp_path, decoder):
    model, data = text_model(corpus_folder(tmp_path), "gru", decoder)
    eos, pad = data.spec.extra["eos_id"], data.spec.extra["pad_id"]
    z = torch.randn(6, 4)
    with torch.no_grad():
        model.decoder.out.bias[eos] = 100.0
        ids, mask = model.decoder.generate(z)
        assert ids.tolist() == [[eos]] * 6 and mask.all(), "EOS at once: one step and stop"
        model.decoder.out.bias[eos] = -100.0
        ids, mask = model.decoder.generate(z, max_length=5)
        assert ids.shape == (6, 5) and mask.all() and not (ids == eos).any()
        model.decoder.out.bias[eos] = 2.0
        torch.manual_seed(0)
        ids, mask = model.decoder.generate(z, method="sample", max_length=30)
    ended = False
    for row, keep in zip(ids.tolist(), mask.tolist()):
        first = row.index(eos) if eos in row else len(row)
        assert keep == [True] * min(first + 1, len(row)) + [False] * max(0, len(row) - first - 1)
        assert all(t == pad for t in row[first + 1 :])
        ended |= first < len(row) - 1
    assert ended, "with a likely EOS some sequences end early"
    assert not ((ids == data.spec.extra["bos_id"]) | (ids == pad) & mask).any(), "<s> and <pad> are never generated"


def test_top_p_keeps_only_the_nucleus():
    torch.manual_seed(0)
    logits = torch.log(torch.tensor([[0.6, 0.35, 0.04, 0.01]])).expand(2000, 4)
    drawn = sample_top_p(logits, 0.9)
    assert set(drawn.tolist()) == {0, 1}
    assert set(sample_top_p(logits, 0.5).tolist()) == {0}
    assert set(sample_top_p(logits, 1.0).tolist()) == {0, 1, 2, 3}


def test_ptb_preset_reads_the_standard_splits():
    path = shared_data("ptb")
    cfg = train_config(["experiment=text_ptb", f"data.path={path}"])
    data = TextLines(**{k: v for k, v in cfg.data.items() if not k.startswith("_")})
    splits = data.corpus[1]
    assert {s: len(t["x"]) for s, t in splits.items()} == {"train": 42068, "val": 3370, "test": 3761}
    assert {s: int(t["mask"].sum()) for s, t in splits.items()} == {"train": 929589, "val": 73760, "test": 82430}
    assert data.spec.extra["vocab_size"] == 9998 + 4, "PTB's 10k types: 9,998 words, <unk> and </s> are ours"


def test_sentence_vae_trains_logs_tables_and_reloads_decoding_identically(tmp_path, cli_env):
    folder = corpus_folder(tmp_path)
    out = tmp_path / "run"
    args = [*script("genkit-train"), "experiment=text", f"data.path={folder}", *FAST, *SMALL, f"hydra.run.dir={out}"]
    result = run(args, cli_env, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "perplexity" in result.stdout and "samples from the prior" in result.stdout + result.stderr
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    for name in ("nelbo", "kl", "ppl", "mi", "active_units"):
        assert f"test/{name}" in metrics
    assert 1 < metrics["test/ppl"] < 60

    records = wandb_records(out, cli_env)
    logged = json.dumps([r for r in records if r["type"] == "history"])
    assert "val/samples" in logged and "val/reconstructions" in logged and "table-file" in logged

    model = genkit.load(out / "checkpoints" / "last.ckpt")
    torch.manual_seed(0)  # the seed the media callback samples with (its greedy reconstructions draw nothing)
    written = (out / "samples.txt").read_text().split("\n\n")[0].splitlines()[1:]
    assert decode_tokens(model.spec, model.sample(16)) == written

    sampled = run([*script("genkit"), "sample", f"ckpt={out / 'checkpoints' / 'last.ckpt'}", "n=5"], cli_env, tmp_path)
    assert sampled.returncode == 0, sampled.stderr[-2000:]
    assert len((out / "checkpoints" / "last.samples.txt").read_text().splitlines()) == 5


@pytest.mark.parametrize(("kind", "name"), [("encoder", "transformer"), ("decoder", "gru"), ("decoder", "transformer")])
def test_sequence_parts_pass_the_plugin_authors_check(tmp_path, kind, name):
    from genkit.testing import check_part

    folder = corpus_folder(tmp_path)
    sizes = TRANSFORMER if name == "transformer" else SMALL_RNN
    overrides = ["experiment=text", f"data.path={folder}", *(f"{kind}.{o}" for o in sizes), "model.latent_dim=4"]
    other = "decoder" if kind == "encoder" else "encoder"
    model = check_part(kind, name, data="text_lines", overrides=[*overrides, *(f"{other}.{o}" for o in SMALL_RNN)])
    assert model.decoder.autoregressive
