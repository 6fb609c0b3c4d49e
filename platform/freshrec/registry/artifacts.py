"""A version's artifact directory: weights (safetensors), tokenizer, ranker, manifest.json, metrics.json.

Each version stores what it changed: its towers' heads always; its encoder in full (strategy
``full``), as a LoRA delta (``lora``) or not at all (``head``, which inherits the parent's encoder);
and its ranker (``ranker.safetensors``, with ``ranker.json`` naming its features and candidate
counts; the manifest records both files' sha256). Loading resolves the parent chain, reads every
file once, checks those very bytes against the recorded sha256, and loads from them: nothing is
read twice, so nothing can change between the check and the load. Files go through fsspec, so the
root may be an S3 URI.
"""
from __future__ import annotations

import hashlib
import json
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import fsspec
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from freshrec.ranking.candidates import FEATURES, CandidateConfig
from freshrec.models.base import base_digest, load_encoder, load_tokenizer, resolve
from freshrec.models.towers import TwoTower
from freshrec.models.query_adapter import QueryAdapter
from freshrec.models.ranker import Ranker
from freshrec.search.pipeline import SearchConfig

WEIGHTS = "model.safetensors"
RANKER_WEIGHTS = "ranker.safetensors"
RANKER_SPEC = "ranker.json"
SEARCH_WEIGHTS = "search.safetensors"
SEARCH_SPEC = "search.json"


class TamperedArtifact(RuntimeError):
    """The bytes on storage do not match the sha256 recorded at publish time."""


class IncompatibleArtifact(RuntimeError):
    """The weights do not fit the model they are loaded into (a missing or unexpected tensor)."""


@dataclass
class LoadedVersion:
    model: TwoTower
    tokenizer: object
    manifest: dict
    ranker: Ranker | None = None  # None for versions made before freshrec had a ranker
    candidates: CandidateConfig | None = None
    search: tuple[QueryAdapter, SearchConfig] | None = None  # None: made before search had its own side
    encoder_is_base: bool = True  # no version of the chain changed the encoder (all head)


def new_uri(root: str) -> str:
    return f"{root.rstrip('/')}/{uuid.uuid4().hex}"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_all(uri: str) -> dict[str, bytes]:
    """Every file of the directory, by name relative to it."""
    fs, path = fsspec.core.url_to_fs(uri)
    files = {}
    for name in sorted(fs.find(path)):
        with fs.open(name, "rb") as f:
            files[name[len(path) :].lstrip("/")] = f.read()
    return files


def _digest(files: dict[str, bytes]) -> str:
    """sha256 over every file's relative name and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(f"/{name}".encode())
        h.update(files[name])
    return h.hexdigest()


def digest(uri: str) -> str:
    return _digest(_read_all(uri))


def _ranker_files(ranker: Ranker, candidates: CandidateConfig) -> dict[str, bytes]:
    spec = {"features": list(ranker.feature_names), "hidden": ranker.hidden, "candidates": candidates.__dict__}
    return {RANKER_WEIGHTS: save_safetensors({k: v.detach().cpu().contiguous() for k, v in ranker.state_dict().items()}),
            RANKER_SPEC: json.dumps(spec, indent=2).encode()}


def _search_files(adapter: QueryAdapter, config: SearchConfig) -> dict[str, bytes]:
    spec = {"dim": adapter.dim, "config": config.to_dict()}
    return {SEARCH_WEIGHTS: save_safetensors({k: v.detach().cpu().contiguous() for k, v in adapter.state_dict().items()}),
            SEARCH_SPEC: json.dumps(spec, indent=2).encode()}


def write(uri: str, model: TwoTower, tokenizer, manifest: dict, metrics: dict, encoder_state: dict,
          ranker: Ranker | None = None, candidates: CandidateConfig | None = None,
          search: tuple[QueryAdapter, SearchConfig] | None = None) -> str:
    """Write the directory and return its sha256."""
    fs, path = fsspec.core.url_to_fs(uri)
    fs.makedirs(path, exist_ok=True)
    tensors = {f"head.{k}": v.detach().cpu().contiguous() for k, v in model.head_state().items()}
    tensors.update({f"encoder.{k}": v.detach().cpu().contiguous() for k, v in encoder_state.items()})
    files = {WEIGHTS: save_safetensors(tensors), "metrics.json": json.dumps(metrics, indent=2).encode()}
    if ranker is not None:
        ranker_files = _ranker_files(ranker, candidates or CandidateConfig())
        files.update(ranker_files)
        manifest = {**manifest, "ranker": {"files": {n: _sha256(b) for n, b in ranker_files.items()},
                                           "features": list(ranker.feature_names)}}
    if search is not None:
        search_files = _search_files(*search)
        files.update(search_files)
        manifest = {**manifest, "search": {"files": {n: _sha256(b) for n, b in search_files.items()}}}
    files["manifest.json"] = json.dumps(manifest, indent=2, default=str).encode()
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in files.items():
            Path(tmp, name).write_bytes(data)
        tokenizer.save_pretrained(f"{tmp}/tokenizer")
        fs.put(f"{tmp}/", path, recursive=True)
    return digest(uri)


def _verified(uri: str, sha: str) -> dict[str, bytes]:
    files = _read_all(uri)
    if _digest(files) != sha:
        raise TamperedArtifact(f"{uri}: sha256 does not match the recorded {sha[:12]}…")
    return files


def _section(files: dict[str, bytes], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in load_safetensors(files[WEIGHTS]).items() if k.startswith(prefix)}


def _apply_lora(encoder, delta: dict[str, torch.Tensor], config: dict):
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict

    peft_model = get_peft_model(encoder, LoraConfig(**config))
    result = set_peft_model_state_dict(peft_model, delta)
    # A delta that misses adapter tensors would leave random (B: zero) adapters: refuse, as for heads.
    missing = [k for k in getattr(result, "missing_keys", []) if "lora_" in k]
    unexpected = list(getattr(result, "unexpected_keys", []))
    if missing or unexpected:
        raise IncompatibleArtifact(f"LoRA delta: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return peft_model.merge_and_unload()


def _load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str, allow_missing: str = "") -> None:
    """Load every tensor, and fail on a missing or unexpected one: never serve random weights silently."""
    missing, unexpected = module.load_state_dict(state, strict=False)
    missing = [k for k in missing if not (allow_missing and k.startswith(allow_missing))]
    if missing or unexpected:
        raise IncompatibleArtifact(f"{what}: missing {missing[:3]}, unexpected {unexpected[:3]}")


def _checked(files: dict[str, bytes], recorded: dict) -> None:
    for name, sha in recorded["files"].items():
        if _sha256(files[name]) != sha:
            raise TamperedArtifact(f"{name}: sha256 does not match the manifest's {sha[:12]}…")


def _load_search(files: dict[str, bytes], manifest: dict) -> tuple[QueryAdapter, SearchConfig] | None:
    recorded = manifest.get("search")
    if recorded is None:
        return None
    _checked(files, recorded)
    spec = json.loads(files[SEARCH_SPEC])
    adapter = QueryAdapter(spec["dim"])
    _load_strict(adapter, load_safetensors(files[SEARCH_WEIGHTS]), "search adapter")
    return adapter.eval(), SearchConfig(**spec["config"])


def _load_ranker(files: dict[str, bytes], manifest: dict) -> tuple[Ranker | None, CandidateConfig | None]:
    recorded = manifest.get("ranker")
    if recorded is None:
        return None, None
    _checked(files, recorded)
    spec = json.loads(files[RANKER_SPEC])
    # A version keeps its own feature list: it serves on after an upgrade adds features (it picks its
    # own columns by name). Only a feature this code no longer computes makes it unservable.
    gone = [f for f in spec["features"] if f not in FEATURES]
    if gone:
        raise IncompatibleArtifact(f"the ranker was trained on features {gone} that this code no longer computes")
    ranker = Ranker(spec["features"], spec["hidden"])
    _load_strict(ranker, load_safetensors(files[RANKER_WEIGHTS]), "ranker")
    return ranker.eval(), CandidateConfig(**spec["candidates"])


def _check_base(base: Path, manifest: dict, uri: str) -> None:
    """Refuse a base model directory that is not the one the chain was trained on (versions made before
    the digest was recorded carry none, and are loaded as they were)."""
    recorded = manifest.get("base_model_sha256")
    if recorded and base_digest(base) != recorded:
        raise IncompatibleArtifact(f"{uri}: the base model at {base} has changed since this chain was trained "
                                   f"(sha256 {base_digest(base)[:12]}… is not the recorded {recorded[:12]}…)")


def load_version(chain: list[tuple[str, str]], dim: int) -> LoadedVersion:
    """The newest version of ``chain`` (oldest first: (uri, sha256) pairs), every artifact verified."""
    encoder, files, manifest, changed = None, {}, {}, False
    for uri, sha in chain:
        files = _verified(uri, sha)
        manifest = json.loads(files["manifest.json"])
        if encoder is None:
            base = resolve(manifest["base_model"])
            _check_base(base, manifest, uri)
            encoder = load_encoder(base)
        kind = manifest["encoder"]["kind"]
        changed |= kind in ("full", "lora")
        if kind == "full":
            _load_strict(encoder, _section(files, "encoder."), f"{uri} encoder", allow_missing="pooler.")
        elif kind == "lora":
            encoder = _apply_lora(encoder, _section(files, "encoder."), manifest["encoder"]["lora_config"])
    model = TwoTower(encoder, dim)
    _load_strict(model, _section(files, "head."), f"{chain[-1][0]} heads", allow_missing="encoder.")
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in files.items():
            if name.startswith("tokenizer/"):
                Path(tmp, name).parent.mkdir(parents=True, exist_ok=True)
                Path(tmp, name).write_bytes(data)
        tokenizer = load_tokenizer(Path(f"{tmp}/tokenizer"))
    ranker, candidates = _load_ranker(files, manifest)
    return LoadedVersion(model, tokenizer, manifest, ranker, candidates, _load_search(files, manifest), not changed)


def load_chain(lineage: list[dict], dim: int) -> LoadedVersion:
    """A version from its ``chain()`` rows, oldest first (each artifact checked against its sha256)."""
    return load_version([(r["artifact_uri"], r["artifact_sha256"]) for r in lineage], dim)


_SERVER = "SELECT system_identifier::text, current_database() FROM pg_control_system()"


def database_folder(conn, root: str) -> str:
    """This database's own folder under the artifacts root: ``<server system identifier>-<database>``.

    Databases named alike on two servers (every embedded server's is ``freshrec``) may share one
    root; each writes and sweeps only its own folder, so a sweep never takes another's live
    versions for orphans. The system identifier is fixed when a cluster is initialised.
    """
    import sqlalchemy as sa

    system, database = conn.execute(sa.text(_SERVER)).one()
    return f"{root.rstrip('/')}/{system}-{database}"


def normalised(uri: str) -> str:
    """One spelling per location: ``/a/b/``, ``/a/b`` and ``file:///a/b`` are the same directory."""
    fs, path = fsspec.core.url_to_fs(uri)
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return f"{protocol}://{path.rstrip('/')}"


def sweep_orphans(folder: str, referenced: set[str]) -> list[str]:
    """Delete artifact directories in ``folder`` that no published version names (left by a killed updater).

    Names are compared as ``normalised`` locations: a version recorded as ``file:///x/v`` or with a
    trailing slash is not taken for an orphan.
    """
    fs, path = fsspec.core.url_to_fs(folder)
    if not fs.exists(path):
        return []
    live = {normalised(u) for u in referenced}
    removed = []
    for entry in fs.ls(path, detail=False):
        uri = f"{folder.rstrip('/')}/{entry.rstrip('/').rsplit('/', 1)[-1]}"
        if normalised(uri) not in live:
            fs.rm(entry, recursive=True)
            removed.append(uri)
    return removed


def remove(uri: str) -> bool:
    """Delete one version's artifact directory (an erased version's weights); False if it was gone."""
    fs, path = fsspec.core.url_to_fs(uri)
    if not fs.exists(path):
        return False
    fs.rm(path, recursive=True)
    return True
