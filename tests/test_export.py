"""genkit export: encoders and decoders written as ONNX (run in ONNX Runtime) and TorchScript give
PyTorch's outputs at any batch size; what cannot be one graph is refused with the reason."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime
import pytest
import torch
from torch import nn

from conftest import IMAGE_SPEC, parts_config, run, script
from genkit import DataSpec
from genkit.compose import build_model
from genkit.errors import ExportError
from genkit.export import export
from genkit.registry import registry
from genkit.spec import AudioSettings, Vocabulary

AUDIO_SPEC = AudioSettings(sample_rate=8000, num_samples=1024, representation="waveform").spec()
TEXT_SPEC = DataSpec(
    "text", (7,), "categorical", variable_length=True, vocabulary=Vocabulary("", 11, pad=0, bos=1, eos=2, unk=3)
)


def node(kind: str, name: str, **params: object) -> dict:
    return {"_target_": registry(kind).get(name).target, **params}


MODELS = {
    "mlp": (IMAGE_SPEC, {}),
    "conv": (
        DataSpec("image", (1, 16, 16), "unit_interval"),
        {"encoder": node("encoder", "conv", channels=[4, 8]), "decoder": node("decoder", "conv", channels=[8, 4])},
    ),
    "conv1d": (
        AUDIO_SPEC,
        {
            "encoder": node("encoder", "conv1d", channels=[8, 8]),
            "decoder": node("decoder", "conv1d", channels=[8, 8]),
            "likelihood": node("likelihood", "gaussian"),
        },
    ),
}


def model_of(name: str):
    spec, overrides = MODELS[name]
    torch.manual_seed(0)
    return build_model(parts_config(**overrides), spec).eval()


def onnx_outputs(path, inputs: dict[str, torch.Tensor]) -> list[np.ndarray]:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {name: tensor.numpy() for name, tensor in inputs.items()})


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_decoders_and_encoders_export_to_pytorchs_outputs_at_any_batch_size(name, fmt, tmp_path):
    model = model_of(name)
    z = torch.randn(5, model.latent_dim)  # a batch size the export never saw
    x = torch.rand(5, *model.spec.event_shape)
    with torch.no_grad():
        decoded = model.likelihood(model.decoder(z)).mean
        q = model.posterior(model.encoder(x))
    suffix = ".onnx" if fmt == "onnx" else ".pt"

    decoder = export(model, "decoder", fmt, tmp_path / f"decoder{suffix}").path
    encoder = export(model, "encoder", fmt, tmp_path / f"encoder{suffix}").path
    if fmt == "onnx":
        (got,) = onnx_outputs(decoder, {"z": z})
        mean, stddev = onnx_outputs(encoder, {"x": x})
    else:
        with torch.no_grad(), pytest.warns(FutureWarning, match="torch.jit.load` is deprecated"):
            got = torch.jit.load(str(decoder))(z)
            mean, stddev = torch.jit.load(str(encoder))(x)
    np.testing.assert_allclose(np.asarray(got), decoded.numpy(), atol=1e-4)
    np.testing.assert_allclose(np.asarray(mean), q.mean.numpy(), atol=1e-4)
    np.testing.assert_allclose(np.asarray(stddev), q.stddev.numpy(), atol=1e-4)
    description = json.loads(decoder.with_name(f"decoder{suffix}.json").read_text())
    assert description["latent_dim"] == model.latent_dim and description["spec"]["modality"] == model.spec.modality
    assert set(description["inputs"]) == {"z"} and set(description["outputs"]) == {"mean"}


def test_the_decoder_exports_the_likelihoods_parameters_on_request(tmp_path):
    model = model_of("mlp")
    path = export(model, "decoder", "onnx", tmp_path / "logits.onnx", output="params").path
    z = torch.randn(4, model.latent_dim)
    (logits,) = onnx_outputs(path, {"z": z})
    np.testing.assert_allclose(logits, model.decoder(z).detach().numpy(), atol=1e-4)


def test_text_encoders_export_with_batch_and_length_axes_and_what_cannot_is_refused(tmp_path):
    def text_model(encoder: str):
        cfg = parts_config(
            encoder=node("encoder", encoder, **({"hidden": 16} if encoder == "gru" else {})),
            decoder=node("decoder", "gru", hidden=16, embedding_dim=8),
            likelihood=node("likelihood", "categorical"),
        )
        return build_model(cfg, TEXT_SPEC).eval()

    model = text_model("transformer")
    path = export(model, "encoder", "onnx", tmp_path / "encoder.onnx").path
    x = torch.randint(4, 11, (2, 5))
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    mean, _ = onnx_outputs(path, {"x": x, "mask": mask})  # another batch size and length than the export's
    with torch.no_grad():
        np.testing.assert_allclose(mean, model.posterior(model.encoder(x, mask)).mean.numpy(), atol=1e-4)
    with pytest.raises(ExportError, match=r"GRUDecoder generates token by token, .* export part=encoder"):
        export(model, "decoder", "onnx", tmp_path / "decoder.onnx")
    with pytest.raises(ExportError, match=r"GRUEncoder reads packed sequences .* encoder=transformer exports"):
        export(text_model("gru"), "encoder", "torchscript", tmp_path / "gru.pt")


class Branching(nn.Module):
    """A plugin decoder whose Python control flow depends on the data."""

    def __init__(self, decoder: nn.Module) -> None:
        super().__init__()
        self.inner = decoder

    def forward(self, z, x=None, mask=None):
        if z.sum() > 0:
            return self.inner(z)
        return -self.inner(z)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_a_part_with_data_dependent_control_flow_is_refused_with_the_reason(fmt, tmp_path):
    model = model_of("mlp")
    model.decoder = Branching(model.decoder)
    with pytest.raises(
        ExportError,
        match=r"the decoder \(Branching with BernoulliLikelihood\) cannot be captured as one graph: .*data-dependent",
    ):
        export(model, "decoder", fmt, tmp_path / f"decoder.{fmt}")
    assert not list(tmp_path.iterdir())


def test_genkit_export_writes_and_checks_a_trained_decoder(trained, tmp_path, cli_env):
    checkpoint = trained.checkpoint
    out = tmp_path / "web" / "decoder.onnx"
    result = run([*script("genkit"), "export", f"ckpt={checkpoint}", f"out={out}"], cli_env, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "checked with ONNX Runtime" in result.stderr and "largest difference from PyTorch" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1  # the exporters' own chatter stays off the console
    description = json.loads(out.with_name("decoder.onnx.json").read_text())
    assert description["checkpoint"] == str(checkpoint.resolve()) and description["spec"]["event_shape"] == [1, 8, 8]
    result = run([*script("genkit"), "export", f"ckpt={checkpoint}", "format=tflite"], cli_env, tmp_path)
    assert result.returncode == 2 and "format must be onnx or torchscript, got 'tflite'" in result.stderr
