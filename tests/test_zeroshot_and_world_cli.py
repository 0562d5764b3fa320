"""Zero-shot transfer end to end (tiny world, tiny backbones), `data stats` on the generated
world, and a method file dropped into baselines/ registering with no other edit."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from typer.testing import CliRunner

from avprompt.cli import app


def _transferred(out, tiny_world, key, task="ave-cls"):
    """(checkpoint blob, target method with the checkpoint loaded as a transfer does, report)."""
    from avprompt.data.datasets import load_dataset
    from avprompt.data.tasks import task_spec
    from avprompt.encoders import load_encoders
    from avprompt.engine.cell import load_checkpoint, load_transferable, transfer_overrides
    from avprompt.registry import get_method
    mod = "v" if key == "coop" else "av"
    blob = load_checkpoint(str(out / "checkpoints" / f"{key}@{mod}.pt"), "cpu")
    cls = get_method(key)
    index = load_dataset("ave", tiny_world / "ave")
    # the architecture pre-training ran with (e.g. a context shrunk to its class names) is kept
    cfg = cls.default_config(modality=mod, **transfer_overrides(blob))
    method = cls(load_encoders("tiny"), task_spec(task, index), cfg)
    return blob, method, load_transferable(method, blob["state"])


def test_zeroshot_pretrains_saves_and_transfers_learned_context(tiny_world, tmp_path, monkeypatch):
    monkeypatch.setenv("AVPROMPT_SYNTH_SIZE", "tiny")
    out = tmp_path / "res"
    r = CliRunner().invoke(app, ["zeroshot", "--pretrain", "vggsound40k", "--methods", "coop,zeroshot-clip",
                                 "--backbones", "tiny", "--max-epochs", "2", "--targets", "ave-cls,llp-cls",
                                 "--out", str(out)])
    assert r.exit_code == 0, r.output
    recs = [json.loads(p.read_text()) for p in (out / "zeroshot").rglob("seed*.json")]
    assert {(x["key"]["task"], x["key"]["method"]) for x in recs} == {
        ("ave-cls", "coop"), ("llp-cls", "coop"), ("ave-cls", "zeroshot-clip"), ("llp-cls", "zeroshot-clip")}
    assert all(x["status"] == "ok" and x["key"]["shots"] == 0 for x in recs)
    # the learned context carried over to other class names: equal to the checkpoint's
    blob, method, report = _transferred(out, tiny_world, "coop")
    ctx_keys = [k for k in blob["state"] if "ctx" in k]
    assert ctx_keys and set(ctx_keys) <= set(report["loaded"])
    own = method.state_dict()
    assert all(torch.equal(own[k], blob["state"][k]) for k in ctx_keys)
    assert not report["untransferred_trainable"]
    # the transfer cells say what loaded, and the pre-training's context length is the one used
    coop = [x for x in recs if x["key"]["method"] == "coop"]
    assert all(set(ctx_keys) <= set(x["extra"]["transfer"]["loaded"]) for x in coop)
    n_ctx = blob["effective_config"]["n_ctx"]
    assert all(x["config"]["n_ctx"] == n_ctx for x in coop)
    # reuse without pre-training again
    r2 = CliRunner().invoke(app, ["zeroshot", "--methods", "coop", "--backbones", "tiny", "--targets", "ave",
                                  "--from-checkpoint", str(out / "checkpoints"), "--out", str(out)])
    assert r2.exit_code == 0, r2.output
    assert [p for p in (out / "zeroshot").rglob("seed*.json") if "/ave/" in str(p)]


def test_zeroshot_transfers_dgsct_modules(tiny_world, tmp_path, monkeypatch):
    monkeypatch.setenv("AVPROMPT_SYNTH_SIZE", "tiny")
    out = tmp_path / "res"
    r = CliRunner().invoke(app, ["zeroshot", "--methods", "dg-sct", "--backbones", "tiny", "--max-epochs", "1",
                                 "--targets", "ave-cls", "--out", str(out)])
    assert r.exit_code == 0, r.output
    blob, method, report = _transferred(out, tiny_world, "dg-sct")
    trainable = {n for n, p in method.named_parameters() if p.requires_grad}
    moved = [k for k in report["loaded"] if k in trainable]
    assert moved, report
    own = method.state_dict()
    assert all(torch.equal(own[k], blob["state"][k]) for k in moved)


def test_transfer_carries_architecture_changes_but_not_optimiser_values():
    """Pre-training shrank n_ctx (the learned context's shape) and rescaled CoCoOp's lr; the target
    is built with the shrunk n_ctx and its own reference lr, so its record never shows an lr
    scaled twice for a cell that does not train."""
    from avprompt.engine.cell import transfer_overrides
    blob = {"effective_config": {"n_ctx": 8, "lr": 0.013425, "batch_size": 4},
            "reference_changes": [{"field": "n_ctx", "reference": 16, "used": 8},
                                  {"field": "lr", "reference": 0.002, "used": 0.013425},
                                  {"field": "batch_size", "reference": 8, "used": 4}]}
    assert transfer_overrides(blob) == {"n_ctx": 8}


def test_transfer_that_loads_nothing_fails(tiny_world):
    from avprompt.data.datasets import load_dataset
    from avprompt.data.tasks import task_spec
    from avprompt.encoders import load_encoders
    from avprompt.engine.cell import load_transferable
    from avprompt.registry import get_method
    import pytest
    cls = get_method("coop")
    method = cls(load_encoders("tiny"), task_spec("ave-cls", load_dataset("ave", tiny_world / "ave")),
                 cls.default_config(modality="v", n_ctx=4))
    state = {k: torch.zeros(3, *v.shape) for k, v in method.state_dict().items() if not k.startswith("encoders.")}
    with pytest.raises(ValueError, match="transfer loaded none of coop's learned parameters"):
        load_transferable(method, state)


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
