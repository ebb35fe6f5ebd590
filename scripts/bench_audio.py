"""A log-mel VAE on the Free Spoken Digit Dataset against a deterministic autoencoder of the same shape.

    python scripts/bench_audio.py PATH_TO_FSDD [--epochs 100] [--out outputs/bench_audio] [key=value ...]

Both models are trained in this one run by genkit-train with ``experiment=audio_fsdd`` (same
encoder, decoder, splits and epochs). The autoencoder is the same network with ``model.beta=0``:
nothing pulls q(z|x) towards the prior, so its noise shrinks away and reconstructions (from the
posterior mean, as for the VAE) are as good as the architecture allows; its prior samples mean
nothing. Reported on the official FSDD test takes (0-4): -ELBO (nats per clip), mel L1 distance
(dB) and spectral convergence of the reconstructions. Target: the VAE's mel L1 within 10% of the
autoencoder's, with a usable prior: listen to ``OUT/vae/audio/sample_*.wav`` (and compare
``OUT/ae/audio/sample_*.wav``). Extra ``key=value`` arguments go to both runs; runs unchanged on
a GPU (``trainer=gpu``).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from benchlib import train_run

#: The target: the VAE's reconstructions within this factor of the autoencoder's mel L1.
MEL_L1_TOLERANCE = 1.10


def train(name: str, out: Path, data: Path, epochs: int, overrides: list[str]) -> dict[str, float]:
    """One genkit-train run of ``experiment=audio_fsdd``; its final metrics."""
    settings = ["experiment=audio_fsdd", f"data.path={data}", f"trainer.max_epochs={epochs}"]
    return train_run(name, out / name, [*settings, "callbacks.progress_bar.refresh_rate=0", *overrides])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="the FSDD folder (with recordings/*.wav)")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("outputs/bench_audio"))
    parser.add_argument("overrides", nargs="*", help="extra genkit-train overrides for both runs")
    args = parser.parse_intermixed_args()
    if not any(args.data.rglob("*_*_*.wav")):
        parser.error(f"{args.data} holds no FSDD recordings ({{digit}}_{{speaker}}_{{take}}.wav)")
    if args.out.exists():
        shutil.rmtree(args.out)

    ae = train("ae", args.out, args.data, args.epochs, ["model.beta=0", *args.overrides])
    vae = train("vae", args.out, args.data, args.epochs, args.overrides)

    print(f"\nFSDD test takes (300 clips), {args.epochs} epochs each; reconstructions from the posterior mean")
    print(f"{'model':<34}{'-ELBO':>11}{'rec':>11}{'KL':>9}{'AU':>5}{'mel L1 dB':>11}{'spec. conv.':>13}")
    for name, m in (("autoencoder (beta=0)", ae), ("VAE", vae)):
        print(
            f"{name:<34}{m['test/nelbo']:>11.1f}{m['test/rec']:>11.1f}{m['test/kl']:>9.1f}"
            f"{m['test/active_units']:>5.0f}{m['test/mel_l1']:>11.3f}{m['test/spectral_convergence']:>13.4f}"
        )
    ratio = vae["test/mel_l1"] / ae["test/mel_l1"]
    verdict = {"mel_l1_within_10_percent": ratio <= MEL_L1_TOLERANCE}
    print(f"ratio VAE / autoencoder mel L1: {ratio:.4f}")
    print("target:", ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in verdict.items()))
    summary = {"epochs": args.epochs, "ae": ae, "vae": vae, "mel_l1_ratio": ratio, "target": verdict}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"written to {args.out / 'summary.json'}; listen: {args.out / 'vae' / 'audio'}/*.wav")


if __name__ == "__main__":
    main()
