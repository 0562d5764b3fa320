"""Contract of every registered task head, and drop-in discovery of a new head file."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from avprompt.heads import discover, get_head, list_heads

B, T, DV, DA, C = 3, 10, 24, 16, 5
#: the kinds of prediction an evaluator reads (avprompt.heads docstring)
OUTPUT_KINDS = ({"segment_scores"}, {"seg_prob_audio", "seg_prob_visual", "video_prob"}, {"mask_prob"},
                {"answer_scores"})
#: what build_model tells every head about the vision tower (a 4x4 patch grid, 12 channels, 3 blocks)
CONTEXT = {"vision_width": 12, "vision_grid": (4, 4), "vision_depth": 3, "vocab_size": 20}


def _inputs(cls, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    batch = cls.example_batch(B, T, C, CONTEXT, g)
    if cls.needs_tokens:
        L = 1 + CONTEXT["vision_grid"][0] * CONTEXT["vision_grid"][1]
        batch["tokens_v"] = [torch.randn(B, T, L, CONTEXT["vision_width"], generator=g)
                             for _ in range(CONTEXT["vision_depth"])]
    return torch.randn(B, T, DV, generator=g), torch.randn(B, T, DA, generator=g), batch


@pytest.mark.parametrize("key", list_heads())
def test_head_contract(key):
    cls = get_head(key)
    assert cls.tasks and cls.description
    torch.manual_seed(0)
    head = cls((DV, DA), C, cls.config_class(), CONTEXT)
    f_v, f_a, batch = _inputs(cls)
    out = head(f_v, f_a, batch)
    loss = head.loss(out, batch)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in head.parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    head.eval()
    pred = head.predict(head(f_v, f_a, batch))
    assert set(pred) in OUTPUT_KINDS, f"{key} predicts {sorted(pred)}"
    if "segment_scores" in pred:
        assert pred["segment_scores"].shape == (B, T, C + 1)
    elif "mask_prob" in pred:
        assert pred["mask_prob"].shape == batch["masks"].shape
        assert ((pred["mask_prob"] >= 0) & (pred["mask_prob"] <= 1)).all()
    elif "answer_scores" in pred:
        assert pred["answer_scores"].shape == (B, C)
    else:
        assert pred["seg_prob_audio"].shape == pred["seg_prob_visual"].shape == (B, T, C)
        assert pred["video_prob"].shape == (B, C)
        assert all(((v >= 0) & (v <= 1)).all() for v in pred.values())
    # state-dict round trip and determinism
    torch.manual_seed(0)
    twin = cls((DV, DA), C, cls.config_class(), CONTEXT)
    twin.load_state_dict(head.state_dict())
    twin.eval()
    for k, v in twin.predict(twin(f_v, f_a, batch)).items():
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
            def __init__(self, dims, num_classes, config, context=None):
                super().__init__(dims, num_classes, config, context)
                self.fc = torch.nn.Linear(dims[0] + dims[1], num_classes + 1)
            def forward(self, f_v, f_a, batch=None):
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
