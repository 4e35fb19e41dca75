"""A MODEL or SRC argument -> a local file: what `ouro chat/serve/generate` and `ouro convert` call.

An existing path is used as it is. Anything else shaped like a reference (hub.reference) names a repo:
- a checkpoint repo (config.json + model.safetensors) is downloaded (only the files the converter reads)
  and, for the commands that run a model, converted once into the store (hub.store) at the type the
  reference names (`:q4_k_m`, default DEFAULT_TYPE);
- a repo of GGUF files gives the file the reference names (`:Q4_K_M` or `/file.gguf`), downloaded
  directly and checked to be an Ouro GGUF before anything loads it; a file that is not is removed again.
The conversion goes through the same converter as a local directory, so a Thinking repo gets the same
sampling defaults and `<|im_end|>` end of turn.
"""

from __future__ import annotations

import re
from pathlib import Path

from rich.console import Console

from convert.checkpoint import REQUIRED_FILES, SOURCE_FILES
from convert.hparams import OuroHParams
from hub import hf, hf_cache, store
from hub.confirm import confirm_download
from hub.errors import HubError
from hub.reference import HubRef, parse_reference, with_type

DEFAULT_TYPE = "q8_0"  # the converter's default (`ouro convert -t`)
DEFAULT_QUANT = "Q4_K_M"  # the file taken from a repo of several GGUFs when none is named (llama.cpp's choice)


def model_file(model: str, console: Console, yes: bool = False, type_name: str | None = None) -> tuple[Path, str]:
    """(the GGUF to load for MODEL, what to call it); `type_name` (--type) as if MODEL ended in :TYPE."""
    ref = _reference(model)
    if type_name is not None:
        if ref is None:
            raise HubError(f"--type {type_name} applies to a Hugging Face repo id, and {model!r} is a local path")
        ref = with_type(ref, type_name)
    if ref is None:
        return Path(model), model
    listing = hf.list_files(ref)
    if ref.filename is None and _is_checkpoint(listing):
        type_name = _output_type(ref)
        out = store.converted_path(ref.repo_id, listing.commit, type_name)
        if not out.is_file():
            snapshot = _download(ref, listing, _checkpoint_files(ref, listing), console, yes)
            # The snapshot's own commit: the branch may have moved since the listing.
            out = store.convert_once(snapshot, store.converted_path(ref.repo_id, snapshot.name, type_name),
                                     type_name, console)
        return out, str(ref)
    return _gguf_file(ref, listing, console, yes), str(ref)


def checkpoint_source(src: str, console: Console, yes: bool = False) -> str | Path:
    """The checkpoint directory for `ouro convert SRC`: SRC itself, or the downloaded snapshot it names."""
    ref = _reference(src)
    if ref is None or not hf.installed():  # without the hub extra, convert.checkpoint looks in the HF cache
        return src
    if ref.tag or ref.filename:
        raise HubError(f"{ref}: `ouro convert` takes a checkpoint repo as REPO_ID[@REVISION] and the type from -t")
    listing = hf.list_files(ref)
    if not _is_checkpoint(listing):
        raise HubError(f"{ref.repo_id} holds no Ouro checkpoint (config.json and model.safetensors) to convert")
    return _download(ref, listing, _checkpoint_files(ref, listing), console, yes)


def _reference(text: str) -> HubRef | None:
    if Path(text).expanduser().exists():
        return None
    return parse_reference(text)


def _is_checkpoint(listing: hf.RepoListing) -> bool:
    return "config.json" in listing.sizes and (
        "model.safetensors" in listing.sizes or "model.safetensors.index.json" in listing.sizes)


def _output_type(ref: HubRef) -> str:
    from convert.errors import ConvertError
    from convert.plan import output_type

    try:
        return output_type(ref.tag or DEFAULT_TYPE).name
    except ConvertError as e:
        raise HubError(f"{ref}: {e}") from None


def _checkpoint_files(ref: HubRef, listing: hf.RepoListing) -> list[str]:
    """The files the converter reads, after checking (before the large download) that they make an Ouro model."""
    if "model.safetensors" not in listing.sizes:
        raise HubError(f"{ref.repo_id}: sharded checkpoints are not supported (Ouro ships one model.safetensors)")
    missing = [f for f in REQUIRED_FILES if f not in listing.sizes]
    if missing:
        raise HubError(f"{ref.repo_id} is not a complete checkpoint: it has no {', '.join(missing)}")
    from convert.checkpoint import read_json
    from convert.errors import ConvertError

    config_path = _fetch(ref, ["config.json"]) / "config.json"
    try:
        OuroHParams.from_config(read_json(config_path, HubError), f"{ref.repo_id}/config.json")
    except ConvertError as e:
        raise HubError(str(e)) from None
    return [f for f in SOURCE_FILES if f in listing.sizes]


def _download(ref: HubRef, listing: hf.RepoListing, files: list[str], console: Console, yes: bool) -> Path:
    have = _cached(ref, listing)
    confirm_download(ref, {f: listing.sizes[f] for f in files if f not in have}, yes, console)
    return _fetch(ref, files)


def _fetch(ref: HubRef, files: list[str]) -> Path:
    try:
        return hf.download(ref, files)
    except HubError:
        hf_cache.forget_if_empty(hf_cache.repo_folder(ref.repo_id))
        raise


def _cached(ref: HubRef, listing: hf.RepoListing) -> dict[str, int]:
    """The files of the listed commit already in the Hugging Face cache."""
    cached = hf_cache.cached_files(HubRef(ref.repo_id, listing.commit, None, None))
    return cached[1] if cached else {}


def _gguf_file(ref: HubRef, listing: hf.RepoListing, console: Console, yes: bool) -> Path:
    from runtime.validate import GGUFValidationError, validate_gguf

    name = _pick_gguf(ref, listing)
    fresh = name not in _cached(ref, listing)
    path = _download(ref, listing, [name], console, yes) / name
    try:
        validate_gguf(path)
    except GGUFValidationError as e:
        if fresh:  # downloaded for nothing: do not leave it in the cache
            hf_cache.remove_file(path)
        raise HubError(f"{ref}: {name} is not an Ouro GGUF this runtime can load ({str(e).split(': ', 1)[-1]})") from None
    return path


def _pick_gguf(ref: HubRef, listing: hf.RepoListing) -> str:
    if ref.filename is not None:
        if ref.filename not in listing.sizes:
            raise HubError(f"{ref.repo_id}@{listing.commit[:12]} has no file {ref.filename}")
        return ref.filename
    ggufs = sorted(f for f in listing.sizes if f.endswith(".gguf"))
    if not ggufs:
        if listing.from_cache:  # e.g. the small files of a checkpoint whose download was interrupted
            raise HubError(f"{ref}: the Hub cannot be asked and the local Hugging Face cache holds only "
                           f"{', '.join(sorted(listing.sizes))} of it")
        raise HubError(f"{ref.repo_id} holds neither an Ouro checkpoint (config.json, model.safetensors) "
                       "nor .gguf files")
    if ref.tag is None and len(ggufs) == 1:
        return ggufs[0]
    quant = ref.tag or DEFAULT_QUANT
    # The quant as a word of the file name: Q4_K matches model-Q4_K.gguf, not model-Q4_K_M.gguf.
    word = re.compile(rf"(?<![A-Za-z0-9]){re.escape(quant)}(?![A-Za-z0-9_])", re.IGNORECASE)
    matches = [f for f in ggufs if word.search(f.rsplit("/", 1)[-1].removesuffix(".gguf"))]
    if len(matches) != 1:
        how = "no file" if not matches else f"{len(matches)} files"
        raise HubError(f"{ref.repo_id}: {how} for quantization {quant}; name one with :QUANT or /FILE.gguf "
                       f"(files: {', '.join(ggufs)})")
    return matches[0]
