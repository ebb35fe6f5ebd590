"""Plugins: a local module, an installed distribution's entry point, a broken one, and the wheel's configs."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

from conftest import FAST, REPO, run, script

LOCAL_PLUGIN = '''
from torch import nn
import genkit

@genkit.register_encoder("tiny_local")
class TinyEncoder(genkit.Encoder):
    """x -> [B, width]."""
    modalities = frozenset({"image"})

    def __init__(self, spec: genkit.DataSpec, *, width: int = 8) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(spec.numel, width), nn.ReLU())
        self.out_features = width

    def forward(self, x, mask=None):
        return self.net(x)
'''


def test_local_module_plugin_trains_from_the_command_line(tmp_path, cli_env):
    (tmp_path / "my_parts.py").write_text(LOCAL_PLUGIN)
    out = tmp_path / "run"
    args = ["plugins=[my_parts]", "encoder=tiny_local", "encoder.width=5", "logger=none", *FAST, f"hydra.run.dir={out}"]
    result = run([*script("genkit-train"), *args], cli_env, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "tiny_local" in result.stdout + result.stderr and "local:my_parts" in result.stdout + result.stderr
    assert (out / "metrics.json").is_file()
    env = {**cli_env, "GENKIT_PLUGINS": "my_parts"}
    listing = run([*script("genkit"), "list", "encoders"], env, tmp_path).stdout
    assert "tiny_local" in listing and "local:my_parts" in listing and "width=8" in listing


def test_missing_local_module_is_a_clear_error(train_refuses):
    assert "local plugin module 'not_a_module' could not be imported" in train_refuses("plugins=[not_a_module]")


def install_fake_distribution(site: Path, dist: str, module: str, source: str) -> None:
    """A distribution as pip lays it out: the module plus a .dist-info with an entry point."""
    (site / f"{module}.py").write_text(source)
    info = site / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[genkit.plugins]\n{module} = {module}\n")
    (info / "top_level.txt").write_text(f"{module}\n")
    (info / "RECORD").write_text(f"{module}.py,,\n")


def test_installed_plugins_register_and_broken_ones_only_warn(tmp_path, cli_env):
    site = tmp_path / "site"
    site.mkdir()
    install_fake_distribution(site, "genkit-good", "genkit_good", LOCAL_PLUGIN.replace("tiny_local", "tiny_installed"))
    install_fake_distribution(site, "genkit-broken", "genkit_broken", "raise ImportError('needs libfoo>=2')\n")
    env = {**cli_env, "PYTHONPATH": str(site)}
    result = run([*script("genkit"), "list"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "tiny_installed" in result.stdout and "[genkit-good]" in result.stdout
    assert "genkit plugin 'genkit-broken' (module genkit_broken) failed to import" in result.stderr
    assert "needs libfoo>=2" in result.stderr
    assert "broken plugins (skipped):" in result.stdout and "genkit-broken (genkit_broken)" in result.stdout
    out = tmp_path / "run"
    args = ["encoder=tiny_installed", "logger=none", *FAST, f"hydra.run.dir={out}"]
    trained = run([*script("genkit-train"), *args], env, tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert json.loads((out / "metrics.json").read_text())["metrics"]["test/nelbo"] > 0


WRONG_SHAPE_PLUGIN = LOCAL_PLUGIN.replace("tiny_local", "wrong_shape").replace(
    "self.out_features = width", "self.out_features = width + 1"
)
CLASHING_PLUGIN = LOCAL_PLUGIN.replace('register_encoder("tiny_local")', 'register_encoder("mlp")')
OVERRIDING_PLUGIN = LOCAL_PLUGIN.replace('register_encoder("tiny_local")', 'register_encoder("conv", override=True)')


def test_contract_breaks_clashes_and_overrides_of_installed_plugins(tmp_path, cli_env):
    site = tmp_path / "site"
    site.mkdir()
    install_fake_distribution(site, "genkit-shapes", "genkit_shapes", WRONG_SHAPE_PLUGIN)
    install_fake_distribution(site, "genkit-clash", "genkit_clash", CLASHING_PLUGIN)
    install_fake_distribution(site, "genkit-better-conv", "genkit_better_conv", OVERRIDING_PLUGIN)
    env = {**cli_env, "PYTHONPATH": str(site)}
    listing = run([*script("genkit"), "list", "encoders", "--check"], env, tmp_path)
    assert listing.returncode == 0, listing.stderr[-2000:]
    lines = listing.stdout.splitlines()
    wrong = lines.index(next(line for line in lines if line.strip().startswith("wrong_shape")))
    assert "[genkit-shapes]" in lines[wrong]
    assert "broken: " in lines[wrong + 1] and "encoder 'wrong_shape' (genkit-shapes)" in lines[wrong + 1]
    assert "has shape [3, 8], expected [3, 9]" in lines[wrong + 1]
    assert any("conv" in line and "[genkit-better-conv, overrides genkit]" in line for line in lines)
    assert "genkit-clash (genkit_clash): DuplicatePartError: encoder 'mlp' from genkit-clash" in listing.stdout
    assert "Choose another name, or pass override=True" in listing.stdout
    refused = run([*script("genkit-train"), "encoder=wrong_shape", "logger=none", *FAST], env, tmp_path)
    assert refused.returncode == 1 and "encoder 'wrong_shape' (genkit-shapes)" in refused.stderr
    assert "Traceback" not in refused.stderr
    out = tmp_path / "run"
    args = ["encoder=conv", "encoder.width=6", "logger=none", *FAST, f"hydra.run.dir={out}"]
    overridden = run([*script("genkit-train"), *args], env, tmp_path)
    assert overridden.returncode == 0, overridden.stderr[-3000:]
    assert "_target_: genkit_better_conv.TinyEncoder" in (out / ".hydra" / "config.yaml").read_text()


def test_the_wheel_ships_conf_and_works_from_any_directory(tmp_path, cli_env):
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(REPO)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    wheel = next(tmp_path.glob("genkit-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        archive.extractall(tmp_path / "unpacked")
    assert "genkit/conf/train.yaml" in names and "genkit/conf/experiment/seed_mnist.yaml" in names
    assert all(n.endswith(".yaml") for n in names if n.startswith("genkit/conf/"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**cli_env, "PYTHONPATH": str(tmp_path / "unpacked")}
    code = "import genkit.config as c, genkit; print(c.config_dir()); print(genkit.__file__)"
    where = run([sys.executable, "-c", code], env, elsewhere).stdout.split()
    assert where[0] == str(tmp_path / "unpacked" / "genkit" / "conf") and "unpacked" in where[1]
    composed = run([sys.executable, "-m", "genkit.cli.train", "experiment=seed_mnist", "--cfg", "job"], env, elsewhere)
    assert composed.returncode == 0 and "latent_dim: 2" in composed.stdout, composed.stderr[-2000:]
