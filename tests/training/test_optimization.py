"""Training with a real Lightning Trainer: the NaN guard, exact epoch metrics, and genkit's own
optimiser steps (gradient accumulation and clipping, the fused or grouped optimiser), with the
optimisation settings built from config."""

from __future__ import annotations

import os
from functools import partial

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import OmegaConf
from torch import Tensor

from conftest import IMAGE_SPEC as SPEC
from conftest import parts_config as config
from genkit import VAE, build_model
from genkit.data.images import Digits
from genkit.errors import NonFiniteLossError, TrainerConfigError
from genkit.parts.likelihoods import BernoulliLikelihood
from genkit.training.optimization import OptimizerSteps, optimizer_factory
from genkit.training.run import Unprofiled, build_trainer, skip_nvml_probe_without_gpu


class PoisonedAfter(BernoulliLikelihood):
    """Bernoulli whose parameters turn to NaN after a number of training calls."""

    def __init__(self, spec, steps: int) -> None:  # noqa: ANN001
        super().__init__(spec)
        self.steps = steps
        self.calls = 0

    def forward(self, params: Tensor, mask: Tensor | None = None):  # noqa: ANN201
        self.calls += self.training
        return super().forward(params * float("nan") if self.calls > self.steps else params, mask)


def trainer(tmp_path, **kwargs) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        **kwargs,
    )


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    model = build_model(config(), SPEC)
    model.likelihood = PoisonedAfter(SPEC, steps=25)  # digits: 10 steps per epoch; poisoned in epoch 3
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    with pytest.raises(NonFiniteLossError, match="loss became nan by step 25.*last checkpoint written before it"):
        trainer(tmp_path, max_epochs=5, callbacks=[checkpoint]).fit(model, datamodule=Digits())
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert saved["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in saved["state_dict"].values())


def test_a_nan_loss_at_the_initial_weights_is_not_blamed_on_the_learning_rate(tmp_path):
    model = build_model(config(), SPEC)
    model.likelihood = PoisonedAfter(SPEC, steps=0)  # NaN in training mode only: the eval-mode contract check passes
    with pytest.raises(NonFiniteLossError, match=r"nan before the first optimiser step, at the initial weights") as e:
        trainer(tmp_path, max_epochs=1).fit(model, datamodule=Digits())
    assert "optim.lr" not in str(e.value)


def test_validation_metrics_are_exact_means_over_the_split(tmp_path):
    torch.manual_seed(0)
    model = build_model(config(), SPEC)
    data = Digits()
    results = trainer(tmp_path, max_epochs=1, limit_train_batches=0).validate(model, datamodule=data, verbose=False)[0]
    data.setup()
    torch.manual_seed(0)
    with torch.no_grad():
        expected = model.elbo_terms(data.splits["val"]["x"][:512])  # one validation batch holds the whole split
    assert results["val/kl"] == pytest.approx(expected.kl.mean().item(), rel=1e-5)  # analytic: exact
    assert results["val/rec"] == pytest.approx(expected.rec.mean().item(), rel=0.01)  # one z per example
    mean = expected.posterior.mean
    active = ((mean.pow(2).mean(0) - mean.mean(0).pow(2)) > 0.01).sum().item()
    assert results["val/active_units"] == active


def sgd_model(lr: float) -> VAE:
    """The test model with plain SGD, whose update is exactly ``-lr * gradient``."""
    torch.manual_seed(0)
    model = build_model(config(), SPEC)
    model.optimization.optimizer = partial(torch.optim.SGD, lr=lr)
    return model


def weights(model: VAE) -> Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_accumulated_batches_make_the_same_step_as_one_batch_of_their_size(tmp_path):
    whole = sgd_model(lr=0.1)
    torch.manual_seed(1)
    trainer(tmp_path, max_steps=1, limit_val_batches=0).fit(whole, datamodule=Digits(batch_size=128))
    halves = sgd_model(lr=0.1)
    halves.optimization.steps = OptimizerSteps(accumulate_grad_batches=2)
    torch.manual_seed(1)  # two batches of 64 draw the same latent noise as one of 128
    fit = trainer(tmp_path / "halves", max_steps=1, limit_val_batches=0)
    fit.fit(halves, datamodule=Digits(batch_size=64))
    assert fit.global_step == 1 and fit.fit_loop.epoch_loop.batch_progress.total.completed == 2
    assert torch.allclose(weights(halves), weights(whole), atol=1e-6)
    assert not torch.allclose(weights(whole), weights(sgd_model(lr=0.1)))


def test_an_epoch_ending_mid_accumulation_still_steps(tmp_path):
    model = sgd_model(lr=0.1)
    model.optimization.steps = OptimizerSteps(accumulate_grad_batches=3)
    fit = trainer(tmp_path, max_epochs=1, limit_val_batches=0)
    fit.fit(model, datamodule=Digits())  # 10 batches: steps after 3, 6, 9 and the last one
    assert fit.global_step == 4


@pytest.mark.parametrize("algorithm", ["value", "norm"])
def test_gradients_are_clipped_before_the_step(algorithm, tmp_path):
    start = weights(sgd_model(lr=1.0))
    model = sgd_model(lr=1.0)
    model.optimization.steps = OptimizerSteps(gradient_clip_val=1e-3, gradient_clip_algorithm=algorithm)
    trainer(tmp_path, max_steps=1, limit_val_batches=0).fit(model, datamodule=Digits())
    change = weights(model) - start
    measure = change.abs().max() if algorithm == "value" else change.norm()
    assert 0 < measure <= 1e-3 + 1e-6  # float32 rounding of weight - start
    unclipped = sgd_model(lr=1.0)
    trainer(tmp_path / "unclipped", max_steps=1, limit_val_batches=0).fit(unclipped, datamodule=Digits())
    assert (weights(unclipped) - start).norm() > 1e-2


def test_step_settings_that_make_no_sense_are_one_clear_error():
    with pytest.raises(TrainerConfigError, match="gradient_clip_algorithm must be 'norm' or 'value', got 'max'"):
        OptimizerSteps.from_trainer(OmegaConf.create({"gradient_clip_algorithm": "max"}))
    with pytest.raises(TrainerConfigError, match="accumulate_grad_batches must be a whole number >= 1, got 0"):
        OptimizerSteps.from_trainer(OmegaConf.create({"accumulate_grad_batches": 0}))
    with pytest.raises(TrainerConfigError, match="accumulate_grad_batches must be a whole number >= 1, got 2.5"):
        OptimizerSteps.from_trainer(OmegaConf.create({"accumulate_grad_batches": 2.5}))
    with pytest.raises(TrainerConfigError, match="gradient_clip_val must be a finite number >= 0 .*, got nan"):
        OptimizerSteps.from_trainer(OmegaConf.create({"gradient_clip_val": float("nan")}))
    unset = OmegaConf.create({"max_epochs": 3, "gradient_clip_val": None})
    assert OptimizerSteps.from_trainer(unset) == OptimizerSteps()


def test_without_a_gpu_cuda_checks_skip_nvml(monkeypatch):
    monkeypatch.setenv("PYTORCH_NVML_BASED_CUDA_CHECK", "1")  # what importing Lightning sets
    skip_nvml_probe_without_gpu()
    expected = "1" if torch.cuda.is_available() else "0"
    assert os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] == expected
    assert torch.cuda.is_available() is (expected == "1")


def test_without_a_chosen_profiler_lightnings_hooks_open_no_profiling_context(tmp_path):
    from genkit.config import train_config

    trainer = build_trainer(train_config(["logger=none"]), [], [], tmp_path)
    assert isinstance(trainer.profiler, Unprofiled)
    assert trainer.profiler.profile("[Callback]Media.on_train_batch_end") is Unprofiled.UNTIMED


@pytest.mark.parametrize("clip", [None, 1.0])
def test_bf16_mixed_precision_trains_with_the_optimizer_compose_picks(clip, tmp_path):
    """Fused Adam without clipping; with clipping the foreach one, which Lightning can clip under AMP."""
    model = build_model(config(), SPEC)
    cfg = {"optim": {"_target_": "torch.optim.Adam"}, "trainer": {"precision": "bf16-mixed", "gradient_clip_val": clip}}
    model.optimization.optimizer = optimizer_factory(OmegaConf.create(cfg["optim"]), cfg["trainer"])
    model.optimization.steps = OptimizerSteps(gradient_clip_val=clip)
    fit = trainer(tmp_path, max_epochs=1, precision="bf16-mixed")
    fit.fit(model, datamodule=Digits())
    assert fit.global_step == 10 and torch.isfinite(fit.callback_metrics["val/nelbo"])
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert bool(fit.optimizers[0].defaults["fused"]) is (clip is None)
