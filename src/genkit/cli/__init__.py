"""Console entry points: ``genkit-train`` (Hydra app) and ``genkit`` (tools)."""
