"""``genkit-eval``: score a checkpoint (``conf/eval.yaml``)."""

from __future__ import annotations

from omegaconf import DictConfig

from genkit.cli.app import run


def task(cfg: DictConfig) -> float:
    """One Hydra job: evaluate, return the NLL (so a sweep over checkpoints can compare them)."""
    from genkit.evaluate import run as evaluate

    return evaluate(cfg)["metrics"]["nll"]


def main() -> None:
    """Entry point of ``genkit-eval``."""
    run(task, "eval")


if __name__ == "__main__":
    main()
