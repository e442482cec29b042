"""Safe, self-describing model artifacts: a versioned JSON manifest plus safetensors arrays.

A saved model is a folder:

    manifest.json        format, format_version, registry name, hyper-parameters, item ids,
                         the text encoder (model id, dimension), a training-data summary,
                         JSON fitted state, and the SHA-256 of every data file
    arrays.safetensors   the fitted arrays (network weights included), numbers only
    <child>/             nested models of a composite (e.g. a DomainView's base model)

Nothing is unpickled and no class is imported from a name in the file: the loader maps the
registry name through an explicit table (`migrec.registry.MODELS`). User ids and histories
are never written; only item-level data and weights.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np

FORMAT = "migrec-model"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
ARRAYS = "arrays.safetensors"


class ArtifactError(ValueError):
    """A model folder that cannot be loaded: missing, foreign, tampered or of another version."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write(path, *, registry: str, name: str, params: dict, item_ids, encoder: dict | None, training: dict,
          state: dict, arrays: dict, children: list[str]) -> Path:
    """Write manifest.json and arrays.safetensors into `path` (created)."""
    from safetensors.numpy import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    clean = {}
    for key, value in arrays.items():
        value = np.ascontiguousarray(value)
        if value.dtype == object or value.dtype.kind in "USV":
            raise TypeError(f"array {key!r} has dtype {value.dtype}: only numbers go into {ARRAYS}")
        clean[key] = value
    save_file(clean, str(path / ARRAYS))
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "registry": registry, "name": name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "params": params, "encoder": encoder, "training": training,
        "item_ids": [str(i) for i in item_ids], "state": state, "children": list(children),
        "files": {ARRAYS: _sha256(path / ARRAYS)},
    }
    (path / MANIFEST).write_text(json.dumps(manifest, indent=1, allow_nan=True, default=_plain))
    return path


def _plain(value):
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, np.ndarray) and value.dtype != object:
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON: it cannot go into {MANIFEST}")


def read_manifest(path) -> dict:
    """The manifest of a model folder, after checking its format, version and fields (files unread)."""
    path = Path(path)
    file = path / MANIFEST
    if not file.exists():
        raise ArtifactError(f"{path} is not a migrec model folder (no {MANIFEST}); models saved before "
                            f"format {FORMAT_VERSION} cannot be loaded: retrain them")
    try:
        manifest = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{file}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArtifactError(f"{file}: field 'format' is {manifest.get('format') if isinstance(manifest, dict) else None!r}, "
                            f"expected {FORMAT!r}")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{file}: field 'format_version' is {manifest.get('format_version')!r}; this migrec "
                            f"reads version {FORMAT_VERSION} only")
    for field in ("registry", "params", "item_ids", "state", "files", "children"):
        if field not in manifest:
            raise ArtifactError(f"{file}: field {field!r} is missing")
    return manifest


def read(path) -> tuple[dict, dict]:
    """(manifest, arrays) of a model folder, after checking format, version and file digests."""
    from safetensors.numpy import load_file

    path = Path(path)
    file = path / MANIFEST
    manifest = read_manifest(path)
    for name, digest in manifest["files"].items():
        data = path / name
        if Path(name).name != name or not data.exists():
            raise ArtifactError(f"{file}: field 'files' names {name!r}, which is not in {path}")
        if _sha256(data) != digest:
            raise ArtifactError(f"{data}: its SHA-256 does not match the manifest (changed after saving)")
    return manifest, load_file(str(path / ARRAYS))


def check_encoder(expected: dict | None, given: str | None, what: str) -> None:
    """Refuse vectors made by another text encoder than the one the model was trained with."""
    if expected is None or given is None or expected.get("model_id") is None:
        return
    if str(given) != str(expected["model_id"]):
        raise ValueError(f"{what} come from the text encoder {given!r}, but the model's item vectors were made "
                         f"by {expected['model_id']!r}: encode them with the same model")
