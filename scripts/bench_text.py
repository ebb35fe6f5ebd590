"""A sentence VAE on the Penn Treebank against an LSTM language model with the same decoder (z removed).

    python scripts/bench_text.py PATH_TO_PTB [--epochs 30] [--k 500] [--out outputs/bench_text]

Both models are trained in this one run by genkit-train, on the same splits, for the same
epochs, with the same decoder (``experiment=text_ptb``); the language model is that decoder
with ``decoder.conditioning=none`` (it never reads z, so its -log p(x|z) is its exact NLL) and
no word dropout. The VAE's test NLL is the importance-weighted estimate with ``--k`` samples
(genkit-eval; He et al. 2019 use 500). Extra ``key=value`` arguments go to both runs.

Published anchors, PTB test set, nats per sentence (``../shared/notes/quality-anchors.md``):
Bowman et al. 2016: LSTM-LM NLL 100 (PPL 116), VAE NLL 101 with KL 2 (PPL 119);
Texar's reproduction: VAE-LSTM NLL 102.5, PPL 107.6. Target: VAE NLL at or below the LM's,
KL > 2 and more than one active unit. Runs unchanged on a GPU (``trainer=gpu``).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
from pathlib import Path

from benchlib import console_script, train_run

ANCHORS = [
    ("Bowman et al. 2016, LSTM-LM", 100.0, 116.0, None),
    ("Bowman et al. 2016, VAE", 101.0, 119.0, 2.0),
    ("Texar reproduction, VAE-LSTM", 102.54, 107.64, None),
]


def train(name: str, out: Path, data: Path, epochs: int, overrides: list[str]) -> dict[str, float]:
    """One genkit-train run of ``experiment=text_ptb``; its final metrics."""
    settings = ["experiment=text_ptb", f"data.path={data}", f"trainer.max_epochs={epochs}"]
    return train_run(name, out / name, [*settings, "callbacks.progress_bar.refresh_rate=200", *overrides])


def importance_weighted(run_dir: Path, k: int) -> dict[str, float]:
    """genkit-eval's test metrics for the run's best checkpoint, NLL with k importance samples."""
    best = json.loads((run_dir / "metrics.json").read_text())["best_checkpoint"]
    subprocess.run([console_script("genkit-eval"), f"ckpt={best}", "split=test", f"nll.k={k}"], check=True)
    return json.loads(Path(best).with_name(f"{Path(best).stem}.test.eval.json").read_text())["metrics"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="folder with ptb.train.txt, ptb.valid.txt, ptb.test.txt")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--k", type=int, default=500, help="importance samples for the VAE's test NLL")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench_text"))
    parser.add_argument("overrides", nargs="*", help="extra genkit-train overrides for both runs")
    args = parser.parse_intermixed_args()
    if not (args.data / "ptb.train.txt").is_file():
        parser.error(f"{args.data} has no ptb.train.txt: give the folder of the PTB LM splits")
    if args.out.exists():
        shutil.rmtree(args.out)

    lm_overrides = [*args.overrides, "decoder.conditioning=none", "decoder.word_dropout=0"]  # whatever the VAE gets
    lm = train("lm", args.out, args.data, args.epochs, lm_overrides)
    vae = train("vae", args.out, args.data, args.epochs, args.overrides)
    vae_iw = importance_weighted(args.out / "vae", args.k)

    rows = [
        ("LSTM-LM (z removed)", lm["test/rec"], lm["test/nelbo"], rec_perplexity(lm), None, None, None),
        (
            f"VAE (NLL: IW k={args.k})",
            vae_iw["nll"],
            vae["test/nelbo"],
            vae_iw["ppl"],
            vae["test/kl"],
            vae.get("test/mi"),
            vae["test/active_units"],
        ),
    ]
    print(f"\nPTB test set, {args.epochs} epochs each, nats per sentence (PPL per token, </s> counted)")
    print(f"{'model':<44}{'NLL':>9}{'-ELBO':>9}{'PPL':>9}{'KL':>7}{'MI':>7}{'AU':>5}")
    for name, nll, nelbo, perplexity, kl, mi, au in rows:
        cells = [f"{v:>7.2f}" if v is not None else f"{'-':>7}" for v in (kl, mi)]
        units = f"{au:>5.0f}" if au is not None else f"{'-':>5}"
        print(f"{name:<44}{nll:>9.2f}{nelbo:>9.2f}{perplexity:>9.1f}{cells[0]}{cells[1]}{units}")
    for name, nll, perplexity, kl in ANCHORS:
        print(f"{name + ' (published)':<44}{nll:>9.2f}{'':>9}{perplexity:>9.1f}{kl if kl else '-':>7}")
    verdict = {
        "nll_at_or_below_lm": vae_iw["nll"] <= lm["test/rec"],
        "kl_above_2": vae["test/kl"] > 2,
        "more_than_one_active_unit": vae["test/active_units"] > 1,
    }
    print(f"ratio VAE NLL / LM NLL: {vae_iw['nll'] / lm['test/rec']:.4f}")
    print("target:", ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in verdict.items()))
    summary = {"epochs": args.epochs, "k": args.k, "lm": lm, "vae": vae, "vae_importance_weighted": vae_iw}
    (args.out / "summary.json").write_text(json.dumps({**summary, "target": verdict}, indent=2))
    print(f"written to {args.out / 'summary.json'}; samples: {args.out / 'vae' / 'samples.txt'}")


def rec_perplexity(metrics: dict[str, float]) -> float:
    """Test perplexity of -log p(x|z) alone (the LM's exact NLL), from the bound's perplexity:
    both divide by the same token count, so log PPL scales with the per-sentence value."""
    return math.exp(math.log(metrics["test/ppl"]) * metrics["test/rec"] / metrics["test/nelbo"])


if __name__ == "__main__":
    main()
