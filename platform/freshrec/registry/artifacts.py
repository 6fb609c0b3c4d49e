"""A version's artifact directory: safetensors weights, tokenizer, manifest.json, metrics.json.

Each version stores what it changed: its towers' heads always; its encoder in full (strategy
``full``), as a LoRA delta (``lora``) or not at all (``head``, which inherits the parent's encoder).
Loading resolves the parent chain. Files go through fsspec, so the root may be an S3 URI.
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
from safetensors.torch import load_file, save_file

from freshrec.training.base_models import load_encoder, load_tokenizer, resolve
from freshrec.training.modeling import TwoTower

WEIGHTS = "model.safetensors"
FILES = ("manifest.json", "metrics.json", WEIGHTS)


class TamperedArtifact(RuntimeError):
    """The bytes on storage do not match the sha256 recorded at publish time."""


@dataclass
class LoadedVersion:
    model: TwoTower
    tokenizer: object
    manifest: dict


def load_chain(lineage: list[dict], dim: int) -> LoadedVersion:
    """A version from its ``chain()`` rows, oldest first (each artifact checked against its sha256)."""
    return load_version([(r["artifact_uri"], r["artifact_sha256"]) for r in lineage], dim)


def new_uri(root: str) -> str:
    return f"{root.rstrip('/')}/{uuid.uuid4().hex}"


def digest(uri: str) -> str:
    """sha256 over every file's relative name and bytes, in name order."""
    fs, path = fsspec.core.url_to_fs(uri)
    h = hashlib.sha256()
    for name in sorted(fs.find(path)):
        h.update(name[len(path) :].encode())
        with fs.open(name, "rb") as f:
            h.update(f.read())
    return h.hexdigest()


def write(uri: str, model: TwoTower, tokenizer, manifest: dict, metrics: dict, encoder_state: dict) -> str:
    """Write the directory and return its sha256."""
    fs, path = fsspec.core.url_to_fs(uri)
    fs.makedirs(path, exist_ok=True)
    tensors = {f"head.{k}": v.detach().cpu().contiguous() for k, v in model.head_state().items()}
    tensors.update({f"encoder.{k}": v.detach().cpu().contiguous() for k, v in encoder_state.items()})
    with tempfile.TemporaryDirectory() as tmp:
        save_file(tensors, f"{tmp}/{WEIGHTS}")
        tokenizer.save_pretrained(f"{tmp}/tokenizer")
        Path(f"{tmp}/manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
        Path(f"{tmp}/metrics.json").write_text(json.dumps(metrics, indent=2))
        fs.put(f"{tmp}/", path, recursive=True)
    return digest(uri)


def _read_json(uri: str, name: str) -> dict:
    with fsspec.open(f"{uri}/{name}", "r") as f:
        return json.load(f)


def _weights(uri: str) -> dict[str, torch.Tensor]:
    with tempfile.TemporaryDirectory() as tmp:
        fs, path = fsspec.core.url_to_fs(uri)
        fs.get(f"{path}/{WEIGHTS}", f"{tmp}/{WEIGHTS}")
        return load_file(f"{tmp}/{WEIGHTS}")


def _apply_lora(encoder, delta: dict[str, torch.Tensor], config: dict):
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict

    peft_model = get_peft_model(encoder, LoraConfig(**config))
    set_peft_model_state_dict(peft_model, delta)
    return peft_model.merge_and_unload()


def load_encoder_chain(chain: list[tuple[str, str]]):
    """Rebuild an encoder from (uri, sha256) pairs, oldest first, verifying each."""
    encoder = None
    for uri, sha in chain:
        if digest(uri) != sha:
            raise TamperedArtifact(f"{uri}: sha256 does not match the recorded {sha[:12]}…")
        manifest = _read_json(uri, "manifest.json")
        kind = manifest["encoder"]["kind"]
        if encoder is None:
            encoder = load_encoder(resolve(manifest["base_model"]))
        if kind == "full":
            encoder.load_state_dict({k[8:]: v for k, v in _weights(uri).items() if k.startswith("encoder.")})
        elif kind == "lora":
            delta = {k[8:]: v for k, v in _weights(uri).items() if k.startswith("encoder.")}
            encoder = _apply_lora(encoder, delta, manifest["encoder"]["lora_config"])
    return encoder


def load_version(chain: list[tuple[str, str]], dim: int) -> LoadedVersion:
    """The newest version of ``chain`` with its towers, tokenizer and manifest."""
    uri, _ = chain[-1]
    encoder = load_encoder_chain(chain)
    model = TwoTower(encoder, dim)
    heads = {k[5:]: v for k, v in _weights(uri).items() if k.startswith("head.")}
    model.load_state_dict(heads, strict=False)
    with tempfile.TemporaryDirectory() as tmp:
        fs, path = fsspec.core.url_to_fs(uri)
        fs.get(f"{path}/tokenizer/", f"{tmp}/tokenizer/", recursive=True)
        tokenizer = load_tokenizer(Path(f"{tmp}/tokenizer"))
    return LoadedVersion(model, tokenizer, _read_json(uri, "manifest.json"))


def sweep_orphans(root: str, referenced: set[str]) -> list[str]:
    """Delete artifact directories no published version names (left by a killed updater)."""
    fs, path = fsspec.core.url_to_fs(root)
    if not fs.exists(path):
        return []
    removed = []
    for entry in fs.ls(path, detail=False):
        uri = f"{root.rstrip('/')}/{entry.rstrip('/').rsplit('/', 1)[-1]}"
        if uri not in referenced:
            fs.rm(entry, recursive=True)
            removed.append(uri)
    return removed
