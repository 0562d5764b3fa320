"""``report --html``: one self-contained page, loaded in a real browser (headless Chromium)."""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from typer.testing import CliRunner

from avprompt.cli import app


@pytest.fixture(scope="module")
def store(tiny_world, tmp_path_factory):
    import os
    os.environ["AVPROMPT_SYNTH_SIZE"] = "tiny"
    from avprompt.bench import BenchConfig, run_bench
    out = tmp_path_factory.mktemp("html-store")
    run_bench(BenchConfig(shots=[1, 2], seeds=[1, 2], tasks=["ave", "ave-cls"], modality="v",
                          methods="zeroshot-clip,linear-probe", backbones="tiny", synth_size="tiny",
                          out=str(out), jobs=1), echo=lambda *_: None)
    return out


def _page(store, tmp_path):
    r = CliRunner().invoke(app, ["report", str(store), "--html", str(tmp_path / "site")])
    assert r.exit_code == 0, r.output
    page = tmp_path / "site" / "index.html"
    return page, page.read_text()


def test_page_is_self_contained_with_tables_images_and_provenance(store, tmp_path):
    page, text = _page(store, tmp_path)
    assert not re.search(r'(src|href)="(https?:|//|file:)', text), "everything is inline"
    assert text.count("<table>") >= 4  # summary, full table, per-class, provenance
    assert text.count('src="data:image/png;base64,') == 2  # curves + confusion matrices
    for needle in ("linear-probe@v", "zeroshot-clip@v", "Provenance", "config hash", "1,2"):
        assert needle in text, needle


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="needs Debian's chromium (.ci/run installs it: apt-get install chromium)")
def test_chromium_renders_every_table_and_image_without_console_errors(store, tmp_path):
    page, text = _page(store, tmp_path)
    n_tables = text.count("<table>")
    base = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000"]
    dom = subprocess.run(base + ["--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    attrs = dict(re.findall(r'data-(tables|images|images-ok)="(\d+)"', dom.stdout))
    assert attrs, "the page's load script did not run"
    assert int(attrs["tables"]) == n_tables and int(attrs["images"]) == 2 and int(attrs["images-ok"]) == 2, attrs
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not [line for line in console if re.search(r"error|Uncaught", line, re.I)], console
    shot = tmp_path / "page.png"
    run = subprocess.run(base + [f"--screenshot={shot}", "--window-size=1280,2000", page.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", run.stderr[-2000:]
