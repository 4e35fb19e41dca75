"""`ouro runtime devtree DIR`: the vendored llama.cpp as a git checkout with one commit per patch.

For whoever edits the C++ patches: DIR gets a tag `vendored` on the pristine commit and one commit per
patch on a branch `ouro-patches` (subject = the patch name without its number). Edit there (commit or
`git commit --fixup` + `git rebase -i --autosquash vendored`), build it with plain CMake if you like, then
regenerate patches/ from the checkout root:

    rm -f patches/*.patch
    git -C /tmp/llama-dev format-patch --zero-commit --no-numbered --no-signature --no-stat -o "$PWD/patches" vendored

which writes `0001-<subject>.patch`, ... in commit order; `ouro runtime build` then picks the new content
up (the cache key changes) and rebuilds incrementally.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from rich.console import Console

from runtime.cache import cache_dir
from toolchain.errors import BuildError, PatchError
from toolchain.inputs import PATCHES_DIR, VENDOR, cache_key, patch_files
from toolchain.patching import apply_patches, git
from toolchain.progress import Reporter, log_path, run_logged
from toolchain.sdist import download_sdist, fetch_sdist, unpack_sdist
from toolchain.wheel import build_python
from toolchain.workspace import cache_lock

def make_devtree(target: Path, *, patches_dir: Path = PATCHES_DIR, console: Console | None = None) -> Path:
    """Clone the vendored llama.cpp into `target` with one commit per patch (see the module doc)."""
    console = console or Console(stderr=True, soft_wrap=True)
    target = target.resolve()
    if target.exists() and any(target.iterdir()):
        raise BuildError(f"{target} exists and is not empty: choose a new directory")
    cache = cache_dir()
    patches = patch_files(patches_dir)
    log = log_path(cache, "devtree", cache_key(patches, ()))
    # Fixed identity and dates: regenerating an unchanged patch gives identical bytes (same cache key).
    env = dict(os.environ, GIT_AUTHOR_NAME="ouro devtree", GIT_AUTHOR_EMAIL="devtree@ouro.invalid",
               GIT_COMMITTER_NAME="ouro devtree", GIT_COMMITTER_EMAIL="devtree@ouro.invalid",
               GIT_AUTHOR_DATE="2026-01-01T00:00:00+0000", GIT_COMMITTER_DATE="2026-01-01T00:00:00+0000")
    with cache_lock(cache, console), Reporter(console) as reporter:
        python = build_python(cache, log, reporter)
        reporter.step("fetching the sdist")
        sdist = fetch_sdist(cache, lambda tmp: download_sdist(tmp, python, log))
        (cache / "work").mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache / "work", prefix=".devtree-") as tmp:
            reporter.step("unpacking the sdist")
            vendor = unpack_sdist(sdist, Path(tmp)) / VENDOR
            reporter.step(f"cloning the vendored llama.cpp into {target}")
            run_logged(["git", "-c", "advice.detachedHead=false", "clone", "--quiet", str(vendor),
                         str(target)], log, what="cloning the vendored llama.cpp")
        for args in (["remote", "remove", "origin"], ["tag", "vendored"], ["checkout", "-q", "-b", "ouro-patches"]):
            if git(args, target).returncode != 0:
                raise BuildError(f"git {' '.join(args)} failed in {target}")

        def commit(patch: Path) -> None:
            subject = re.sub(r"^\d+-", "", patch.stem)
            if git(["commit", "-q", "-m", subject], target, env=env).returncode != 0:
                raise PatchError(f"patch {patch.name} applied but could not be committed (empty patch?)")
            reporter.done(f"{patch.name} → commit '{subject}'")

        reporter.step(f"applying {len(patches)} patch(es)")
        apply_patches(target, patches, index=True, on_applied=commit)
    return target
