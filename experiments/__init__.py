"""Entry points: `python -m experiments.train`, `.sweep` and `.export` (see each module)."""
