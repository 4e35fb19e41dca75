"""Building the patched llama.cpp runtime: what `ouro runtime ...` does. Nothing here is imported at run time.

    inputs        the pinned sdist, the compiler flags, patches/ and the cache key hashing them
    sdist         fetching and checking the llama-cpp-python source distribution
    patching      applying patches/ to its vendored llama.cpp; syncing the patched tree incrementally
    progress      running build commands with a log and a progress line
    workspace     the cache lock and the frozen copy of patches/ a build works from
    wheel         `ouro runtime build`: compile, cache and install the wheel (and the llama.cpp tools)
    status        `ouro runtime status`: the installed build against the current patches/
    devtree       `ouro runtime devtree`: a git checkout with one commit per patch, for editing them
    export_source `ouro runtime export-source`: the patched tree with phone build scripts
    cross         `ouro runtime cross-build` / `cross-run`: aarch64 Linux under qemu (native/ holds its C program)
"""
