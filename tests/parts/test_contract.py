"""The contract checker: deliberately broken parts are caught, named, and explained."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn
from torch.distributions import Normal

import genkit
from conftest import RATE, digits_folder
from genkit import DataSpec
from genkit.compose import build_model
from genkit.config import train_config
from genkit.errors import PartContractError
from genkit.registry import registry
from genkit.testing import check_part
from genkit.training.run import train

SPEC = DataSpec("image", (1, 8, 8), "unit_interval")


class WrongWidthEncoder(genkit.Encoder):
    """Promises 8 features and returns 7."""

    def __init__(self, spec: DataSpec) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(spec.numel, 7))
        self.out_features = 8

    def forward(self, x, mask=None):
        return self.net(x)


class RaisingEncoder(genkit.Encoder):
    """Fails inside forward, as a plugin with a bug would."""

    def __init__(self, spec: DataSpec) -> None:
        super().__init__()
        self.net = nn.Linear(3, 8)
        self.out_features = 8

    def forward(self, x, mask=None):
        return self.net(x)  # x is [B, 1, 8, 8]: a matmul shape error


class ElementwisePosterior(genkit.Posterior):
    """Returns Normal without Independent: event_shape [] instead of [latent_dim]."""

    def __init__(self, in_features: int, latent_dim: int) -> None:
        super().__init__()
        self.head = nn.Linear(in_features, 2 * latent_dim)

    def forward(self, features):
        loc, log_scale = self.head(features).chunk(2, -1)
        return Normal(loc, log_scale.exp())


class BatchedPrior(genkit.Prior):
    """Batch shape [latent_dim] instead of an event."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.register_buffer("loc", torch.zeros(latent_dim))

    def forward(self):
        return Normal(self.loc, torch.ones_like(self.loc))


class UnusedParameterEncoder(genkit.Encoder):
    """Holds a parameter the loss never reaches."""

    def __init__(self, spec: DataSpec, *, width: int = 8) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(spec.numel, width))
        self.forgotten = nn.Parameter(torch.zeros(3))
        self.out_features = width

    def forward(self, x, mask=None):
        return self.net(x)


class UnsavedStateEncoder(genkit.Encoder):
    """Keeps a random projection in a plain attribute: lost when a checkpoint is loaded."""

    def __init__(self, spec: DataSpec, *, width: int = 8) -> None:
        super().__init__()
        self.projection = torch.randn(spec.numel, width)
        self.out_features = width

    def forward(self, x, mask=None):
        return x.flatten(1) @ self.projection


def model_with(**parts: nn.Module) -> genkit.VAE:
    d = 4
    likelihood = registry("likelihood").get("bernoulli").cls(SPEC)
    defaults = {
        "encoder": registry("encoder").get("mlp").cls(SPEC),
        "prior": registry("prior").get("normal").cls(d),
        "decoder": registry("decoder").get("mlp").cls(SPEC, d, likelihood.param_shape),
        "likelihood": likelihood,
    }
    defaults.update(parts)
    defaults.setdefault("posterior", registry("posterior").get("gaussian").cls(defaults["encoder"].out_features, d))
    return genkit.VAE(spec=SPEC, latent_dim=d, **defaults)


def test_wellformed_parts_pass_and_the_model_is_untouched():
    model = model_with()
    model.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(5)
    genkit.parts.verify(model)
    after_check = torch.rand(1)
    torch.manual_seed(5)
    assert torch.equal(after_check, torch.rand(1)), "the probe must not consume the run's random stream"
    assert model.training and all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


@pytest.mark.parametrize(
    ("parts", "message"),
    [
        (
            {"encoder": WrongWidthEncoder(SPEC)},
            r"WrongWidthEncoder: forward\(x, mask\) has shape \[3, 7\], expected \[3, 8\]",
        ),
        ({"encoder": RaisingEncoder(SPEC)}, r"RaisingEncoder: raised RuntimeError: mat1 and mat2"),
        ({"posterior": ElementwisePosterior(128, 4)}, r"event_shape \[\], expected \[4\] \(wrap per-element"),
        ({"prior": BatchedPrior(4)}, r"BatchedPrior: forward\(\) has batch_shape \[4\], expected \[\]"),
    ],
)
def test_broken_parts_are_named_with_what_to_fix(parts, message):
    with pytest.raises(PartContractError, match=message):
        genkit.parts.verify(model_with(**parts))


@pytest.fixture
def temporary_encoder() -> Iterator:
    """Register a test encoder for one test, then remove it so other tests see the usual registry."""
    added = []

    def add(name: str, cls: type) -> None:
        genkit.register_encoder(name)(cls)
        added.append(name)

    yield add
    for name in added:
        del registry("encoder").entries[name]


def test_check_part_passes_builtin_parts():
    model = check_part("prior", "vamp", overrides=["prior.pseudo_inputs=16"])
    assert model.prior.raw_inputs.shape[0] == 16


def test_check_part_catches_a_parameter_without_gradient(temporary_encoder):
    temporary_encoder("forgetful", UnusedParameterEncoder)
    with pytest.raises(PartContractError, match=r"encoder 'forgetful' \(local:test_contract\): parameters forgotten"):
        check_part("encoder", "forgetful")


def test_check_part_catches_state_lost_on_reload(temporary_encoder):
    temporary_encoder("unsaved_state", UnsavedStateEncoder)
    with pytest.raises(PartContractError, match="rebuilt from its stored config computes a different bound"):
        check_part("encoder", "unsaved_state")


def test_composition_refuses_a_broken_registered_part(temporary_encoder):
    temporary_encoder("wrong_width", WrongWidthEncoder)
    cfg = OmegaConf.create(
        {
            "encoder": {"_target_": registry("encoder").get("wrong_width").target},
            "posterior": {"_target_": registry("posterior").get("gaussian").target},
            "prior": {"_target_": registry("prior").get("normal").target},
            "decoder": {"_target_": registry("decoder").get("mlp").target},
            "likelihood": {"_target_": registry("likelihood").get("bernoulli").target},
            "model": {"latent_dim": 4},
        }
    )
    with pytest.raises(PartContractError, match=r"encoder 'wrong_width' \(local:test_contract\)"):
        build_model(cfg, SPEC)


class ThreeExampleEncoder(genkit.Encoder):
    """Right on the probe's 3 examples only: it reshapes to a batch of 3, as a part tried on nothing else might."""

    def __init__(self, spec: DataSpec) -> None:
        super().__init__()
        self.net = nn.Linear(spec.numel, 8)
        self.out_features = 8

    def forward(self, x, mask=None):
        return self.net(x.reshape(3, -1))


def test_a_part_wrong_at_the_real_batch_size_is_named_at_its_first_batch(temporary_encoder, tmp_path):
    temporary_encoder("three_only", ThreeExampleEncoder)
    cfg = train_config(
        ["encoder=three_only", "data.batch_size=32", "+trainer.num_sanity_val_steps=0", "logger=none", "callbacks=none"]
    )
    with pytest.raises(
        PartContractError,
        match=r"on the first training batch of 32 examples .*encoder 'three_only' \(local:test_contract\): "
        r"raised RuntimeError: shape '\[3, -1\]' is invalid",
    ):
        train(cfg, tmp_path / "run")


def test_waveform_parts_pass_the_plugin_authors_check(tmp_path):
    folder = digits_folder(tmp_path)
    overrides = [
        "experiment=audio",
        f"data.path={folder}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "data.representation=waveform",
        f"data.sample_rate={RATE}",
        "data.duration=0.5",
        "encoder=conv1d",
        "decoder=conv1d",
        "encoder.channels=[8,16]",
        "decoder.channels=[16,8]",
        "model.latent_dim=4",
    ]
    model = check_part("decoder", "conv1d", data="audio_folder", overrides=overrides)
    assert model.decode(torch.zeros(2, 4)).mean.shape == (2, 1, RATE // 2)
