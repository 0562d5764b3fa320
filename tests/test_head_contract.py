"""Contract of every registered task head, and drop-in discovery of a new head file."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from avprompt.heads import discover, get_head, list_heads

B, T, DV, DA, C = 3, 10, 24, 16, 5
OUTPUT_KINDS = ({"segment_scores"}, {"seg_prob_audio", "seg_prob_visual", "video_prob"})


def _batch():
    g = torch.Generator().manual_seed(0)
    seg = torch.randint(0, C + 1, (B, T), generator=g)
    return {"segment_labels": seg, "label": torch.randint(0, C, (B,), generator=g),
            "video_labels": (torch.rand(B, C, generator=g) > 0.5).float()}


@pytest.mark.parametrize("key", list_heads())
def test_head_contract(key):
    cls = get_head(key)
    assert cls.tasks and cls.description
    torch.manual_seed(0)
    head = cls((DV, DA), C, cls.config_class())
    f_v, f_a = torch.randn(B, T, DV), torch.randn(B, T, DA)
    out = head(f_v, f_a)
    loss = head.loss(out, _batch())
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in head.parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    head.eval()
    pred = head.predict(head(f_v, f_a))
    assert set(pred) in OUTPUT_KINDS, f"{key} predicts {sorted(pred)}"
    if "segment_scores" in pred:
        assert pred["segment_scores"].shape == (B, T, C + 1)
    else:
        assert pred["seg_prob_audio"].shape == pred["seg_prob_visual"].shape == (B, T, C)
        assert pred["video_prob"].shape == (B, C)
        assert all(((v >= 0) & (v <= 1)).all() for v in pred.values())
    # state-dict round trip and determinism
    torch.manual_seed(0)
    twin = cls((DV, DA), C, cls.config_class())
    twin.load_state_dict(head.state_dict())
    twin.eval()
    for k, v in twin.predict(twin(f_v, f_a)).items():
        assert torch.allclose(v, pred[k])


def test_cmbs_decision_is_relevance_threshold():
    """CMBS's rule: background iff sigmoid(relevance) < 0.5, else the video's category."""
    head = get_head("cmbs")((DV, DA), C, get_head("cmbs").config_class())
    category = torch.tensor([[0.1, 3.0, 0.2, 0.0, -1.0]])  # class 1 wins
    relevance = torch.tensor([[-2.0, -0.01, 0.01, 2.0] + [0.0] * 6])
    scores = head.predict({"category": category, "relevance": relevance})["segment_scores"]
    assert scores.argmax(-1)[0, :4].tolist() == [C, C, 1, 1]


def test_mmil_pooling_is_a_probability_of_its_segments():
    """The video probability is an attention-weighted mean of segment probabilities: within their range."""
    cls = get_head("mmil")
    head = cls((DV, DA), C, cls.config_class()).eval()
    out = head(torch.randn(B, T, DV), torch.randn(B, T, DA))
    p, v = out["segment_prob"], out["video_prob"]
    assert (v <= p.amax((1, 2)) + 1e-6).all() and (v >= p.amin((1, 2)) - 1e-6).all()


def _run(code: str, env_path) -> subprocess.CompletedProcess:
    import os
    env = {**os.environ, "AVPROMPT_HEADS_PATH": str(env_path)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)


def test_dropped_in_head_file_is_found(tmp_path):
    (tmp_path / "my_head.py").write_text(textwrap.dedent('''
        import torch
        from avprompt.heads import Head, HeadConfig, register_head

        @register_head("mean-pool")
        class MeanPool(Head):
            tasks = ("ave-sup",)
            description = "mean of both modalities, linear"
            def __init__(self, dims, num_classes, config):
                super().__init__(dims, num_classes, config)
                self.fc = torch.nn.Linear(dims[0] + dims[1], num_classes + 1)
            def forward(self, f_v, f_a):
                return {"s": self.fc(torch.cat([f_v, f_a], -1))}
            def loss(self, out, batch):
                return torch.nn.functional.cross_entropy(out["s"].flatten(0, 1), batch["segment_labels"].flatten())
            def predict(self, out):
                return {"segment_scores": out["s"]}
    '''))
    r = _run("from avprompt.heads import list_heads; print(list_heads('ave-sup'))", tmp_path)
    assert r.returncode == 0, r.stderr
    assert "mean-pool" in r.stdout and "cmbs" in r.stdout


def test_duplicate_and_broken_head_files_are_one_line_errors(tmp_path):
    (tmp_path / "dup.py").write_text(textwrap.dedent('''
        from avprompt.heads import Head, register_head
        @register_head("cmbs")
        class Other(Head):
            tasks = ("ave-sup",)
    '''))
    r = _run("from avprompt.heads import discover; discover()", tmp_path)
    assert r.returncode != 0 and "duplicate head key 'cmbs'" in r.stderr
    (tmp_path / "dup.py").unlink()
    (tmp_path / "broken.py").write_text("import not_a_module_anywhere\n")
    r = _run("from avprompt.heads import discover; discover()", tmp_path)
    assert r.returncode != 0 and f"head file {tmp_path / 'broken.py'} failed to import" in r.stderr


def test_registry_lists_both_supervised_heads():
    assert {"cmbs", "mmil"} <= set(discover())
