"""Every command: ``genkit-train`` (``train``), ``genkit-eval`` (``eval``) and ``genkit`` (``main``, with
one module per command: ``listing``, ``compare``, ``sample``, ``reconstruct``, ``interpolate``,
``denoise``, ``latent_map``, ``anomaly``). ``app`` is what the Hydra apps share, ``trained``
what the commands on a trained model share."""
