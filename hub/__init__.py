"""Models by name: Hugging Face repo ids resolved to local files, and the store of models made from them.

    reference  REPO_ID[@REVISION][:TYPE] and REPO_ID[@REVISION]/FILE.gguf, parsed
    hf         the calls into huggingface_hub (listing, downloads), its errors as one line
    hf_cache   what the Hugging Face cache holds without asking the Hub; removing one file from it
    confirm    the size shown before a download, and the prompt before a large one
    store      $OURO_CACHE/models/: checkpoints converted once per repo, commit and type
    resolve    a MODEL or SRC argument -> a local GGUF or checkpoint directory (what the commands call)
    catalog    `ouro list` and `ouro rm`: converted and downloaded models
"""
