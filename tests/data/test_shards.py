"""Prepared data: genkit prepare writes real litdata shards, data=shards streams them: the same
pixels and splits as the in-memory path, every example once per epoch over DDP ranks and loader
workers, exact resume after SIGKILL mid-epoch, damaged shards named, interrupted and repeated
preparations handled, and the commands on trained models working on prepared data."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import (
    FAST,
    RATE,
    TrainedRun,
    assert_same_final_state,
    corpus_folder,
    digits_folder,
    interrupter,
    kill,
    run,
    script,
    shared_run,
    start,
    wait_for,
)
from genkit.data.audio import AudioFolder
from genkit.data.base import Recipe
from genkit.data.images import Digits, ImageFolder
from genkit.data.shards import MANIFEST, PREPARING, Shards, prepare
from genkit.data.text import TextLines
from genkit.errors import DataError, DataNotFoundError, ResumeError
from genkit.spec import DataSpec
from genkit.training.resume import check_same_data


def write_images(folder: Path, count: int, seed: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (14, 18, 3), dtype=np.uint8)).save(folder / f"{i}.png")


def numbered_digits(out: Path, train: int = 256) -> Shards:
    """The digits prepared with each example's index in its split as its label ``y``, so a test sees
    which examples a run trained on."""
    recipe = Digits().recipe()

    def numbered(split: str, index: int) -> dict:
        return {"x": recipe.decode(split, index)["x"], "y": index}

    sizes = {"train": train, "val": 64, "test": 64}
    items = {split: range(size) for split, size in sizes.items()}
    prepare(replace(recipe, decode=numbered, items=items, fingerprint=f"numbered {sizes}"), str(out), workers=2)
    return Shards(path=str(out), num_workers=0)


def test_shards_hold_the_pixels_labels_and_splits_of_the_in_memory_path(tmp_path, caplog):
    write_images(tmp_path / "images" / "cats", 20)
    write_images(tmp_path / "images" / "dogs", 13, seed=1)
    (tmp_path / "images" / "dogs" / "broken.png").write_bytes(b"not an image")
    folder = ImageFolder(path=str(tmp_path / "images"), size=12, val_fraction=0.15, test_fraction=0.15)
    with caplog.at_level(logging.WARNING):
        manifest = prepare(folder.recipe(), str(tmp_path / "shards"), workers=2)
    assert manifest.skipped == ["dogs/broken.png (UnidentifiedImageError)"] and "dogs/broken.png" in caplog.text
    folder.setup()
    data = Shards(path=str(tmp_path / "shards"), num_workers=2)
    assert data.spec.event_shape == folder.spec.event_shape == (3, 12, 12)
    assert data.spec.classes == ("cats", "dogs") and not data.spec.differences(folder.spec)
    for split in folder.splits:
        streamed, expected = data.examples(split), folder.examples(split)  # in the stored order
        assert streamed["x"].dtype == torch.float32
        torch.testing.assert_close(streamed["x"], expected["x"], rtol=0, atol=0)
        assert torch.equal(streamed["y"], expected["y"])
        by_workers = torch.cat([batch["y"] for batch in data.test_dataloader()])  # two workers interleave
        assert sorted(by_workers.tolist()) == sorted(folder.splits["test"]["y"].tolist())
    shuffled = torch.cat([batch["y"] for batch in data.train_dataloader()])
    assert sorted(shuffled.tolist()) == sorted(folder.splits["train"]["y"].tolist())

    digits = Digits()  # 17 grey levels: stored as levels of 1/16, read back exactly
    prepare(digits.recipe(), str(tmp_path / "digits"), workers=2)
    digits.setup()
    streamed = Shards(path=str(tmp_path / "digits")).examples("test")
    torch.testing.assert_close(streamed["x"], digits.splits["test"]["x"], rtol=0, atol=0)


def test_prepared_text_and_audio_stream_exactly_the_in_memory_examples(tmp_path, genkit_command):
    corpus = corpus_folder(tmp_path)
    code, _, err = genkit_command("prepare", "data=text_lines", f"data.path={corpus}", f"out={tmp_path / 'text'}")
    assert code == 0, err
    text = TextLines(path=str(corpus))
    text.setup()
    data = Shards(path=str(tmp_path / "text"), num_workers=2, batch_size=32)
    assert not data.spec.differences(text.spec) and data.spec.vocabulary == text.spec.vocabulary
    for split, expected in text.splits.items():  # token ids as int32, padded per batch to its longest
        streamed = data.examples(split)
        assert torch.equal(streamed["x"], expected["x"]) and torch.equal(streamed["mask"], expected["mask"])
    pad = data.spec.vocabulary.pad
    lengths = []
    for batch in data.train_dataloader():
        assert batch["mask"][:, -1].any() and torch.equal(batch["x"] != pad, batch["mask"])
        lengths += batch["mask"].sum(1).tolist()
    assert sorted(lengths) == sorted(text.splits["train"]["mask"].sum(1).tolist())

    recordings = digits_folder(tmp_path)
    (recordings / "3_cat_0.wav").write_bytes(b"not audio")  # skipped by both, the splits still agree
    settings = {"sample_rate": RATE, "duration": 0.3, "n_fft": 256, "hop_length": 64, "n_mels": 16}
    for representation in ("logmel", "waveform"):
        audio = AudioFolder(
            path=str(recordings),
            representation=representation,
            label_pattern=r"^(\d)_",
            cache_dir="",
            **settings,
        )
        prepare(audio.recipe(), str(tmp_path / representation), workers=2)
        audio.setup()
        data = Shards(path=str(tmp_path / representation), num_workers=0)
        assert not data.spec.differences(audio.spec) and data.spec.audio == audio.spec.audio  # mel statistics too
        for split in audio.splits:  # the same 16-bit clips, so the same features
            streamed, expected = data.examples(split), audio.examples(split)
            torch.testing.assert_close(streamed["x"], expected["x"], rtol=0, atol=0)
            assert torch.equal(streamed["y"], expected["y"])


def test_an_audio_vae_trains_from_clips_whose_features_the_loader_workers_compute(tmp_path, cli_env):
    recordings = digits_folder(tmp_path)
    audio = AudioFolder(path=str(recordings), sample_rate=RATE, duration=0.5, n_fft=256, hop_length=64, n_mels=32)
    prepare(audio.recipe(), str(tmp_path / "shards"), workers=2)
    out = tmp_path / "run"
    args = [
        "experiment=audio",
        "data=shards",
        f"data.path={tmp_path / 'shards'}",
        "data.batch_size=16",
        "encoder.channels=[8,16]",
        "decoder.channels=[16,8]",
        "model.latent_dim=4",
        "callbacks.media.n_audio=2",
        *FAST,
        f"hydra.run.dir={out}",
    ]
    result = run([*script("genkit-train"), *args], cli_env, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert 0 < metrics["test/spectral_convergence"] < 2 and 0 < metrics["test/mel_l1"] < 80
    assert len(list((out / "audio").glob("*.wav"))) == 6


def test_genkit_prepare_does_nothing_twice_notices_changes_and_refuses_other_folders(tmp_path, genkit_command):
    out = tmp_path / "shards"
    code, _, err = genkit_command("prepare", "data=digits", f"out={out}", "workers=2")
    assert code == 0, err
    chunks = {p: p.stat().st_mtime_ns for p in out.rglob("*.bin")}
    assert len(chunks) >= 3 and json.loads((out / MANIFEST).read_text())["sizes"] == {
        "train": 1258,
        "val": 180,
        "test": 359,
    }
    code, _, err = genkit_command("prepare", "data=digits", f"out={out}")
    assert code == 0 and {p: p.stat().st_mtime_ns for p in out.rglob("*.bin")} == chunks  # nothing rewritten

    images = tmp_path / "images"
    write_images(images, 30)
    refused = genkit_command("prepare", "data=image_folder", f"data.path={images}", "data.size=8", f"out={out}")
    assert refused[0] == 2 and f"{out} holds another prepared data set (digits)" in refused[2]
    assert "overwrite=true" in refused[2]
    code, _, err = genkit_command(
        "prepare", "data=image_folder", f"data.path={images}", "data.size=8", f"out={out}", "overwrite=true"
    )
    assert code == 0, err
    assert Shards(path=str(out)).manifest.sizes == {"test": 3, "val": 3, "train": 24}

    write_images(images / "more", 10, seed=2)  # files added: detected, prepared again
    code, _, err = genkit_command("prepare", "data=image_folder", f"data.path={images}", "data.size=8", f"out={out}")
    assert code == 0, err
    assert sum(Shards(path=str(out)).manifest.sizes.values()) == 40

    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    code, _, err = genkit_command("prepare", "data=digits", f"out={tmp_path / 'notes'}", "overwrite=true")
    assert code == 2 and "holds files that are not a prepared data set" in err
    assert (tmp_path / "notes" / "todo.txt").read_text() == "mine"
    code, _, err = genkit_command("prepare", "data=shards", f"data.path={out}", f"out={tmp_path / 'again'}")
    assert code == 2 and "data=shards is prepared already" in err
    code, _, err = genkit_command("prepare", "data=digits", f"out={tmp_path / 'x'}", "workers=-1")
    assert code == 2 and "workers must be 0 (one per core) or more" in err
    code, _, err = genkit_command("prepare", "data=digits")
    assert code == 2 and "out" in err


#: Prepares the digits with a decode that kills the preparing process (SIGKILL, as an OOM killer or
#: a cluster's time limit would) when a worker reaches item 700 of the training split.
KILLED_PREPARATION = """
import os, signal, sys
from dataclasses import replace
from genkit.data.images import Digits
from genkit.data.shards import prepare
recipe = Digits().recipe()
def decode(split, index):
    if split == "train" and index == 700:
        os.kill(os.getppid(), signal.SIGKILL)
    return recipe.decode(split, index)
prepare(replace(recipe, decode=decode), sys.argv[1], workers=2)
"""


def test_an_interrupted_preparation_never_looks_complete_and_starts_again(tmp_path, caplog):
    out = tmp_path / "shards"
    killed = subprocess.run([sys.executable, "-c", KILLED_PREPARATION, str(out)], capture_output=True, timeout=120)
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    assert (out / PREPARING).exists() and not (out / MANIFEST).exists()
    with pytest.raises(DataNotFoundError, match=r"holds no prepared data set .*did not finish"):
        Shards(path=str(out))
    with caplog.at_level(logging.INFO):
        prepare(Digits().recipe(), str(out), workers=2)
    assert "an earlier preparation into" in caplog.text and "did not finish: starting it again" in caplog.text
    assert not (out / PREPARING).exists() and Shards(path=str(out)).manifest.sizes["train"] == 1258


def test_damaged_shards_are_named_and_skipped_only_on_request(tmp_path, caplog):
    data = numbered_digits(tmp_path / "shards")
    chunk = sorted((tmp_path / "shards" / "train").glob("*.bin"))[0]
    chunk.write_bytes(chunk.read_bytes()[:100])  # a copy cut short
    with pytest.raises(
        DataError, match=rf"damaged shards in the train split: {chunk} \(100 bytes, \d+ when prepared\)"
    ):
        data.setup()
    skipping = Shards(path=str(tmp_path / "shards"), num_workers=0, skip_corrupt=True)
    with caplog.at_level(logging.WARNING):
        seen = torch.cat([batch["y"] for batch in skipping.train_dataloader()])
    assert "skipping damaged shards of the train split" in caplog.text and str(chunk) in caplog.text
    assert 0 < len(seen) < 256 and len(set(seen.tolist())) == len(seen)  # the other worker's chunk, whole
    chunk.unlink()
    with pytest.raises(DataError, match=rf"{chunk} \(missing\)"):
        Shards(path=str(tmp_path / "shards")).setup()


#: A model that writes down the label (here: the index) of every training example it steps on.
RECORDING_PLUGIN = """
import genkit
from genkit.model import VAE


@genkit.register_model("recording_vae")
class RecordingVAE(VAE):
    def training_step(self, batch, batch_idx):
        with open(f"seen-{self.global_rank}.txt", "a") as seen:
            seen.write(f"{self.current_epoch} {' '.join(map(str, batch['y'].tolist()))}\\n")
        return super().training_step(batch, batch_idx)
"""


def test_two_ddp_processes_with_two_loader_workers_each_see_every_example_once_per_epoch(tmp_path, cli_env):
    numbered_digits(tmp_path / "shards")
    (tmp_path / "recording.py").write_text(RECORDING_PLUGIN)
    args = [
        "trainer=ddp_cpu",
        "data=shards",
        f"data.path={tmp_path / 'shards'}",
        "data.num_workers=2",
        "data.batch_size=32",
        "model=recording_vae",
        "plugins=[recording]",
        *FAST,
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    result = run([*script("genkit-train"), *args], cli_env, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = {rank: (tmp_path / f"seen-{rank}.txt").read_text().splitlines() for rank in (0, 1)}
    orders = []
    for epoch in (0, 1):
        per_rank = [
            [int(i) for line in lines[rank] if line.split()[0] == str(epoch) for i in line.split()[1:]]
            for rank in (0, 1)
        ]
        assert len(per_rank[0]) == len(per_rank[1]) == 128  # equal shares: DDP steps in lockstep
        assert sorted(per_rank[0] + per_rank[1]) == list(range(256))  # every example once, none twice
        orders.append(per_rank[0])
    assert orders[0] != orders[1]  # reshuffled every epoch


@pytest.fixture(scope="session")
def prepared_digits(tmp_path_factory, worker_id) -> Path:
    """The digits prepared once for the session, in a folder every xdist worker sees."""
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp() if worker_id == "master" else tmp_path_factory.getbasetemp().parent
    with FileLock(str(shared / "prepared-digits.lock")):
        prepare(Digits().recipe(), str(shared / "prepared-digits"), workers=2)  # nothing to do once prepared
    return shared / "prepared-digits"


@pytest.fixture(scope="session")
def shards_run(prepared_digits, tmp_path_factory, worker_id) -> TrainedRun:
    """An uninterrupted run on the prepared digits (trained once for the session)."""
    return shared_run("shards", shards_training(prepared_digits), tmp_path_factory, worker_id)


def shards_training(path: Path) -> list[str]:
    """Streamed by two loader workers, with a checkpoint every 7 steps (mid-epoch)."""
    return [
        "data=shards",
        f"data.path={path}",
        "data.num_workers=2",
        "data.batch_size=32",
        "trainer.max_epochs=5",
        "trainer.log_every_n_steps=5",
        "callbacks.progress_bar.refresh_rate=0",
        "+callbacks.model_checkpoint.every_n_train_steps=7",
    ]


def saved_mid_epoch(path: Path) -> bool:
    """Whether ``path`` is a complete checkpoint written inside an epoch after the first."""
    if not path.is_file():
        return False
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # being written
        return False
    done = saved["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]["processed"]
    return saved["epoch"] >= 1 and 0 < done < 40


def test_sigkill_mid_epoch_then_resume_from_shards_ends_exactly_as_an_uninterrupted_run(
    prepared_digits, shards_run, tmp_path, cli_env
):
    killed = tmp_path / "killed"
    process = start([*shards_training(prepared_digits), f"hydra.run.dir={killed}"], cli_env, tmp_path)
    wait_for(lambda: saved_mid_epoch(killed / "checkpoints" / "last.ckpt"), process)
    kill(process)
    assert not (killed / "metrics.json").exists(), "the kill must land before the run finished"
    assert saved_mid_epoch(killed / "checkpoints" / "last.ckpt")
    resumed = run([*script("genkit-train"), f"resume={killed}"], cli_env, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_final_state(killed, shards_run.folder)


def test_groups_of_streamed_batches_stop_mid_epoch_and_resume_exactly_as_single_batches(
    prepared_digits, tmp_path, cli_env
):
    """Two loader workers stream the batches, Lightning runs them in groups of three: a SIGTERM after
    the third group of epoch 1 saves the stream's position in batches, and the resumed run ends as
    one that ran single batches, never stopped."""
    training = [*shards_training(prepared_digits)[:-1], "trainer.max_epochs=2", "logger=csv", "callbacks.media=null"]
    straight = tmp_path / "straight"
    assert run([*script("genkit-train"), *training, f"hydra.run.dir={straight}"], cli_env, tmp_path).returncode == 0
    env, signal_at = interrupter(tmp_path, cli_env, "training", 1, 2)
    stopped = tmp_path / "stopped"
    grouped = [*training, "trainer.steps_per_execution=3", f"hydra.run.dir={stopped}"]
    interrupted = run([*script("genkit-train"), *grouped, *signal_at], env, tmp_path)
    assert interrupted.returncode == 128 + signal.SIGTERM, interrupted.stderr[-3000:]
    # 40 batches an epoch: the third group of epoch 1 ends at step 49.
    assert "interrupted by SIGTERM at step 49" in interrupted.stdout + interrupted.stderr, interrupted.stdout[-2000:]
    saved = torch.load(stopped / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert (saved["epoch"], saved["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]["completed"]) == (1, 3)
    resumed = run([*script("genkit-train"), f"resume={stopped}"], env, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_final_state(stopped, straight)


def test_commands_on_a_model_trained_from_shards_and_data_of_another_kind_refused(shards_run, tmp_path, genkit_command):
    from omegaconf import OmegaConf

    from genkit.cli.eval import EvalOptions, evaluation

    checkpoint = shards_run.checkpoint
    code, _, err = genkit_command("reconstruct", f"ckpt={checkpoint}", "n=6", f"out={tmp_path / 'rec.png'}")
    assert code == 0 and (tmp_path / "rec.png").is_file(), err
    options = OmegaConf.merge(
        OmegaConf.structured(EvalOptions), {"ckpt": str(checkpoint), "out": str(tmp_path / "eval.json"), "wandb": False}
    )
    result = evaluation(options)
    assert result["data"] == "shards" and result["metrics"]["nll"] > 0

    write_images(tmp_path / "images", 40)
    prepare(ImageFolder(path=str(tmp_path / "images"), size=8).recipe(), str(tmp_path / "rgb"), workers=1)
    code, _, err = genkit_command("reconstruct", f"ckpt={checkpoint}", f"data.path={tmp_path / 'rgb'}")
    assert code == 2
    assert "it has event_shape (3, 8, 8) (the model's: (1, 8, 8))" in err
    rgb = Shards(path=str(tmp_path / "rgb")).spec
    with pytest.raises(
        ResumeError, match=r"cannot resume from .* the data is not what it was trained on: it has event"
    ):
        check_same_data(checkpoint, rgb)
    check_same_data(checkpoint, DataSpec("image", (1, 8, 8), "unit_interval"))


def test_a_recipe_is_what_a_plugin_data_module_implements_to_be_prepared(tmp_path):
    """The minimal recipe a plugin writes: items, a decode, a fingerprint; y optional."""
    waves = np.random.default_rng(0).normal(size=(40, 1, 16)).astype(np.float32)
    recipe = Recipe(
        source="noise",
        spec=DataSpec("audio", (1, 16), "real"),
        items={"train": range(30), "val": range(30, 35), "test": range(35, 40)},
        decode=lambda split, i: {"x": waves[i]},
        fingerprint="noise-v1",
    )
    prepare(recipe, str(tmp_path / "noise"), workers=2)
    data = Shards(path=str(tmp_path / "noise"), num_workers=0)
    torch.testing.assert_close(data.examples("val")["x"], torch.from_numpy(waves[30:35]))
    assert data.examples("test", 3)["x"].shape == (3, 1, 16)
