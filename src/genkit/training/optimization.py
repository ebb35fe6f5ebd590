"""How a model's parameters are updated, built in one place and applied by the model's own step.

``Optimization.from_config`` reads ``optim`` (a ``torch.optim`` class), ``scheduler`` (a
``torch.optim.lr_scheduler`` class and when it steps) and the ``trainer`` settings that shape a
step (gradient clipping, accumulation, and the precision that decides between a fused and a
grouped optimiser implementation). genkit steps the optimiser itself (Lightning's manual
optimisation): ``Optimization.step`` does backward, accumulation, the step and per-step
schedules, ``clip`` runs where mixed precision has unscaled the gradients, and
``step_epoch_schedule`` steps per-epoch schedules after validation.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from genkit.errors import NonFiniteLossError, PartConfigError, TrainerConfigError

if TYPE_CHECKING:  # Lightning is imported when training, not when a config is checked
    from lightning.pytorch import LightningModule

OptimizerFactory = Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]
#: Trainer arguments the model applies itself: Lightning's manual optimisation does not take them.
STEP_ARGUMENTS = ("gradient_clip_val", "gradient_clip_algorithm", "accumulate_grad_batches", "steps_per_execution")
#: Lightning precisions that run a gradient scaler (``16-mixed``) or autocast (``bf16-mixed``).
MIXED_PRECISIONS = frozenset({"16-mixed", "bf16-mixed", "16", "bf16"})
#: When a learning-rate schedule steps.
SCHEDULE_INTERVALS = ("epoch", "step")


@dataclass(frozen=True)
class OptimizerSteps:
    """How training steps the optimiser: Lightning's Trainer arguments of the same names, applied
    by the model itself because its manual optimisation does not take them, and genkit's own
    ``steps_per_execution``.

    Attributes:
        gradient_clip_val: clip the gradients' norm (or values) to this; None or 0: no clipping.
        gradient_clip_algorithm: ``norm`` or ``value``.
        accumulate_grad_batches: add up the gradients of this many batches per optimiser step.
        steps_per_execution: training batches per batch Lightning runs (``genkit.data.groups``).
    """

    gradient_clip_val: float | None = None
    gradient_clip_algorithm: str = "norm"
    accumulate_grad_batches: int = 1
    steps_per_execution: int = 1

    def __post_init__(self) -> None:
        if self.gradient_clip_algorithm not in ("norm", "value"):
            raise ValueError(
                f"trainer.gradient_clip_algorithm must be 'norm' or 'value', got {self.gradient_clip_algorithm!r}"
            )
        for name in ("accumulate_grad_batches", "steps_per_execution"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"trainer.{name} must be a whole number >= 1, got {value!r}")
        clip = self.gradient_clip_val
        number = isinstance(clip, int | float) and not isinstance(clip, bool)
        if clip is not None and not (number and 0 <= clip < math.inf):
            raise ValueError(f"trainer.gradient_clip_val must be a finite number >= 0 (null: off), got {clip!r}")

    @classmethod
    def from_trainer(cls, trainer: DictConfig | dict) -> OptimizerSteps:
        """Clipping and accumulation from ``cfg.trainer``.

        Raises:
            TrainerConfigError: an unknown clipping algorithm, or a value that is not a number in range.
        """
        arguments = {name: trainer[name] for name in STEP_ARGUMENTS if trainer.get(name) is not None}
        try:
            return cls(**arguments)
        except (TypeError, ValueError) as error:
            raise TrainerConfigError(str(error)) from error


@dataclass(frozen=True)
class LearningRateSchedule:
    """A ``torch.optim.lr_scheduler`` class (as ``optimizer -> scheduler``) and when it steps.

    Attributes:
        factory: builds the scheduler for the model's optimiser.
        interval: ``epoch`` or ``step``.
        monitor: the logged metric ``ReduceLROnPlateau`` watches.
    """

    factory: Callable[[torch.optim.Optimizer], Any]
    interval: str
    monitor: str


@dataclass
class Optimization:
    """The optimiser, its learning-rate schedule (None: constant) and how it steps.

    A model built without a config (``genkit.VAE(...)`` in Python) trains with Adam at 1e-3,
    genkit's default; set ``model.optimization.steps`` to clip or accumulate gradients when
    training it in your own Lightning Trainer.
    """

    optimizer: OptimizerFactory = partial(torch.optim.Adam, lr=1e-3)
    schedule: LearningRateSchedule | None = None
    steps: OptimizerSteps = field(default_factory=OptimizerSteps)

    @classmethod
    def from_config(cls, cfg: DictConfig) -> Optimization:
        """From ``cfg.optim``, ``cfg.scheduler`` and the step settings of ``cfg.trainer``; bad
        values fail here, before anything is built.

        Raises:
            PartConfigError: a class outside torch.optim(.lr_scheduler) or arguments it refuses.
            TrainerConfigError: clipping or accumulation settings that make no sense.
        """
        trainer = cfg.get("trainer") or {}
        steps = OptimizerSteps.from_trainer(trainer)
        optimizer = optimizer_factory(cfg.get("optim"), trainer)
        schedule = learning_rate_schedule(cfg.get("scheduler"), cfg.get("objective", ""))
        return cls(optimizer or cls.optimizer, schedule, steps)

    def configure(self, parameters: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer | dict[str, Any]:
        """What ``LightningModule.configure_optimizers`` returns."""
        optimizer = self.optimizer(parameters)
        if self.schedule is None:
            return optimizer
        scheduler = {"scheduler": self.schedule.factory(optimizer), "interval": self.schedule.interval}
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    def step(self, module: LightningModule, loss: Tensor, batch_idx: int, batches: float) -> None:
        """Backward, then every ``accumulate_grad_batches`` batches (and at the epoch's last of
        ``batches``) one optimiser step and a step of a per-step learning-rate schedule: what
        Lightning's automatic loop does, without its per-step closure (~0.16 ms a step on CPU).
        Under DDP, batches that only accumulate skip the gradient all-reduce."""
        accumulate = self.steps.accumulate_grad_batches
        stepping = (batch_idx + 1) % accumulate == 0 or batch_idx + 1 >= batches
        strategy = module.trainer.strategy
        no_sync = not stepping and hasattr(strategy, "block_backward_sync")  # a ParallelStrategy (DDP, FSDP)
        with strategy.block_backward_sync() if no_sync else nullcontext():
            module.manual_backward(loss / accumulate if accumulate > 1 else loss)
        if not stepping:
            return
        optimizer = module.optimizers()
        optimizer.step()
        optimizer.zero_grad()
        if self.schedule is not None and self.schedule.interval == "step":
            module.lr_schedulers().step()

    def clip(self, module: LightningModule, optimizer: torch.optim.Optimizer) -> None:
        """Clip the gradients as ``steps`` say (from ``on_before_optimizer_step``, where mixed
        precision has unscaled them)."""
        if self.steps.gradient_clip_val:
            module.clip_gradients(optimizer, self.steps.gradient_clip_val, self.steps.gradient_clip_algorithm)

    def step_epoch_schedule(self, module: LightningModule, train: dict[str, Tensor]) -> None:
        """Step a per-epoch learning-rate schedule at the end of the training epoch (after its
        validation); ``ReduceLROnPlateau`` gets its monitored metric (``train``: the epoch's train means)."""
        if self.schedule is None or self.schedule.interval != "epoch":
            return
        scheduler = module.lr_schedulers()
        if not isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step()
            return
        metrics = {**module.trainer.callback_metrics, **train}
        if self.schedule.monitor in metrics:  # absent in epochs that skip validation
            scheduler.step(float(metrics[self.schedule.monitor]))


def torch_factory(group: str, node: Any, module: str, probe: Callable[[], Any]) -> Any:
    """``node`` as a partial of a class from the torch module ``module`` (the only classes
    allowed), called once on ``probe()`` so that bad arguments fail now, not when training starts."""
    target = str(node.get("_target_", ""))
    if not target.startswith(f"{module}."):
        raise PartConfigError(f"{group}._target_ must be a {module} class, got {target!r}")
    from hydra.utils import instantiate

    factory = instantiate(node, _partial_=True)
    try:
        factory(probe())
    except (TypeError, ValueError, KeyError) as error:
        raise PartConfigError(f"{group} {target} refused its configuration: {error}") from error
    return factory


def probe_parameters() -> list[torch.nn.Parameter]:
    """One parameter to try an optimiser's arguments on."""
    return [torch.nn.Parameter(torch.zeros(1))]


def optimizer_factory(node: Any, trainer: DictConfig | dict) -> OptimizerFactory | None:
    """The ``optim`` node as ``params -> Optimizer`` (None without one); only ``torch.optim`` classes.

    Unless the node chooses (``fused`` or ``foreach``), a class with a fused implementation
    (Adam, AdamW, SGD, Adagrad) gets it: one kernel for the whole step, on CPU about three
    times faster than ``foreach`` for small models. Lightning cannot clip gradients that a
    fused step unscales itself, so with ``trainer.gradient_clip_val`` under a mixed
    precision the grouped ``foreach`` implementation is used instead.
    """
    if node is None:
        return None
    if "fused" not in node and "foreach" not in node:
        cls = getattr(torch.optim, str(node.get("_target_", "")).removeprefix("torch.optim."), None)
        if isinstance(cls, type) and "fused" in inspect.signature(cls).parameters:
            clipped_amp = trainer.get("gradient_clip_val") and str(trainer.get("precision")) in MIXED_PRECISIONS
            implementation = {"foreach": True} if clipped_amp else {"fused": True}
            plain = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
            node = OmegaConf.create({**plain, **implementation})
    return torch_factory("optim", node, "torch.optim", probe_parameters)


def learning_rate_schedule(node: Any, objective: str) -> LearningRateSchedule | None:
    """The ``scheduler`` node as a ``LearningRateSchedule`` (None without one); only
    ``torch.optim.lr_scheduler`` classes. ``interval`` and ``monitor`` (default: the run's
    ``objective``) are genkit's keys, the rest the class's."""
    if node is None:
        return None
    arguments = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    interval, monitor = arguments.pop("interval", "epoch"), arguments.pop("monitor", objective)
    if interval not in SCHEDULE_INTERVALS:
        raise PartConfigError(f"scheduler.interval must be epoch or step, got {interval!r}")
    factory = torch_factory(
        "scheduler", arguments, "torch.optim.lr_scheduler", lambda: torch.optim.SGD(probe_parameters(), lr=1.0)
    )
    if interval == "step" and factory.func is torch.optim.lr_scheduler.ReduceLROnPlateau:
        raise PartConfigError(
            "scheduler ReduceLROnPlateau watches an epoch metric (scheduler.monitor); use scheduler.interval=epoch"
        )
    return LearningRateSchedule(factory, interval, monitor)


def guard_finite(
    module: LightningModule, loss: Tensor, flag: Tensor | None, batch_idx: int, batches: float
) -> Tensor | None:
    """Stop on a NaN/inf loss before the epoch's checkpoint is written, so the last one on disk is good;
    returns the running flag of a non-finite loss.

    On the CPU reading the loss is free, so every step's is checked. On an accelerator it
    would force a sync, so a flag of non-finite losses stays on the device and is read every
    ``log_every_n_steps`` steps and at the end of each epoch (batch ``batch_idx`` of ``batches``).
    """
    if loss.device.type == "cpu":
        stop = not math.isfinite(loss.item())
    else:
        bad = ~torch.isfinite(loss.detach())
        flag = bad if flag is None else flag | bad
        due = module.global_step % module.trainer.log_every_n_steps == 0 or batch_idx + 1 >= batches
        stop = due and bool(flag)
    if stop:
        if module.global_step == 0:  # no update yet: the learning rate cannot be the cause
            raise NonFiniteLossError(
                f"the training loss was {loss.item()} before the first optimiser step, at the initial weights: a part "
                "computes a NaN or infinite value in training mode on this data (the parts' contract check passed "
                "on the first batch in eval mode, so look at dropout, batch statistics or the model options)"
            )
        raise NonFiniteLossError(
            f"the training loss became {loss.item()} by step {module.global_step} (epoch {module.current_epoch}); "
            "training stopped and the last checkpoint written before it is kept. Lower optim.lr, "
            "set trainer.gradient_clip_val=1, or use likelihood.min_sigma / a KL warm-up."
        )
    return flag
