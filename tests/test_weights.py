"""Weight files through ``load_encoders``: every unreadable or mismatched file is one ValueError
line naming the file and what to do; ``Encoders.identity`` fingerprints what was loaded."""
from __future__ import annotations

import hashlib
import os
import random

import pytest
import torch
from safetensors.torch import save_file

from avprompt.encoders import load_encoders
from avprompt.encoders.factory import SYNTHAV_WEIGHTS
from avprompt.encoders.weights import _HASHES, weights_fingerprint


def load_error(spec: str) -> str:
    with pytest.raises(ValueError) as info:
        load_encoders(spec)
    msg = str(info.value)
    assert "\n" not in msg, "the error must be one line"
    return msg


def vit_state(encoders) -> dict:
    return {k: t.contiguous() for k, t in encoders.vision.model.state_dict().items()}


def test_pt_holding_a_bare_tensor(tmp_path):
    path = tmp_path / "bare.pt"
    torch.save(torch.zeros(3, 4), path)
    msg = load_error(f"clip=avp-vit-tiny@{path}")
    assert f"weights file {path} holds a bare tensor of shape (3, 4), not a state dict" in msg
    assert "torch.save(model.state_dict(), FILE)" in msg


def test_pt_of_random_bytes(tmp_path):
    path = tmp_path / "noise.pt"
    path.write_bytes(random.Random(0).randbytes(4096))  # fixed bytes: the test is deterministic
    msg = load_error(f"clip=avp-vit-tiny@{path}")
    assert f"weights file {path} is not a checkpoint torch.load can read" in msg and "re-download" in msg


@pytest.mark.parametrize("damage", ["truncated", "random"])
def test_corrupt_safetensors(tmp_path, tiny_encoders, damage):
    path = tmp_path / "vit.safetensors"
    save_file(vit_state(tiny_encoders), str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else random.Random(1).randbytes(len(data)))
    msg = load_error(f"clip=avp-vit-tiny@{path}")
    assert f"weights file {path} is not a readable safetensors file" in msg and "re-export" in msg


def test_keys_of_another_architecture(tmp_path, tiny_encoders):
    path = tmp_path / "clap-as-clip.pt"
    torch.save(tiny_encoders.audio.model.state_dict(), path)
    msg = load_error(f"clip=avp-vit-tiny@{path}")
    assert f"weights {path} do not fit architecture avp-vit-tiny" in msg and "missing" in msg


def test_dict_without_tensors_and_folder(tmp_path):
    path = tmp_path / "meta.pt"
    torch.save({"epoch": 3, "note": "no weights here"}, path)
    assert "holds non-tensor entries (e.g. ['epoch', 'note'])" in load_error(f"clip=avp-vit-tiny@{path}")
    assert f"weights file {tmp_path} is a folder" in load_error(f"clip=avp-vit-tiny@{tmp_path}")


def test_nested_ddp_checkpoint_loads(tmp_path, tiny_encoders):
    path = tmp_path / "train.pt"
    torch.save({"epoch": 1, "state_dict": {"module." + k: v for k, v in vit_state(tiny_encoders).items()}}, path)
    again = load_encoders(f"clip=avp-vit-tiny@{path}")
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(again.vision.encode(x), tiny_encoders.vision.encode(x))


# ----- identity ---------------------------------------------------------------------------------
def test_identity_of_random_init_towers(tiny_encoders):
    ident = tiny_encoders.identity
    assert ident["name"] == "tiny"
    assert ident["arch"] == {"clip": "avp-vit-tiny", "clap": "avp-htsat-tiny"}
    assert ident["weights"] == {"clip": "random-init:seed0", "clap": "random-init:seed0"}
    assert ident["fingerprint"] == "avp-vit-tiny@random-init:seed0+avp-htsat-tiny@random-init:seed0"


def test_identity_hashes_weight_files_and_follows_changes(tmp_path, tiny_encoders):
    path = tmp_path / "vit.safetensors"
    save_file(vit_state(tiny_encoders), str(path))
    enc = load_encoders(f"clip=avp-vit-tiny@{path}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert enc.identity["weights"] == {"clip": "sha256:" + digest[:16]}
    assert enc.identity["arch"] == {"clip": "avp-vit-tiny"}
    assert any(k[0] == os.path.realpath(path) for k in _HASHES)  # cached: a sweep hashes once
    # other bytes in the same file (new mtime) are other weights
    save_file({k: v + 1 if v.is_floating_point() else v for k, v in vit_state(tiny_encoders).items()}, str(path))
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert enc.identity["weights"]["clip"] == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    assert enc.identity["weights"]["clip"] != "sha256:" + digest[:16]


def test_identity_of_the_shipped_synthav_towers():
    enc = load_encoders("synthav", modalities="v")
    asset = SYNTHAV_WEIGHTS["clip"][1]
    assert enc.identity["weights"] == {"clip": "sha256:" + hashlib.sha256(asset.read_bytes()).hexdigest()[:16]}
    assert enc.identity["arch"] == {"clip": "avp-vit-synthav"}
    assert weights_fingerprint("openai") == "open_clip-pretrained:openai"



def test_identity_from_the_spec_alone_equals_the_built_towers(tiny_encoders, monkeypatch):
    """A rerun with nothing to do decides from ``spec_identity`` without building the towers: it
    must say exactly what the built towers say."""
    from avprompt.encoders import spec_identity
    from avprompt.engine.workspace import Workspace
    assert spec_identity("tiny") == tiny_encoders.identity
    assert spec_identity("synthav", "v") == load_encoders("synthav", modalities="v").identity
    ws = Workspace(backbones="tiny")
    monkeypatch.setattr("avprompt.encoders.load_encoders", lambda *a, **k: pytest.fail("towers built"))
    assert ws.backbone_identity == tiny_encoders.identity and ws.backbone_name == "tiny"

# ----- real CLAP pairings (README's real-weights example) ----------------------------------------
@pytest.mark.parametrize("arch,other", [("HTSAT-tiny", "HTSAT-base"), ("HTSAT-base", "HTSAT-tiny")])
def test_laion_style_clap_checkpoint_loads_into_its_own_htsat_only(tmp_path, arch, other):
    """A laion-clap training checkpoint ({"state_dict": {"module.<key>": ...}}; the 630k-* files
    are HTSAT-tiny, music_speech_* HTSAT-base) loads into its architecture and is one clear error
    naming the architecture for the other."""
    enc = load_encoders(f"clap={arch}")
    state = {"module." + k: v.contiguous() for k, v in enc.audio.model.state_dict().items()}
    path = tmp_path / f"{arch}.pt"
    torch.save({"epoch": 45, "state_dict": state}, path)
    again = load_encoders(f"clap={arch}@{path}")
    x = torch.randn(1, enc.audio.sample_rate)
    with torch.no_grad():
        assert torch.equal(again.audio.encode(x), enc.audio.encode(x))
    msg = load_error(f"clap={other}@{path}")
    assert f"do not fit architecture {other}" in msg
