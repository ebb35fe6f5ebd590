"""``genkit-train``: the Hydra training app (``conf/train.yaml``)."""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig

from genkit import plugins
from genkit.cli.app import check_overrides, local_plugin_modules, parse_overrides, run
from genkit.errors import GenkitError, SweepConfigError
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


def check_sweep(argv: list[str]) -> None:
    """Compose every job of a grid sweep before any starts, so an override that one job's parts do
    not have (``encoder=conv,mlp encoder.channels=[8]``) stops the sweep before the first job trains.
    Searches (``hparams_search=...``) draw their jobs as they go and are left to their sweeper."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    from genkit.compose import train_config

    if "-m" not in argv and "--multirun" not in argv:
        return
    overrides = [o for o in parse_overrides(argv[1:]) if not o.key_or_group.startswith("hydra")]
    if any(o.key_or_group in ("hparams_search", "resume") for o in overrides):
        return
    modules = local_plugin_modules(overrides)
    plugins.load(modules)
    check_overrides(overrides)  # unknown part names first: they get a did-you-mean
    jobs = [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]
    for number, job in enumerate(jobs):
        try:
            train_config(job, modules)
        except Exception as error:  # Hydra and OmegaConf composition errors, whatever their class
            reason = " ".join(f"{error} {error.__cause__ or ''}".split())
            raise SweepConfigError(
                f"sweep job {number} of {len(jobs)} ({' '.join(job)}) cannot be composed: {reason}. "
                "No job was started; `genkit list` shows every part's parameters."
            ) from None


def main() -> None:
    """Entry point of ``genkit-train``; ``resume=DIR`` continues the run (or sweep) in DIR."""
    try:
        sys.argv = resume_arguments(sys.argv)
        check_before_start(sys.argv)
        check_sweep(sys.argv)
    except GenkitError as error:
        sys.stderr.write(f"genkit: {error}\n")
        sys.exit(2)
    run(task, "train")


if __name__ == "__main__":
    main()
