"""``genkit-train``: the Hydra training app (``conf/train.yaml``)."""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig

from genkit.cli.app import local_plugin_modules, parse_overrides, run
from genkit.errors import GenkitError
from genkit.resume import checked_checkpoint, override_key, resume_arguments


def task(cfg: DictConfig) -> float:
    """One Hydra job: train, return the metric a sweeper optimises (``val/nelbo``)."""
    from hydra.core.hydra_config import HydraConfig

    from genkit.train import train

    metrics = train(cfg, Path(HydraConfig.get().runtime.output_dir))
    return metrics.get("val/nelbo", float("nan"))


def check_before_start(argv: list[str]) -> None:
    """Refuse a single-run resume before Hydra starts, so a refused one writes nothing in the run folder."""
    from genkit.compose import train_config

    given = [a for a in argv[1:] if "=" in a and not a.startswith("-")]
    folders = [a.split("=", 1)[1] for a in given if override_key(a) == "hydra.run.dir"]
    if "-m" in argv or "--multirun" in argv or not any(override_key(a) == "resume" for a in given) or not folders:
        return
    overrides = [a for a in given if not override_key(a).startswith("hydra.")]
    modules = local_plugin_modules(parse_overrides(overrides))
    checked_checkpoint(train_config(overrides, modules), Path(folders[-1]))


def main() -> None:
    """Entry point of ``genkit-train``; ``resume=DIR`` continues the run (or sweep) in DIR."""
    try:
        sys.argv = resume_arguments(sys.argv)
        check_before_start(sys.argv)
    except GenkitError as error:
        sys.stderr.write(f"genkit: {error}\n")
        sys.exit(2)
    run(task, "train")


if __name__ == "__main__":
    main()
