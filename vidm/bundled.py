"""Where the bundled pretrained pipelines live and which one `--model` means by default.

Kept free of heavy imports so the CLI can name the default in `--help` without loading torch."""

from pathlib import Path

PRETRAINED_ROOT = Path(__file__).resolve().parent / "pretrained"
DEFAULT_MODEL = "real-tiny"  # the bundled pipeline used when no --model is given (synth-tiny: --model synth-tiny)
MODEL_HELP = f"pipeline folder, or the name of a bundled one (default: the bundled {DEFAULT_MODEL})"
