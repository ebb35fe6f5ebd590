"""Create a genkit plugin package that installs, registers, tests and trains as it is.

    python scripts/new_plugin.py resmlp                # -> ./genkit-resmlp/
    python scripts/new_plugin.py resmlp --dest plugins
    pip install -e "genkit-resmlp[test]" && python -m pytest genkit-resmlp
    genkit-train encoder=resmlp

The package holds one working encoder (a residual MLP) registered under NAME, a
``conf/experiment/NAME.yaml`` preset that Hydra finds through genkit, a test that runs
``genkit.testing.check_part`` on it, and a README. Replace the encoder with your part;
docs/plugins.md shows every kind of part.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

PYPROJECT = """\
[build-system]
requires = ["hatchling>=1.24"]
build-backend = "hatchling.build"

[project]
name = "genkit-{name}"
version = "0.1.0"
description = "A genkit plugin: the {name} encoder"
readme = "README.md"
requires-python = ">=3.10"
dependencies = ["genkit>=0.1"]

[project.optional-dependencies]
test = ["pytest>=8"]

[project.entry-points."genkit.plugins"]
{name} = "genkit_{name}"

[tool.hatch.build.targets.wheel]
packages = ["src/genkit_{name}"]

[tool.pytest.ini_options]
testpaths = ["tests"]
filterwarnings = ["ignore::DeprecationWarning"]
"""

INIT = '''\
"""genkit-{name}: importing this package registers its parts with genkit."""

from genkit_{name}.parts import {cls}

__all__ = ["{cls}"]
'''

PARTS = '''\
"""The parts of genkit-{name}. Each is a class with a decorator; its config is its signature."""

from __future__ import annotations

from torch import Tensor, nn

import genkit


@genkit.register_encoder("{name}")
class {cls}(genkit.Encoder):
    """A residual MLP encoder: ``x [B, *event_shape] -> features [B, width]``.

    ``spec`` is wired by genkit from the data; ``width``, ``blocks`` and ``dropout`` are
    your config (``genkit-train encoder={name} encoder.width=512``).

    Args:
        width: features per layer (and out_features).
        blocks: residual blocks after the input layer.
        dropout: dropout inside each block.
    """

    modalities = frozenset({{"image", "audio"}})  # fixed-size data; text needs a sequence encoder

    def __init__(self, spec: genkit.DataSpec, *, width: int = 256, blocks: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Flatten(), nn.Linear(spec.numel, width))
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.GELU(), nn.Dropout(dropout))
            for _ in range(blocks)
        )
        self.out_features = width

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        h = self.stem(x)
        for block in self.blocks:
            h = h + block(h)
        return h
'''

EXPERIMENT = """\
# @package _global_
# genkit-train experiment={name}: this plugin's encoder on the default data, a bigger latent.
defaults:
  - override /encoder: {name}

model:
  latent_dim: 8
"""

TEST = '''\
"""The plugin honours genkit's contracts and trains (genkit.testing does the work)."""

from genkit.testing import check_part


def test_{name}_encoder_honours_the_contract_and_trains():
    check_part("encoder", "{name}")


def test_{name}_encoder_options_and_experiment_preset():
    model = check_part("encoder", "{name}", overrides=["experiment={name}", "encoder.width=32", "encoder.blocks=1"])
    assert model.encoder.out_features == 32 and model.latent_dim == 8
'''

README = """\
# genkit-{name}

A plugin for genkit (composable VAEs). It registers `encoder={name}` (a residual MLP) and
ships the preset `experiment={name}`.

```bash
pip install -e ".[test]"       # in this folder
genkit list encoders           # {name} [genkit-{name}]
genkit-train encoder={name} encoder.width=512
genkit-train experiment={name}
python -m pytest               # genkit.testing.check_part on every part
```

Add parts in `src/genkit_{name}/parts.py` (any kind: see genkit's docs/plugins.md) and
presets under `src/genkit_{name}/conf/<group>/`.
"""


def create(name: str, dest: Path) -> Path:
    """Write the package ``genkit-<name>`` under ``dest`` and return its folder."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise SystemExit(f"new_plugin: {name!r} must be lower_snake_case ([a-z][a-z0-9_]*): it is also the part name")
    root = dest / f"genkit-{name}"
    if root.exists():
        raise SystemExit(f"new_plugin: {root} already exists; choose another name or --dest")
    cls = "".join(word.capitalize() for word in name.split("_")) + "Encoder"
    files = {
        "pyproject.toml": PYPROJECT,
        "README.md": README,
        f"src/genkit_{name}/__init__.py": INIT,
        f"src/genkit_{name}/parts.py": PARTS,
        f"src/genkit_{name}/conf/experiment/{name}.yaml": EXPERIMENT,
        f"tests/test_{name}.py": TEST,
    }
    for relative, template in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(template.format(name=name, cls=cls))
    return root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="the part and package name, lower_snake_case (package: genkit-NAME)")
    parser.add_argument("--dest", type=Path, default=Path("."), help="folder to create the package in")
    args = parser.parse_args(argv)
    root = create(args.name, args.dest)
    print(f'created {root}: pip install -e "{root}[test]" && python -m pytest {root}')
    return 0


if __name__ == "__main__":
    sys.exit(main())
