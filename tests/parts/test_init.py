"""The ``init`` option of the built-in parts: each scheme draws the weights its formula says, the
seed preset uses Keras's, and a name no scheme has is refused at composition."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from conftest import parts_config
from genkit import DataSpec
from genkit.compose import build_model
from genkit.config import train_config
from genkit.data.images import Digits
from genkit.errors import PartConfigError
from genkit.parts.decoders import ConvDecoder
from genkit.parts.encoders import ConvEncoder, MLPEncoder
from genkit.parts.posteriors import GaussianPosterior
from genkit.training.run import train

WIDE = DataSpec("image", (1, 20, 20), "unit_interval")  # 400 inputs: enough weights for tight statistics
UNIFORM_BOUND = {  # the largest weight each uniform scheme can draw, from its fans
    "xavier_uniform": lambda fan_in, fan_out: math.sqrt(6 / (fan_in + fan_out)),
    "glorot_uniform": lambda fan_in, fan_out: math.sqrt(6 / (fan_in + fan_out)),
    "kaiming_uniform": lambda fan_in, fan_out: math.sqrt(6 / fan_in),
    "he_uniform": lambda fan_in, fan_out: math.sqrt(6 / fan_in),
}
NORMAL_STD = {
    "xavier_normal": lambda fan_in, fan_out: math.sqrt(2 / (fan_in + fan_out)),
    "kaiming_normal": lambda fan_in, fan_out: math.sqrt(2 / fan_in),
}


def fans(weight: torch.Tensor) -> tuple[int, int]:
    """PyTorch's fans of a weight (and Keras's for the same layer): dims 1 and 0 times the kernel size."""
    kernel = weight[0, 0].numel()
    return weight.shape[1] * kernel, weight.shape[0] * kernel


def check_drawn(weight: torch.Tensor, init: str) -> None:
    fan_in, fan_out = fans(weight)
    if init in UNIFORM_BOUND:
        bound = UNIFORM_BOUND[init](fan_in, fan_out)
        assert weight.abs().max() <= bound
        assert weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.06)
    elif init in NORMAL_STD:
        assert weight.mean().abs() < 0.1 * NORMAL_STD[init](fan_in, fan_out)
        assert weight.std().item() == pytest.approx(NORMAL_STD[init](fan_in, fan_out), rel=0.06)
    else:  # orthogonal: orthonormal rows (or columns, whichever are fewer)
        flat = weight.flatten(1)
        gram = flat @ flat.T if flat.shape[0] <= flat.shape[1] else flat.T @ flat
        torch.testing.assert_close(gram, torch.eye(len(gram)), atol=1e-4, rtol=0)


@pytest.mark.parametrize("init", [*UNIFORM_BOUND, *NORMAL_STD, "orthogonal"])
def test_each_scheme_draws_dense_and_convolution_weights_by_its_formula_with_zero_biases(init):
    torch.manual_seed(0)
    dense = MLPEncoder(WIDE, hidden=(300, 200), init=init)
    conv = ConvEncoder(WIDE, channels=(32, 64), hidden=0, init=init)
    transposed = ConvDecoder(WIDE, 4, (1, 20, 20), channels=(64, 32), hidden=0, init=init)
    layers = [m for part in (dense, conv, transposed) for m in part.modules() if hasattr(m, "weight")]
    assert {type(m) for m in layers} == {nn.Linear, nn.Conv2d, nn.ConvTranspose2d}
    for layer in layers:
        if layer.weight.numel() >= 2000:  # statistics of small layers are too loose to test
            check_drawn(layer.weight, init)
        assert not layer.bias.any()


def test_torch_keeps_pytorchs_own_initialisation():
    torch.manual_seed(3)
    ours = MLPEncoder(WIDE, hidden=(50,), init="torch").net[0]
    torch.manual_seed(3)
    plain = nn.Linear(400, 50)
    torch.testing.assert_close(ours.weight, plain.weight, rtol=0, atol=0)
    torch.testing.assert_close(ours.bias, plain.bias, rtol=0, atol=0)
    assert ours.bias.any()


def test_the_posterior_draws_its_mean_and_scale_heads_as_two_layers():
    """Keras's z_mean and z_log_var are two Dense layers: glorot's fan_out is the latent size, not twice it."""
    torch.manual_seed(0)
    head = GaussianPosterior(600, 200, init="glorot_uniform").head
    for rows in head.weight.chunk(2):
        check_drawn(rows, "glorot_uniform")  # bound sqrt(6 / (600 + 200)), not sqrt(6 / (600 + 400))
    assert head.weight.abs().max() > math.sqrt(6 / 1000) and not head.bias.any()


def test_the_seed_preset_initialises_every_layer_as_keras_does():
    cfg = train_config(["experiment=seed_mnist", "data=digits", "model.latent_dim=20"])
    assert cfg.encoder.init == cfg.decoder.init == cfg.posterior.init == "glorot_uniform"
    torch.manual_seed(0)
    model = build_model(cfg, Digits().spec)
    layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(layers) == 6  # 2 encoder layers, the posterior's two heads in one, 3 decoder layers
    for layer in layers:
        for rows in layer.weight.chunk(2 if layer is model.posterior.head else 1):
            assert rows.abs().max() <= math.sqrt(6 / sum(fans(rows)))
        assert not layer.bias.any()


@pytest.mark.parametrize("kind", ["encoder", "decoder", "posterior"])
def test_an_unknown_scheme_is_refused_at_composition_with_the_choices(kind):
    with pytest.raises(PartConfigError, match=r"unknown init 'glorot'; choose one of \['torch', .*'glorot_uniform'"):
        build_model(parts_config(**{kind: {"init": "glorot"}}), DataSpec("image", (1, 8, 8), "unit_interval"))


def test_the_seed_preset_at_latent_2_trains_as_well_as_before_on_digits(tmp_path):
    """Keras's initialisation closes the gap at large latents; at the seed's latent 2 it must not cost anything."""

    def final_nelbo(init: str, seed: int) -> float:
        options = [f"{kind}.init={init}" for kind in ("encoder", "decoder", "posterior")]
        cfg = train_config(
            ["experiment=seed_mnist", "data=digits", f"seed={seed}", "logger=none", "callbacks=none", *options]
        )
        return train(cfg, tmp_path / f"{init}_{seed}")["val/nelbo"]

    before = [final_nelbo("torch", seed) for seed in (0, 1)]
    after = [final_nelbo("glorot_uniform", seed) for seed in (0, 1)]
    assert max(before) < 30  # 10 epochs of the seed model on digits: ~27.3 nats (seeds 0-2 within 0.4)
    assert abs(sum(after) / 2 - sum(before) / 2) < 1.0
