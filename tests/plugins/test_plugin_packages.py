"""Real plugin packages: genkit-flows from plugins/ and one made by scripts/new_plugin.py,
each built and installed by pip into a temporary site folder, tested, and used from the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FAST, REPO, run, script

FLOWS = REPO / "plugins" / "genkit-flows"


def pip_install(package: Path, site: Path) -> None:
    """Build and install ``package`` into ``site`` as a user's pip would, offline (genkit is already here)."""
    args = ["install", "--no-deps", "--no-build-isolation", "--no-index", "--quiet", "--target", str(site)]
    result = subprocess.run([sys.executable, "-m", "pip", *args, str(package)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]


def run_plugin_tests(package: Path, env: dict[str, str]) -> None:
    """The plugin's own test suite, against the installed copy."""
    result = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(package / "tests")], env, package)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]


@pytest.fixture(scope="module")
def flows_site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("flows-site")
    pip_install(FLOWS, site)
    return site


def test_installed_flows_plugin_lists_trains_and_reloads(flows_site, tmp_path, cli_env):
    env = {**cli_env, "PYTHONPATH": str(flows_site)}
    listing = run([*script("genkit"), "list", "posteriors"], env, tmp_path)
    assert "planar" in listing.stdout and "[genkit-flows]" in listing.stdout and "flows=8" in listing.stdout
    out = tmp_path / "run"
    args = ["experiment=flows", "model.latent_dim=4", "logger=csv", *FAST, f"hydra.run.dir={out}"]
    trained = run([*script("genkit-train"), *args], env, tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert metrics["test/nelbo"] > 0 and metrics["test/kl"] > 0
    ckpt = json.loads((out / "metrics.json").read_text())["best_checkpoint"]
    sampled = run([*script("genkit"), "sample", f"ckpt={ckpt}", "n=4", f"out={tmp_path / 's.png'}"], env, tmp_path)
    assert sampled.returncode == 0 and (tmp_path / "s.png").is_file(), sampled.stderr[-2000:]
    without = run([*script("genkit"), "sample", f"ckpt={ckpt}", "n=4"], cli_env, tmp_path)
    assert without.returncode == 2
    assert "genkit_flows.parts.PlanarFlowPosterior' is not a registered posterior" in without.stderr
    assert "install the plugin package" in without.stderr


def test_flows_plugin_passes_its_own_tests_when_installed(flows_site, cli_env):
    run_plugin_tests(FLOWS, {**cli_env, "PYTHONPATH": str(flows_site)})


def test_new_plugin_template_installs_tests_and_trains(tmp_path, cli_env):
    made = subprocess.run([sys.executable, str(REPO / "scripts" / "new_plugin.py"), "resmlp", "--dest", str(tmp_path)])
    assert made.returncode == 0
    package, site = tmp_path / "genkit-resmlp", tmp_path / "site"
    pip_install(package, site)
    env = {**cli_env, "PYTHONPATH": str(site)}
    run_plugin_tests(package, env)
    out = tmp_path / "run"
    args = ["experiment=resmlp", "encoder.blocks=1", "logger=none", *FAST, f"hydra.run.dir={out}"]
    trained = run([*script("genkit-train"), *args], env, tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "[genkit-resmlp]" in run([*script("genkit"), "list", "encoders"], env, tmp_path).stdout
    again = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "new_plugin.py"), "resmlp", "--dest", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert again.returncode != 0 and "already exists" in again.stderr
