"""``trainer.steps_per_execution``: Lightning runs groups of batches, genkit steps once per batch, and
training is the same, bit for bit, as one batch at a time; settings that count single batches are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import corpus_folder
from genkit.config import train_config
from genkit.data.groups import StepGroups
from genkit.errors import TrainerConfigError
from genkit.training.run import train

#: Digits: 10 training batches an epoch, so groups of 3 leave a group of 1 at each epoch's end.
RUN = ["trainer.max_epochs=2", "logger=csv", "callbacks.progress_bar.refresh_rate=0", "callbacks.media=null"]
SMALL_TEXT = ["encoder.hidden=16", "encoder.embedding_dim=8", "decoder.hidden=16", "decoder.embedding_dim=8"]


def trained(folder: Path, overrides: list[str]) -> tuple[dict[str, torch.Tensor], dict[str, float], str, int]:
    """Final weights, metrics, CSV log and how many batches Lightning ran."""
    metrics = train(train_config([*RUN, *overrides]), folder)
    checkpoint = torch.load(folder / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    ran = checkpoint["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]["completed"]
    return checkpoint["state_dict"], metrics, (folder / "csv" / "metrics.csv").read_text(), ran


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param([], id="digits"),
        pytest.param(
            [
                "+trainer.accumulate_grad_batches=2",  # optimiser steps inside and across groups
                "model.kl_schedule=cyclical",  # beta from the whole run's planned steps
                "data.binarize=dynamic",  # the global random stream, drawn per batch
                "data.flip=true",  # augmentation seeded by each batch's place in the epoch
                "data.crop=1",
                "trainer.log_every_n_steps=4",  # per-step logging, at steps inside groups
            ],
            id="accumulation-schedule-randomness",
        ),
        pytest.param(["+trainer.max_steps=12", "trainer.log_every_n_steps=2"], id="max-steps-inside-a-group"),
        pytest.param(["experiment=text", *SMALL_TEXT, "model.latent_dim=4", "data.batch_size=64"], id="text"),
    ],
)
def test_groups_of_batches_train_exactly_as_single_batches(overrides, tmp_path):
    if "experiment=text" in overrides:
        overrides = [*overrides, f"data.path={corpus_folder(tmp_path)}"]
    single = trained(tmp_path / "single", overrides)
    grouped = trained(tmp_path / "grouped", [*overrides, "trainer.steps_per_execution=3"])
    weights, metrics, log, ran = single
    assert ran / 3 <= grouped[3] < ran / 2, "Lightning ran groups of three batches (the last of an epoch shorter)"
    assert all(torch.equal(weights[k], grouped[0][k]) for k in weights), "weights differ"
    assert grouped[1] == metrics
    assert grouped[2] == log  # every logged value at the same step, per-step losses included
    assert "train/loss_step" in log


def test_grouped_batches_count_and_resume_in_batches():
    groups = StepGroups(list(range(10)), 3)
    assert len(groups) == 4 and [list(g) for g in groups] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    assert groups.batches_done(2) == 6 and groups.batches_done(4) == 10  # the short last group
    groups.step = 1  # inside the third group: its first batch is done
    assert groups.batches_done(2) == 7
    assert StepGroups(iter(range(4)), 3).batches == float("inf")


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("+trainer.val_check_interval=0.5", "trainer.val_check_interval=0.5 counts single batches"),
        ("+trainer.limit_train_batches=4", "trainer.limit_train_batches=4 counts single batches"),
        ("+callbacks.model_checkpoint.every_n_train_steps=5", "callbacks.model_checkpoint.every_n_train_steps"),
    ],
)
def test_settings_that_count_single_batches_are_refused_with_groups(setting, message, tmp_path):
    with pytest.raises(TrainerConfigError, match=message) as refused:
        train(train_config([*RUN, "trainer.steps_per_execution=2", setting]), tmp_path / "run")
    assert "trainer.steps_per_execution=1" in str(refused.value)
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("value", [0, 2.5, "many"])
def test_a_group_size_that_is_not_a_whole_number_from_1_is_one_clear_error(value, tmp_path):
    with pytest.raises(TrainerConfigError, match="trainer.steps_per_execution must be a whole number >= 1, got"):
        train(train_config([*RUN, f"trainer.steps_per_execution={value}"]), tmp_path / "run")
