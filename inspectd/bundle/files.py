"""Write and verify bundle folders: hashes, allowed files, atomic publish."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath

from pydantic import ValidationError

from inspectd.bundle.manifest import BUNDLE_FORMAT_VERSION, MANIFEST_NAME, BundleManifest
from inspectd.errors import BundleError

# Formats that can execute code when loaded; never part of a bundle.
_PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".npy", ".npz", ".joblib"}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _bundle_files(folder: Path) -> list[str]:
    names = []
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            raise BundleError(f"{path}: symbolic links are not allowed in a bundle")
        if path.is_file() and path.name != MANIFEST_NAME:
            names.append(path.relative_to(folder).as_posix())
    return names


def _refuse_pickles(folder: Path, names: list[str]) -> None:
    for name in names:
        if PurePosixPath(name).suffix.lower() in _PICKLE_SUFFIXES:
            raise BundleError(f"{folder / name}: pickle-based files are refused; bundles hold safetensors only")


def read_manifest(folder: Path) -> BundleManifest:
    path = folder / MANIFEST_NAME
    if not folder.is_dir():
        raise BundleError(f"{folder}: model bundle folder does not exist")
    if not path.is_file():
        raise BundleError(f"{path}: missing; {folder} is not a model bundle (export one with inspectd-export)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path}: not valid JSON ({exc})") from exc
    if isinstance(raw, dict) and raw.get("format_version", BUNDLE_FORMAT_VERSION) != BUNDLE_FORMAT_VERSION:
        raise BundleError(
            f"{path}: format_version {raw.get('format_version')!r} is not supported "
            f"(this inspectd reads version {BUNDLE_FORMAT_VERSION})"
        )
    try:
        return BundleManifest.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}" for err in exc.errors()
        )
        raise BundleError(f"{path}: invalid manifest: {problems}") from exc


def verify_bundle(folder: Path) -> BundleManifest:
    """Check every file against the manifest; refuse anything unexpected."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    if not manifest.files:
        raise BundleError(f"{folder / MANIFEST_NAME}: lists no files")
    present = _bundle_files(folder)
    _refuse_pickles(folder, present)
    for name, expected in manifest.files.items():
        relative = PurePosixPath(name)
        if relative.is_absolute() or ".." in relative.parts:
            raise BundleError(f"{folder / MANIFEST_NAME}: file entry {name!r} points outside the bundle")
        path = folder / relative
        if not path.is_file():
            raise BundleError(f"{path}: listed in {MANIFEST_NAME} but missing (incomplete bundle)")
        actual = sha256_file(path)
        if actual != expected:
            raise BundleError(
                f"{path}: sha256 {actual[:16]}... does not match {expected[:16]}... in {MANIFEST_NAME} "
                "(file changed or corrupted since export)"
            )
    unlisted = sorted(set(present) - set(manifest.files))
    if unlisted:
        raise BundleError(
            f"{folder}: files not listed in {MANIFEST_NAME}: {', '.join(unlisted)} (remove them or re-export)"
        )
    config = folder / "config.json"
    if config.is_file() and "auto_map" in json.loads(config.read_text(encoding="utf-8")):
        raise BundleError(f"{config}: declares auto_map (remote code); inspectd never runs code from a bundle")
    return manifest


def manifest_digest(folder: Path) -> str:
    """Identity of a bundle: sha256 of its manifest, which pins every file."""
    return sha256_file(Path(folder) / MANIFEST_NAME)


def write_manifest(folder: Path, manifest: BundleManifest) -> None:
    """Replace ``bundle.json`` atomically: readers see the old or the new one, never half."""
    temporary = Path(folder) / f".{MANIFEST_NAME}.tmp"
    temporary.write_text(json.dumps(manifest.model_dump(mode="json"), indent=2) + "\n", encoding="utf-8")
    temporary.replace(Path(folder) / MANIFEST_NAME)


def replace_model_card(folder: Path, card: str, **manifest_updates) -> BundleManifest:
    """Rewrite MODEL_CARD.md of a finished bundle and re-hash it (plus any manifest field updates)."""
    folder = Path(folder)
    (folder / "MODEL_CARD.md").write_text(card, encoding="utf-8")
    current = read_manifest(folder)
    files = {**current.files, "MODEL_CARD.md": sha256_file(folder / "MODEL_CARD.md")}
    final = current.model_copy(update={**manifest_updates, "files": files})
    write_manifest(folder, final)
    return final


def publish_bundle(staging: Path, destination: Path, manifest: BundleManifest) -> BundleManifest:
    """Hash the staged files, write the manifest and move the folder into place.

    The destination appears complete or not at all; an existing bundle there is
    replaced only after the new one is fully written.
    """
    names = _bundle_files(staging)
    _refuse_pickles(staging, names)
    final = manifest.model_copy(update={"files": {name: sha256_file(staging / name) for name in names}})
    write_manifest(staging, final)
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    backup = None
    if destination.exists():
        backup = Path(tempfile.mkdtemp(prefix=f".{destination.name}.old-", dir=destination.parent))
        os.replace(destination, backup / destination.name)
    os.replace(staging, destination)
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)
    return final
