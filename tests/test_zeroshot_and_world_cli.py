"""Zero-shot transfer end to end (tiny world, tiny backbones), `data stats` on the generated
world, and a method file dropped into baselines/ registering with no other edit."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from typer.testing import CliRunner

from avprompt.cli import app


def test_zeroshot_pretrains_saves_and_transfers_learned_context(tiny_world, tmp_path, monkeypatch):
    monkeypatch.setenv("AVPROMPT_SYNTH_SIZE", "tiny")
    out = tmp_path / "res"
    r = CliRunner().invoke(app, ["zeroshot", "--pretrain", "vggsound40k", "--methods", "coop,zeroshot-clip",
                                 "--backbones", "tiny", "--max-epochs", "2", "--targets", "ave-cls,llp-cls",
                                 "--out", str(out)])
    assert r.exit_code == 0, r.output
    ckpt = out / "checkpoints" / "coop@v.pt"
    state = torch.load(ckpt)
    recs = [json.loads(p.read_text()) for p in (out / "zeroshot").rglob("seed*.json")]
    assert {(x["key"]["task"], x["key"]["method"]) for x in recs} == {
        ("ave-cls", "coop"), ("llp-cls", "coop"), ("ave-cls", "zeroshot-clip"), ("llp-cls", "zeroshot-clip")}
    assert all(x["status"] == "ok" and x["key"]["shots"] == 0 for x in recs)
    # the learned context carried over: the target method's context is the pre-trained one
    from avprompt.data.datasets import load_dataset
    from avprompt.data.tasks import task_spec
    from avprompt.encoders import load_encoders
    from avprompt.engine.cell import load_transferable
    from avprompt.registry import get_method
    cls = get_method("coop")
    index = load_dataset("ave", tiny_world / "ave")
    method = cls(load_encoders("tiny"), task_spec("ave-cls", index), cls.default_config(modality="v"))
    ctx_keys = [k for k in state if "ctx" in k]
    assert ctx_keys
    load_transferable(method, state)
    own = method.state_dict()
    assert all(torch.equal(own[k], state[k]) for k in ctx_keys)
    # reuse without pre-training again
    r2 = CliRunner().invoke(app, ["zeroshot", "--methods", "coop", "--backbones", "tiny", "--targets", "ave",
                                  "--from-checkpoint", str(out / "checkpoints"), "--out", str(out)])
    assert r2.exit_code == 0, r2.output
    assert list((out / "zeroshot" / "ave").rglob("seed*.json"))


def test_data_stats_reads_all_three_generated_datasets(tiny_world):
    for name, folder in (("ave", "ave"), ("llp", "llp"), ("vggsound40k", "vggsound40k")):
        r = CliRunner().invoke(app, ["data", "stats", "--dataset", name, "--root", str(tiny_world / folder), "--json"])
        assert r.exit_code == 0, r.output
        data = json.loads(r.output)
        assert data["classes"] and data["rows"] > 0
        oracle = data["synthav"]["oracle_ceilings"]["ave"]
        assert oracle["audio_visual"] > max(oracle["visual_only"], oracle["audio_only"])


def test_method_file_dropped_into_baselines_registers(tmp_path):
    import avprompt.baselines as pkg
    from avprompt.registry import discover
    path = Path(pkg.__path__[0]) / "zz_dropin_probe.py"
    path.write_text("from avprompt.method import Method\nfrom avprompt.registry import register_method\n"
                    "@register_method('zz-dropin')\nclass DropIn(Method):\n    description = 'dropped in'\n")
    try:
        assert "zz-dropin" in discover(force=True)
    finally:
        path.unlink()
