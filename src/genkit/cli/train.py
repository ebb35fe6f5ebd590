"""``genkit-train``: the Hydra training app (``conf/train.yaml``).

``resume=DIR`` re-reads the overrides the run in DIR was started with (Hydra keeps them in
``DIR/.hydra/overrides.yaml``), applies the new ones on top and runs in DIR again. With
``-m`` DIR is a sweep folder: every job of the same sweep command finds its own folder,
finished jobs are skipped and interrupted ones continue from their checkpoints.
``resume=auto`` makes each job continue its own folder, whatever the command line.
"""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from genkit import config
from genkit.cli.app import CommandLine, override_key, refuse, run
from genkit.cli.process import console_script
from genkit.errors import GenkitError, ResumeError, RunFolderError, SweepConfigError
from genkit.training.folder import as_write_error

#: ``resume=auto``: each job continues whatever its own run folder holds (nothing: a fresh start),
#: so the same command with a fixed ``hydra.run.dir``/``hydra.sweep.dir``, or a requeued SLURM
#: job, restarts where it stopped.
AUTO = "auto"
#: Overrides a resumed run never inherits from the original command.
NOT_INHERITED = ("resume", "hydra.run.dir", "hydra.sweep.dir", "overwrite")


def task(cfg: DictConfig) -> float:
    """One Hydra job: train, return the metric a sweeper optimises (``cfg.objective``)."""
    from hydra.core.hydra_config import HydraConfig

    from genkit.training.run import train

    metrics = train(cfg, Path(HydraConfig.get().runtime.output_dir))
    return metrics.get(cfg.objective, float("nan"))


def resumed(command_line: CommandLine) -> CommandLine:
    """The command line to run: with ``resume=DIR`` expanded (``resume=auto`` is left as it is).

    Single run: the run's original overrides, then the new ones (a new value of the same
    key wins), then ``hydra.run.dir=DIR``. Multirun: ``hydra.sweep.dir=DIR`` is added and
    the sweep command itself says which jobs there are.

    Raises:
        ResumeError: DIR does not exist or holds no genkit run.
    """
    value = command_line.value("resume")
    if value is None or value == AUTO:
        return command_line
    folder = Path(value).expanduser()
    if not folder.is_dir():
        raise ResumeError(f"resume={folder}: there is no such folder; give the run (or sweep) folder to continue")
    if command_line.multirun:
        return CommandLine.parse([*command_line.argv, f"hydra.sweep.dir={folder}"])
    recorded = folder / ".hydra" / "overrides.yaml"
    if not recorded.is_file():
        raise ResumeError(
            f"resume={folder}: {recorded} is missing, so this is not a genkit-train run folder "
            "(for a sweep folder add -m and the sweep's arguments)"
        )
    original = [str(o) for o in OmegaConf.load(recorded)]
    replaced = {override_key(w) for w in command_line.words} | set(NOT_INHERITED)
    inherited = [o for o in original if override_key(o) not in replaced]
    new = [*inherited, *command_line.words, f"hydra.run.dir={folder}"]
    return CommandLine.parse([command_line.program, *command_line.flags, *new])


def check_resume(command_line: CommandLine) -> None:
    """Refuse a single-run resume before Hydra starts, so a refused one writes nothing in the run folder."""
    from genkit.training.resume import checked_checkpoint

    folder = command_line.value("hydra.run.dir")
    if command_line.multirun or command_line.value("resume") is None or folder is None:
        return
    overrides = [w for w in command_line.words if not override_key(w).startswith("hydra.")]
    checked_checkpoint(config.train_config(overrides, command_line.plugin_modules()), Path(folder))


def check_run_folder(command_line: CommandLine) -> None:
    """Before Hydra writes anything into an explicitly named run (or sweep) folder: refuse when a
    running genkit run holds it, and a new run (not ``resume=``) where another run's results are,
    unless ``overwrite=true``, which moves those results aside first."""
    from genkit.training.folder import holder, in_use, launched_rank, move_aside, results_in

    if launched_rank() != 0:  # another process of the same run (a DDP rank, a SLURM task)
        return
    named = command_line.value("hydra.sweep.dir" if command_line.multirun else "hydra.run.dir")
    if named is None or not Path(named).is_dir():
        return
    folder = Path(named)
    runs = [folder, *(p for p in folder.iterdir() if p.is_dir())] if command_line.multirun else [folder]
    for run_folder in runs:
        if by := holder(run_folder):
            raise in_use(run_folder, by)
    if command_line.value("resume") is not None:
        return
    found = [
        f"{run_folder.relative_to(folder.parent)}/{name}" for run_folder in runs for name in results_in(run_folder)
    ]
    if not found:
        return
    if str(command_line.value("overwrite")).lower() == "true":
        sys.stderr.write(f"genkit: overwrite=true: moved what was in {folder} to {move_aside(folder)}\n")
        return
    shown = ", ".join(found[:4]) + (", ..." if len(found) > 4 else "")
    raise RunFolderError(
        f"{folder} already holds a run ({shown}): continue it with resume={folder}, train into another folder, "
        f"or add overwrite=true to move it to {folder.name}-replaced-<time> first"
    )


def check_sweep(command_line: CommandLine) -> None:
    """Compose every job of a grid sweep before any starts, so an override that one job's parts do
    not have (``encoder=conv,mlp encoder.channels=[8]``) stops the sweep before the first job trains.
    Searches (``hparams_search=...``) draw their jobs as they go and are left to their sweeper."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    if not command_line.multirun:
        return
    overrides = [o for o in command_line.overrides if not o.key_or_group.startswith("hydra")]
    if any(o.key_or_group in ("hparams_search", "resume") for o in overrides):
        return
    modules = command_line.plugin_modules()
    config.prepare(modules)
    command_line.check()  # unknown part names first: they get a did-you-mean
    jobs = [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]
    for number, job in enumerate(jobs):
        try:
            config.check_run_options(config.train_config(job, modules))
        except GenkitError as error:
            raise SweepConfigError(
                f"sweep job {number} of {len(jobs)} ({' '.join(job)}): {error}. No job was started."
            ) from None
        except Exception as error:  # Hydra and OmegaConf composition errors, whatever their class
            reason = " ".join(f"{error} {error.__cause__ or ''}".split())
            raise SweepConfigError(
                f"sweep job {number} of {len(jobs)} ({' '.join(job)}) cannot be composed: {reason}. "
                "No job was started; `genkit list` shows every part's parameters."
            ) from None


def main() -> None:
    """Entry point of ``genkit-train``; ``resume=DIR`` continues the run (or sweep) in DIR."""
    try:
        command_line = resumed(CommandLine.parse(sys.argv))
        check_resume(command_line)
        check_run_folder(command_line)
        check_sweep(command_line)
    except GenkitError as error:
        refuse(error)
    except OSError as error:  # moving a finished run aside in a folder that cannot be written
        if (refused := as_write_error(error)) is None:
            raise
        refuse(refused)
    run(task, "train", command_line)


def script() -> None:
    """The ``genkit-train`` console script: ``main``, then a quick exit (``genkit.cli.process``)."""
    console_script(main)


if __name__ == "__main__":
    script()
