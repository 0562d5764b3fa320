"""avprompt: a benchmark for few-shot and zero-shot audio-visual prompt learning.

Importing the package is cheap (no torch). It sets ``HF_HUB_OFFLINE=1`` unless the user set it,
because laion-clap's import reaches for the Hugging Face hub and hangs or raises offline.
"""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

__version__ = "0.1.0"


def sweep(**options):
    """(Named ``sweep``: ``avprompt.bench`` is the module.) Run a sweep from Python (the options of ``BenchConfig``, as ``avprompt bench`` takes them)
    and return its outcome dict (counts, table, plot path)::

        import avprompt
        avprompt.sweep(tasks=["ave"], methods="linear-probe,zeroshot-*", shots=[1, 4], out="runs")
        df = avprompt.results_frame("runs")   # one row per cell: keys, metrics, timings
    """
    from avprompt.bench import BenchConfig, run_bench
    echo = options.pop("echo", print)
    return run_bench(BenchConfig(**options), echo=echo)


def results_frame(folder: str = "runs"):
    """Every result record under ``folder`` as a pandas DataFrame (one row per cell)."""
    from avprompt.report import to_dataframe
    from avprompt.results import load_results
    return to_dataframe(load_results(folder))


def summary_frame(folder: str = "runs", **options):
    """The report's aggregate (mean, 95% CI, floors, paired differences) as a DataFrame."""
    from avprompt.report import summarize
    return summarize(results_frame(folder), **options)
