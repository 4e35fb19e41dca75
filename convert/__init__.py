"""`ouro convert`: an Ouro Hugging Face checkpoint to one GGUF file (entry point: convert.convert).

    checkpoint.py         find SRC (directory or HF cache), validate config.json and the tensor list
    hparams.py            the config fields that shape the file, range-checked
    safetensors_reader.py validated header, memory-mapped tensors, BF16 -> f32 without torch
    tensor_map.py         HF -> GGUF names, shapes implied by the config, the Q/K row permutation
    tokenizer.py          tokenizer.json -> GGUF vocabulary (SmolLM pre-tokenizer checked)
    chat_template.py      the template to embed, Thinking detection, ChatML fallback
    plan.py               output types and the per-tensor type/size decisions
    metadata.py           every KV pair (loops, exit gate, tokenizer, sampling defaults)
    writer.py             header first, then tensor data streamed one tensor at a time
    kquant.py             K-quants through llama.cpp's quantizer (patched llama-cpp-python)
    output.py             output path checks, temp file + os.replace
    report.py             progress bars and the summary
    errors.py             ConvertError and subclasses: one-line user-facing failures
"""
