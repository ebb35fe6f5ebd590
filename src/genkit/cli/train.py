"""``genkit-train``: the Hydra training app (``conf/train.yaml``)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from genkit.cli.app import run


def task(cfg: DictConfig) -> float:
    """One Hydra job: train, return the metric a sweeper optimises (``val/nelbo``)."""
    from hydra.core.hydra_config import HydraConfig

    from genkit.train import train

    metrics = train(cfg, Path(HydraConfig.get().runtime.output_dir))
    return metrics.get("val/nelbo", float("nan"))


def main() -> None:
    """Entry point of ``genkit-train``."""
    run(task, "train")


if __name__ == "__main__":
    main()
