"""Throw random command-line override combinations at genkit's composition and one training step.

    python scripts/fuzz_config.py [--examples 300] [--seed 0]

Each combination (parts, part parameters, model and data options, with valid and invalid
values, typos and hand-set wiring values) goes through what ``genkit-train`` does before
training: the pre-Hydra checks, Hydra composition, building the data module and model (with
the contract probe), then one optimiser step on a real batch of the embedded digits. It must
either train that step with a finite loss or stop with a clean message: a ``GenkitError``, or
a Hydra/OmegaConf configuration error (which Hydra prints as one message). Anything else is a
raw traceback a user would see; hypothesis shrinks the combination and the script exits 1.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter

import torch
from hydra.errors import HydraException
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf.errors import OmegaConfBaseException

from genkit import config
from genkit.cli.app import CommandLine
from genkit.compose import compose
from genkit.errors import GenkitError

NAMES = {
    "encoder": ["mlp", "conv", "convv", "transformer"],
    "decoder": ["mlp", "conv", "mpl"],
    "prior": ["normal", "mog", "vamp", "flow"],
    "posterior": ["gaussian", "laplace"],
    "likelihood": ["bernoulli", "gaussian", "categorical"],
    "scheduler": ["multistep", "exponential", "cosine", "plateau", "linear"],
}
NUMBERS = st.one_of(st.integers(-3, 40), st.sampled_from([0.0, 0.5, 1e-9, -1.0, 1e6, "nan", "abc", "null"]))
PARAMETERS = {
    "model.latent_dim": NUMBERS,
    "model.beta": NUMBERS,
    "model.iwae_k": NUMBERS,
    "model.free_bits": NUMBERS,
    "model.kl_schedule": st.sampled_from(["constant", "linear", "cyclical", "sigmoid"]),
    "model.kl_warmup_steps": NUMBERS,
    "model.kl_cycles": NUMBERS,
    "data.batch_size": NUMBERS,
    "data.binarize": st.sampled_from(["none", "dynamic", "static", "yes"]),
    "data.exclude_labels": st.sampled_from(["[]", "[3]", "[0,1,2,3,4,5,6,7,8,9]", "[42]"]),
    "encoder.hidden": st.sampled_from(["[]", "[16]", "[0]", "[-4]", "[32,16]"]),
    "encoder.channels": st.sampled_from(["[]", "[4]", "[4,8,16,32]"]),
    "encoder.activation": st.sampled_from(["relu", "gelu", "swish"]),
    "decoder.hidden": st.sampled_from(["[]", "[16]", "[0]"]),
    "prior.components": NUMBERS,
    "prior.pseudo_inputs": NUMBERS,
    "likelihood.sigma_mode": st.sampled_from(["fixed", "global", "per_dim", "predicted", "learned"]),
    "likelihood.sigma": NUMBERS,
    "posterior.scale": st.sampled_from(["exp", "softplus", "relu"]),
    "encoder.latent_dim": NUMBERS,
    "decoder.param_shape": st.sampled_from(["[1,8,8]", "[3]"]),
    "optim.lr": NUMBERS,
    "scheduler.gamma": NUMBERS,
    "scheduler.interval": st.sampled_from(["epoch", "step", "batch"]),
    "scheduler.monitor": st.sampled_from(["val/nelbo", "train/loss", "val/nll"]),
    "trainer.gradient_clip_val": NUMBERS,
    "+trainer.accumulate_grad_batches": NUMBERS,
    "+trainer.gradient_clip_algorithm": st.sampled_from(["norm", "value", "max"]),
}

outcomes: Counter[str] = Counter()
tried: list[list[str]] = []  # the last one is hypothesis's shrunk failing example, replayed last


def one_step(overrides: list[str]) -> str:
    """What genkit-train does with ``overrides`` up to one optimiser step; the outcome's kind."""
    try:
        config.prepare()
        CommandLine.parse(["genkit-train", *overrides]).check()
        cfg = config.train_config(overrides)
        torch.manual_seed(0)
        datamodule, model = compose(cfg)
        datamodule.setup("fit")
        batch = next(iter(datamodule.train_dataloader()))
        optimizer = model.optimization.optimizer(model.parameters())
        loss = model.loss(model.elbo_terms(batch["x"], batch.get("mask")), beta=float(cfg.model.beta))
        loss.backward()
        optimizer.step()
    except GenkitError:
        return "genkit error"
    except (HydraException, OmegaConfBaseException):
        return "config error (Hydra's message)"
    return "trained one step" if torch.isfinite(loss) else "trained one step, loss not finite"


@st.composite
def override_lists(draw: st.DrawFn) -> list[str]:
    overrides = [f"{kind}={draw(st.sampled_from(names))}" for kind, names in NAMES.items() if draw(st.booleans())]
    keys = draw(st.lists(st.sampled_from(sorted(PARAMETERS)), max_size=4, unique=True))
    return overrides + [f"{key}={draw(PARAMETERS[key])}" for key in keys]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=300, help="combinations to try")
    parser.add_argument("--seed", type=int, default=0, help="hypothesis seed (the same seed tries the same ones)")
    args = parser.parse_args(argv)
    torch.distributions.Distribution.set_default_validate_args(False)

    @settings(max_examples=args.examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(override_lists())
    def check(overrides: list[str]) -> None:
        tried.append(overrides)
        outcomes[one_step(overrides)] += 1

    try:
        __import__("hypothesis").seed(args.seed)(check)()
    except Exception as error:  # hypothesis has shrunk it: report the smallest failing combination
        print(f"FAILED: genkit-train {' '.join(tried[-1])}", file=sys.stderr)
        print(f"ends in a raw {error.__class__.__name__}: {error}", file=sys.stderr)
        print(f"tried {sum(outcomes.values())} combinations before it: {dict(outcomes)}", file=sys.stderr)
        return 1
    summary = ", ".join(f"{n} {kind}" for kind, n in outcomes.items())
    print(f"tried {sum(outcomes.values())} override combinations: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
