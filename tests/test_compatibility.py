"""What genkit 0.1 wrote or imported keeps working: its checkpoints (class paths that moved, the
spec's old layout, config keys since added or dropped) load and compute what they computed then,
resuming its runs sees no change of the model, and the old import paths of public names import.

The checkpoints in ``fixtures/genkit_0_1`` were trained by genkit 0.1 itself (an image, a text and
an audio model, optimiser state dropped), with what they computed recorded in ``expected.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import genkit
from genkit.checkpoint import read_checkpoint
from genkit.config import train_config
from genkit.training.resume import frozen_changes

FIXTURES = Path(__file__).with_name("fixtures") / "genkit_0_1"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())


@pytest.mark.parametrize("name", ["image", "text", "audio"])
def test_a_checkpoint_of_genkit_0_1_loads_and_computes_what_it_computed_then(name):
    model = genkit.load(FIXTURES / f"{name}.ckpt")
    spec = model.spec
    torch.manual_seed(0)  # the inputs genkit 0.1 was given, drawn as it drew them
    if spec.modality == "text":
        x, mask = torch.randint(4, spec.vocabulary.vocab_size, (3, 5)), torch.ones(3, 5, dtype=torch.bool)
    elif spec.modality == "image":
        x, mask = torch.rand(3, *spec.event_shape), None
    else:
        x, mask = torch.randn(3, *spec.event_shape), None
    torch.manual_seed(1)
    nelbo = model.elbo_terms(x, mask).nelbo
    torch.manual_seed(2)
    sample = model.sample(2).float().flatten()[:64]
    expected = EXPECTED[name]
    torch.testing.assert_close(nelbo, torch.tensor(expected["nelbo"]), rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(sample, torch.tensor(expected["sample"]), rtol=1e-6, atol=1e-6)
    assert genkit.DataSpec.from_dict(expected["spec"]) == spec  # the 0.1 layout reads as the typed fields
    typed = {"image": spec.classes, "text": spec.vocabulary, "audio": spec.audio and spec.classes}
    assert typed[name], "the modality's facts moved from extra into the spec's typed fields"


@pytest.mark.parametrize("name", ["image", "text", "audio"])
def test_resuming_a_run_of_genkit_0_1_sees_no_change_of_what_it_trains(name):
    """Class paths that moved and the dropped ``_partial_`` of optim and scheduler are no change."""
    stored = read_checkpoint(FIXTURES / f"{name}.ckpt")[1]
    composed = train_config(json.loads((FIXTURES / f"{name}.overrides.json").read_text()))
    current = OmegaConf.to_container(composed, resolve=True)
    assert frozen_changes(OmegaConf.to_container(stored), current) == []
    assert stored.objective == current["objective"]


def test_the_import_paths_of_genkit_0_1_still_import():
    from genkit.likelihoods import BinaryCrossEntropyWithLogits
    from genkit.sequences import GRUEncoder, SequenceDecoder, sample_top_p  # noqa: F401
    from genkit.train import train  # noqa: F401

    from genkit.audio import AudioFeatures, AudioSettings  # noqa: F401
    from genkit.data.text import TokenIds, decode_tokens  # noqa: F401
    from genkit.model import OptimizerSteps
    from genkit.parts import WIRING, Encoder, make_activation  # noqa: F401

    assert BinaryCrossEntropyWithLogits is genkit.parts.likelihoods.BinaryCrossEntropyWithLogits
    assert OptimizerSteps is genkit.training.optimization.OptimizerSteps
    assert genkit.contract.verify is genkit.parts.verify
    assert genkit.registry.registry("encoder").by_target("genkit.sequences.GRUEncoder").name == "gru"


def test_a_spec_written_as_genkit_0_1_wrote_it_reads_as_typed_fields_and_still_shows_its_old_keys():
    """A plugin data module of 0.1 gave its vocabulary in ``extra``; a plugin part of 0.1 reads it there."""
    ids = {"vocab_size": 9, "pad_id": 0, "bos_id": 1, "eos_id": 2, "unk_id": 3}
    spec = genkit.DataSpec("text", (6,), "categorical", variable_length=True, extra=dict(ids))
    assert spec.vocabulary == genkit.Vocabulary(tokenizer="", vocab_size=9, pad=0, bos=1, eos=2, unk=3)
    assert {key: spec.extra[key] for key in ids} == ids
    assert genkit.DataSpec.from_dict(spec.to_dict()) == spec
