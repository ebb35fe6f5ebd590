"""Trained parts out of Python: the decoder (z -> the likelihood's mean or parameters) or the encoder
(x -> the posterior's mean and standard deviation) as ONNX or TorchScript, with a dynamic batch
axis, a JSON description beside it, and a check that the exported graph computes what PyTorch does.

``torch.export`` is the one gate for both formats: a part whose Python control flow depends on the
data cannot be captured as one graph, and it refuses such parts with its reason (ONNX's exporter is
built on it; ``torch.jit.trace`` would silently keep the branch taken by the probe batch). ONNX is
written by PyTorch's exporter and checked with ONNX Runtime; TorchScript, which PyTorch deprecates
but C++ and mobile runtimes still load, by ``torch.jit.trace``.
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from genkit.errors import ExportError
from genkit.parts.base import synthetic_batch
from genkit.version import __version__

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
PARTS = ("decoder", "encoder")
OUTPUTS = ("mean", "params")
#: Largest difference between the exported graph's outputs and PyTorch's that counts as equal.
TOLERANCE = 1e-4
#: Batch sizes of the check: the export's own and another, so a batch axis fixed by mistake shows.
CHECK_BATCHES = (8, 3)


class DecoderGraph(nn.Module):
    """``z [B, latent_dim] -> E[x|z]`` (``output="mean"``) or the likelihood's parameters (``"params"``)."""

    def __init__(self, decoder: nn.Module, likelihood: nn.Module, output: str) -> None:
        super().__init__()
        self.decoder, self.likelihood, self.output = decoder, likelihood, output

    def forward(self, z: Tensor) -> Tensor:
        params = self.decoder(z)
        return self.likelihood(params).mean if self.output == "mean" else params


class EncoderGraph(nn.Module):
    """``x [B, ...] (, mask [B, T]) -> (mean, stddev)`` of q(z|x), each ``[B, latent_dim]``."""

    def __init__(self, encoder: nn.Module, posterior: nn.Module) -> None:
        super().__init__()
        self.encoder, self.posterior = encoder, posterior

    def forward(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        q = self.posterior(self.encoder(x, mask))
        return q.mean, q.stddev


@dataclass(frozen=True)
class Exported:
    """What ``export`` wrote and how closely the written graph matches PyTorch."""

    path: Path
    description: Path
    difference: float  # the largest |exported - PyTorch| over CHECK_BATCHES
    runtime: str  # what ran the exported graph in the check


def export(model: Any, part: str, format: str, path: Path, output: str = "mean", source: str = "") -> Exported:
    """Write ``model``'s ``part`` to ``path`` in ``format``, its description to ``path`` + ``.json``,
    and check the written graph against PyTorch on batches of ``CHECK_BATCHES`` examples.

    Raises:
        ExportError: the part cannot be exported (an autoregressive decoder, data-dependent control
            flow, an operator the format lacks), the written graph disagrees with PyTorch, or ONNX
            export lacks the ``export`` extra.
    """
    graph, inputs, names = graph_of(model, part, output)
    validation = Distribution._validate_args  # argument checks are data-dependent branches
    Distribution.set_default_validate_args(False)
    try:
        with torch.no_grad():
            program = captured(graph, inputs, part, model)
            path.parent.mkdir(parents=True, exist_ok=True)
            if format == "onnx":
                runtime, run = write_onnx(program, names, path, model, part)
            else:
                runtime, run = write_torchscript(graph, inputs, path, model, part)
            difference = largest_difference(graph, inputs, run)
    finally:
        Distribution.set_default_validate_args(validation)
    if difference > TOLERANCE:
        raise ExportError(
            f"the exported {part} disagrees with PyTorch by {difference:.2e} (more than {TOLERANCE:g}); "
            f"{path} is not to be trusted"
        )
    with torch.no_grad():
        shapes = [list(t.shape[1:]) for t in as_tuple(graph(*inputs(2)))]
    description = path.with_name(f"{path.name}.json")
    description.write_text(json.dumps(describe(model, part, format, output, shapes, source), indent=2))
    return Exported(path, description, difference, runtime)


def graph_of(model: Any, part: str, output: str) -> tuple[nn.Module, Any, dict[str, list[str]]]:
    """The module to export, a function of the batch size giving its inputs, and its input and output names."""
    for piece in (model.encoder, model.posterior) if part == "encoder" else (model.decoder, model.likelihood):
        if getattr(piece, "not_exportable", ""):
            raise ExportError(
                f"{parts_of(model, part)} cannot be exported: {type(piece).__name__} {piece.not_exportable}"
            )
    if part == "encoder":
        graph: nn.Module = EncoderGraph(model.encoder, model.posterior).eval()
        has_mask = model.spec.variable_length

        def inputs(n: int) -> tuple[Tensor, ...]:
            batch = synthetic_batch(model.spec, n)
            return (batch["x"], batch["mask"]) if has_mask else (batch["x"],)

        return graph, inputs, {"inputs": ["x", "mask"] if has_mask else ["x"], "outputs": ["mean", "stddev"]}
    graph = DecoderGraph(model.decoder, model.likelihood, output).eval()
    prior = model.prior

    def latents(n: int) -> tuple[Tensor]:
        return (prior().sample((n,)),)

    return graph, latents, {"inputs": ["z"], "outputs": [output]}


def captured(graph: nn.Module, inputs: Any, part: str, model: Any) -> Any:
    """``graph`` captured by ``torch.export`` with a dynamic batch axis (and length axis for text)."""
    example = inputs(CHECK_BATCHES[0])
    batch = torch.export.Dim("batch")
    axes = [
        {0: batch, 1: torch.export.Dim("length")} if t.dim() > 1 and model.spec.variable_length else {0: batch}
        for t in example
    ]
    try:
        return torch.export.export(graph, example, dynamic_shapes=tuple(axes), strict=False)
    except Exception as error:  # torch.export raises many kinds; each means "not one graph"
        raise ExportError(f"{parts_of(model, part)} cannot be captured as one graph: {reason(error)}") from None


def parts_of(model: Any, part: str) -> str:
    """The two parts an export of ``part`` holds, by class."""
    pair = (model.encoder, model.posterior) if part == "encoder" else (model.decoder, model.likelihood)
    return f"the {part} ({type(pair[0]).__name__} with {type(pair[1]).__name__})"


def reason(error: BaseException) -> str:
    """The first line of an exporter's error and the line of the model's code that raised it."""
    text = str(error)
    first = next((line.strip() for line in text.splitlines() if line.strip()), error.__class__.__name__)
    where = re.findall(r'File "([^"]+)", line (\d+), in (\w+)', text)
    return first + (f" (at {where[-1][0]}:{where[-1][1]}, in {where[-1][2]})" if where else "")


def largest_difference(graph: nn.Module, inputs: Any, run: Callable[[tuple[Tensor, ...]], Any]) -> float:
    """The largest absolute difference between PyTorch's outputs and the exported graph's (``run``) on
    batches of each of ``CHECK_BATCHES`` examples."""
    worst = 0.0
    for n in CHECK_BATCHES:
        example = inputs(n)
        pairs = zip(as_tuple(graph(*example)), as_tuple(run(example)), strict=True)
        worst = max(worst, *(float((torch.as_tensor(got) - expected).abs().max()) for expected, got in pairs))
    return worst


def as_tuple(value: Any) -> tuple[Tensor, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def write_onnx(program: Any, names: dict, path: Path, model: Any, part: str) -> tuple[str, Callable]:
    """Write the captured program as ONNX; what runs it (ONNX Runtime) and a function running it on inputs."""
    try:
        import onnxruntime
    except ImportError:
        raise ExportError(
            "genkit export format=onnx needs ONNX and ONNX Runtime: pip install 'genkit[export]'"
        ) from None
    for name in ("onnx_ir", "onnxscript"):  # their optimiser passes report each step at INFO
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        onnx_program = torch.onnx.export(
            program, input_names=names["inputs"], output_names=names["outputs"], dynamo=True, verbose=False
        )
        onnx_program.save(str(path))
    except ImportError as error:
        raise ExportError(f"genkit export format=onnx needs {error.name}: pip install 'genkit[export]'") from None
    except Exception as error:
        raise ExportError(f"{parts_of(model, part)} cannot be written as ONNX: {reason(error)}") from None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def run(example: tuple[Tensor, ...]) -> list[Any]:
        return session.run(None, {name: t.numpy() for name, t in zip(names["inputs"], example, strict=True)})

    return f"ONNX Runtime {onnxruntime.__version__}", run


def write_torchscript(graph: nn.Module, inputs: Any, path: Path, model: Any, part: str) -> tuple[str, Callable]:
    """Trace ``graph`` to TorchScript (torch.export has vouched that it is one graph) and save it; what runs
    it (the module loaded back) and a function running it on inputs."""
    with warnings.catch_warnings():
        # PyTorch deprecates TorchScript in favour of torch.export; a user who asks for TorchScript needs it.
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning)
        try:
            traced = torch.jit.trace(graph, inputs(CHECK_BATCHES[0]), check_inputs=[inputs(CHECK_BATCHES[1])])
        except Exception as error:
            raise ExportError(f"{parts_of(model, part)} cannot be traced to TorchScript: {reason(error)}") from None
        traced.save(str(path))
        loaded = torch.jit.load(str(path))
    return f"TorchScript (torch {torch.__version__})", lambda example: loaded(*example)


def describe(model: Any, part: str, format: str, output: str, shapes: list[list[int]], source: str) -> dict[str, Any]:
    """The JSON beside an export: what goes in, what comes out and what it means, and the data spec."""
    spec = model.spec
    if part == "encoder":
        inputs = {"x": f"[batch, {', '.join(map(str, spec.event_shape))}] examples: {spec.describe()}"}
        if spec.variable_length:
            inputs = {
                "x": "[batch, length] token ids (the spec's vocabulary)",
                "mask": "[batch, length] true on tokens",
            }
        outputs = {
            "mean": f"[batch, {model.latent_dim}] mean of q(z|x)",
            "stddev": f"[batch, {model.latent_dim}] standard deviation of q(z|x)",
        }
    else:
        inputs = {"z": f"[batch, {model.latent_dim}] latent codes, for example drawn from the prior"}
        likelihood = type(model.likelihood).__name__
        meaning = (
            f"E[x|z] under the {likelihood}: {spec.describe()}"
            if output == "mean"
            else f"the {likelihood}'s parameters, as the decoder outputs them"
        )
        outputs = {output: f"[batch, {', '.join(map(str, shapes[0]))}] {meaning}"}
    return {
        "format": format,
        "part": part,
        "checkpoint": source,
        "genkit_version": __version__,
        "latent_dim": model.latent_dim,
        "inputs": inputs,
        "outputs": outputs,
        "dynamic_axes": "batch (axis 0)"
        + (" and length (axis 1)" if part == "encoder" and spec.variable_length else ""),
        "spec": spec.to_dict(),
    }
