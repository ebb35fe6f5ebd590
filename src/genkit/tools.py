"""Using a trained model from the command line: ``genkit sample``, ``reconstruct``, ``interpolate``, ``denoise``,
``latent-map``, ``anomaly``.

Options are ``key=value`` words checked against typed dataclasses (OmegaConf structured
configs), so an unknown option or a wrong type is refused with the key named.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from genkit.checkpoint import load, model_from_checkpoint, read_checkpoint
from genkit.data.text import decode_tokens
from genkit.errors import UsageError
from genkit.evaluate import check_count, check_split, checkpoint_data

log = logging.getLogger(__name__)


@dataclass
class SampleOptions:
    """genkit sample ckpt=PATH [n=64] [temperature=1] [out=FILE] [method=greedy] [top_p=1] [token_temperature=1]"""

    ckpt: str = MISSING  # the checkpoint
    n: int = 64  # number of prior samples
    temperature: float = 1.0  # scales z ~ p(z): below 1 gives more typical, less varied samples
    seed: int = 0  # seeds the draws (option seed=N)
    out: str = ""  # default: <checkpoint>.samples.png beside it (text: .samples.txt; audio: a WAV folder)
    method: str = "greedy"  # text: greedy (most likely word) or sample (drawn word by word)
    top_p: float = 1.0  # text, method=sample: draw from the smallest set of words holding this mass (nucleus)
    token_temperature: float = 1.0  # text, method=sample: softmax temperature of each word draw


@dataclass
class ReconstructOptions:
    """genkit reconstruct ckpt=PATH [n=16] [split=test] [out=FILE] [data.KEY=VALUE ...]"""

    ckpt: str = MISSING  # the checkpoint
    n: int = 16  # examples to reconstruct (the first n of the split)
    split: str = "test"  # train | val | test
    seed: int = 0  # seeds the data module's binarisation, if any
    out: str = ""  # default: <checkpoint>.reconstructions.png beside it (text: .txt; audio: a WAV folder)
    data: dict[str, Any] = field(default_factory=dict)  # changes to the checkpoint's data config


@dataclass
class InterpolateOptions:
    """genkit interpolate ckpt=PATH [a=0] [b=1] [split=test] [steps=8] [path=both] [out=FILE] [data.KEY=VALUE ...]"""

    ckpt: str = MISSING  # the checkpoint
    a: int = 0  # index of the first example in the split
    b: int = 1  # index of the second example
    split: str = "test"  # train | val | test
    steps: int = 8  # decoded points between (and including) the two latents
    path: str = "both"  # linear | slerp (spherical, White 2016) | both (one row each)
    seed: int = 0  # seeds the data module's binarisation, if any
    out: str = ""  # default: <checkpoint>.interpolation.png beside it (text: .txt; audio: a WAV folder)
    data: dict[str, Any] = field(default_factory=dict)  # changes to the checkpoint's data config


@dataclass
class AnomalyOptions:
    """genkit anomaly ckpt=PATH [score=nll] [k=100] [split=test] [labels=[7]] [out=FILE] [data.KEY=VALUE ...]"""

    ckpt: str = MISSING  # the checkpoint
    score: str = "nll"  # nll: importance-weighted -log p(x); rec: -log p(x | z = E_q[z]), the reconstruction error
    k: int = 100  # importance samples per example for score=nll
    split: str = "test"  # train | val | test
    labels: list[int] = field(default_factory=list)  # anomalous labels; default: data.exclude_labels of the run
    seed: int = 0  # seeds the Monte Carlo estimates
    out: str = ""  # JSON results; default: <checkpoint>.anomaly.json beside it
    data: dict[str, Any] = field(default_factory=dict)  # changes to the checkpoint's data config


NOISES = ("gaussian", "salt_pepper")


@dataclass
class DenoiseOptions:
    """genkit denoise ckpt=PATH [noise=gaussian] [level=0.3] [n=16] [split=test] [out=FILE] [data.KEY=VALUE ...]"""

    ckpt: str = MISSING  # the checkpoint (an image model)
    noise: str = "gaussian"  # gaussian: x + N(0, level^2) clipped to [0, 1]; salt_pepper: pixels set to 0 or 1
    level: float = 0.3  # the noise's standard deviation (gaussian) or share of pixels hit (salt_pepper)
    n: int = 16  # examples shown in the image (PSNR/SSIM are over the whole split)
    split: str = "test"  # train | val | test
    seed: int = 0  # seeds the noise
    out: str = ""  # output image; default: <checkpoint>.denoise.png beside it, with the scores in .denoise.json
    data: dict[str, Any] = field(default_factory=dict)  # changes to the checkpoint's data config


@dataclass
class LatentMapOptions:
    """genkit latent-map ckpt=PATH [split=test] [method=pca|tsne] [grid=20] [max_points=5000] [out=FILE] [data.K=V]"""

    ckpt: str = MISSING  # the checkpoint
    split: str = "test"  # train | val | test
    method: str = "pca"  # above 2 latent dimensions: pca (linear, fast) or tsne (neighbourhoods, slower)
    grid: int = 20  # 2-D image models: the decoded manifold is a grid x grid image of prior quantiles
    max_points: int = 5000  # examples plotted at most (the first of the split)
    seed: int = 0  # seeds t-SNE and the data module's binarisation, if any
    out: str = ""  # output image; default: <checkpoint>.latent_map.png (and .manifold.png) beside it
    data: dict[str, Any] = field(default_factory=dict)  # changes to the checkpoint's data config


def parse(schema: type, words: list[str]) -> Any:
    """``key=value`` words merged onto ``schema``; mistakes become a UsageError naming the key."""
    try:
        options = OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.from_dotlist(words))
        OmegaConf.to_container(options, throw_on_missing=True)
    except OmegaConfBaseException as error:
        raise UsageError(str(error).splitlines()[0]) from None
    return options


def default_output(ckpt: str, out: str, name: str, suffix: str = ".png") -> Path:
    path = Path(out) if out else Path(ckpt).with_name(f"{Path(ckpt).stem}.{name}{suffix}")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def require_writable(model: Any, command: str) -> None:
    """Refuse models whose outputs genkit cannot write: images [C, H, W], text and genkit's audio only."""
    spec = model.spec
    if spec.modality == "text" or model.audio is not None or (spec.modality == "image" and len(spec.event_shape) == 3):
        return
    raise UsageError(
        f"genkit {command} writes images, text or audio made by genkit's data modules; "
        f"this model is for {spec.describe()}: use it from Python (genkit.load)"
    )


def write_audio(ckpt: str, out: str, name: str, model: Any, rows: dict[str, torch.Tensor]) -> Path:
    """Audio examples as WAV files in a folder (``<checkpoint>.<name>/`` by default), one file
    per example, and their log-mel spectrograms, one row per entry of ``rows``, as ``spectrograms.png``."""
    from torchvision.utils import save_image

    from genkit.audio import spectrogram_images, write_wavs

    folder = Path(out) if out else Path(ckpt).with_name(f"{Path(ckpt).stem}.{name}")
    clips = {f"{row}_{i:03d}": wave for row, x in rows.items() for i, wave in enumerate(model.audio.to_audio(x))}
    write_wavs(folder, clips, model.audio.settings.sample_rate)
    images = torch.cat([spectrogram_images(model.audio, x) for x in rows.values()])
    save_image(images, folder / "spectrograms.png", nrow=len(next(iter(rows.values()))), pad_value=1.0)
    return folder


def write_text(ckpt: str, out: str, name: str, lines: list[str]) -> Path:
    path = default_output(ckpt, out, name, ".txt")
    path.write_text("\n".join(lines) + "\n")
    return path


def sample(words: list[str]) -> Path:
    """Draw prior samples and write them as an image grid; returns the file."""
    from torchvision.utils import save_image

    options = parse(SampleOptions, words)
    check_count("n", options.n, "samples to draw")
    model = load(options.ckpt)
    require_writable(model, "sample")
    torch.manual_seed(options.seed)
    if model.spec.modality == "text":
        generation = {"method": options.method, "top_p": options.top_p, "token_temperature": options.token_temperature}
        try:
            ids = model.sample(options.n, options.temperature, **generation)
        except ValueError as error:
            raise UsageError(str(error)) from None
        out = write_text(options.ckpt, options.out, "samples", decode_tokens(model.spec, ids))
        log.info("%d sentences (%s decoding) written to %s", options.n, options.method, out)
        return out
    if model.audio is not None:
        out = write_audio(
            options.ckpt, options.out, "samples", model, {"sample": model.sample(options.n, options.temperature)}
        )
        log.info("%d samples (temperature %s) written to %s as WAV files", options.n, options.temperature, out)
        return out
    images = model.sample(options.n, options.temperature).clamp(0, 1)
    out = default_output(options.ckpt, options.out, "samples")
    save_image(images, out, nrow=math.ceil(math.sqrt(options.n)), pad_value=1.0)
    log.info("%d samples (temperature %s) written to %s", options.n, options.temperature, out)
    return out


def reconstruct(words: list[str]) -> Path:
    """Write the first ``n`` examples of a split above their reconstructions; returns the file."""
    from torchvision.utils import save_image

    options = parse(ReconstructOptions, words)
    check_count("n", options.n, "examples to reconstruct")
    check_split(options.split)
    checkpoint, run_cfg = read_checkpoint(options.ckpt)
    model = model_from_checkpoint(checkpoint, run_cfg, options.ckpt)
    require_writable(model, "reconstruct")
    run_cfg.seed = options.seed
    datamodule, _ = checkpoint_data(run_cfg, model, options.data)
    x = datamodule.splits[options.split]["x"][: options.n].cpu()
    if model.spec.modality == "text":
        mask = datamodule.splits[options.split]["mask"][: options.n].cpu()
        inputs, outputs = decode_tokens(model.spec, x, mask), decode_tokens(model.spec, model.reconstruct(x, mask))
        lines = [f"{a}\n  -> {b}" for a, b in zip(inputs, outputs)]
        out = write_text(options.ckpt, options.out, "reconstructions", lines)
        log.info("%d %s sentences and their greedy reconstructions written to %s", len(x), options.split, out)
        return out
    if model.audio is not None:
        rows = {"input": x, "reconstruction": model.reconstruct(x)}
        out = write_audio(options.ckpt, options.out, "reconstructions", model, rows)
        log.info("%d %s clips and their reconstructions written to %s as WAV files", len(x), options.split, out)
        return out
    images = torch.cat([x, model.reconstruct(x).clamp(0, 1)])
    out = default_output(options.ckpt, options.out, "reconstructions")
    save_image(images, out, nrow=len(x), pad_value=1.0)
    log.info("%d %s examples (top) and their reconstructions (bottom) written to %s", len(x), options.split, out)
    return out


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between latents ``a`` and ``b`` ``[D]`` at fractions ``t`` ``[T]`` -> ``[T, D]``.

    Follows the great circle between the two directions (White 2016, "Sampling generative
    networks"), staying where Gaussian latents have their mass; linear when they are parallel.
    """
    cos = torch.dot(a / a.norm(), b / b.norm()).clamp(-1.0, 1.0)
    omega = torch.arccos(cos)
    if torch.sin(omega).abs() < 1e-6:
        return torch.lerp(a, b, t[:, None])
    return (torch.sin((1 - t) * omega)[:, None] * a + torch.sin(t * omega)[:, None] * b) / torch.sin(omega)


@torch.no_grad()
def interpolate(words: list[str]) -> Path:
    """Decode paths between two examples' latents; rows: linear and/or spherical. Returns the file."""
    from torchvision.utils import save_image

    options = parse(InterpolateOptions, words)
    check_count("steps", options.steps, "points along each path")
    check_split(options.split)
    if options.path not in ("linear", "slerp", "both"):
        raise UsageError(f"path must be linear, slerp or both, got {options.path!r}")
    checkpoint, run_cfg = read_checkpoint(options.ckpt)
    model = model_from_checkpoint(checkpoint, run_cfg, options.ckpt)
    require_writable(model, "interpolate")
    run_cfg.seed = options.seed
    datamodule, _ = checkpoint_data(run_cfg, model, options.data)
    split = datamodule.splits[options.split]
    x = split["x"].cpu()
    for name in ("a", "b"):
        if not 0 <= options[name] < len(x):
            raise UsageError(f"{name}={options[name]} is outside the {options.split} split (0 to {len(x) - 1})")
    ends = x[[options.a, options.b]]
    mask = split["mask"][[options.a, options.b]].cpu() if "mask" in split else None
    z_a, z_b = model.embed(ends, mask)
    t = torch.linspace(0, 1, options.steps)
    paths = {"linear": torch.lerp(z_a, z_b, t[:, None]), "slerp": slerp(z_a, z_b, t)}
    rows = [paths[options.path]] if options.path != "both" else [paths["linear"], paths["slerp"]]
    if model.spec.modality == "text":  # Bowman et al. (2016)'s homotopies: greedy decodes along the path
        names = [options.path] if options.path != "both" else ["linear", "slerp"]
        start, end = decode_tokens(model.spec, ends, mask)
        lines = []
        for name, z in zip(names, rows):
            lines += [f"# {name}", f"   {start}", *decode_tokens(model.spec, model.decode_output(z)), f"   {end}", ""]
        out = write_text(options.ckpt, options.out, "interpolation", lines)
        log.info("%s path(s) between two %s sentences written to %s", options.path, options.split, out)
        return out
    if model.audio is not None:
        names = [options.path] if options.path != "both" else ["linear", "slerp"]
        paths = {name: torch.cat([ends[:1], model.decode(z).mean, ends[1:]]) for name, z in zip(names, rows)}
        out = write_audio(options.ckpt, options.out, "interpolation", model, paths)
        log.info("%s path(s) between two %s clips written to %s as WAV files", options.path, options.split, out)
        return out
    images = torch.cat([torch.cat([ends[:1], model.decode(z).mean.clamp(0, 1), ends[1:]]) for z in rows])
    out = default_output(options.ckpt, options.out, "interpolation")
    save_image(images, out, nrow=options.steps + 2, pad_value=1.0)
    log.info(
        "%s path(s) from %s[%d] to %s[%d] written to %s",
        options.path,
        options.split,
        options.a,
        options.split,
        options.b,
        out,
    )
    return out


def add_noise(x: torch.Tensor, noise: str, level: float, generator: torch.Generator) -> torch.Tensor:
    """``x`` in [0, 1] corrupted by ``noise`` at ``level`` (see ``DenoiseOptions``), still in [0, 1]."""
    if noise == "gaussian":
        return (x + level * torch.randn(x.shape, generator=generator)).clamp(0, 1)
    hit = torch.rand(x.shape, generator=generator) < level
    salt = (torch.rand(x.shape, generator=generator) < 0.5).to(x.dtype)
    return torch.where(hit, salt, x)


def image_scores(clean: torch.Tensor, other: torch.Tensor) -> dict[str, float]:
    """Mean PSNR (dB) and SSIM of ``other`` against ``clean``, images in [0, 1] (torchmetrics).

    The SSIM window is 11x11 (Wang et al. 2004), shrunk to the largest odd size that fits small images."""
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    window = min(11, *(side - 1 + side % 2 for side in clean.shape[-2:]))
    psnr = peak_signal_noise_ratio(other, clean, data_range=1.0, reduction="none", dim=(1, 2, 3))
    ssim = structural_similarity_index_measure(other, clean, data_range=1.0, kernel_size=window, reduction="none")
    return {"psnr": float(psnr.mean()), "ssim": float(ssim.mean())}


@torch.no_grad()
def denoise(words: list[str]) -> Path:
    """Corrupt a split's images, reconstruct them, and score both against the clean ones.

    Writes rows of clean, noisy and denoised examples, and PSNR/SSIM before and after over
    the whole split as JSON; returns the image file."""
    import json

    from torchvision.utils import save_image

    options = parse(DenoiseOptions, words)
    check_count("n", options.n, "examples to show")
    check_split(options.split)
    if options.noise not in NOISES:
        raise UsageError(f"noise must be one of {', '.join(NOISES)}, got {options.noise!r}")
    if not 0 < options.level <= (1 if options.noise == "salt_pepper" else math.inf):
        raise UsageError(f"level must be above 0 (and at most 1 for salt_pepper), got {options.level}")
    checkpoint, run_cfg = read_checkpoint(options.ckpt)
    model = model_from_checkpoint(checkpoint, run_cfg, options.ckpt)
    spec = model.spec
    if spec.modality != "image" or len(spec.event_shape) != 3:
        raise UsageError(f"genkit denoise works on image models ([C, H, W] in [0, 1]), not {spec.describe()}")
    run_cfg.seed = options.seed
    datamodule, data_name = checkpoint_data(run_cfg, model, options.data)
    clean = datamodule.splits[options.split]["x"].cpu().float()
    noisy = add_noise(clean, options.noise, options.level, torch.Generator().manual_seed(options.seed))
    model.eval()
    denoised = torch.cat([model.reconstruct(chunk).clamp(0, 1) for chunk in noisy.split(512)])
    shown = min(options.n, len(clean))
    out = default_output(options.ckpt, options.out, "denoise")
    save_image(torch.cat([clean[:shown], noisy[:shown], denoised[:shown]]), out, nrow=shown, pad_value=1.0)
    result = {
        "checkpoint": str(Path(options.ckpt).resolve()),
        "data": data_name,
        "split": options.split,
        "examples": len(clean),
        "noise": options.noise,
        "level": options.level,
        "noisy": image_scores(clean, noisy),
        "denoised": image_scores(clean, denoised),
    }
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    log.info(
        "%s noise at %s on %d %s images: PSNR %.2f -> %.2f dB, SSIM %.3f -> %.3f; rows clean/noisy/denoised in %s",
        options.noise,
        options.level,
        len(clean),
        options.split,
        result["noisy"]["psnr"],
        result["denoised"]["psnr"],
        result["noisy"]["ssim"],
        result["denoised"]["ssim"],
        out,
    )
    return out


def project(z: torch.Tensor, method: str, seed: int) -> tuple[torch.Tensor, str]:
    """2-D coordinates of latents ``[N, D]``: themselves for D = 2, else PCA or t-SNE (scikit-learn)."""
    if z.shape[1] <= 2:
        return torch.nn.functional.pad(z, (0, 2 - z.shape[1])), "z"
    if method == "pca":
        from sklearn.decomposition import PCA

        pca = PCA(n_components=2, random_state=seed).fit(z.numpy())
        share = pca.explained_variance_ratio_.sum()
        return torch.from_numpy(pca.transform(z.numpy())), f"PCA ({share:.0%} of the variance)"
    from sklearn.manifold import TSNE

    perplexity = min(30.0, (len(z) - 1) / 3)
    return torch.from_numpy(TSNE(2, perplexity=perplexity, random_state=seed).fit_transform(z.numpy())), "t-SNE"


@torch.no_grad()
def latent_map(words: list[str]) -> Path:
    """Plot a split's posterior means in 2-D, coloured by label; for 2-D image models also the
    decoded manifold (the seed article's figure). Returns the scatter plot's file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    options = parse(LatentMapOptions, words)
    check_split(options.split)
    check_count("grid", options.grid, "points per side of the decoded manifold")
    check_count("max_points", options.max_points, "examples to plot")
    if options.method not in ("pca", "tsne"):
        raise UsageError(f"method must be pca or tsne, got {options.method!r}")
    checkpoint, run_cfg = read_checkpoint(options.ckpt)
    model = model_from_checkpoint(checkpoint, run_cfg, options.ckpt).eval()
    run_cfg.seed = options.seed
    datamodule, data_name = checkpoint_data(run_cfg, model, options.data)
    split = {k: t[: options.max_points].cpu() for k, t in datamodule.splits[options.split].items()}
    masks = split["mask"].split(512) if "mask" in split else [None] * math.ceil(len(split["x"]) / 512)
    z = torch.cat([model.embed(x, mask) for x, mask in zip(split["x"].split(512), masks)]).float()
    points, axes = project(z, options.method, options.seed)
    figure, ax = plt.subplots(figsize=(7, 6))
    labels = split.get("y")
    if labels is None:
        ax.scatter(points[:, 0], points[:, 1], s=6)
    else:
        names = model.spec.extra.get("classes") or [str(v) for v in range(int(labels.max()) + 1)]
        colours = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
        for i, label in enumerate(labels.unique().tolist()):
            chosen = points[labels == label]
            ax.scatter(chosen[:, 0], chosen[:, 1], s=6, color=colours(i % colours.N), label=names[label])
        ax.legend(title="label", fontsize=7, markerscale=2, loc="best")
    ax.set_xlabel(f"{axes} 1")
    ax.set_ylabel(f"{axes} 2")
    ax.set_title(f"{data_name} {options.split}: posterior means of {len(z)} examples, latent dim {z.shape[1]}")
    out = default_output(options.ckpt, options.out, "latent_map")
    figure.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(figure)
    log.info("latent map of %d %s examples (%s) written to %s", len(z), options.split, axes, out)
    if z.shape[1] == 2 and model.spec.modality == "image" and not model.decoder.autoregressive:
        manifold = default_output(options.ckpt, "", "manifold")
        if options.out:
            manifold = out.with_name(f"{out.stem}.manifold.png")
        write_manifold(model, options.grid, manifold)
        log.info("decoded %dx%d manifold written to %s", options.grid, options.grid, manifold)
    return out


def write_manifold(model: Any, grid: int, out: Path) -> None:
    """Decode a grid of 2-D latents at the standard normal's quantiles 5%..95% (Kingma & Welling 2014,
    as the seed article): rows go down the second dimension, columns across the first."""
    from torchvision.utils import save_image

    quantiles = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(0.05, 0.95, grid))
    first, second = torch.meshgrid(quantiles, quantiles.flip(0), indexing="xy")
    z = torch.stack([first.flatten(), second.flatten()], 1)
    save_image(model.decode(z).mean.clamp(0, 1), out, nrow=grid, pad_value=1.0)


@torch.no_grad()
def anomaly_scores(model: Any, batches: Any, score: str, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example anomaly scores (higher = more anomalous, nats) and labels over all ``batches``."""
    scores, labels = [], []
    for batch in batches:
        x = batch["x"].cpu()
        if score == "nll":
            scores.append(-model.log_likelihood(x, k))
        else:
            scores.append(-model.decode(model.embed(x)).log_prob(x))
        labels.append(batch["y"].cpu())
    return torch.cat(scores), torch.cat(labels)


def anomaly(words: list[str]) -> Path:
    """Score a split for anomalies; with anomalous labels known, report the ROC AUC. Returns the JSON file."""
    import json

    from sklearn.metrics import roc_auc_score

    options = parse(AnomalyOptions, words)
    if options.score not in ("nll", "rec"):
        raise UsageError(f"score must be nll or rec, got {options.score!r}")
    check_count("k", options.k, "importance samples")
    check_split(options.split)
    checkpoint, run_cfg = read_checkpoint(options.ckpt)
    model = model_from_checkpoint(checkpoint, run_cfg, options.ckpt)
    anomalous = list(options.labels) or list(run_cfg.data.get("exclude_labels") or [])
    datamodule, data_name = checkpoint_data(run_cfg, model, options.data)
    torch.manual_seed(options.seed)
    batches = getattr(datamodule, f"{options.split}_dataloader")()
    scores, labels = anomaly_scores(model, batches, options.score, options.k)
    per_label = {int(label): scores[labels == label].mean().item() for label in labels.unique()}
    result: dict[str, Any] = {
        "checkpoint": str(Path(options.ckpt).resolve()),
        "data": data_name,
        "split": options.split,
        "score": options.score,
        "k": options.k,
        "examples": len(scores),
        "mean_score_per_label": per_label,
    }
    if anomalous:
        is_anomaly = torch.isin(labels, torch.tensor(anomalous))
        if is_anomaly.all() or not is_anomaly.any():
            raise UsageError(f"the {options.split} split needs both normal examples and ones labelled {anomalous}")
        result.update(anomalous_labels=anomalous, roc_auc=float(roc_auc_score(is_anomaly.numpy(), scores.numpy())))
        log.info(
            "ROC AUC %.4f for labels %s as anomalies (%s scores, %d examples)",
            result["roc_auc"],
            anomalous,
            options.score,
            len(scores),
        )
    out = Path(options.out) if options.out else Path(options.ckpt).with_name(f"{Path(options.ckpt).stem}.anomaly.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    log.info("anomaly scores summary written to %s", out)
    return out
