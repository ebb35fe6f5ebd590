"""The plugin guide's code runs as written: its parts pass the contract checks, train, and swap into
every genkit preset."""

from __future__ import annotations

import json
import re
import sys

import numpy as np

from conftest import REPO, corpus_folder, run

GUIDE = REPO / "docs" / "plugins.md"


def code_blocks(first_line: str) -> list[str]:
    """Python blocks of the guide that start with ``first_line``."""
    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), flags=re.S)
    return [b for b in blocks if b.startswith(first_line)]


def test_every_part_in_the_plugin_guide_passes_check_part(tmp_path, cli_env):
    (tmp_path / "my_parts.py").write_text("\n\n".join(code_blocks("# my_parts.py")))
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_my_parts.py").write_text(code_blocks("# tests/test_my_parts.py")[0])
    npy = tmp_path / "npy"
    npy.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 300), ("val", 50), ("test", 50)):
        np.save(npy / f"{split}.npy", rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8))
    corpus = corpus_folder(tmp_path, n=100)
    env = {**cli_env, "PYTHONPATH": str(tmp_path)}
    guide_tests = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], env, tmp_path)
    assert guide_tests.returncode == 0, guide_tests.stdout[-3000:]
    rest = f"""
from genkit.testing import check_part
check_part("prior", "learned_gaussian", plugin_modules=["my_parts"])
check_part("decoder", "tiny", plugin_modules=["my_parts"])
check_part("data", "npy_images", overrides=["data.path={npy}", "encoder=tiny", "decoder=tiny",
           "posterior=laplace", "prior=learned_gaussian", "likelihood=laplace"], plugin_modules=["my_parts"])
check_part("encoder", "bag_of_words", data="text_lines", overrides=["experiment=text", "data.path={corpus}",
           "decoder=tiny_gru"], plugin_modules=["my_parts"])
check_part("decoder", "tiny_gru", data="text_lines", overrides=["experiment=text", "data.path={corpus}",
           "encoder=bag_of_words"], plugin_modules=["my_parts"])
print("all parts ok")
"""
    checked = run([sys.executable, "-c", rest], env, tmp_path)
    assert checked.returncode == 0 and "all parts ok" in checked.stdout, checked.stderr[-3000:]


#: The guide's part of each kind, by the modality it serves.
GUIDE_PARTS = {
    "encoder": ["tiny", "bag_of_words"],
    "posterior": ["laplace"],
    "prior": ["learned_gaussian"],
    "decoder": ["tiny", "tiny_gru"],
    "likelihood": ["laplace"],
    "data": ["npy_images"],
}
PRESETS = """
import json, sys
from genkit import config
from genkit.compose import build_data, build_model
from genkit.registry import registry

config.prepare(["my_parts"])
built = []
for experiment in sorted(p.stem for p in (config.config_dir() / "experiment").glob("*.yaml")):
    for kind, names in json.loads(sys.argv[1]).items():
        for name in names:
            cfg = config.train_config([f"experiment={experiment}", f"{kind}={name}"])  # never a missing key
            datamodule, data_name = build_data(cfg)
            spec = type(datamodule).probe_spec() or datamodule.spec
            parts = [kind] if kind != "data" else ["likelihood", "encoder", "posterior", "prior", "decoder"]
            if all(registry(k).by_target(cfg[k]._target_).cls.incompatibility(spec) is None for k in parts):
                build_model(cfg, spec, data_name)
                built.append(f"{experiment}:{kind}={name}")
print(json.dumps(built))
"""


def test_every_part_of_the_guide_swaps_into_every_genkit_experiment(tmp_path, cli_env):
    """Presets set only what each kind's documented contract has, so a part written from the guide
    composes with every experiment and builds wherever it serves the experiment's data."""
    (tmp_path / "my_parts.py").write_text("\n\n".join(code_blocks("# my_parts.py")))
    env = {**cli_env, "PYTHONPATH": str(tmp_path)}
    result = run([sys.executable, "-c", PRESETS, json.dumps(GUIDE_PARTS)], env, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    built = set(json.loads(result.stdout.splitlines()[-1]))
    for experiment in ("seed_mnist", "audio", "audio_fsdd", "text", "text_ptb"):
        text = experiment.startswith("text")
        kinds = ["posterior", "prior", "encoder", "decoder"] + ([] if text else ["likelihood"])
        kinds += ["data"] if experiment == "seed_mnist" else []
        for kind in kinds:
            name = {"encoder": "bag_of_words", "decoder": "tiny_gru"}.get(kind, GUIDE_PARTS[kind][0]) if text else None
            assert f"{experiment}:{kind}={name or GUIDE_PARTS[kind][0]}" in built, (experiment, kind, sorted(built))
