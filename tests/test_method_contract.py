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
    """Training-free methods fit on features of the batch itself (the contract only)."""
    if method.training_free:
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
    if cls.training_free:
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
