"""`avprompt explain`: DG-SCT's attention maps of a clip (shapes, range, input-dependence) and the
t-SNE / silhouette of frozen vs adapted features, from a cell saved by `bench --save-checkpoints`."""
from __future__ import annotations

import json

import numpy as np
import pytest

from avprompt.bench import BenchConfig, _workspace, run_bench
from avprompt.results import load_results


@pytest.fixture(scope="module")
def saved(tiny_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("explain-store")
    cfg = BenchConfig(data=str(tiny_world), backbones="tiny", tasks=["ave"], shots=[1], seeds=[1],
                      methods="dg-sct,zeroshot-clip", modality="auto", out=str(out), synth_size="tiny",
                      max_epochs=1, max_epochs_in_network=1, save_checkpoints=True)
    assert run_bench(cfg, echo=lambda *_: None)["failed"] == 0
    records = {r["key"]["method"]: r for r in load_results(out) if r["status"] == "ok"}
    test = [r.media for r in _workspace(cfg).index("ave").split("test")]
    return records, test


def test_attention_maps_have_the_towers_shapes_and_depend_on_the_clip(saved):
    import torch

    from avprompt.engine.batches import clip_inputs
    from avprompt.data.media import decode_clip
    from avprompt.explain import attention_maps
    from avprompt.predict import load_cell

    records, test = saved
    method, _ = load_cell(records["dg-sct"]["_path"])
    enc = method.encoders
    maps = []
    for path in test[:2]:
        frames, wave, _ = decode_clip(path, enc.vision.image_size, enc.audio.sample_rate)
        batch = clip_inputs([(frames, wave)], enc.vision.image_mean, enc.vision.image_std, 10, "va")
        maps.append(attention_maps(method, batch))
    a, b = maps
    P, T = len(method.pairs), 10
    assert a.vision.shape == (P, T, *enc.vision.grid)
    assert len(a.audio) == P
    fr = enc.audio.model.audio_branch.freq_ratio
    for (i, j), m in zip(method.pairs, a.audio):
        h, w = enc.audio.blocks[j].grid
        assert m.shape == (T, h // fr, w * fr)  # unfolded to (frequency, time)
    assert a.frames.shape == (T, enc.vision.image_size, enc.vision.image_size, 3)
    assert a.spectrogram.shape[0] == T and a.temporal_v.shape == (T,) and a.temporal_a.shape == (T,)
    for m in [a.vision, *a.audio, a.temporal_v]:
        assert np.all((m > 0) & (m < 1))  # sigmoids
    assert not np.allclose(a.vision, b.vision) and not np.allclose(a.audio[-1], b.audio[-1])
    with torch.no_grad():  # reading the maps does not change what the method computes
        batch = clip_inputs([decode_clip(test[0], enc.vision.image_size, enc.audio.sample_rate)[:2]],
                            enc.vision.image_mean, enc.vision.image_std, 10, "va")
        before = method.segment_logits(batch)
        attention_maps(method, batch)
        assert torch.equal(before, method.segment_logits(batch))


def test_unfold_follows_the_towers_time_grid():
    import torch

    from avprompt.encoders import load_encoders
    from avprompt.explain import unfold_audio_grid
    at = load_encoders("tiny").audio
    h, w = at.blocks[-1].grid
    c = at.model.audio_branch.norm.normalized_shape[0]  # the final stage's width
    tokens = torch.randn(2, h * w, c)
    grid = at.time_grid(tokens)  # (N, C, F, P): the tower's own unfolding (after its norm)
    normed = at.model.audio_branch.norm(tokens)
    mine = unfold_audio_grid(normed[..., 0].detach().numpy(), (h, w), at.model.audio_branch.freq_ratio)
    assert np.allclose(mine, grid[:, 0].detach().numpy(), atol=1e-6)


def test_explain_cli_writes_pictures_and_numbers(saved, tiny_world, tmp_path, capsys):
    from avprompt.cli import main
    records, test = saved
    out = tmp_path / "ex"
    main_args = ["explain", records["dg-sct"]["_path"], str(test[0]), "--out", str(out),
                 "--data", str(tiny_world), "--max-clips", "4"]
    try:
        main(main_args)
    except SystemExit as e:
        assert e.code in (0, None), capsys.readouterr().err
    for name in ("attention.png", "attention.npz", "tsne.png", "explain.json"):
        assert (out / name).stat().st_size > 0
    info = json.loads((out / "explain.json").read_text())
    assert info["tsne_clips"] == 4 and info["tsne_items"] == 40  # ave: every segment of 4 clips
    assert set(info["silhouette"]) == {"vision frozen", "vision DG-SCT", "audio frozen", "audio DG-SCT"}
    assert all(-1 <= v <= 1 for v in info["silhouette"].values())
    with np.load(out / "attention.npz") as z:
        assert z["vision"].shape[1] == 10 and "temporal_v" in z
    import warnings

    from avprompt.results import load_results
    with warnings.catch_warnings():  # explain.json in a store is not a broken cell
        warnings.simplefilter("error")
        assert load_results(tmp_path) == []
    from avprompt.report_html import explain_sections  # the HTML report shows what explain wrote
    html = "\n".join(explain_sections(tmp_path))
    assert html.count("<img") == 2 and "silhouette" in html and "What DG-SCT attends to" in html
    # a cell of another method is one line naming what to give
    with pytest.raises(SystemExit) as e:
        main(["explain", records["zeroshot-clip"]["_path"], str(test[0]), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "dg-sct" in err and len(err.splitlines()) == 1, err

