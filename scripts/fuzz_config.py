"""Throw generated input, good and bad, at genkit's whole command surface.

    python scripts/fuzz_config.py [--examples 2000] [--seed 0]

Cases are drawn from four surfaces:

- ``train``: genkit-train override combinations: parts and their parameters, model and run options
  (seed, verbose, compile, objective), and data modules with their options: image folders holding
  several bit depths and transparency, text files in several encodings, audio folders, and paths
  that are missing, a file, or empty. Each goes through what genkit-train does before and at its
  first step: the pre-Hydra checks, Hydra composition, run-option checks, building data and model
  (the contract probe), the contract check on the first real batch, and one optimiser step.
- ``plugin``: the same with plugin parts that keep their contract on the probe's few synthetic
  examples but break it at the real batch size or on real values; they must be named.
- ``tool``: every ``genkit`` tool's ``key=value`` options (n, temperature, k, method, split, steps,
  noise, formats, ...) on a model trained when the script starts, run in this process exactly as
  the command line runs them.
- ``eval``: genkit-eval's options (split, nll.k, device, data changes).

A case passes when it works, or stops with a clean message: a ``GenkitError`` or a Hydra/OmegaConf
configuration error (which Hydra prints as one message), and for tools an exit code with one
``genkit:`` line. It fails on any other exception (a raw traceback a user would see), and on a
clean message that names none of the options given (a misleading one). hypothesis shrinks a
failing case to the smallest one and the script exits 1. Data and outputs go to a temporary folder.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import sys
import tempfile
import traceback
import wave
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.errors import HydraException
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from PIL import Image
from torch import nn

import genkit
from genkit import config
from genkit.cli.app import CommandLine
from genkit.cli.eval import EvalOptions, evaluation
from genkit.cli.main import main as genkit_main
from genkit.compose import compose
from genkit.errors import GenkitError

WORK = Path(tempfile.mkdtemp(prefix="genkit-fuzz-"))
NUMBERS = st.one_of(
    st.integers(-3, 40), st.sampled_from(["0.0", "0.5", "1e-9", "-1.0", "1e6", "nan", "inf", "abc", "null"])
)
FRACTIONS = st.sampled_from(["0", "0.1", "0.5", "0.99", "1", "1.5", "-0.1", "nan", "abc"])
NAMES = {
    "encoder": ["mlp", "conv", "convv", "transformer"],
    "decoder": ["mlp", "conv", "mpl"],
    "prior": ["normal", "mog", "vamp", "flow"],
    "posterior": ["gaussian", "laplace"],
    "likelihood": ["bernoulli", "gaussian", "categorical"],
    "scheduler": ["multistep", "exponential", "cosine", "plateau", "linear"],
}
PARAMETERS = {
    "model.latent_dim": NUMBERS,
    "model.beta": NUMBERS,
    "model.iwae_k": NUMBERS,
    "model.free_bits": NUMBERS,
    "model.kl_schedule": st.sampled_from(["constant", "linear", "cyclical", "sigmoid"]),
    "model.kl_warmup_steps": NUMBERS,
    "model.kl_cycles": NUMBERS,
    "data.batch_size": NUMBERS,
    "data.eval_batch_size": NUMBERS,
    "data.binarize": st.sampled_from(["none", "dynamic", "static", "yes"]),
    "data.exclude_labels": st.sampled_from(["[]", "[3]", "[0,1,2,3,4,5,6,7,8,9]", "[42]"]),
    "data.flip": st.sampled_from(["true", "false", "2"]),
    "data.crop": NUMBERS,
    "encoder.hidden": st.sampled_from(["[]", "[16]", "[0]", "[-4]", "[32,16]"]),
    "encoder.channels": st.sampled_from(["[]", "[4]", "[4,8,16,32]"]),
    "encoder.activation": st.sampled_from(["relu", "gelu", "swish"]),
    "decoder.hidden": st.sampled_from(["[]", "[16]", "[0]"]),
    "prior.components": NUMBERS,
    "prior.pseudo_inputs": NUMBERS,
    "likelihood.sigma_mode": st.sampled_from(["fixed", "global", "per_dim", "predicted", "learned"]),
    "likelihood.sigma": NUMBERS,
    "posterior.scale": st.sampled_from(["exp", "softplus", "relu"]),
    "encoder.latent_dim": NUMBERS,
    "decoder.param_shape": st.sampled_from(["[1,8,8]", "[3]"]),
    "optim.lr": NUMBERS,
    "scheduler.gamma": NUMBERS,
    "scheduler.interval": st.sampled_from(["epoch", "step", "batch"]),
    "scheduler.monitor": st.sampled_from(["val/nelbo", "train/loss", "val/nll"]),
    "trainer.gradient_clip_val": NUMBERS,
    "+trainer.accumulate_grad_batches": NUMBERS,
    "+trainer.gradient_clip_algorithm": st.sampled_from(["norm", "value", "max"]),
    "seed": st.sampled_from(["0", "7", "-1", "4294967296", "1.5", "abc", "null"]),
    "verbose": st.sampled_from(["true", "false", "3", "maybe"]),
    "overwrite": st.sampled_from(["true", "false", "yes"]),
    "compile": st.sampled_from(["null", "fast", "3"]),
    "objective": st.sampled_from(["val/nelbo", "train/loss", "val/nll", "nelbo", "3"]),
    "plugins": st.sampled_from(["[]", "[not_a_module]", "3"]),
}


def write_data(root: Path) -> dict[str, list[str]]:
    """The files the data modules read: good ones, odd bit depths and encodings, and bad paths."""
    images = root / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(10):
        Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(images / f"rgb{i}.png")
    Image.fromarray(rng.integers(0, 65536, (12, 12), dtype=np.uint16)).save(images / "deep.png")
    Image.fromarray(rng.random((12, 12), dtype=np.float32), "F").save(images / "float.tif")
    Image.fromarray(rng.random((12, 12), dtype=np.float32) * 9, "F").save(images / "hdr.tif")
    Image.fromarray(rng.integers(0, 256, (12, 12, 4), dtype=np.uint8), "RGBA").save(images / "alpha.png")
    (images / "broken.png").write_bytes(b"not an image")
    (root / "empty").mkdir()
    (root / "a_file.txt").write_text("not a folder\n")
    words = "the cat sat on a mat and the dog ran to it".split()
    (root / "lines.txt").write_text("\n".join(" ".join(rng.choice(words, 6)) for _ in range(300)) + "\n")
    (root / "latin1.txt").write_bytes("\n".join(["caf\xe9 cr\xe8me"] * 300).encode("latin-1"))
    (root / "binary.bin").write_bytes(bytes(range(256)) * 40)
    (root / "empty.txt").write_text("")
    audio = root / "audio"
    audio.mkdir()
    for i in range(10):
        with wave.open(str(audio / f"tone{i}.wav"), "wb") as file:
            file.setnchannels(1 if i else 2)
            file.setsampwidth(2)
            file.setframerate(8000)
            t = np.arange(4000) / 8000
            signal = (np.sin(2 * math.pi * (200 + 50 * i) * t) * 20000).astype(np.int16)
            file.writeframes(np.repeat(signal, 1 if i else 2).tobytes())
    (audio / "silence.wav").write_bytes(b"RIFF....WAVE")
    paths = [str(images), str(root / "empty"), str(root / "a_file.txt"), str(root / "nowhere"), ""]
    return {
        "image": paths,
        "text": [str(root / n) for n in ("lines.txt", "latin1.txt", "binary.bin", "empty.txt", "nowhere.txt")]
        + [str(images)],
        "audio": [str(audio), str(root / "empty"), str(root / "a_file.txt"), str(root / "nowhere")],
    }


DATA = write_data(WORK / "data")
CACHE = f"data.cache_dir={WORK / 'cache'}"
DATA_MODULES = {
    "image": (
        ["data=image_folder", CACHE, "data.workers=1"],
        {
            "data.path": st.sampled_from(DATA["image"]),
            "data.size": NUMBERS,
            "data.channels": st.sampled_from(["1", "3", "4", "0"]),
            "data.background": st.sampled_from(["black", "white", "grey"]),
            "data.val_fraction": FRACTIONS,
            "data.test_fraction": FRACTIONS,
            "data.workers": st.sampled_from(["1", "2", "-1", "x"]),
        },
    ),
    "text": (
        ["experiment=text"],
        {
            "data.path": st.sampled_from(DATA["text"]),
            "data.tokenizer": st.sampled_from(["word", "bpe", "char", "nope"]),
            "data.vocab_size": NUMBERS,
            "data.max_length": NUMBERS,
            "data.encoding": st.sampled_from(["utf-8", "latin-1", "utf-16", "nope"]),
            "data.lowercase": st.sampled_from(["true", "false", "2"]),
            "data.val_fraction": FRACTIONS,
        },
    ),
    "audio": (
        ["experiment=audio", CACHE, "data.workers=1", "data.sample_rate=8000", "data.duration=0.5"],
        {
            "data.path": st.sampled_from(DATA["audio"]),
            "data.representation": st.sampled_from(["logmel", "waveform", "mfcc"]),
            "data.sample_rate": st.sampled_from(["8000", "16000", "0", "-1", "abc"]),
            "data.duration": st.sampled_from(["0.5", "0.25", "0", "-1", "100"]),
            "data.n_fft": NUMBERS,
            "data.hop_length": NUMBERS,
            "data.n_mels": NUMBERS,
            "data.offset": st.sampled_from(["0", "0.1", "-1", "5"]),
            "data.val_fraction": FRACTIONS,
        },
    ),
}


class ThreeExampleEncoder(genkit.Encoder):
    """Right on the probe's 3 examples only: it reshapes to a batch of 3."""

    def __init__(self, spec: genkit.DataSpec) -> None:
        super().__init__()
        self.net = nn.Linear(spec.numel, 8)
        self.out_features = 8

    def forward(self, x, mask=None):  # noqa: ANN001, ANN201
        return self.net(x.reshape(3, -1))


class NaNOnBatchesEncoder(genkit.Encoder):
    """Finite on the probe, NaN on any batch of more than 3 examples."""

    def __init__(self, spec: genkit.DataSpec) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(spec.numel, 8))
        self.out_features = 8

    def forward(self, x, mask=None):  # noqa: ANN001, ANN201
        features = self.net(x)
        return features * float("nan") if len(x) > 3 else features


class CroppingDecoder(genkit.Decoder):
    """Gives the likelihood's parameters for at most 3 examples, whatever the batch."""

    def __init__(self, spec: genkit.DataSpec, latent_dim: int, param_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.param_shape = tuple(param_shape)
        self.net = nn.Linear(latent_dim, math.prod(self.param_shape))

    def forward(self, z, x=None, mask=None):  # noqa: ANN001, ANN201
        return self.net(z[:3]).view(-1, *self.param_shape)


BROKEN_PLUGINS = {"encoder": ["fuzz_three_only", "fuzz_nan_on_batches"], "decoder": ["fuzz_cropping"]}
genkit.register_encoder("fuzz_three_only")(ThreeExampleEncoder)
genkit.register_encoder("fuzz_nan_on_batches")(NaNOnBatchesEncoder)
genkit.register_decoder("fuzz_cropping")(CroppingDecoder)

TOOL_OPTIONS = {
    "sample": {"n": NUMBERS, "temperature": NUMBERS, "method": st.sampled_from(["greedy", "sample", "beam"])},
    "reconstruct": {"n": NUMBERS, "split": st.sampled_from(["train", "val", "test", "tset"])},
    "interpolate": {
        "a": NUMBERS,
        "b": NUMBERS,
        "steps": NUMBERS,
        "path": st.sampled_from(["linear", "slerp", "both", "curved"]),
    },
    "denoise": {"noise": st.sampled_from(["gaussian", "salt_pepper", "pink"]), "level": NUMBERS, "n": NUMBERS},
    "anomaly": {
        "score": st.sampled_from(["nll", "rec", "elbo"]),
        "k": NUMBERS,
        "labels": st.sampled_from(["[]", "[3]", "[42]", "3"]),
    },
    "latent-map": {"method": st.sampled_from(["pca", "tsne", "umap"]), "grid": NUMBERS, "max_points": NUMBERS},
    "export": {
        "format": st.sampled_from(["onnx", "torchscript", "tflite"]),
        "part": st.sampled_from(["decoder", "encoder", "prior"]),
        "output": st.sampled_from(["mean", "params", "logits"]),
    },
}
COMMON_TOOL_OPTIONS = {
    "seed": st.sampled_from(["0", "-1", "abc", "4294967296"]),
    "split": st.sampled_from(["train", "val", "test", "tset"]),
    "data.batch_size": NUMBERS,
    "data.binarize": st.sampled_from(["none", "static", "yes"]),
    "nope": st.sampled_from(["1"]),
    "out": st.sampled_from([str(WORK / "out" / name) for name in ("x.png", "x.json", "x.onnx", "x.txt", "folder")]),
}
EVAL_OPTIONS = {
    "split": st.sampled_from(["train", "val", "test", "tset"]),
    "nll.k": NUMBERS,
    "nll.max_decoded_values": NUMBERS,
    "device": st.sampled_from(["auto", "cpu", "cuda", "cuda:7", "tpu"]),
    "seed": st.sampled_from(["0", "-1", "abc"]),
    "data.batch_size": NUMBERS,
    "data.exclude_labels": st.sampled_from(["[]", "[3]", "[42]"]),
}

outcomes: Counter[str] = Counter()
tried: list[tuple[str, list[str]]] = []  # the last one is hypothesis's shrunk failing case, replayed last


class Misleading(AssertionError):
    """A clean message that names none of the options given."""


def named(message: str, words: list[str]) -> bool:
    """Whether ``message`` names an option of ``words`` (its key, the key's first or last part, or its value)."""
    message = message.lower()
    for word in words:
        key, _, value = word.lstrip("+").partition("=")
        if any(part and part.lower() in message for part in (key, key.split(".")[0], key.rsplit(".", 1)[-1], value)):
            return True
    return False


def clean(message: str, words: list[str]) -> str:
    if words and not named(message, words):
        raise Misleading(f"the message names none of the options given: {message}")
    return "clean error"


def train_step(overrides: list[str]) -> str:
    """What genkit-train does with ``overrides`` up to its first optimiser step; the outcome's kind."""
    try:
        config.prepare()
        CommandLine.parse(["genkit-train", *overrides]).check()
        cfg = config.train_config(overrides)
        config.check_run_options(cfg)
        torch.manual_seed(0)
        datamodule, model = compose(cfg)
        datamodule.setup("fit")
        batch = next(iter(datamodule.train_dataloader()))
        model.check_on_data("training", batch)
        optimizer = model.optimization.optimizer(model.parameters())
        loss = model.loss(model.elbo_terms(batch["x"], batch.get("mask")), beta=float(cfg.model.beta))
        loss.backward()
        optimizer.step()
    except GenkitError as error:
        return clean(str(error), overrides)
    except (HydraException, OmegaConfBaseException) as error:
        return clean(f"{error} {error.__cause__ or ''}", overrides)
    return "trained one step" if torch.isfinite(loss) else "trained one step, loss not finite"


def tool(words: list[str]) -> str:
    """``genkit <words>`` in this process, as the console script runs it."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = genkit_main(words)
    if code == 0:
        return "tool ran"
    lines = [line for line in err.getvalue().splitlines() if line.startswith("genkit:")]
    if not lines or "Traceback" in err.getvalue():
        raise AssertionError(f"exit {code} without one clean line: {err.getvalue()[-2000:]}")
    return clean(lines[-1], [w for w in words[1:] if not w.startswith("ckpt=")])


def eval_run(words: list[str]) -> str:
    """genkit-eval's job with ``words`` (options merged as its Hydra config merges them)."""
    try:
        options = OmegaConf.merge(OmegaConf.structured(EvalOptions), OmegaConf.from_dotlist(words))
        with contextlib.redirect_stdout(io.StringIO()):
            evaluation(options)
    except GenkitError as error:
        return clean(str(error), [w for w in words if not w.startswith("ckpt=")])
    except (HydraException, OmegaConfBaseException) as error:
        return clean(f"{error} {error.__cause__ or ''}", words)
    return "evaluated"


def trained_checkpoint() -> Path:
    """A small model trained on digits for the tools to use."""
    from genkit.training.run import train

    folder = WORK / "run"
    cfg = config.train_config(["trainer.max_epochs=1", "logger=none", "verbose=false", "model.latent_dim=2"])
    with contextlib.redirect_stdout(io.StringIO()):
        train(cfg, folder)
    return folder / "checkpoints" / "last.ckpt"


def option_words(draw: st.DrawFn, options: dict[str, Any], most: int) -> list[str]:
    if not options:
        return []
    keys = draw(st.lists(st.sampled_from(sorted(options)), max_size=most, unique=True))
    return [f"{key}={draw(options[key])}" for key in keys]


@st.composite
def cases(draw: st.DrawFn, checkpoint: Path) -> tuple[str, list[str]]:
    surface = draw(st.sampled_from(["train", "train", "train", "plugin", "tool", "tool", "eval"]))
    if surface in ("train", "plugin"):
        modality = draw(st.sampled_from(["digits", "digits", "image", "text", "audio"]))
        base, options = DATA_MODULES.get(modality, ([], {}))
        words = [*base, *option_words(draw, options, 3)]
        if surface == "plugin":
            kind = draw(st.sampled_from(sorted(BROKEN_PLUGINS)))
            words.append(f"{kind}={draw(st.sampled_from(BROKEN_PLUGINS[kind]))}")
        if modality == "digits" and surface == "train":
            words += [f"{kind}={draw(st.sampled_from(names))}" for kind, names in NAMES.items() if draw(st.booleans())]
        return surface, words + option_words(draw, PARAMETERS, 3)
    if surface == "tool":
        name = draw(st.sampled_from(sorted(TOOL_OPTIONS)))
        words = option_words(draw, {**COMMON_TOOL_OPTIONS, **TOOL_OPTIONS[name]}, 3)
        return surface, [name, f"ckpt={checkpoint}", *words]
    return surface, [f"ckpt={checkpoint}", f"out={WORK / 'out' / 'eval.json'}", *option_words(draw, EVAL_OPTIONS, 3)]


def outcome(surface: str, words: list[str]) -> str:
    if surface in ("train", "plugin"):
        result = train_step(words)
        if surface == "plugin" and result.startswith("trained"):
            raise AssertionError("a plugin that breaks its contract at the real batch size trained unnamed")
        return f"{surface}: {result}"
    return f"{surface}: {tool(words) if surface == 'tool' else eval_run(words)}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=2000, help="cases to try")
    parser.add_argument("--seed", type=int, default=0, help="hypothesis seed (the same seed tries the same cases)")
    args = parser.parse_args(argv)
    torch.distributions.Distribution.set_default_validate_args(False)
    checkpoint = trained_checkpoint()

    @settings(
        max_examples=args.examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
    )
    @given(cases(checkpoint))
    def check(case: tuple[str, list[str]]) -> None:
        tried.append(case)
        outcomes[outcome(*case)] += 1

    try:
        __import__("hypothesis").seed(args.seed)(check)()
    except Exception as error:  # hypothesis has shrunk it: report the smallest failing case
        surface, words = tried[-1]
        command = {"tool": "genkit", "eval": "genkit-eval"}.get(surface, "genkit-train")
        print(f"FAILED ({surface}): {command} {' '.join(words)}", file=sys.stderr)
        where = traceback.extract_tb(error.__traceback__)[-1]
        print(f"ends in {error.__class__.__name__}: {error} ({where.filename}:{where.lineno})", file=sys.stderr)
        print(f"tried {sum(outcomes.values())} cases before it: {dict(outcomes)}", file=sys.stderr)
        return 1
    summary = "\n".join(f"  {n:5d}  {kind}" for kind, n in sorted(outcomes.items()))
    print(f"tried {sum(outcomes.values())} cases, none raw or misleading:\n{summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
