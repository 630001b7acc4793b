"""Bundles load only when every file is the one that was exported."""

import json
import shutil
import subprocess
import sys

import pytest

from inspectd.bundle.files import verify_bundle
from inspectd.bundle.load import load_bundle
from inspectd.errors import BundleError


@pytest.fixture()
def bundle(random_bundle, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(random_bundle, copy)
    return copy


def test_valid_bundle_verifies_and_loads_offline(bundle):
    manifest = verify_bundle(bundle)
    assert set(manifest.files) >= {"model.safetensors", "config.json", "tokenizer.json", "MODEL_CARD.md"}
    loaded = load_bundle(bundle, "cpu")
    assert loaded.device.type == "cpu"
    assert len(loaded.digest) == 64
    assert loaded.model.config.model_type == "qwen2_5_vl"


def test_one_flipped_byte_is_refused_naming_the_file(bundle):
    weights = bundle / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"model\.safetensors: sha256 .* does not match"):
        load_bundle(bundle, "cpu")


def test_missing_file_is_incomplete(bundle):
    (bundle / "tokenizer.json").unlink()
    with pytest.raises(BundleError, match=r"tokenizer\.json: listed in bundle\.json but missing"):
        verify_bundle(bundle)


def test_unlisted_and_pickle_files_are_refused(bundle):
    (bundle / "notes.txt").write_text("hello")
    with pytest.raises(BundleError, match=r"not listed in bundle\.json: notes\.txt"):
        verify_bundle(bundle)
    (bundle / "notes.txt").unlink()
    (bundle / "pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(BundleError, match="pickle-based files are refused"):
        verify_bundle(bundle)


def test_manifest_problems_are_named(bundle):
    manifest_path = bundle / "bundle.json"
    original = json.loads(manifest_path.read_text())
    manifest_path.write_text("{not json")
    with pytest.raises(BundleError, match="bundle.json: not valid JSON"):
        verify_bundle(bundle)
    manifest_path.write_text(json.dumps({**original, "threshold": 7}))
    with pytest.raises(BundleError, match="threshold"):
        verify_bundle(bundle)
    manifest_path.write_text(json.dumps({**original, "surprise": 1}))
    with pytest.raises(BundleError, match="surprise"):
        verify_bundle(bundle)
    manifest_path.write_text(json.dumps({**original, "format_version": 99}))
    with pytest.raises(BundleError, match="format_version 99 is not supported"):
        verify_bundle(bundle)
    manifest_path.write_text(json.dumps({**original, "files": {"../etc/passwd": "0" * 64}}))
    with pytest.raises(BundleError, match="points outside the bundle"):
        verify_bundle(bundle)
    manifest_path.unlink()
    with pytest.raises(BundleError, match="is not a model bundle"):
        verify_bundle(bundle)


def test_remote_code_is_refused_even_when_hashes_match(bundle):
    from inspectd.bundle.files import publish_bundle, read_manifest

    config = json.loads((bundle / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "evil.Model"}
    (bundle / "config.json").write_text(json.dumps(config))
    manifest = read_manifest(bundle)
    (bundle / "bundle.json").unlink()
    staged = bundle.parent / "staged"
    shutil.copytree(bundle, staged)
    publish_bundle(staged, bundle.parent / "rehashed", manifest)
    with pytest.raises(BundleError, match="auto_map"):
        verify_bundle(bundle.parent / "rehashed")


def test_layer_range_outside_model_is_refused(bundle):
    from inspectd.bundle.files import publish_bundle, read_manifest

    manifest = read_manifest(bundle)
    (bundle / "bundle.json").unlink()
    bad = manifest.model_copy(update={"real": manifest.real.model_copy(update={"layer_start": 5})})
    publish_bundle(bundle, bundle.parent / "bad-layers", bad)
    with pytest.raises(BundleError, match=r"layer range \[5, 2\) does not fit a model with 2 text layers"):
        load_bundle(bundle.parent / "bad-layers", "cpu")


def test_cuda_device_without_gpu_is_a_clear_error(bundle):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(BundleError, match="no CUDA GPU is visible"):
        load_bundle(bundle, "cuda")


def test_load_makes_no_network_call(bundle):
    code = (
        "import socket, sys\n"
        "def refuse(*a, **k): raise RuntimeError('network used')\n"
        "socket.socket.connect = refuse\n"
        "socket.create_connection = refuse\n"
        "from inspectd.bundle.load import load_bundle\n"
        f"load_bundle(r'{bundle}', 'cpu')\n"
        "print('loaded')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HOME": str(bundle.parent)})
    assert done.returncode == 0, done.stderr
    assert "loaded" in done.stdout


# --- The manifest is hashed with the files it lists (issue 28 item 7) -------------------------------------------

def _edit_manifest(bundle, **changes):
    """Change bundle.json as an operator's editor would: its fields only, the digest left as it was."""
    path = bundle / "bundle.json"
    raw = json.loads(path.read_text())
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        target = raw
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = value
    path.write_text(json.dumps(raw, indent=2) + "\n")


def test_a_manifest_edited_after_export_is_refused_naming_bundle_json(bundle):
    _edit_manifest(bundle, score__views=4)  # a valid setting: only the digest can tell
    with pytest.raises(BundleError, match=r"bundle\.json: edited after export") as refused:
        verify_bundle(bundle)
    assert str(bundle) in str(refused.value) and "inspectd-export seal" in str(refused.value)
    with pytest.raises(BundleError, match=r"bundle\.json: edited after export"):
        load_bundle(bundle, "cpu")


def test_a_file_hash_rewritten_in_the_manifest_is_refused(bundle):
    from inspectd.bundle.files import sha256_file

    (bundle / "MODEL_CARD.md").write_text("a card swapped in\n")
    raw = json.loads((bundle / "bundle.json").read_text())
    raw["files"]["MODEL_CARD.md"] = sha256_file(bundle / "MODEL_CARD.md")  # the file and its listed hash agree again
    (bundle / "bundle.json").write_text(json.dumps(raw, indent=2))
    with pytest.raises(BundleError, match=r"bundle\.json: edited after export"):
        verify_bundle(bundle)


def test_a_manifest_without_digest_is_refused_until_sealed(bundle):
    from inspectd.export.cli import main as export_main

    raw = json.loads((bundle / "bundle.json").read_text())
    del raw["digest"]
    (bundle / "bundle.json").write_text(json.dumps(raw, indent=2))
    with pytest.raises(BundleError, match=r"bundle\.json: has no digest"):
        verify_bundle(bundle)
    assert export_main(["seal", str(bundle)]) == 0  # the operator vouches for the settings as they stand
    assert verify_bundle(bundle).digest == raw_digest(bundle)
    (bundle / "tokenizer.json").write_text("{}")
    assert export_main(["seal", str(bundle)]) == 2, "seal never vouches for a file that changed"


def raw_digest(bundle) -> str:
    """The bundle digest by its definition: sha256 of bundle.json's canonical JSON (keys sorted, no spaces, UTF-8)
    without its ``digest`` field; the manifest lists every file's sha256, so it covers them all."""
    import hashlib

    raw = json.loads((bundle / "bundle.json").read_text())
    raw.pop("digest")
    canonical = json.dumps(raw, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return hashlib.sha256(canonical).hexdigest()


def test_one_digest_names_the_bundle_where_it_is_loaded_recorded_and_rewritten(bundle, tmp_path):
    from inspectd.bundle.files import manifest_digest, replace_model_card
    from inspectd.daemon.recorder import register_bundle
    from inspectd.store.database import migrate, open_engine
    from inspectd.store.schema import BundleRow
    from sqlalchemy.orm import Session

    manifest = verify_bundle(bundle)
    assert manifest.digest == raw_digest(bundle) == manifest_digest(bundle)
    loaded = load_bundle(bundle, "cpu")
    assert loaded.digest == manifest.digest
    engine = open_engine(f"sqlite:///{tmp_path / 'store.db'}")
    migrate(engine)
    bundle_id = register_bundle(engine, loaded)
    with Session(engine) as session:
        assert session.get(BundleRow, bundle_id).sha256 == manifest.digest, "each row's bundle names the digest"
    engine.dispose()
    rewritten = replace_model_card(bundle, "# a new card\n", threshold=0.25)  # the card and the manifest: resealed
    assert verify_bundle(bundle) == rewritten and rewritten.threshold == 0.25
    assert rewritten.digest == raw_digest(bundle) != manifest.digest
    _edit_manifest(bundle, threshold=0.5)
    with pytest.raises(BundleError, match="edited after export"):
        replace_model_card(bundle, "# laundered\n")  # a rewrite never seals an edit it did not make


@pytest.mark.parametrize("name", ["tiny-cgro", "magnetic-tile-cgro"])
def test_shipped_bundles_carry_their_digest(name):
    from tests.conftest import REPO

    folder = REPO / "models" / name
    manifest = verify_bundle(folder)
    assert manifest.digest == raw_digest(folder)
