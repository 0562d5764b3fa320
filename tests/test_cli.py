"""The command line: fast help without torch, listing commands, one-line errors."""
from __future__ import annotations

import os
import subprocess
import sys

from typer.testing import CliRunner

from avprompt.cli import app


def test_help_imports_no_torch_and_shows_every_group():
    code = ("import sys\nfrom typer.testing import CliRunner\nfrom avprompt.cli import app\n"
            "r = CliRunner().invoke(app, ['--help'])\nprint(r.output)\n"
            "print('TORCH_LOADED' if 'torch' in sys.modules else 'NO_TORCH')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    assert "NO_TORCH" in out
    for group in ("bench", "zeroshot", "report", "methods", "data", "backbones"):
        assert group in out


def test_methods_lists_registry_with_modalities():
    r = CliRunner().invoke(app, ["methods"])
    assert r.exit_code == 0
    for key in ("dg-sct", "coop", "cocoop", "clip-adapter", "maple", "tip-adapter", "linear-probe", "zeroshot-clip"):
        assert key in r.output
    assert "[av" in r.output and "[v|a|av" in r.output


def test_backbones_list_names_architectures_and_weight_sources():
    r = CliRunner().invoke(app, ["backbones", "list"])
    assert r.exit_code == 0
    assert "avp-vit-synthav" in r.output and "HTSAT-base" in r.output and "ViT-B-32" in r.output


def test_unknown_method_pattern_and_unknown_option_are_one_line_errors():
    env = {**os.environ}
    p = subprocess.run([sys.executable, "-m", "avprompt.cli", "methods", "no-such-*"], capture_output=True, text=True, env=env)
    assert p.returncode == 2 and p.stderr.strip().startswith("error:") and len(p.stderr.strip().splitlines()) == 1
    p = subprocess.run([sys.executable, "-m", "avprompt.cli", "methods", "--nope"], capture_output=True, text=True, env=env)
    assert p.returncode == 2 and "Traceback" not in p.stderr and "--nope" in p.stderr


def test_version_flag_prints_the_package_version():
    import avprompt
    r = CliRunner().invoke(app, ["--version"])
    assert r.exit_code == 0 and r.output.strip() == f"avprompt {avprompt.__version__}"


def test_python_api_runs_a_sweep_and_returns_frames(tiny_world, tmp_path, monkeypatch):
    monkeypatch.setenv("AVPROMPT_SYNTH_SIZE", "tiny")
    import avprompt
    out = avprompt.sweep(tasks=["ave-cls"], methods="zeroshot-clip,linear-probe", modality="v", shots=[1],
                         seeds=[1], backbones="tiny", synth_size="tiny", out=str(tmp_path / "r"), echo=lambda *_: None)
    assert out["ran"] == 2 and out["failed"] == 0
    df = avprompt.results_frame(tmp_path / "r")
    assert sorted(df["method_id"]) == ["linear-probe@v", "zeroshot-clip@v"] and df["primary"].notna().all()
    summ = avprompt.summary_frame(tmp_path / "r", resamples=100)
    assert {"mean", "ci_lo", "ci_hi", "n"} <= set(summ.columns)


COMMANDS = [["bench"], ["zeroshot"], ["train"], ["eval"], ["predict"], ["explain"], ["report"], ["methods"],
            ["tasks"], ["backbones", "list"], ["backbones", "build"], ["data", "prepare"], ["data", "stats"],
            ["data", "export-manifest"], ["data", "synth"]]


def test_every_command_help_shows_an_example_and_the_real_defaults():
    import re

    from avprompt.bench import BenchConfig
    from avprompt.zeroshot import ZeroShotConfig
    runner = CliRunner()
    for cmd in COMMANDS:
        r = runner.invoke(app, [*cmd, "--help"], env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})
        assert r.exit_code == 0, (cmd, r.output)
        assert "Example: avprompt " + cmd[0] in r.output, cmd
    out = runner.invoke(app, ["bench", "--help"], env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"}).output
    b = BenchConfig()
    for option, value in (("--shots", ",".join(map(str, b.shots))), ("--tasks", ",".join(b.tasks)),
                          ("--seeds", ",".join(map(str, b.seeds))), ("--max-epochs", str(b.max_epochs)),
                          ("--backbones", b.backbones)):
        line = next(x for x in out.splitlines() if re.search(rf"│ {option}\s", x))
        assert f"default: ({value})" in line, line  # the dataclass's value, not None
    out = runner.invoke(app, ["zeroshot", "--help"], env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"}).output
    line = next(x for x in out.splitlines() if "│ --max-epochs" in x)
    assert f"default: ({ZeroShotConfig().max_epochs})" in line
    assert "--tasks" in out  # the same option name as bench
