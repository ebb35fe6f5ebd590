"""Training behaviour with a real Lightning Trainer: the NaN guard and exact epoch metrics."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import Tensor

from genkit import build_model
from genkit.data.images import Digits
from genkit.errors import NonFiniteLossError
from genkit.likelihoods import BernoulliLikelihood
from test_maths import SPEC, config


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
