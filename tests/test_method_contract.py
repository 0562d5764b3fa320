"""One contract over every registered method, on every modality it supports, for a segment-level
and a video-level task: shapes, backward, frozen encoders, trainable parameters, state-dict round
trip, determinism."""
from __future__ import annotations

import pytest
import torch

from avprompt.registry import discover
from avprompt.task import TaskSpec

SEG = TaskSpec("ave", "segment", ("dog bark", "car horn", "violin"), num_segments=3)
VID = TaskSpec("ave-cls", "video", ("dog bark", "car horn", "violin"), num_segments=3)
CASES = [(key, mod) for key, cls in sorted(discover().items()) for mod in cls.supported_modalities]


def build(cls, encoders, task, modality, seed=0):
    torch.manual_seed(seed)
    cfg = cls.default_config(modality=modality)
    return cls(encoders, task, cfg)


def fitted(method, encoders, batch):
    """Fitting methods fit on features of the batch itself (the contract only)."""
    if method.fits:
        feats = {k: v for k, v in batch.items() if not k.startswith(("frames", "audio"))}
        for m in method.modalities:
            feats["feat_" + m] = encoders.encode(batch, m)
        method.fit(feats, feats)
    return method


@pytest.mark.parametrize("key,modality", CASES)
@pytest.mark.parametrize("task", [SEG, VID], ids=["segment", "video"])
def test_method_contract(key, modality, task, tiny_encoders, batch_factory):
    cls = discover()[key]
    batch = batch_factory(tiny_encoders, task)
    method = fitted(build(cls, tiny_encoders, task, modality), tiny_encoders, batch)
    method.train()
    logits = method(batch)
    expected = (2, task.num_segments, task.num_outputs) if task.level == "segment" else (2, task.num_outputs)
    assert logits.shape == expected and torch.isfinite(logits).all()

    params = method.trainable_parameters()
    enc_ids = {id(p) for p in tiny_encoders.parameters()}
    assert not any(id(p) in enc_ids for p in params), "an encoder weight is trainable"
    if not cls.trains:
        assert not any(p.requires_grad for p in tiny_encoders.parameters())
    else:
        assert sum(p.numel() for p in params) > 0
        before = {k: v.clone() for k, v in tiny_encoders.state_dict().items()}
        opt = torch.optim.SGD(params, lr=0.1)
        loss = method.loss(logits, batch)
        loss.backward()
        assert torch.isfinite(loss)
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
        opt.step()
        after = tiny_encoders.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before), "a frozen encoder weight changed"

    # state-dict round trip: a fresh instance (other seed) loaded with this state gives these logits
    method.eval()
    with torch.no_grad():
        ref = method(batch)
        other = fitted(build(cls, tiny_encoders, task, modality, seed=123), tiny_encoders, batch)
        other.load_state_dict(method.state_dict())
        other.eval()
        assert torch.allclose(other(batch), ref, atol=1e-5)
        # same seed -> same logits
        a = fitted(build(cls, tiny_encoders, task, modality, seed=7), tiny_encoders, batch).eval()(batch)
        b = fitted(build(cls, tiny_encoders, task, modality, seed=7), tiny_encoders, batch).eval()(batch)
        assert torch.equal(a, b)


def test_new_file_in_methods_path_registers_a_method(tmp_path, monkeypatch):
    (tmp_path / "my_method.py").write_text(
        "from avprompt.method import Method\n"
        "from avprompt.registry import register_method\n"
        "@register_method('my-probe')\n"
        "class MyProbe(Method):\n"
        "    description = 'a user method'\n")
    monkeypatch.setenv("AVPROMPT_METHODS_PATH", str(tmp_path))
    reg = discover(force=True)
    assert "my-probe" in reg and reg["my-probe"].description == "a user method"


def test_broken_method_file_is_reported_with_its_path(tmp_path, monkeypatch):
    from avprompt.registry import RegistryError
    (tmp_path / "broken_method.py").write_text("import no_such_module_xyz\n")
    monkeypatch.setenv("AVPROMPT_METHODS_PATH", str(tmp_path))
    with pytest.raises(RegistryError, match="broken_method.py failed to import"):
        discover(force=True)


def test_duplicate_key_is_an_error():
    from avprompt.method import Method
    from avprompt.registry import RegistryError, register_method
    with pytest.raises(RegistryError, match="duplicate method key 'zeroshot-clip'"):
        @register_method("zeroshot-clip")
        class Other(Method):
            pass


# ----- declared kind / runs_on ------------------------------------------------------------------
EXPECTED_KINDS = {
    "zeroshot-clip": ("zero-shot", "features"), "zeroshot-clap": ("zero-shot", "features"),
    "zeroshot-av": ("zero-shot", "features"), "linear-probe": ("fit", "features"),
    "tip-adapter": ("fit", "features"), "tip-adapter-f": ("fit-then-train", "features"),
    "coop": ("train", "features"), "cocoop": ("train", "features"), "clip-adapter": ("train", "features"),
    "maple": ("train", "network"), "dg-sct": ("train", "network"),
}


def test_every_builtin_method_declares_its_kind():
    reg = discover()
    assert {k: (reg[k].kind, reg[k].runs_on) for k in EXPECTED_KINDS} == EXPECTED_KINDS


@pytest.mark.parametrize("key", sorted(EXPECTED_KINDS))
def test_old_flags_are_derived_from_kind(key):
    cls = discover()[key]
    assert cls.cacheable == (cls.runs_on == "features")
    assert cls.training_free == (cls.kind in ("zero-shot", "fit"))
    assert cls.needs_fit == cls.fits == (cls.kind in ("fit", "fit-then-train"))
    assert cls.trains == (cls.kind in ("fit-then-train", "train"))
    assert cls.is_zero_shot == (cls.kind == "zero-shot")


def test_derived_flags_are_read_only(tiny_encoders):
    method = discover()["zeroshot-clip"](tiny_encoders, SEG, discover()["zeroshot-clip"].default_config())
    assert method.is_zero_shot and method.cacheable and not method.trains
    with pytest.raises(AttributeError, match="derived from kind/runs_on"):
        method.cacheable = False


def test_illegal_kind_or_runs_on_is_an_error_naming_the_class():
    from avprompt.method import Method
    from avprompt.registry import RegistryError, register_method
    with pytest.raises(RegistryError, match=r"BadKind: kind='few-shot' is not one of zero-shot\|fit"):
        @register_method("bad-kind-probe")
        class BadKind(Method):
            kind = "few-shot"
    with pytest.raises(RegistryError, match="BadPlace: runs_on='gpu' is not one of features"):
        @register_method("bad-place-probe")
        class BadPlace(Method):
            runs_on = "gpu"
    with pytest.raises(RegistryError, match="NoFit: kind='fit' but the class does not override fit"):
        @register_method("no-fit-probe")
        class NoFit(Method):
            kind = "fit"
    assert not {"bad-kind-probe", "bad-place-probe", "no-fit-probe"} & set(discover())


def test_old_flag_attributes_in_a_plugin_are_translated_with_a_warning():
    from avprompt.method import Method
    with pytest.warns(DeprecationWarning, match="declare kind = 'fit' and runs_on = 'features'"):
        class OldStyle(Method):
            cacheable = True
            training_free = True
            needs_fit = True

            def fit(self, train_features, val_features):
                return {}
    assert (OldStyle.kind, OldStyle.runs_on) == ("fit", "features")
    assert OldStyle.cacheable and OldStyle.training_free and "cacheable" not in OldStyle.__dict__
    with pytest.warns(DeprecationWarning):
        class OldTrainer(Method):
            cacheable = True
    assert (OldTrainer.kind, OldTrainer.runs_on) == ("train", "features")


def test_no_baseline_file_imports_another():
    import re
    from pathlib import Path
    folder = Path(__file__).resolve().parent.parent / "baselines"
    pattern = re.compile(r"^\s*(from|import)\s+(avprompt\.baselines|baselines)\b", re.M)
    offenders = [p.name for p in folder.glob("*.py") if pattern.search(p.read_text())]
    assert offenders == [], f"shared code belongs in avprompt/method_bases.py: {offenders}"
