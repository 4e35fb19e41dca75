"""The calls into huggingface_hub, with its errors turned into one line each.

huggingface_hub owns the Hugging Face cache, the token (HF_TOKEN or `hf auth login`), HF_ENDPOINT,
HF_HUB_OFFLINE, retries, resuming an interrupted transfer with a Range request (within a run; 2.4 deletes
a failed transfer's temporary file, so the next run starts that file again) and the progress bars; nothing
here re-implements any of it. It is the optional `hub` extra, so it is imported on first use.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from hub import hf_cache
from hub.errors import HubError
from hub.reference import HubRef


@dataclass(frozen=True)
class RepoListing:
    commit: str
    sizes: dict[str, int]  # path in the repo -> bytes
    from_cache: bool  # the Hub could not be asked: the files the local cache holds for this revision


def installed() -> bool:
    return importlib.util.find_spec("huggingface_hub") is not None


def huggingface_hub() -> ModuleType:
    try:
        import huggingface_hub as hf
        import huggingface_hub.constants  # noqa: F401  (a lazy package: submodules are attributes once imported)
    except ImportError:
        raise HubError("models named by a Hugging Face repo id need huggingface_hub: "
                       "pip install 'ouro-gguf[hub]'") from None
    return hf


def list_files(ref: HubRef) -> RepoListing:
    """The commit `ref` points at and its files with their sizes: from the Hub, else from the local cache."""
    hf = huggingface_hub()
    try:
        with hub_errors(ref):
            info = hf.HfApi().model_info(ref.repo_id, revision=ref.revision, files_metadata=True)
        return RepoListing(commit=info.sha, sizes={s.rfilename: s.size or 0 for s in info.siblings or ()},
                           from_cache=False)
    except _Unreachable as e:
        cached = hf_cache.cached_files(ref)
        if cached is None:
            raise HubError(f"{ref}: {e}, and the local Hugging Face cache ({hf_cache.root()}) "
                           "does not hold it") from None
        commit, sizes = cached
        return RepoListing(commit=commit, sizes=sizes, from_cache=True)


def download(ref: HubRef, files: Iterable[str]) -> Path:
    """The snapshot directory holding `files` of `ref`, downloading those the cache lacks.

    The revision passed on is the user's (not the listed commit) so huggingface_hub records the branch
    in the cache's refs/, which is how an offline run later finds that commit again."""
    hf = huggingface_hub()
    wanted = list(files)
    with hub_errors(ref):
        snapshot = Path(hf.snapshot_download(
            ref.repo_id, revision=ref.revision, allow_patterns=[glob.escape(f) for f in wanted]))
    missing = [f for f in wanted if not (snapshot / f).is_file()]
    if missing:  # snapshot_download skips what the revision lacks; the listing said it was there
        raise HubError(f"{ref}: the download did not bring {', '.join(missing)}")
    return snapshot


class _Unreachable(HubError):
    """The Hub cannot be asked (offline mode, no connection): the local cache may still serve."""


@contextlib.contextmanager
def hub_errors(ref: HubRef) -> Iterator[None]:
    """huggingface_hub's exceptions as one HubError line naming `ref`."""
    hf = huggingface_hub()
    import httpx2  # huggingface_hub 2's HTTP library: its transport errors mean "no connection"
    from huggingface_hub import errors as e

    endpoint = hf.constants.ENDPOINT
    try:
        yield
    except e.OfflineModeIsEnabled:
        raise _Unreachable("HF_HUB_OFFLINE is set") from None
    except (httpx2.ConnectError, httpx2.TimeoutException) as err:
        raise _Unreachable(f"cannot reach {endpoint} ({type(err).__name__}: {_first_line(err)})") from None
    except httpx2.TransportError as err:  # a transfer cut short more often than huggingface_hub retries
        raise HubError(f"{ref}: download failed: {_first_line(err)}") from None
    except e.GatedRepoError:
        raise HubError(f"{ref.repo_id} is a gated repo: accept its conditions on its Hub page, then set HF_TOKEN "
                       "(or run `hf auth login`)") from None
    except e.RepositoryNotFoundError:
        raise HubError(f"{ref.repo_id}: no such repository on {endpoint} (nor a local file of that name; "
                       "a private repo needs HF_TOKEN)") from None
    except e.RevisionNotFoundError:
        raise HubError(f"{ref.repo_id} has no revision {ref.revision!r}") from None
    except e.RemoteEntryNotFoundError as err:
        raise HubError(f"{ref}: a file is missing on the Hub ({_first_line(err)})") from None
    except e.LocalEntryNotFoundError as err:  # incl. an incomplete cached snapshot while offline
        raise HubError(f"{ref}: not in the local Hugging Face cache and the Hub cannot be reached "
                       f"({_first_line(err)})") from None
    except e.HfHubHTTPError as err:
        raise HubError(f"{ref}: {endpoint} answered {_first_line(err)}") from None
    except OSError as err:  # disk full, a transfer cut short too often ("Consistency check failed"), ...
        raise HubError(f"{ref}: download failed: {_first_line(err)}") from None


def _first_line(err: BaseException) -> str:
    lines = [line for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__
