"""Training-time augmentation: what each option does to a batch, draws that depend only on the seed and
the batch's place, evaluation untouched, prepared audio cut as in memory, and training runs that
repeat under their seed."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import RATE, digits_folder
from genkit.config import train_config
from genkit.data.audio import PCM_SCALE, AudioFolder
from genkit.data.augment import Augment
from genkit.data.shards import Shards, prepare
from genkit.errors import DataError
from genkit.training.run import train

CPU = torch.device("cpu")


def shifted(image: torch.Tensor, down: int, right: int, pad: int) -> torch.Tensor:
    """``image`` moved by whole pixels, its edges repeated into the gap."""
    height, width = image.shape[-2:]
    padded = F.pad(image[None], (pad,) * 4, mode="replicate")[0]
    return padded[:, pad + down : pad + down + height, pad + right : pad + right + width]


def test_flips_and_crops_move_each_image_by_its_own_seeded_draw():
    x = torch.rand(64, 3, 8, 8)
    augment = Augment(flip=True, crop=2)
    out = augment.images(x, Augment.generator(0, 0, 0, CPU))
    moves = set()
    for image, moved in zip(x, out):
        candidates = [
            (flip, down, right)
            for flip in (False, True)
            for down in range(-2, 3)
            for right in range(-2, 3)
            if torch.equal(moved, shifted(image.flip(-1) if flip else image, down, right, pad=2))
        ]
        assert candidates, "every image is itself, mirrored or not, moved by at most two pixels"
        moves.add(candidates[0])
    assert len(moves) > 20 and {flip for flip, _, _ in moves} == {False, True}  # each image draws its own
    assert torch.equal(out, augment.images(x, Augment.generator(0, 0, 0, CPU)))  # the same place, the same draw
    assert not torch.equal(out, augment.images(x, Augment.generator(0, 0, 1, CPU)))  # the next batch
    assert not torch.equal(out, augment.images(x, Augment.generator(0, 1, 0, CPU)))  # the next epoch
    assert not torch.equal(out, augment.images(x, Augment.generator(1, 0, 0, CPU)))  # another seed


def test_augmentation_options_are_checked_against_the_data():
    from genkit.data.images import Digits

    with pytest.raises(ValueError, match=r"data.crop=8 must be smaller than the images \(\(8, 8\)\)"):
        Digits(crop=8).setup()
    with pytest.raises(ValueError, match="data.crop and data.offset must be 0 or more"):
        Digits(crop=-1).setup()


def test_audio_offsets_cut_training_clips_at_random_starts_and_evaluation_at_the_start(tmp_path):
    folder = digits_folder(tmp_path)
    settings = {"sample_rate": RATE, "duration": 0.25, "n_fft": 256, "hop_length": 64, "n_mels": 16}
    plain = AudioFolder(path=str(folder), cache_dir="", label_pattern=r"(\d)_", **settings)
    moved = AudioFolder(path=str(folder), cache_dir="", label_pattern=r"(\d)_", offset=0.05, **settings)
    assert moved.spec == plain.spec  # the same model input, the same statistics
    for split in ("train", "val", "test"):  # evaluation cuts at the start: what no offset gives, bit for bit
        assert torch.equal(moved.examples(split)["x"], plain.examples(split)["x"])

    length, extra = plain.settings.num_samples, round(0.05 * RATE)
    clips = moved.splits["train"]["x"][:16].float() / PCM_SCALE
    assert clips.shape == (16, length + extra)  # decoded that much longer
    cut = moved.augment.window(clips, length, Augment.generator(0, 0, 0, CPU))
    starts = [
        next(s for s in range(extra + 1) if torch.equal(row, clip[s : s + length])) for row, clip in zip(cut, clips)
    ]
    assert len(set(starts)) > 8
    features = moved.model_batch({"x": clips}, Augment.generator(0, 0, 0, CPU))["x"]
    torch.testing.assert_close(features, moved.features.model_input(cut), rtol=0, atol=0)  # features of the cut

    prepare(moved.recipe(), str(tmp_path / "shards"), workers=2)
    streamed = Shards(path=str(tmp_path / "shards"), num_workers=0, offset=0.05)
    assert torch.equal(streamed.examples("test")["x"], plain.examples("test")["x"])
    with pytest.raises(DataError, match=r"data.offset=0.1 s is more than the 0.05 s the clips .* were prepared with"):
        Shards(path=str(tmp_path / "shards"), num_workers=0, offset=0.1).examples("test")
    with pytest.raises(ValueError, match="data.flip and data.crop augment images; this data set holds audio"):
        Shards(path=str(tmp_path / "shards"), flip=True)


def test_augmented_training_repeats_under_its_seed(tmp_path):
    def test_nelbo(name: str, *overrides: str) -> float:
        cfg = train_config(["trainer.max_epochs=1", "logger=none", "callbacks=none", *overrides])
        return train(cfg, tmp_path / name)["test/nelbo"]

    augmented = ["data.flip=true", "data.crop=1"]
    first = test_nelbo("first", *augmented)
    assert test_nelbo("again", *augmented) == first
    assert test_nelbo("plain") != first
