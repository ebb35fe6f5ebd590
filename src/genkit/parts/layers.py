"""Building blocks the built-in parts share: activations chosen by name, dense stacks, the
shape arithmetic of strided convolutions, and the checks of token-sequence parts."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from genkit.spec import DataSpec

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "elu": nn.ELU,
    "leaky_relu": lambda: nn.LeakyReLU(0.2),
    "tanh": nn.Tanh,
}


def make_activation(name: str) -> nn.Module:
    """A fresh activation layer chosen by name (configs hold names, never classes)."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}") from None


def kaiming(draw: Callable[..., Tensor]) -> Callable[[Tensor], Tensor]:
    return lambda weight: draw(weight, nonlinearity="relu")


#: Weight initialisations by their torch.nn.init names, and Keras's names where Keras's scheme is
#: the same formula (Keras's glorot_normal and he_normal draw from a truncated normal: not aliased).
INITS: dict[str, Callable[[Tensor], Tensor]] = {
    "xavier_uniform": nn.init.xavier_uniform_,
    "glorot_uniform": nn.init.xavier_uniform_,
    "xavier_normal": nn.init.xavier_normal_,
    "kaiming_uniform": kaiming(nn.init.kaiming_uniform_),
    "he_uniform": kaiming(nn.init.kaiming_uniform_),
    "kaiming_normal": kaiming(nn.init.kaiming_normal_),
    "orthogonal": nn.init.orthogonal_,
}
#: PyTorch's own layer initialisation (kaiming_uniform with a=sqrt(5), biases uniform in +-1/sqrt(fan_in)).
TORCH_INIT = "torch"
INITIALISED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.ConvTranspose1d, nn.ConvTranspose2d)


def initialise(module: nn.Module, init: str, stacked: int = 1) -> None:
    """Redraw the weights of ``module``'s dense and convolution layers by ``init`` (a torch.nn.init
    or Keras name) with zero biases, as Keras does; ``torch`` keeps PyTorch's initialisation.
    ``stacked``: each weight is that many layers' weights stacked by rows (fans of one each)."""
    if init == TORCH_INIT:
        return
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; choose one of {[TORCH_INIT, *sorted(INITS)]}")
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, INITIALISED):
                for rows in layer.weight.chunk(stacked):
                    INITS[init](rows)
                if layer.bias is not None:
                    layer.bias.zero_()


def mlp(sizes: Sequence[int], act: str) -> nn.Sequential:
    """Linear layers ``sizes[0] -> ... -> sizes[-1]``, each followed by the activation."""
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes, sizes[1:]):
        layers += [nn.Linear(n_in, n_out), make_activation(act)]
    return nn.Sequential(*layers)


def shape_mismatch(spec: DataSpec, dims: int, needs: str) -> str | None:
    """Why a part that ``needs`` examples of ``dims`` dimensions cannot serve ``spec``, or None."""
    return None if len(spec.event_shape) == dims else f"{needs}, but the data is {spec.describe()}"


def halvings(size: int, times: int) -> int:
    """Spatial size after ``times`` stride-2 convolutions (kernel 3, padding 1): ceil each time."""
    for _ in range(times):
        size = (size + 1) // 2
    return size


def dense_head(flat: int, hidden: int, activation: str) -> list[nn.Module]:
    """The end of a conv encoder: flatten ``flat`` features, then a dense layer of ``hidden`` units (0: none)."""
    return [nn.Flatten(), *([nn.Linear(flat, hidden), make_activation(activation)] if hidden else [])]


def latent_dense(latent_dim: int, hidden: int, size: int, activation: str) -> nn.Sequential:
    """The start of a conv decoder: z through a dense layer of ``hidden`` units (0: none) to the
    ``size`` features of its first feature map."""
    dense: list[nn.Module] = [nn.Linear(latent_dim, hidden), make_activation(activation)] if hidden else []
    return nn.Sequential(*dense, nn.Linear(hidden or latent_dim, size), make_activation(activation))


def layer_strides(who: str, strides: Sequence[int], length: int, layers: int, final_length: int) -> list[int]:
    """The strides of ``who`` (``encoder``/``decoder``): as given, one per layer, or, when none are
    given, equal strides (at least 2) taking ``length`` to about ``final_length`` in ``layers`` steps."""
    if not strides:
        stride = max(2, math.ceil((length / final_length) ** (1 / layers))) if layers else 2
        return [stride] * layers
    if len(strides) != layers:
        raise ValueError(f"{who}.strides needs one stride per channel entry ({layers}), got {list(strides)}")
    return list(strides)


def not_text(spec: DataSpec) -> str | None:
    """Why a token-sequence part cannot serve ``spec``, or None."""
    if spec.support != "categorical" or spec.vocabulary is None:
        return f"reads token ids, but the data is {spec.describe()}"
    return None


def lengths_of(x: Tensor, mask: Tensor | None) -> Tensor:
    """Real length of every sequence ``[B]`` (the full width where there is no mask)."""
    return mask.sum(1) if mask is not None else torch.full((len(x),), x.shape[1], device=x.device)


def check_heads(width: int, heads: int, who: str) -> None:
    if width % heads:
        raise ValueError(f"{who}.width ({width}) must be a multiple of {who}.heads ({heads})")
