"""Composition: every registered part with every compatible data module, and the refusals."""

from __future__ import annotations

import itertools
import warnings
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf

import genkit
from genkit import DataSpec, build_model
from genkit.compose import build_part
from genkit.config import train_config
from genkit.errors import (
    DataNotFoundError,
    IncompatiblePartsError,
    PartConfigError,
    UnknownPartError,
    UsageError,
    WiringError,
)
from genkit.registry import registry
from genkit.training.optimization import learning_rate_schedule, optimizer_factory
from genkit.training.run import train


def node(kind: str, name: str, **params) -> dict:
    return {"_target_": registry(kind).get(name).target, **params}


def config(data: str = "digits", **parts: str) -> dict:
    names = {"encoder": "mlp", "posterior": "gaussian", "prior": "normal", "decoder": "mlp", "likelihood": "bernoulli"}
    names.update(parts)
    cfg = {kind: node(kind, name) for kind, name in names.items()}
    return OmegaConf.create({**cfg, "data": node("data", data), "model": {"latent_dim": 4}, "seed": 0})


def data_spec(name: str) -> DataSpec | None:
    """The data module's spec without reading data; None for one whose spec is whatever data it is
    given (data=shards: the prepared set's; tested with real shards in tests/data/test_shards.py)."""
    cls = registry("data").get(name).cls
    try:
        return cls.probe_spec() or cls().spec  # neither reads data
    except DataNotFoundError:
        return None


def fits(kind: str, name: str, spec: DataSpec) -> bool:
    return registry(kind).get(name).cls.incompatibility(spec) is None


COMBINATIONS = [
    (data, enc, dec, prior, lik)
    for data in registry("data").names()
    if data_spec(data) is not None
    for enc, dec, prior, lik in itertools.product(
        registry("encoder").names(),
        registry("decoder").names(),
        registry("prior").names(),
        registry("likelihood").names(),
    )
    if all(
        fits(kind, name, data_spec(data))
        for kind, name in zip(("encoder", "decoder", "prior", "likelihood"), (enc, dec, prior, lik), strict=True)
    )
]


def example_batch(spec: DataSpec) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Three examples: values in [0, 1], or token sentences of different lengths with their mask."""
    if spec.support != "categorical":
        return torch.rand(3, *spec.event_shape), None
    lengths = torch.tensor([spec.event_shape[0], 5, 3])
    mask = torch.arange(spec.event_shape[0]) < lengths[:, None]
    tokens = torch.randint(4, spec.vocabulary.vocab_size, (3, spec.event_shape[0])) * mask
    return tokens, mask


def test_every_modality_has_compatible_combinations():
    modalities = {data_spec(data).modality for data, *_ in COMBINATIONS}
    assert {"image", "text"} <= modalities


@pytest.mark.parametrize(("data", "encoder", "decoder", "prior", "likelihood"), COMBINATIONS)
def test_every_part_composes_with_every_compatible_data(data, encoder, decoder, prior, likelihood):
    spec = data_spec(data)
    cfg = config(data, encoder=encoder, decoder=decoder, prior=prior, likelihood=likelihood)
    if prior == "vamp":
        cfg.prior.pseudo_inputs = 8
    model = build_model(cfg, spec, data)
    x, mask = example_batch(spec)
    terms = model.elbo_terms(x, mask)
    loss = model.loss(terms, 1.0)
    loss.backward()
    assert terms.log_px.shape == (1, 3) and terms.kl.shape == (3,) and torch.isfinite(loss)
    grads = [p.grad for p in model.encoder.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    if mask is None:
        assert model.sample(2).shape == (2, *spec.event_shape)
        assert model.reconstruct(x).shape == x.shape
    else:
        assert model.sample(2).shape[0] == 2 and model.sample(2).shape[1] <= spec.event_shape[0]
        assert model.reconstruct(x, mask).shape[0] == 3


def test_predicted_sigma_doubles_the_decoders_output_channels():
    cfg = config("cifar10", encoder="conv", decoder="conv", likelihood="gaussian")
    cfg.likelihood.sigma_mode = "predicted"
    model = build_model(cfg, data_spec("cifar10"))
    assert model.decoder(torch.zeros(2, 4)).shape == (2, 6, 32, 32)


def test_conv_encoder_on_flat_data_names_both_parts_and_what_fits():
    flat = DataSpec("audio", (64,), "real")
    with pytest.raises(
        IncompatiblePartsError, match=r"encoder 'conv' cannot be used with data 'wave'.*\[C, H, W\].*fit this data: mlp"
    ):
        build_model(config(encoder="conv", likelihood="gaussian"), flat, "wave")


def test_bernoulli_on_real_valued_data_is_refused():
    real = DataSpec("image", (1, 8, 8), "real")
    with pytest.raises(
        IncompatiblePartsError, match=r"likelihood 'bernoulli'.*binary/unit_interval.*fit this data: gaussian"
    ):
        build_model(config(), real, "standardised")


def test_wired_values_set_by_hand_are_refused():
    cfg = config()
    cfg.decoder.latent_dim = 3
    with pytest.raises(WiringError, match="decoder.latent_dim is wired by genkit from model.latent_dim"):
        build_model(cfg, data_spec("digits"))


def test_only_registered_classes_are_built():
    cfg = config()
    cfg.encoder = {"_target_": "os.system"}
    with pytest.raises(UnknownPartError, match="'os.system' is not a registered encoder"):
        build_model(cfg, data_spec("digits"))
    with pytest.raises(PartConfigError, match="must be a torch.optim class"):
        optimizer_factory(OmegaConf.create({"_target_": "os.system"}), {})


def test_values_a_part_refuses_name_the_part():
    with pytest.raises(PartConfigError, match="likelihood 'gaussian' .*sigma_mode must be one of"):
        build_part("likelihood", node("likelihood", "gaussian", sigma_mode="wild"), {"spec": data_spec("digits")})


def test_values_scripts_fuzz_config_found_raw_errors_for_are_clean_errors():
    """Each of these once ended in a raw traceback (found by scripts/fuzz_config.py)."""
    with pytest.raises(PartConfigError, match="torch.optim.Adam refused its configuration: Invalid learning rate"):
        optimizer_factory(OmegaConf.create({"_target_": "torch.optim.Adam", "lr": -1.0}), {})
    cfg = config()
    cfg.model.latent_dim = -1
    with pytest.raises(PartConfigError, match="model.latent_dim must be at least 1, got -1"):
        build_model(cfg, data_spec("digits"))
    with pytest.raises(PartConfigError, match="encoder 'mlp' \\(genkit\\) refused its configuration"):
        build_part("encoder", node("encoder", "mlp", hidden=[-4]), {"spec": data_spec("digits")})


@pytest.mark.parametrize(
    ("kind", "name", "options", "named"),
    [
        ("encoder", "mlp", {"hidden": [64, 0]}, "encoder.hidden=\\[64, 0\\]"),
        ("decoder", "mlp", {"hidden": [0]}, "decoder.hidden=\\[0\\]"),
        ("encoder", "conv", {"channels": [0]}, "encoder.channels=\\[0\\]"),
        ("prior", "mog", {"components": 0}, "prior.components=0"),
    ],
)
def test_a_size_of_zero_is_refused_naming_the_option(kind, name, options, named):
    """torch builds a layer of no units without complaint; genkit trained such a model (an encoder
    that ignores its input) or failed later with a reshape error that named no option."""
    cfg = config("digits")
    cfg[kind] = node(kind, name, **options)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no torch warning about zero-element tensors on the way
        with pytest.raises(
            PartConfigError, match=f"{kind} '{name}' \\(genkit\\) built a layer of size 0 .*from {named}"
        ):
            build_model(cfg, data_spec("digits"))


def test_a_size_of_zero_that_means_none_still_builds():
    cfg = config("digits", encoder="conv", decoder="conv")
    cfg.encoder.hidden = 0  # no dense layer after the convolutions
    assert build_model(cfg, data_spec("digits")).encoder.out_features > 0


@pytest.mark.parametrize(
    ("override", "error", "message"),
    [
        ("seed=-1", UsageError, "seed must be a whole number from 0 to 4294967295, got -1"),
        ("seed=1.5", UsageError, "seed must be a whole number"),
        ("verbose=3", UsageError, "verbose must be true or false, got 3"),
        ("compile=fast", UsageError, "compile='fast' is not a torch.compile backend; use one of .*inductor"),
        ("model.beta=nan", PartConfigError, "model.beta must be a finite number, got nan"),
        ("likelihood.sigma=inf", PartConfigError, "likelihood.sigma must be a finite number, got inf"),
        ("objective=val/nll", UsageError, "objective 'val/nll' is not a metric this model logs; choose one of"),
    ],
)
def test_bad_run_options_are_refused_before_anything_is_seeded_or_built(override, error, message, tmp_path):
    """Each of these once ended in a raw traceback or, worse, in a NaN loss blamed on the learning rate."""
    cfg = train_config(["logger=none", "likelihood=gaussian", override])
    with pytest.raises(error, match=message):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_vamp_prior_shares_the_encoder_and_survives_deepcopy_and_pickle():
    import copy
    import pickle

    cfg = config("digits", prior="vamp")
    cfg.prior.pseudo_inputs = 4
    model = build_model(cfg, data_spec("digits"))
    names = [n for n, _ in model.named_parameters()]
    assert not any(n.startswith("prior.encode") for n in names)  # encoder parameters counted once
    clone = copy.deepcopy(model)
    assert clone.prior.encode.encoder is clone.encoder  # the copy's prior uses the copy's encoder
    restored = pickle.loads(pickle.dumps(model))
    assert restored.prior().batch_shape == torch.Size([]) and restored.prior().event_shape == (4,)


def schedule(**node) -> Any:
    return learning_rate_schedule(OmegaConf.create(node), "val/nelbo")


def test_a_learning_rate_schedule_is_built_from_torch_classes_only_and_checked_up_front():
    built = schedule(_target_="torch.optim.lr_scheduler.MultiStepLR", milestones=[1], interval="step")
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    assert built.interval == "step" and built.factory(optimizer).milestones == {1: 1}
    with pytest.raises(PartConfigError, match="must be a torch.optim.lr_scheduler class, got 'os.system'"):
        schedule(_target_="os.system")
    with pytest.raises(PartConfigError, match="ReduceLROnPlateau refused its configuration: Factor should be < 1.0"):
        schedule(_target_="torch.optim.lr_scheduler.ReduceLROnPlateau", factor=2.0)
    with pytest.raises(PartConfigError, match="scheduler.interval must be epoch or step, got 'batch'"):
        schedule(_target_="torch.optim.lr_scheduler.ExponentialLR", gamma=0.9, interval="batch")
    with pytest.raises(PartConfigError, match="ReduceLROnPlateau watches an epoch metric .*interval=epoch"):
        schedule(_target_="torch.optim.lr_scheduler.ReduceLROnPlateau", interval="step")
    cfg = config()
    cfg.scheduler = {"_target_": "torch.optim.lr_scheduler.ReduceLROnPlateau", "monitor": "val/nll"}
    with pytest.raises(
        PartConfigError, match="scheduler.monitor 'val/nll' is not a metric this model logs; .*val/nelbo"
    ):
        build_model(cfg, data_spec("digits"))


def test_the_optimizer_runs_fused_unless_clipping_under_mixed_precision_or_the_config_chooses():
    def built(trainer=None, **optim):
        node = OmegaConf.create({"_target_": "torch.optim.Adam", **optim})
        return optimizer_factory(node, trainer or {})([torch.nn.Parameter(torch.zeros(1))]).defaults

    assert built()["fused"] is True
    assert built({"gradient_clip_val": 1.0})["fused"] is True
    clipped_amp = built({"gradient_clip_val": 1.0, "precision": "bf16-mixed"})
    assert clipped_amp["foreach"] is True and not clipped_amp["fused"]
    assert not built(fused=False)["fused"]
    assert built(foreach=True)["foreach"] is True and not built(foreach=True)["fused"]


class DoubledKL(genkit.VAE):
    """A model with another objective: the KL counted twice."""

    def loss(self, terms, beta):  # noqa: ANN001, ANN201
        return (terms.rec + 2 * beta * terms.kl).mean()


@pytest.fixture
def doubled_kl_model():
    """Register ``DoubledKL`` as ``model=doubled_kl`` for one test, then remove it again."""
    from hydra.core.config_store import ConfigStore

    genkit.register_model("doubled_kl")(DoubledKL)
    yield registry("model").get("doubled_kl")
    del registry("model").entries["doubled_kl"]
    del ConfigStore.instance().repo["model"]["doubled_kl.yaml"]


def test_a_registered_model_replaces_the_objective(doubled_kl_model):
    cfg = config()
    cfg.model = {"_target_": doubled_kl_model.target, "latent_dim": 4}
    model = build_model(cfg, data_spec("digits"))
    assert type(model) is DoubledKL
    terms = model.elbo_terms(torch.rand(3, 1, 8, 8))
    torch.testing.assert_close(model.loss(terms, 1.0), (terms.rec + 2 * terms.kl).mean())
    assert doubled_kl_model.parameters()["latent_dim"] == 16  # the options come from VAE's signature
