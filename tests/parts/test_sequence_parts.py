"""Token-sequence parts: padding never read, a decoder without z, generation, top-p, and every
sequence part through the plugin author's check."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import genkit
from conftest import corpus_folder
from genkit.compose import build_model
from genkit.config import train_config
from genkit.data.text import TextLines
from genkit.parts.base import verify
from genkit.parts.decoders import sample_top_p

TRANSFORMER = ["width=32", "heads=2", "layers=1", "feedforward=64"]
SMALL_RNN = ["hidden=32", "embedding_dim=16"]


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
    junk = torch.randint(4, data.spec.vocabulary.vocab_size, (8, 7))
    x_padded = torch.cat([x.masked_fill(~mask, 5), junk], 1)
    mask_padded = torch.cat([mask, torch.zeros(8, 7, dtype=torch.bool)], 1)
    features = model.encoder(x, mask)
    assert features.shape == (8, model.encoder.out_features)
    torch.testing.assert_close(model.encoder(x_padded, mask_padded), features, atol=1e-5, rtol=1e-5)
    z = model.encode(x, mask).mean
    logits = model.decoder(z, x, mask)
    assert logits.shape == (8, x.shape[1], data.spec.vocabulary.vocab_size)
    padded_logits = model.decoder(z, x_padded, mask_padded)
    torch.testing.assert_close(padded_logits[:, : x.shape[1]][mask], logits[mask], atol=1e-5, rtol=1e-5)
    torch.manual_seed(3)
    nelbo = model.elbo_terms(x, mask).nelbo
    torch.manual_seed(3)
    torch.testing.assert_close(model.elbo_terms(x_padded, mask_padded).nelbo, nelbo, atol=1e-4, rtol=1e-5)


def test_the_contract_check_takes_a_batch_padded_to_its_own_longest_sequence(tmp_path):
    model, data = text_model(corpus_folder(tmp_path), "lstm", "lstm")
    data.setup()
    batch = next(iter(data.val_dataloader()))
    assert batch["x"].shape[1] < data.spec.event_shape[0]  # shorter than the longest the spec allows
    verify(model, batch, "the first validation batch")


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
    eos, pad = data.spec.vocabulary.eos, data.spec.vocabulary.pad
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
    assert not ((ids == data.spec.vocabulary.bos) | (ids == pad) & mask).any(), "<s> and <pad> are never generated"


def test_top_p_keeps_only_the_nucleus():
    torch.manual_seed(0)
    logits = torch.log(torch.tensor([[0.6, 0.35, 0.04, 0.01]])).expand(2000, 4)
    drawn = sample_top_p(logits, 0.9)
    assert set(drawn.tolist()) == {0, 1}
    assert set(sample_top_p(logits, 0.5).tolist()) == {0}
    assert set(sample_top_p(logits, 1.0).tolist()) == {0, 1, 2, 3}


@pytest.mark.parametrize(("kind", "name"), [("encoder", "transformer"), ("decoder", "gru"), ("decoder", "transformer")])
def test_sequence_parts_pass_the_plugin_authors_check(tmp_path, kind, name):
    from genkit.testing import check_part

    folder = corpus_folder(tmp_path)
    sizes = TRANSFORMER if name == "transformer" else SMALL_RNN
    overrides = ["experiment=text", f"data.path={folder}", *(f"{kind}.{o}" for o in sizes), "model.latent_dim=4"]
    other = "decoder" if kind == "encoder" else "encoder"
    model = check_part(kind, name, data="text_lines", overrides=[*overrides, *(f"{other}.{o}" for o in SMALL_RNN)])
    assert model.decoder.autoregressive
