"""Benchmarks, run as `python -m bench.<name>` (README, Performance; docs/results.md)."""

from configs.cli import ignore_google_version_warnings

ignore_google_version_warnings()  # every bench imports TFX or TF, whose google-* packages warn at import
