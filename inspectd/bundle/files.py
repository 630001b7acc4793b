"""Write and verify bundle folders: hashes, allowed files, the bundle digest, atomic publish.

The bundle digest. ``bundle.json`` lists the sha256 of every other file and
holds the settings the daemon runs with (prompt, threshold, score views, ReAL
parameters), so it is hashed too: its ``digest`` field is the sha256 of the
manifest's canonical JSON without that field (keys sorted, no whitespace,
UTF-8), computed from the JSON as written, not from a parsed model (a later
inspectd that adds a setting with a default must not change old bundles'
digests). A manifest cannot hold a hash of itself, so this is a hash of all
of it but the one field; since it lists every file's hash, this one value
names the whole bundle. ``write_manifest`` (export, publish, a rewritten model
card or threshold) always seals; ``verify_bundle`` refuses a manifest whose
digest is missing or does not match, naming ``bundle.json`` (an edit after
export, e.g. ``score.views`` by hand), after checking the files, so a changed
file is still named as itself. The digest is the bundle's identity: ``doctor``
prints it, the store's ``bundles.sha256`` (which every inspection row points
at) and the metrics hold it, and the daemon's reload compares it.
``seal_bundle`` (``inspectd-export seal FOLDER``) seals a manifest as it
stands, after checking every file: for bundles written before the digest, or
an edit that is wanted.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from pydantic import ValidationError

from inspectd.bundle.manifest import BUNDLE_FORMAT_VERSION, MANIFEST_NAME, BundleManifest
from inspectd.errors import BundleError

# Formats that can execute code when loaded; never part of a bundle.
_PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".npy", ".npz", ".joblib"}

# Modes of a written bundle: the owner and the bundle's group read it, nobody else. Weights fine-tuned on
# a plant's photos can be its trade secret, so no world read; the service user (``User=inspectd``) is put
# in the bundle's group (``inspectd-export --group inspectd``, or chgrp -R) instead.
BUNDLE_DIR_MODE = 0o750
BUNDLE_FILE_MODE = 0o640


def _unreadable(path: Path, exc: OSError, folder: Path) -> BundleError:
    """A bundle file this process may not read: say whose it is and its mode, not only "permission denied"."""
    try:
        info = path.stat()
        owner = f"owner uid {info.st_uid}, group gid {info.st_gid}, mode {info.st_mode & 0o7777:04o}"
    except OSError:
        owner = "not even its attributes are readable"
    return BundleError(f"{path}: cannot be read by uid {os.geteuid()} ({exc.strerror or exc}; {owner}); "
                       f"give the service user's group read access: chgrp -R GROUP {folder}; chmod -R g+rX {folder}")


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


def bundle_digest(raw: dict) -> str:
    """The bundle digest of a manifest as parsed from its JSON: sha256 of its canonical form without ``digest``."""
    unsealed = {key: value for key, value in raw.items() if key != "digest"}
    canonical = json.dumps(unsealed, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def read_manifest(folder: Path) -> BundleManifest:
    """The manifest's settings, validated; its digest and files are not checked (``verify_bundle`` does)."""
    folder = Path(folder)
    return _validated(folder / MANIFEST_NAME, _read_raw(folder))


def _read_raw(folder: Path) -> dict:
    """``bundle.json`` as parsed JSON, with a message naming the folder or file for each way it can be missing."""
    path = folder / MANIFEST_NAME
    if not folder.is_dir():
        raise BundleError(f"{folder}: model bundle folder does not exist")
    if not os.access(folder, os.R_OK | os.X_OK):  # else every file inside looks "missing"
        raise _unreadable(folder, PermissionError(13, "Permission denied"), folder)
    if not path.is_file():
        raise BundleError(f"{path}: missing; {folder} is not a model bundle (export one with inspectd-export)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except PermissionError as exc:
        raise _unreadable(path, exc, folder) from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path}: not valid JSON ({exc})") from exc
    if isinstance(raw, dict) and raw.get("format_version", BUNDLE_FORMAT_VERSION) != BUNDLE_FORMAT_VERSION:
        raise BundleError(
            f"{path}: format_version {raw.get('format_version')!r} is not supported "
            f"(this inspectd reads version {BUNDLE_FORMAT_VERSION})"
        )
    return raw


def _validated(path: Path, raw) -> BundleManifest:
    try:
        return BundleManifest.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}" for err in exc.errors()
        )
        raise BundleError(f"{path}: invalid manifest: {problems}") from exc


def verify_bundle(folder: Path) -> BundleManifest:
    """Check every file against the manifest and the manifest against its digest; refuse anything unexpected."""
    folder = Path(folder)
    raw = _read_raw(folder)
    manifest = _validated(folder / MANIFEST_NAME, raw)
    _check_files(folder, manifest)
    _check_digest(folder, raw)
    return manifest


def _check_files(folder: Path, manifest: BundleManifest) -> None:
    """Every listed file present with its sha256, nothing unlisted, no pickle, no remote code."""
    if not manifest.files:
        raise BundleError(f"{folder / MANIFEST_NAME}: lists no files")
    try:
        present = _bundle_files(folder)
    except PermissionError as exc:
        raise _unreadable(Path(exc.filename or folder), exc, folder) from exc
    _refuse_pickles(folder, present)
    for name, expected in manifest.files.items():
        relative = PurePosixPath(name)
        if relative.is_absolute() or ".." in relative.parts:
            raise BundleError(f"{folder / MANIFEST_NAME}: file entry {name!r} points outside the bundle")
        path = folder / relative
        if not path.is_file():
            raise BundleError(f"{path}: listed in {MANIFEST_NAME} but missing (incomplete bundle)")
        try:
            actual = sha256_file(path)
        except PermissionError as exc:
            raise _unreadable(path, exc, folder) from exc
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


def _check_digest(folder: Path, raw: dict) -> None:
    """The manifest is the one ``write_manifest`` sealed: not edited since, its digest field not removed."""
    path = folder / MANIFEST_NAME
    stored, actual = raw.get("digest"), bundle_digest(raw)
    if not stored:
        raise BundleError(
            f"{path}: has no digest (written before inspectd hashed bundle.json, or the field was removed), so an "
            f"edit to its settings could not be told; check them, then seal it as it stands: inspectd-export seal "
            f"{folder}")
    if stored != actual:
        raise BundleError(
            f"{path}: edited after export: its content hashes to {actual[:16]}..., not its digest {str(stored)[:16]}... "
            f"(bundle.json is part of the bundle: its settings and file list are hashed too); re-export it, or, if "
            f"the edit is wanted, seal it as it stands: inspectd-export seal {folder}")


def manifest_digest(folder: Path) -> str:
    """The bundle digest of the manifest now in ``folder`` (recomputed, not its stored field): the identity a
    running daemon compares to see whether a bundle was re-published or edited."""
    folder = Path(folder)
    raw = _read_raw(folder)
    _validated(folder / MANIFEST_NAME, raw)  # a manifest that is not one has no digest
    return bundle_digest(raw)


def write_manifest(folder: Path, manifest: BundleManifest) -> BundleManifest:
    """Seal ``manifest`` (its digest computed afresh) and replace ``bundle.json`` atomically: readers see the old or
    the new one, never half. Returns the manifest as written, digest included."""
    data = {key: value for key, value in manifest.model_dump(mode="json").items() if key != "digest"}
    data["digest"] = bundle_digest(data)
    _replace_manifest_file(Path(folder), data)
    return manifest.model_copy(update={"digest": data["digest"]})


def seal_bundle(folder: Path) -> BundleManifest:
    """Seal the manifest in ``folder`` as it stands (``inspectd-export seal``): every file is checked against it
    first, so a seal vouches for the settings, never for a file that changed. The JSON is kept as written but for
    ``digest`` (a manifest from before a setting existed keeps lacking it)."""
    folder = Path(folder)
    raw = _read_raw(folder)
    manifest = _validated(folder / MANIFEST_NAME, raw)
    _check_files(folder, manifest)
    data = {key: value for key, value in raw.items() if key != "digest"}
    data["digest"] = bundle_digest(data)
    _replace_manifest_file(folder, data)
    return manifest.model_copy(update={"digest": data["digest"]})


def _replace_manifest_file(folder: Path, data: dict) -> None:
    """Write ``bundle.json`` beside, then rename it over the old one.

    The new file is a new inode: it gets the bundle's file mode and, where this
    process may set it, the old manifest's group, so rewriting the card of a
    bundle whose group is the service's does not lock the service out.
    """
    path = folder / MANIFEST_NAME
    temporary = folder / f".{MANIFEST_NAME}.tmp"
    temporary.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.chmod(temporary, BUNDLE_FILE_MODE)
    if path.exists():
        try:
            os.chown(temporary, -1, path.stat().st_gid)
        except PermissionError:
            pass  # not a member of that group: the file keeps ours, as any file this process writes
    temporary.replace(path)


def replace_model_card(folder: Path, card: str, **manifest_updates) -> BundleManifest:
    """Rewrite MODEL_CARD.md of a finished bundle and re-hash it (plus any manifest field updates), resealed.

    The manifest found must be intact: a rewrite seals only its own change, never an edit someone made before.
    """
    folder = Path(folder)
    raw = _read_raw(folder)
    current = _validated(folder / MANIFEST_NAME, raw)
    _check_digest(folder, raw)
    (folder / "MODEL_CARD.md").write_text(card, encoding="utf-8")
    os.chmod(folder / "MODEL_CARD.md", BUNDLE_FILE_MODE)
    files = {**current.files, "MODEL_CARD.md": sha256_file(folder / "MODEL_CARD.md")}
    return write_manifest(folder, current.model_copy(update={**manifest_updates, "files": files}))


def set_bundle_modes(folder: Path) -> None:
    """Folders 0750, files 0640, whatever the umask or the writer chose.

    ``tempfile.mkdtemp`` makes 0700 folders and safetensors writes 0600 weights,
    which only the exporting user could read; see ``BUNDLE_DIR_MODE``.
    """
    folder = Path(folder)
    os.chmod(folder, BUNDLE_DIR_MODE)
    for path in folder.rglob("*"):
        if not path.is_symlink():
            os.chmod(path, BUNDLE_DIR_MODE if path.is_dir() else BUNDLE_FILE_MODE)


def set_bundle_group(folder: Path, group: str) -> None:
    """chgrp -R: the service user, a member of ``group``, can then read the bundle (modes 0750/0640)."""
    import grp

    gid = group_id(group)
    folder = Path(folder)
    try:
        for path in (folder, *folder.rglob("*")):
            os.chown(path, -1, gid, follow_symlinks=False)
    except PermissionError as exc:
        members = grp.getgrgid(gid).gr_mem
        raise BundleError(
            f"{exc.filename or folder}: cannot change its group to {group!r} as uid {os.geteuid()} ({exc.strerror}); "
            f"export as root or as a member of {group!r} (members: {', '.join(members) or 'none listed'})"
        ) from exc


def group_id(group: str) -> int:
    """The gid of a group name (or a number), with an error that says how to create a missing one."""
    import grp

    try:
        return grp.getgrgid(int(group)).gr_gid if group.isdigit() else grp.getgrnam(group).gr_gid
    except KeyError:
        raise BundleError(f"group {group!r} does not exist on this machine (create it with: groupadd {group}, "
                          "or name the service's group, e.g. inspectd)") from None


@contextmanager
def staged_beside(destination: Path, kind: str) -> Iterator[Path]:
    """A new empty folder beside ``destination`` (``.<name>.<kind>-*``: one filesystem, so ``move_into_place``
    can rename it there), removed on the way out unless it was moved: a failed or interrupted write leaves
    nothing behind."""
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{destination.name}.{kind}-", dir=destination.parent))
    try:
        yield folder
    finally:
        # with the folder, the backup a move_into_place onto it made (an interrupt between its rename and its
        # removal of the backup left `..<name>.partial-*.old-*` behind)
        for leftover in (folder, *folder.parent.glob(f".{folder.name}.old-*")):
            if leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)


def move_into_place(folder: Path, destination: Path) -> None:
    """Rename a finished bundle folder to ``destination``, replacing a bundle there.

    Both are renames within one parent folder (one filesystem), so each is
    atomic: the old bundle is renamed aside, the new one renamed in, and only
    then the old one deleted. Between the two renames (microseconds, no I/O but
    two directory entries) ``destination`` is missing; a daemon that loads it in
    that window gets "does not exist" and keeps serving what it has. Deleting
    the old bundle first, or copying, would leave a longer window or a
    half-written bundle. If the second rename fails, the old bundle is put back.
    """
    folder, destination = Path(folder), Path(destination)
    if folder.parent.resolve() != destination.parent.resolve():
        raise BundleError(f"{folder}: must sit in {destination.parent} to be renamed into place atomically")
    backup = None
    if destination.exists():
        backup = Path(tempfile.mkdtemp(prefix=f".{destination.name}.old-", dir=destination.parent))
        os.replace(destination, backup / destination.name)
    try:
        os.replace(folder, destination)
    except BaseException:
        if backup is not None:
            os.replace(backup / destination.name, destination)
            backup.rmdir()
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


def publish_bundle(staging: Path, destination: Path, manifest: BundleManifest) -> BundleManifest:
    """Hash the staged files, write the manifest, set the bundle's modes and move the folder into place.

    The destination appears complete or not at all; an existing bundle there is
    replaced only after the new one is fully written. The manifest's hashes
    name files relative to the folder, so the bundle verifies under any name.
    """
    names = _bundle_files(staging)
    _refuse_pickles(staging, names)
    final = write_manifest(staging, manifest.model_copy(
        update={"files": {name: sha256_file(staging / name) for name in names}}))
    set_bundle_modes(staging)
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    move_into_place(staging, destination)
    return final
