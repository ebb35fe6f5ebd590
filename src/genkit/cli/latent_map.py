"""``genkit latent-map``: a split's posterior means in 2-D by label; for 2-D image models also the
decoded manifold (the seed article's figure)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from genkit.cli.trained import SplitOptions, Trained, check_count, check_split
from genkit.console import SUMMARY, status
from genkit.errors import UsageError
from genkit.modalities import Images, modality_of


@dataclass
class LatentMapOptions(SplitOptions):
    """genkit latent-map ckpt=PATH [split=test] [method=pca|tsne] [grid=20] [max_points=5000] [out=FILE] [data.K=V]"""

    method: str = "pca"  # above 2 latent dimensions: pca (linear, fast) or tsne (neighbourhoods, slower)
    grid: int = 20  # 2-D image models: the decoded manifold is a grid x grid image of prior quantiles
    max_points: int = 5000  # examples plotted at most (the first of the split)


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
    with status(f"t-SNE of {len(z)} latents"):
        coordinates = TSNE(2, perplexity=perplexity, random_state=seed).fit_transform(z.numpy())
    return torch.from_numpy(coordinates), "t-SNE"


@torch.no_grad()
def run(options: LatentMapOptions) -> Path:
    """Plot a split's posterior means in 2-D, coloured by label; for 2-D image models also the
    decoded manifold. Returns the scatter plot's file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    check_split(options.split)
    check_count("grid", options.grid, "points per side of the decoded manifold")
    check_count("max_points", options.max_points, "examples to plot")
    if options.method not in ("pca", "tsne"):
        raise UsageError(f"method must be pca or tsne, got {options.method!r}")
    trained = Trained.open(options.ckpt)
    model = trained.model
    datamodule, data_name = trained.data(options.data, seed=options.seed)
    split = datamodule.examples(options.split, options.max_points)
    masks = split["mask"].split(512) if "mask" in split else [None] * math.ceil(len(split["x"]) / 512)
    z = torch.cat([model.embed(x, mask) for x, mask in zip(split["x"].split(512), masks)]).float()
    points, axes = project(z, options.method, options.seed)
    figure, ax = plt.subplots(figsize=(7, 6))
    labels = split.get("y")
    if labels is None:
        ax.scatter(points[:, 0], points[:, 1], s=6)
    else:
        names = model.spec.classes or [str(v) for v in range(int(labels.max()) + 1)]
        colours = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
        for i, label in enumerate(labels.unique().tolist()):
            chosen = points[labels == label]
            ax.scatter(chosen[:, 0], chosen[:, 1], s=6, color=colours(i % colours.N), label=names[label])
        ax.legend(title="label", fontsize=7, markerscale=2, loc="best")
    ax.set_xlabel(f"{axes} 1")
    ax.set_ylabel(f"{axes} 2")
    ax.set_title(f"{data_name} {options.split}: posterior means of {len(z)} examples, latent dim {z.shape[1]}")
    out = trained.output(options.out, "latent_map")
    figure.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(figure)
    SUMMARY.info("latent map of %d %s examples (%s) written to %s", len(z), options.split, axes, out)
    modality = modality_of(model.spec)
    if z.shape[1] == 2 and isinstance(modality, Images) and not model.decoder.autoregressive:
        manifold = out.with_name(f"{out.stem}.manifold.png") if options.out else trained.output("", "manifold")
        write_manifold(model, modality, options.grid, manifold)
        SUMMARY.info("decoded %dx%d manifold written to %s", options.grid, options.grid, manifold)
    return out


def write_manifold(model: Any, images: Images, grid: int, out: Path) -> None:
    """Decode a grid of 2-D latents at the standard normal's quantiles 5%..95% (Kingma & Welling 2014,
    as the seed article): rows go down the second dimension, columns across the first."""
    quantiles = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(0.05, 0.95, grid))
    first, second = torch.meshgrid(quantiles, quantiles.flip(0), indexing="xy")
    z = torch.stack([first.flatten(), second.flatten()], 1)
    images.save(images.grid(model.decode(z).mean, grid), out)
