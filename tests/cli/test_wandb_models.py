"""Trained models kept in W&B: checkpoints logged as model artifacts by the real ``wandb`` library
(offline, read back with W&B's own reader), and ``ckpt=wandb:...`` resolved through W&B's artifact API
against a W&B server on loopback (tests/cli/wandb_server.py)."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import genkit
from conftest import FAST, run, script, wandb_records
from genkit.errors import CheckpointError, LoggerConfigError
from genkit.training.tracking import build_loggers


def md5(path: Path) -> str:
    return base64.b64encode(hashlib.md5(path.read_bytes()).digest()).decode()


@pytest.fixture
def artifact_server():
    """``artifact_server(ENTITY/PROJECT/COLLECTION, FILE)``: the loopback W&B server's URL."""
    servers = []

    def start(name: str, file: Path) -> str:
        command = [sys.executable, str(Path(__file__).with_name("wandb_server.py")), "artifact", name, str(file)]
        server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        servers.append(server)
        return f"http://127.0.0.1:{server.stdout.readline().strip()}"

    yield start
    for server in servers:
        server.kill()
        server.wait()


def test_log_model_keeps_checkpoints_in_the_offline_run_and_wandb_references_load_them(
    tmp_path, cli_env, artifact_server
):
    out = tmp_path / "run"
    result = run(
        [*script("genkit-train"), "logger.wandb.log_model=all", *FAST, f"hydra.run.dir={out}"], cli_env, tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_id = (out / "wandb-run-id").read_text().strip()
    artifacts = [r["artifact"] for r in wandb_records(out, cli_env) if r["type"] == "artifact"]
    # Each epoch's saved best and last checkpoint as it was saved, then the best once more with the final metrics.
    assert len(artifacts) == 5
    assert {(a["name"], a["type"]) for a in artifacts} == {(f"model-{run_id}", "model")}
    offline_run = next(out.glob("wandb/offline-run-*"))
    for artifact in artifacts:
        (entry,) = artifact["manifest"]["contents"]
        kept = Path(entry["local_path"])
        assert entry["path"] == "model.ckpt" and kept.parent == offline_run / "models"  # where `wandb sync` reads
        assert md5(kept) == entry["digest"]
    final = artifacts[-1]
    assert "best" in final["aliases"]
    results = json.loads((out / "metrics.json").read_text())
    metadata = json.loads(final["metadata"])
    assert metadata["metrics"] == pytest.approx(results["metrics"])
    assert metadata["config"]["encoder"]["_target_"] == results["config"]["encoder"]["_target_"]
    best = Path(final["manifest"]["contents"][0]["local_path"])
    assert best.read_bytes() == Path(results["best_checkpoint"]).read_bytes()
    during = [json.loads(a["metadata"])["metrics"] for a in artifacts[:-1]]
    assert [m["epoch"] for m in during] == [0, 0, 1, 1] and all("val/nelbo" in m for m in during)

    # The same file, held by a W&B server, loads through a wandb: reference into the cache, and the
    # tools write their outputs in the current folder, named after the artifact's version.
    collection = f"me/genkit/model-{run_id}"
    env = {**cli_env, "WANDB_BASE_URL": artifact_server(collection, best), "WANDB_API_KEY": "k" * 40}
    result = run([*script("genkit"), "sample", f"ckpt=wandb:{collection}:best", "n=4"], env, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / f"model-{run_id}-v3.samples.png").is_file()
    cached = Path(env["HOME"]) / ".cache/genkit/models" / f"{collection}-v3" / "model.ckpt"
    assert cached.read_bytes() == best.read_bytes()

    result = run([*script("genkit"), "sample", f"ckpt=wandb:{collection[:-2]}xx:best"], env, tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"wandb:{collection[:-2]}xx:best could not be fetched from W&B: artifact membership" in result.stderr
    assert "not found" in result.stderr and "give the checkpoint's local path instead" in result.stderr


def test_a_wandb_reference_without_credentials_says_what_wandb_said(tmp_path, cli_env):
    result = run([*script("genkit"), "sample", "ckpt=wandb:me/genkit/model-abc:best"], cli_env, tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "wandb:me/genkit/model-abc:best could not be fetched from W&B" in result.stderr
    assert "No API key configured" in result.stderr and "local path" in result.stderr


def test_a_malformed_wandb_reference_shows_the_form():
    with pytest.raises(CheckpointError, match="write wandb:ENTITY/PROJECT/NAME:ALIAS"):
        genkit.load("wandb:genkit/model-abc")


def test_log_model_takes_false_best_or_all(tmp_path):
    cfg = OmegaConf.create({"logger": {"wandb": {"log_model": "sometimes", "mode": "disabled"}}})
    with pytest.raises(LoggerConfigError, match="log_model must be false .*, best .* or all"):
        build_loggers(cfg, tmp_path)
