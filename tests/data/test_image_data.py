"""Data modules: fixed splits, fast batching, sharding, real files and bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import shared_data
from genkit.data import decoding, images
from genkit.data.base import TensorBatches
from genkit.data.images import CIFAR10, MNIST, Digits, FashionMNIST, ImageFolder
from genkit.errors import DataError, DataNotFoundError


def test_digits_split_is_fixed_disjoint_and_in_unit_range():
    a, b = Digits(seed=1), Digits(seed=2)
    a.setup(), b.setup()
    sizes = {k: len(v["x"]) for k, v in a.splits.items()}
    assert sizes == {"train": 1258, "val": 180, "test": 359}
    for split in ("train", "val", "test"):
        torch.testing.assert_close(a.splits[split]["x"], b.splits[split]["x"])  # the run's seed never moves the split
    x = a.splits["train"]["x"]
    assert x.shape[1:] == (1, 8, 8) and x.min() >= 0 and x.max() <= 1
    rows = {tuple(r.tolist()) for split in a.splits.values() for r in split["x"].flatten(1)}
    assert len(rows) > 1700  # no example duplicated across splits (digits has a handful of exact duplicates)


def test_tensor_batches_cover_every_example_once_in_a_seeded_order():
    data = {"x": torch.arange(10).float(), "y": torch.arange(10)}
    epoch = [0]
    batches = TensorBatches(data, 4, shuffle=True, seed=3, epoch=lambda: epoch[0])
    first = torch.cat([b["y"] for b in batches])
    assert sorted(first.tolist()) == list(range(10)) and len(batches) == 3
    assert torch.equal(first, torch.cat([b["y"] for b in batches]))  # same epoch, same order
    epoch[0] = 1
    assert not torch.equal(first, torch.cat([b["y"] for b in batches]))
    plain = TensorBatches(data, 4, shuffle=False)
    assert torch.equal(torch.cat([b["x"] for b in plain]), data["x"])


@pytest.mark.parametrize("rank", [0, 1])
def test_a_restored_loader_continues_mid_epoch_with_the_same_batches(rank):
    tensors = {"x": torch.arange(100.0)[:, None]}

    def loader(done: int = 0) -> TensorBatches:
        return TensorBatches(
            tensors,
            8,
            shuffle=True,
            seed=3,
            epoch=lambda: 2,
            rank=rank,
            world_size=2,
            equal_shards=True,
            progress=lambda: done,
        )

    full = [b["x"] for b in loader()]
    interrupted = loader(done=3)
    state = interrupted.state_dict()
    assert state == {"epoch": 2, "batches_done": 3}
    restored = loader()
    restored.load_state_dict(state)
    rest = [b["x"] for b in restored]
    assert len(rest) == len(full) - 3 and all(torch.equal(a, b) for a, b in zip(rest, full[3:]))
    assert len(list(restored)) == len(full), "only the first pass after restoring skips"
    finished = loader()
    finished.load_state_dict({"epoch": 2, "batches_done": len(full)})  # saved at the epoch's end
    assert len(list(finished)) == len(full)
    other_epoch = loader()
    other_epoch.load_state_dict({"epoch": 1, "batches_done": 3})
    assert len(list(other_epoch)) == len(full)


def test_ddp_shards_are_disjoint_and_training_shards_equal():
    data = {"x": torch.arange(11).float()}
    train = [list(TensorBatches(data, 3, shuffle=True, rank=r, world_size=2, equal_shards=True)) for r in (0, 1)]
    seen = [torch.cat([b["x"] for b in shard]) for shard in train]
    assert len(seen[0]) == len(seen[1]) == 5 and not set(seen[0].tolist()) & set(seen[1].tolist())
    val = [torch.cat([b["x"] for b in TensorBatches(data, 3, shuffle=False, rank=r, world_size=2)]) for r in (0, 1)]
    assert sorted(torch.cat(val).tolist()) == list(range(11))  # evaluation sees every example exactly once


def test_binarisation_dynamic_in_training_fixed_in_evaluation():
    data = Digits(binarize="dynamic")
    assert data.spec.support == "binary"
    data.setup()
    assert set(data.splits["val"]["x"].unique().tolist()) <= {0.0, 1.0}
    assert not set(data.splits["train"]["x"].unique().tolist()) <= {0.0, 1.0}  # resampled per batch instead


def test_mnist_reads_the_official_files():
    data = MNIST(root=str(shared_data("mnist")))
    data.setup()
    assert {k: len(v["x"]) for k, v in data.splits.items()} == {"train": 55000, "val": 5000, "test": 10000}
    assert data.splits["test"]["x"].shape[1:] == (1, 28, 28)
    assert data.splits["test"]["y"][:5].tolist() == [7, 2, 1, 0, 4]  # the official test set's first labels


@pytest.mark.parametrize("cls", [MNIST, FashionMNIST, CIFAR10])
def test_missing_files_name_the_paths_and_the_fix(cls, tmp_path: Path):
    with pytest.raises(DataNotFoundError, match=rf"not found.*{tmp_path}.*data.download=true"):
        cls(root=str(tmp_path)).setup()


def write_images(folder: Path, count: int, size: int = 12) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (size, size + 4, 3), dtype=np.uint8)).save(folder / f"{i}.png")


def test_image_folder_resizes_labels_by_subfolder_and_skips_bad_files(tmp_path: Path, caplog):
    write_images(tmp_path / "cats", 12)
    write_images(tmp_path / "dogs", 8)
    (tmp_path / "dogs" / "broken.png").write_bytes(b"not an image")
    data = ImageFolder(path=str(tmp_path), size=16, channels=1, val_fraction=0.1, test_fraction=0.1)
    data.setup()
    assert data.spec.event_shape == (1, 16, 16)
    assert sum(len(s["x"]) for s in data.splits.values()) == 20
    assert data.class_names == ["cats", "dogs"] and set(data.splits["train"]["y"].tolist()) == {0, 1}
    assert "skipped 1 unusable item(s) of image_folder" in caplog.text
    assert "dogs/broken.png (UnidentifiedImageError)" in caplog.text


def test_image_folder_decodes_in_workers_into_an_8bit_cache_that_a_changed_file_invalidates(tmp_path, monkeypatch):
    write_images(tmp_path / "images", 30)
    options = {"path": str(tmp_path / "images"), "size": 8, "cache_dir": str(tmp_path / "cache")}
    alone = ImageFolder(**{**options, "cache_dir": ""}, workers=1)
    alone.setup()
    data = ImageFolder(**options, workers=2, binarize="static")
    data.prepare_data()  # what Lightning runs on one process per machine: fills the cache
    (cache,) = (tmp_path / "cache").glob("*.pt")
    data.setup()
    generator = torch.Generator().manual_seed(0)  # static binarisation draws as it did from float pixels
    for split, held in data.splits.items():
        assert held["x"].dtype == torch.uint8  # a quarter of float32
        expected = torch.bernoulli(alone.examples(split)["x"], generator=generator)
        assert torch.equal(data.examples(split)["x"], expected)

    monkeypatch.setattr(images, "fit_image", lambda *a, **k: pytest.fail("decoded although cached"))
    cached = ImageFolder(**options)
    cached.setup()
    for split in ("train", "val", "test"):  # two processes decoded what one does, in the same order
        assert torch.equal(cached.examples(split)["x"], alone.examples(split)["x"])
    assert cached.examples("train")["x"].dtype == torch.float32
    monkeypatch.undo()

    Image.new("RGB", (12, 16), "white").save(tmp_path / "images" / "0.png")  # one file changes
    changed = ImageFolder(**options)
    changed.setup()
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 2  # decoded afresh under a new key
    everything = torch.cat([changed.examples(split)["x"] for split in ("train", "val", "test")])
    assert (everything.flatten(1) == 1).all(1).sum() == 1  # the white image, read from the file as it is now


def test_a_folder_too_large_to_hold_in_memory_points_at_genkit_prepare(tmp_path, monkeypatch):
    write_images(tmp_path / "images", 10)
    monkeypatch.setattr(decoding, "memory_budget", lambda: 5000)  # as if this machine had 10 kB of RAM
    with pytest.raises(DataError, match=r"10 examples .* more than 5e-06 GB .*genkit prepare.*data=shards"):
        ImageFolder(path=str(tmp_path / "images"), size=16, cache_dir="").setup()


def test_images_decode_as_pil_gives_them_and_16_bit_pngs_keep_their_levels(tmp_path: Path):
    from PIL import ImageOps

    from genkit.data.images import fit_image

    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).resize((60, 60))
    for name, image in {
        "rgb.jpg": photo,
        "cmyk.jpg": photo.convert("CMYK"),
        "rgba.png": photo.convert("RGBA"),
        "palette.png": photo.convert("P"),
        "grey.png": photo.convert("L"),
        "wide.jpg": photo.resize((80, 60)),
    }.items():
        image.save(tmp_path / name)
        for size, mode in ((16, "RGB"), (16, "L"), (60, "RGB"), (60, "L")):
            with Image.open(tmp_path / name) as pil:
                expected = np.asarray(ImageOps.fit(pil.convert(mode), (size, size))).reshape(size, size, -1)
            assert np.array_equal(
                fit_image("train", (tmp_path / name, 0), size, mode)["x"], expected.transpose(2, 0, 1)
            )


def test_every_bit_depth_keeps_its_levels_and_transparency_meets_the_background(tmp_path: Path, caplog):
    """PIL's convert would saturate 16-bit levels, floor float pixels to 0 and 1 and keep whatever colour
    transparent pixels store; each of these comes out as 8-bit levels of the file's full range."""
    from genkit.data.images import fit_image

    gradient = np.linspace(0, 65535, 32 * 32).round().astype(np.uint16).reshape(32, 32)
    expected = np.round(gradient / 257)
    Image.fromarray(gradient).save(tmp_path / "deep.png")  # 16 bits per pixel, through torchvision
    Image.fromarray(gradient).save(tmp_path / "deep.tif")  # 16 bits per pixel, through PIL
    Image.fromarray((gradient / 65535).astype(np.float32), "F").save(tmp_path / "float.tif")
    for name in ("deep.png", "deep.tif", "float.tif"):
        x = fit_image("train", (tmp_path / name, 0), 32, "L")["x"][0]
        assert np.abs(x.astype(int) - expected).max() == 0, name
        assert np.array_equal(fit_image("train", (tmp_path / name, 0), 32, "RGB")["x"], np.stack([x] * 3))

    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[8:24, 8:24] = [255, 0, 0, 255]  # an opaque red square
    rgba[:8, :, :3] = [0, 255, 0]  # green stored under transparent pixels
    rgba[24:, :] = [0, 0, 255, 128]  # half-transparent blue
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.webp", lossless=True)  # through PIL
    Image.fromarray(rgba[..., :3], "RGB").quantize(4).save(tmp_path / "palette.png", transparency=0)
    for name in ("rgba.png", "rgba.webp"):
        for background, level in (("black", 0), ("white", 255)):
            x = fit_image("train", (tmp_path / name, 0), 32, "RGB", background)["x"]
            assert (x[:, 0, 0] == level).all() and (x[:, 16, 16] == [255, 0, 0]).all(), (name, background)
            assert (x[:, 30, 0] == [round(level * 127 / 255)] * 2 + [round((255 * 128 + level * 127) / 255)]).all()
    palette = Image.open(tmp_path / "palette.png")
    transparent = np.asarray(palette) == 0
    x = fit_image("train", (tmp_path / "palette.png", 0), 32, "RGB", "white")["x"]
    assert transparent.any() and (x[:, transparent] == 255).all()

    Image.fromarray((gradient / 255).astype(np.float32), "F").save(tmp_path / "hdr.tif")  # 0 to 257
    Image.fromarray(gradient.astype(np.int32), "I").save(tmp_path / "wide.tif")
    assert fit_image("train", (tmp_path / "hdr.tif", 0), 32, "L") == (
        "floating-point pixels outside [0, 1]: scale them to [0, 1] first"
    )
    assert fit_image("train", (tmp_path / "wide.tif", 0), 32, "L").startswith("32-bit integer pixels")
    folder = tmp_path / "mixed"
    folder.mkdir()
    for copy in range(4):
        for name in ("deep.png", "float.tif", "rgba.png"):
            (folder / f"{copy}{name}").write_bytes((tmp_path / name).read_bytes())
    (folder / "hdr.tif").write_bytes((tmp_path / "hdr.tif").read_bytes())
    with caplog.at_level("WARNING"):
        ImageFolder(path=str(folder), size=16, cache_dir="", val_fraction=0.25, test_fraction=0.25, workers=1).setup()
    assert "skipped 1 unusable item(s)" in caplog.text
    assert "hdr.tif (floating-point pixels outside [0, 1]" in caplog.text
    with pytest.raises(ValueError, match="data.background must be one of black, white, got 'grey'"):
        ImageFolder(path=str(folder), background="grey")


def test_image_folder_without_images_says_so(tmp_path: Path):
    with pytest.raises(DataError, match="no images"):
        ImageFolder(path=str(tmp_path)).setup()
    with pytest.raises(DataNotFoundError, match="does not exist"):
        ImageFolder(path=str(tmp_path / "nowhere")).setup()
    with pytest.raises(DataNotFoundError, match=r"data.path is not set: give a folder of images \(data.path=DIR\)"):
        ImageFolder().setup()


def test_excluded_labels_leave_training_and_validation_but_stay_in_test():
    data = Digits(exclude_labels=[7, 3])
    data.setup()
    for split in ("train", "val"):
        assert not torch.isin(data.splits[split]["y"], torch.tensor([7, 3])).any()
    assert {3, 7} <= set(data.splits["test"]["y"].tolist()) and len(data.splits["test"]["y"]) == 359
    with pytest.raises(
        DataError, match=r"data.exclude_labels=\[0, 1, 2, 3, 4, 5, 6, 7, 8, 9\] leaves no train examples"
    ):
        Digits(exclude_labels=list(range(10))).setup()
