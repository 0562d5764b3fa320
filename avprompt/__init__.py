"""avprompt: a benchmark for few-shot and zero-shot audio-visual prompt learning.

Importing the package is cheap (no torch). It sets ``HF_HUB_OFFLINE=1`` unless the user set it,
because laion-clap's import reaches for the Hugging Face hub and hangs or raises offline.
"""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

__version__ = "0.1.0"
