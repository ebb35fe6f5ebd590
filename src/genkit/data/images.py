"""Image data sets held in memory: digits (embedded), MNIST, Fashion-MNIST, CIFAR-10, any image folder."""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import stat
from functools import cached_property, partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genkit.data.base import SPLIT_SEED, ArrayDataModule, Example, Recipe, Split
from genkit.data.decoding import decode_in_memory, fill_cache
from genkit.errors import DataError, DataNotFoundError
from genkit.registry import register_data
from genkit.spec import DataSpec

log = logging.getLogger(__name__)


def split_indices(n: int, val: float, test: float) -> dict[str, torch.Tensor]:
    """A fixed, seeded train/val/test split of ``n`` examples, as index tensors."""
    n_test, n_val = round(n * test), round(n * val)
    if n - n_test - n_val < 1 or (val > 0 and n_val < 1) or (test > 0 and n_test < 1):
        raise DataError(f"{n} examples are too few for val_fraction={val} and test_fraction={test}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED))
    return {"test": order[:n_test], "val": order[n_test : n_test + n_val], "train": order[n_test + n_val :]}


def split_by_fraction(x: torch.Tensor, y: torch.Tensor, val: float, test: float) -> dict[str, Split]:
    """A fixed, seeded train/val/test split of one pool of examples."""
    return {name: {"x": x[idx], "y": y[idx]} for name, idx in split_indices(len(x), val, test).items()}


def hold_out(train: Split, size: int) -> tuple[Split, Split]:
    """Split a fixed, seeded validation set of ``size`` examples off a training set."""
    order = torch.randperm(len(train["x"]), generator=torch.Generator().manual_seed(SPLIT_SEED))
    val, rest = order[:size], order[size:]
    return {k: t[rest] for k, t in train.items()}, {k: t[val] for k, t in train.items()}


def to_unit(images: np.ndarray, top: float) -> torch.Tensor:
    """uint8-like array -> float32 tensor in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32) / top)


@register_data("digits")
class Digits(ArrayDataModule):
    """scikit-learn's 1,797 handwritten digits (8x8, 17 grey levels), shipped with scikit-learn.

    The embedded default: no download, trains in seconds. Fixed split: 70% train,
    10% validation, 20% test.
    """

    levels = 16

    @property
    def spec(self) -> DataSpec:
        return DataSpec("image", (1, 8, 8), self.support(), classes=tuple(str(d) for d in range(10)))

    def load_splits(self) -> dict[str, Split]:
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = to_unit(digits.data.reshape(-1, 1, 8, 8), self.levels)
        return split_by_fraction(x, torch.from_numpy(digits.target).long(), val=0.1, test=0.2)


IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format), gzipped or not."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4)
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


class FileImages(ArrayDataModule):
    """Base of image sets read from files under ``root``, with a held-out validation set.

    Args:
        root: folder holding the data set's files.
        download: fetch the files with torchvision when they are missing.
        val_size: examples held out of the training set for validation (a fixed, seeded choice).
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        root: str = "data",
        download: bool = False,
        val_size: int = 5000,
        batch_size: int = 128,
        eval_batch_size: int = 0,
        binarize: str = "none",
        on_device: bool = True,
        exclude_labels: tuple[int, ...] = (),
        flip: bool = False,
        crop: int = 0,
    ) -> None:
        super().__init__(
            seed,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            binarize=binarize,
            on_device=on_device,
            exclude_labels=exclude_labels,
            flip=flip,
            crop=crop,
        )
        self.root = Path(root).expanduser()
        self.download = download
        self.val_size = val_size


@register_data("mnist")
class MNIST(FileImages):
    """MNIST (60k train / 10k test, 28x28): the official IDX files, gzipped or not.

    Looks in ``root``, ``root/<folder>`` and torchvision's ``root/<Folder>/raw``.
    ``root`` holds the four IDX files; ``val_size`` of the training images are held out.
    """

    folder = "mnist"
    torchvision_name = "MNIST"

    @property
    def spec(self) -> DataSpec:
        return DataSpec("image", (1, 28, 28), self.support(), classes=self.classes())

    def classes(self) -> tuple[str, ...]:
        return tuple(str(d) for d in range(10))

    def candidate_dirs(self) -> list[Path]:
        return [self.root, self.root / self.folder, self.root / self.torchvision_name / "raw"]

    def find(self, name: str) -> Path | None:
        for folder in self.candidate_dirs():
            for path in (folder / name, folder / f"{name}.gz"):
                if path.is_file():
                    return path
        return None

    def prepare_data(self) -> None:
        missing = [n for pair in IDX_FILES.values() for n in pair if self.find(n) is None]
        if not missing:
            return
        if not self.download:
            looked = ", ".join(str(d) for d in self.candidate_dirs())
            raise DataNotFoundError(
                f"{self.torchvision_name} files {', '.join(missing)} (.gz or not) not found; looked in {looked}. "
                f"Put the four IDX files in one of those folders, point data.root at them, "
                f"or set data.download=true to fetch them."
            )
        import torchvision.datasets

        getattr(torchvision.datasets, self.torchvision_name)(str(self.root), download=True)

    def load_splits(self) -> dict[str, Split]:
        self.prepare_data()
        splits = {}
        for split, (images, labels) in IDX_FILES.items():
            x = to_unit(read_idx(self.find(images))[:, None], 255.0)
            splits[split] = {"x": x, "y": torch.from_numpy(read_idx(self.find(labels)).astype(np.int64))}
        splits["train"], splits["val"] = hold_out(splits["train"], self.val_size)
        return splits


@register_data("fashion_mnist")
class FashionMNIST(MNIST):
    """Fashion-MNIST (Zalando; 28x28 clothing images, MNIST's file format and split)."""

    folder = "fashion_mnist"
    torchvision_name = "FashionMNIST"

    def classes(self) -> tuple[str, ...]:
        return ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot")


@register_data("cifar10")
class CIFAR10(FileImages):
    """CIFAR-10 (50k train / 10k test, 3x32x32) from torchvision's python-pickle files.

    ``root`` holds ``cifar-10-batches-py`` (directly or under ``root/cifar10``).
    """

    @property
    def spec(self) -> DataSpec:
        classes = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
        return DataSpec("image", (3, 32, 32), self.support(), classes=classes)

    def data_root(self) -> Path | None:
        for folder in (self.root, self.root / "cifar10"):
            if (folder / "cifar-10-batches-py").is_dir():
                return folder
        return None

    def prepare_data(self) -> None:
        if self.data_root() is not None:
            return
        if not self.download:
            raise DataNotFoundError(
                f"CIFAR-10 folder 'cifar-10-batches-py' not found in {self.root} or {self.root / 'cifar10'}. "
                "Extract cifar-10-python.tar.gz there, point data.root at it, or set data.download=true."
            )
        import torchvision.datasets

        torchvision.datasets.CIFAR10(str(self.root), download=True)

    def load_splits(self) -> dict[str, Split]:
        import torchvision.datasets

        self.prepare_data()
        splits = {}
        for split in ("train", "test"):
            data = torchvision.datasets.CIFAR10(str(self.data_root()), train=split == "train")
            x = to_unit(data.data.transpose(0, 3, 1, 2), 255.0)
            splits[split] = {"x": x, "y": torch.tensor(data.targets, dtype=torch.long)}
        splits["train"], splits["val"] = hold_out(splits["train"], self.val_size)
        return splits


IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})


@register_data("image_folder")
class ImageFolder(ArrayDataModule):
    """Any folder of images (searched recursively), resized and centre-cropped to ``size``.

    Images in first-level sub-folders get those folders' names as labels
    (torchvision's ImageFolder convention). Unreadable files are skipped and counted.

    The images are decoded by worker processes and held as 8-bit pixels (each batch is divided by
    255 where it is); the decoded pixels are cached on disk, keyed by the files' paths, sizes and
    modification times and the settings, so a second start on an unchanged folder decodes nothing.
    A folder too large to hold in memory is refused with the way to prepare it (``genkit prepare``).

    Args:
        path: the folder.
        size: output height and width in pixels.
        channels: 1 (greyscale) or 3 (RGB).
        background: ``black`` or ``white``, what transparent pixels (an alpha channel, a transparent
            palette entry) are composited onto. Files of any bit depth (16-bit PNG or TIFF, float TIFF
            in [0, 1]) become 8-bit levels of their full range; other float ranges and 32-bit integer
            pixels are skipped, with the reason in the warning.
        val_fraction: share of images held out for validation (fixed seeded split).
        test_fraction: share of images held out for testing.
        cache_dir: where decoded images are cached (empty: no cache).
        workers: processes decoding the images (0: one per core).
    """

    scale = 255.0

    def __init__(
        self,
        seed: int = 0,
        *,
        path: str = "",
        size: int = 32,
        channels: int = 3,
        background: str = "black",
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        cache_dir: str = "~/.cache/genkit/data",
        workers: int = 0,
        batch_size: int = 128,
        eval_batch_size: int = 0,
        binarize: str = "none",
        on_device: bool = True,
        exclude_labels: tuple[int, ...] = (),
        flip: bool = False,
        crop: int = 0,
    ) -> None:
        super().__init__(
            seed,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            binarize=binarize,
            on_device=on_device,
            exclude_labels=exclude_labels,
            flip=flip,
            crop=crop,
        )
        if channels not in (1, 3):
            raise ValueError(f"data.channels must be 1 or 3, got {channels}")
        if workers < 0:
            raise ValueError(f"data.workers must be 0 (one per core) or more, got {workers}")
        if background not in BACKGROUNDS:
            raise ValueError(f"data.background must be one of {', '.join(BACKGROUNDS)}, got {background!r}")
        self.path = Path(path).expanduser() if path else None
        self.background = background
        self.size = size
        self.channels = channels
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.cache_dir = cache_dir
        self.workers = workers
        self.class_names: list[str] = []

    @property
    def spec(self) -> DataSpec:
        return DataSpec("image", (self.channels, self.size, self.size), self.support())

    def scan(self) -> list[tuple[str, os.stat_result]]:
        """Every image under the folder (recursively, symlinked files followed, symlinked folders not):
        its path relative to the folder and its stat, in path order (by folder, then name)."""
        if self.path is None:
            raise DataNotFoundError("data.path is not set: give a folder of images (data.path=DIR)")
        if not self.path.is_dir():
            raise DataNotFoundError(f"image folder {self.path} does not exist; set data.path=DIR to a folder of images")
        found = []
        for directory, _, names in os.walk(self.path):
            below = os.path.relpath(directory, self.path)
            for name in names:
                if os.path.splitext(name)[1].lower() not in IMAGE_SUFFIXES:
                    continue
                try:
                    status = os.stat(os.path.join(directory, name))
                except OSError:  # a dangling link
                    continue
                if stat.S_ISREG(status.st_mode):
                    found.append((name if below == "." else f"{below}/{name}", status))
        if not found:
            raise DataError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found under {self.path}")
        return sorted(found, key=lambda entry: entry[0].split("/"))

    def recipe(self) -> Recipe:
        """Files split by the seeded fractions before decoding; each decoded in a worker process."""
        scanned = self.scan()
        labelled = all("/" in name for name, _ in scanned)
        self.class_names = sorted({name.split("/")[0] for name, _ in scanned}) if labelled else []
        label = {name: i for i, name in enumerate(self.class_names)}
        items = [(self.path / name, label[name.split("/")[0]] if labelled else 0) for name, _ in scanned]
        settings = f"{self.size} {self.channels} {self.background} {self.val_fraction} {self.test_fraction}"
        digest = hashlib.sha256(settings.encode())
        for name, status in scanned:
            digest.update(f"\n{name} {status.st_size} {status.st_mtime_ns}".encode())
        indices = split_indices(len(items), self.val_fraction, self.test_fraction)
        return Recipe(
            source=f"image_folder {self.path.resolve()}",
            spec=DataSpec("image", (self.channels, self.size, self.size), "unit_interval", classes=self.class_names),
            items={name: [items[i] for i in index.tolist()] for name, index in indices.items()},
            decode=partial(
                fit_image, size=self.size, mode="L" if self.channels == 1 else "RGB", background=self.background
            ),
            fingerprint=digest.hexdigest(),
            scale=255.0,
            describe=lambda item: str(item[0].relative_to(self.path)),
        )

    @cached_property
    def decoding(self) -> Recipe:
        """This run's recipe: the folder scanned once for the cache and the splits."""
        return self.recipe()

    def prepare_data(self) -> None:
        """Decode into the cache once per machine (Lightning runs this on one process per node, before
        every process's ``setup`` reads the cache)."""
        fill_cache(self.decoding, self.cache_dir, self.workers)

    def load_splits(self) -> dict[str, Split]:
        return decode_in_memory(self.decoding, self.cache_dir, self.workers)


#: Formats decoded by torchvision (libjpeg-turbo, libpng in C++: about three times PIL's speed on small
#: images, whose decoding PIL spends mostly in Python); the others through PIL.
FAST_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})


#: The colours transparent pixels are composited onto (``data.background``), as 8-bit levels.
BACKGROUNDS = {"black": 0, "white": 255}


def fit_image(split: str, item: tuple[Path, int], size: int, mode: str, background: str = "black") -> Example | str:
    """One image file resized and centre-cropped to ``size`` (uint8 ``[C, H, W]``, PIL's ``ImageOps.fit``),
    or why it is unusable. Whatever the file's bit depth, pixels come out as 8-bit levels of its full
    range, and transparent pixels are composited onto ``background``."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    file, label = item
    pixels = decode_rgb(file) if file.suffix.lower() in FAST_SUFFIXES else None
    if pixels is not None and pixels.shape[1:] == (size, size):  # nothing to resize: PIL is not needed
        return {"x": pixels if mode == "RGB" else luma(pixels), "y": label}
    try:
        with Image.fromarray(pixels.transpose(1, 2, 0)) if pixels is not None else Image.open(file) as image:
            image = eight_bit(image, background)
            if isinstance(image, str):
                return image
            fitted = np.asarray(ImageOps.fit(image.convert(mode), (size, size)))
    except (OSError, UnidentifiedImageError, ValueError) as error:
        return error.__class__.__name__
    return {"x": fitted.reshape(size, size, -1).transpose(2, 0, 1), "y": label}


def eight_bit(image: Any, background: str) -> Any:
    """A PIL image as 8-bit grey or colour without transparency, or why it cannot be: PIL's own
    ``convert`` would cut 16-bit levels off at 255, turn float pixels in [0, 1] into 0 and 1, and
    drop an alpha channel leaving whatever colour the transparent pixels happen to store."""
    from PIL import Image

    if image.mode.startswith("I;16"):
        levels = np.asarray(image).astype(np.int64)
        return Image.fromarray(((levels * 255 + 32767) // 65535).astype(np.uint8), "L")
    if image.mode == "I":
        return "32-bit integer pixels: save the image with 8 or 16 bits per channel"
    if image.mode == "F":
        values = np.asarray(image)
        if not (np.isfinite(values).all() and values.min() >= 0 and values.max() <= 1):
            return "floating-point pixels outside [0, 1]: scale them to [0, 1] first"
        return Image.fromarray(np.round(values * 255).astype(np.uint8), "L")
    if "A" in image.mode or "a" in image.mode or "transparency" in image.info:
        rgba = np.asarray(image.convert("RGBA")).transpose(2, 0, 1)
        return Image.fromarray(composite(rgba, background).transpose(1, 2, 0), "RGB")
    return image


def composite(rgba: np.ndarray, background: str) -> np.ndarray:
    """8-bit RGBA ``[4, H, W]`` -> RGB ``[3, H, W]`` over ``background`` (opaque images are unchanged)."""
    rgb, alpha = rgba[:3], rgba[3:]
    if alpha.min() == 255:
        return np.ascontiguousarray(rgb)
    alpha = alpha.astype(np.uint32)
    mixed = rgb * alpha + BACKGROUNDS[background] * (255 - alpha)
    return ((mixed + 127) // 255).astype(np.uint8)


def decode_rgb(file: Path) -> np.ndarray | None:
    """A JPEG or PNG as 8-bit RGB ``[3, H, W]``, as PIL's ``convert("RGB")`` gives it; 16-bit PNGs are
    rounded to 8 bits (PIL would cut their grey levels off at 255). None when torchvision cannot read
    the file, or it is a PNG with transparency (torchvision's RGB_ALPHA misreads palette PNGs): PIL then
    reads it, and names what is wrong in its terms."""
    from torchvision.io import ImageReadMode, decode_image

    try:
        data = file.read_bytes()
        if transparent_png(data):
            return None
        pixels = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
    except (RuntimeError, ValueError, OSError):  # ValueError: an empty file
        return None
    if pixels.dtype == torch.uint16:
        pixels = (pixels.to(torch.int32) * 255 + 32767) // 65535
    return pixels.to(torch.uint8).numpy()


#: The first bytes of every PNG file.
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def transparent_png(data: bytes) -> bool:
    """Whether PNG bytes hold transparency: an alpha channel (colour types 4 and 6) or a ``tRNS`` chunk
    (which comes before the image data)."""
    return (
        data[:8] == PNG_SIGNATURE and len(data) > 25 and (data[25] in (4, 6) or b"tRNS" in data[: data.find(b"IDAT")])
    )


def luma(rgb: np.ndarray) -> np.ndarray:
    """8-bit RGB ``[3, H, W]`` -> grey ``[1, H, W]`` by ITU-R 601-2 luma, in PIL's integer arithmetic
    (``convert("L")``)."""
    weighted = np.tensordot(np.array([19595, 38470, 7471], dtype=np.uint32), rgb.astype(np.uint32), axes=1)
    return ((weighted + 0x8000) >> 16).astype(np.uint8)[None]
