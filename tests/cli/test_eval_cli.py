"""genkit-eval end to end on a trained checkpoint, and what opening a shared checkpoint may never do."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from conftest import run, script, wandb_log_records
from genkit.cli.eval import EvalOptions, evaluation
from genkit.errors import GenkitError


def eval_options(*words: str) -> DictConfig:
    """genkit-eval's options as its Hydra job gets them."""
    return OmegaConf.merge(OmegaConf.structured(EvalOptions), OmegaConf.from_dotlist(list(words)))


def test_eval_reports_the_bound_and_the_nll_beside_the_checkpoint(trained, tmp_path, cli_env):
    checkpoint = trained.copy(tmp_path / "run") / "checkpoints" / "last.ckpt"
    result = run([*script("genkit-eval"), f"ckpt={checkpoint}", "nll.k=64"], cli_env, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "NLL (k=64)" in result.stdout + result.stderr
    report = json.loads(checkpoint.with_name("last.test.eval.json").read_text())
    metrics = report["metrics"]
    assert report["split"] == "test" and report["nll_k"] == 64 and report["data"] == "digits"
    assert metrics["nll"] <= metrics["nelbo"] + 0.1  # the importance-weighted bound is the tighter one
    assert metrics["nelbo"] == pytest.approx(metrics["rec"] + metrics["kl"], rel=1e-4)
    assert {"bpd", "active_units"} <= metrics.keys()
    val = run([*script("genkit-eval"), f"ckpt={checkpoint}", "split=val", "nll.k=4"], cli_env, tmp_path)
    assert val.returncode == 0 and checkpoint.with_name("last.val.eval.json").is_file()


def test_eval_adds_its_results_to_the_summary_of_the_run_that_trained_the_checkpoint(trained, tmp_path, cli_env):
    out = trained.copy(tmp_path / "run")  # trained with W&B offline
    ckpt = out / "checkpoints" / "last.ckpt"
    result = run([*script("genkit-eval"), f"ckpt={ckpt}", "nll.k=4"], cli_env, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run_id = (out / "wandb-run-id").read_text().strip()
    training, evaluation = sorted(out.glob("wandb/offline-run-*"))  # the same W&B run, continued
    assert training.name.endswith(run_id) and evaluation.name.endswith(run_id)
    records = wandb_log_records(next(evaluation.glob("run-*.wandb")), cli_env)
    summary = {k: v for r in records if r["type"] == "summary" for k, v in r["summary"]["update"].items()}
    metrics = json.loads(ckpt.with_name("last.test.eval.json").read_text())["metrics"]
    assert summary["eval/test/nll"] == pytest.approx(metrics["nll"]) and summary["eval/test/nll_k"] == 4
    assert summary["eval/test/nelbo"] == pytest.approx(metrics["nelbo"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ckpt=/nowhere/model.ckpt"], "checkpoint /nowhere/model.ckpt does not exist"),
        (["nll.k=0"], "nll.k must be at least 1"),
        (["split=tset"], "split must be train, val or test, got 'tset'"),
        (["device=tpu"], "device='tpu' is not a device; use auto, cpu, cuda or cuda:N"),
        (["device=cuda:99"], "device=cuda:99: this machine has"),
        (["device=meta"], "device=meta: genkit-eval runs on cpu or cuda"),
        (["data.binarize=static"], "data 'digits' with data.binarize=static is not the data the model was trained on"),
        (["data.batch_size=1e6"], "data.batch_size must be a whole number, got 1000000.0"),
        (["out=results.txt"], "out=results.txt: this command writes a .json file here; give a path ending in .json"),
    ],
)
def test_eval_refuses_bad_input(args, message, trained):
    """The checks genkit-eval's job runs (in this process; the next test runs one from the console script)."""
    args = args if args[0].startswith("ckpt=") else [f"ckpt={trained.checkpoint}", *args]
    with pytest.raises(GenkitError, match=re.escape(message)):
        evaluation(eval_options(*args))


def test_a_folder_or_a_file_that_is_no_checkpoint_is_named_for_what_it_is(trained, tmp_path):
    with pytest.raises(GenkitError, match=rf"checkpoint {trained.folder} is a folder; give a checkpoint file, e\.g\. "):
        evaluation(eval_options(f"ckpt={trained.folder}"))
    notes = tmp_path / "notes.ckpt"
    notes.write_text("hello")
    with pytest.raises(GenkitError, match=r"cannot be read \(KeyError: 101\): it is damaged or not a PyTorch"):
        evaluation(eval_options(f"ckpt={notes}"))


def test_a_refused_evaluation_ends_the_console_script_with_one_clean_line(tmp_path, cli_env):
    result = run([*script("genkit-eval"), "ckpt=/nowhere/model.ckpt"], cli_env, tmp_path)
    assert result.returncode == 1 and "checkpoint /nowhere/model.ckpt does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_eval_on_data_of_another_shape_names_both(trained, tmp_path, cli_env):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(20):
        Image.fromarray(np.full((16, 16, 3), i * 10, dtype=np.uint8)).save(folder / f"{i}.png")
    args = [
        f"ckpt={trained.checkpoint}",
        "+data._target_=genkit.data.images.ImageFolder",
        f"+data.path={folder}",
        "+data.size=16",
    ]
    result = run([*script("genkit-eval"), *args], cli_env, tmp_path)
    assert result.returncode == 1
    assert "is not the data the model was trained on: it has event_shape (3, 16, 16) (the model's: (1, 8, 8))" in (
        result.stderr
    )


def test_a_file_that_is_not_a_genkit_checkpoint_is_refused(tmp_path, cli_env):
    import torch

    fake = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}}, fake)
    result = run([*script("genkit-eval"), f"ckpt={fake}"], cli_env, tmp_path)
    assert result.returncode == 1 and "is not a genkit checkpoint" in result.stderr


class RunsCode:
    """Unpickling this would run a shell command: what a malicious shared checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_whose_pickle_runs_code_is_refused_without_running_it(trained, tmp_path, cli_env):
    import torch

    marker = tmp_path / "pwned"
    crafted = torch.load(trained.checkpoint, map_location="cpu", weights_only=True)
    crafted["genkit"]["payload"] = RunsCode(marker)
    bad = tmp_path / "shared.ckpt"
    torch.save(crafted, bad)
    for command in (["genkit-eval", f"ckpt={bad}"], ["genkit", "sample", f"ckpt={bad}"]):
        result = run([*script(command[0]), *command[1:]], cli_env, tmp_path)
        assert result.returncode != 0 and f"checkpoint {bad} cannot be read" in result.stderr
        assert "(posix.system)" in result.stderr and "genkit never runs code from a file" in result.stderr
        assert "weights_only" not in result.stderr  # torch's advice to turn the protection off is not repeated
    assert not marker.exists(), "loading a shared checkpoint ran code from it"


@pytest.mark.parametrize(
    ("key", "target", "message"),
    [
        ("encoder", "os.system", "'os.system' is not a registered encoder: genkit only builds registered parts"),
        ("data", "subprocess.Popen", "'subprocess.Popen' is not a registered data"),
        ("optim", "builtins.exec", "optim._target_ must be a torch.optim class, got 'builtins.exec'"),
    ],
)
def test_a_checkpoint_config_naming_unregistered_code_is_refused(key, target, message, trained, tmp_path):
    import torch

    crafted = torch.load(trained.checkpoint, map_location="cpu", weights_only=True)
    crafted["genkit"]["config"][key]["_target_"] = target
    bad = tmp_path / "shared.ckpt"
    torch.save(crafted, bad)
    with pytest.raises(GenkitError, match=re.escape(message)):
        evaluation(eval_options(f"ckpt={bad}"))
