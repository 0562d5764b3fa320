"""The command line: fast help without torch, listing commands, one-line errors."""
from __future__ import annotations

import os
import re
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
    assert "tags:  " not in r.output  # architectures without a tag say so, no empty tag list


def test_backbones_list_says_what_is_on_disk_and_answers_without_open_clip(tmp_path):
    """A tag whose repository is in the Hugging Face hub cache is marked on disk; after the first
    call the list comes from the per-version catalog, without importing open_clip."""
    from avprompt.encoders.catalog import open_clip_table
    env = {**os.environ, "AVPROMPT_CACHE": str(tmp_path / "cache"), "HF_HUB_CACHE": str(tmp_path / "hub")}
    repo = open_clip_table()["ViT-B-32"]["openai"]["hf_hub"].strip("/")
    snap = tmp_path / "hub" / f"models--{repo.replace('/', '--')}" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    (snap / "open_clip_model.safetensors").write_bytes(b"x")
    code = ("import sys; from typer.testing import CliRunner; from avprompt.cli import app\n"
            "r = CliRunner().invoke(app, ['backbones', 'list']); print(r.output)\n"
            "print('open_clip imported:', 'open_clip' in sys.modules)")
    outs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env).stdout
            for _ in range(2)]
    line = next(x for x in outs[1].splitlines() if x.split()[1:2] == ["ViT-B-32"])
    assert "[on disk: openai]" in line, line
    assert "[on disk: synthav-clip.safetensors]" in outs[1]
    assert outs[0].splitlines()[:-1] == outs[1].splitlines()[:-1]  # the cache says what open_clip said
    assert "open_clip imported: False" in outs[1]


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
    assert "--tasks" in out and "--seeds" in out  # the same option names as bench


def test_choices_are_typed_in_help_and_a_bad_value_is_one_line(tmp_path):
    """Enumerated options show their choices in --help (typed, not strings parsed by hand), and
    a bad value or a bad comma list is one line naming the option, exit code 2."""
    out = CliRunner().invoke(app, ["bench", "--help"], env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"}).output
    for option, choices in (("--protocol", "<standard|reference>"), ("--modality", "<auto|v|a|av>"),
                            ("--select", "<val|last>"), ("--audio-pass", "<segment|clip>"), ("--shots", "K,...")):
        line = next(x for x in out.splitlines() if re.search(rf"│ {option}\s", x))
        assert choices in line, line
    for args, needle in ((["bench", "--select", "best"], "'best' is not one of 'val', 'last'"),
                         (["bench", "--seeds", "1,two"], "'1,two': expected comma-separated integers"),
                         (["predict", "a.json", "b.mp4", "--format", "xml"], "'xml' is not one of"),
                         (["train", "--seeds", "x"], "--seeds")):
        p = subprocess.run([sys.executable, "-m", "avprompt.cli", *args], capture_output=True, text=True,
                           env={**os.environ, "AVPROMPT_SYNTH_SIZE": "tiny"})
        assert p.returncode == 2, (args, p.stderr)
        err = p.stderr.strip()
        assert needle in err and len(err.splitlines()) == 1 and err.startswith("error: "), err
