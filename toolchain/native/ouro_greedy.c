// ouro-greedy: greedy decoding from a prompt given as token ids, printing every step's full logits.
//
//   ouro-greedy [--phone] MODEL.gguf N_PREDICT THREADS TOKEN [TOKEN ...]
//
// --phone runs the small-memory settings of `ouro chat --phone`: loop-shared KV (ouro.kv_share), a q8_0
// K/V cache and flash attention (which a quantized V cache needs).
//
// Built for aarch64 by runtime/cross.py and run under qemu-aarch64: its output is compared with the x86
// runtime's on the same file (tests/test_cross.py), so it is deliberately minimal: no tokenizer, no
// sampler, one line per step:
//
//   step <i> token <argmax> logits <v_0> <v_1> ... <v_{n_vocab-1}>
//
// Step 0 is the prompt's last position; each later step feeds the previous argmax back in. Ties go to
// the lowest id, like numpy's argmax, so both sides pick the same token from identical logits.
// Set OURO_VERBOSE=1 to see llama.cpp's log, OURO_NO_REPACK=1 to keep the weights unrepacked.

#include "llama.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void quiet_log(enum ggml_log_level level, const char * text, void * user_data) {
    (void) user_data;
    if (level == GGML_LOG_LEVEL_ERROR) {
        fputs(text, stderr);
    }
}

static int parse_int(const char * text, const char * what) {
    char * end = NULL;
    long value = strtol(text, &end, 10);
    if (*text == '\0' || *end != '\0' || value < 0 || value > 1000000000L) {
        fprintf(stderr, "ouro-greedy: %s must be a non-negative integer, got '%s'\n", what, text);
        exit(2);
    }
    return (int) value;
}

int main(int argc, char ** argv) {
    const int phone = argc > 1 && strcmp(argv[1], "--phone") == 0;
    if (phone) {
        argv++;
        argc--;
    }
    if (argc < 5) {
        fprintf(stderr, "usage: ouro-greedy [--phone] MODEL.gguf N_PREDICT THREADS TOKEN [TOKEN ...]\n");
        return 2;
    }
    const char * path = argv[1];
    const int n_predict = parse_int(argv[2], "N_PREDICT");
    const int n_threads = parse_int(argv[3], "THREADS");
    const int n_prompt = argc - 4;
    llama_token * tokens = malloc(sizeof(llama_token) * (size_t) (n_prompt + n_predict + 1));
    for (int i = 0; i < n_prompt; i++) {
        tokens[i] = parse_int(argv[4 + i], "TOKEN");
    }

    if (!getenv("OURO_VERBOSE")) {
        llama_log_set(quiet_log, NULL);
    }
    llama_backend_init();
    struct llama_model_params mparams = llama_model_default_params();
    // OURO_NO_REPACK=1 keeps the weights in the file's layout (no CPU_REPACK kernels): isolates differences
    // between the two machines' matmul paths.
    if (getenv("OURO_NO_REPACK")) {
        mparams.use_extra_bufts = false;
    }
    struct llama_model_kv_override overrides[2];
    memset(overrides, 0, sizeof(overrides));  // the list ends at an empty key
    if (phone) {
        overrides[0].tag = LLAMA_KV_OVERRIDE_TYPE_BOOL;
        strcpy(overrides[0].key, "ouro.kv_share");
        overrides[0].val_bool = true;
        mparams.kv_overrides = overrides;
    }
    struct llama_model * model = llama_model_load_from_file(path, mparams);
    if (model == NULL) {
        fprintf(stderr, "ouro-greedy: cannot load %s\n", path);
        return 1;
    }
    const struct llama_vocab * vocab = llama_model_get_vocab(model);
    const int n_vocab = llama_vocab_n_tokens(vocab);
    for (int i = 0; i < n_prompt; i++) {
        if (tokens[i] >= n_vocab) {
            fprintf(stderr, "ouro-greedy: token %d is outside the %d-token vocabulary\n", tokens[i], n_vocab);
            return 2;
        }
    }

    struct llama_context_params cparams = llama_context_default_params();
    cparams.n_ctx = (uint32_t) (n_prompt + n_predict + 1);
    cparams.n_batch = cparams.n_ctx;
    cparams.n_threads = n_threads > 0 ? n_threads : 1;
    cparams.n_threads_batch = cparams.n_threads;
    if (phone) {
        cparams.type_k = GGML_TYPE_Q8_0;
        cparams.type_v = GGML_TYPE_Q8_0;
        cparams.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_ENABLED;
    }
    struct llama_context * ctx = llama_init_from_model(model, cparams);
    if (ctx == NULL) {
        fprintf(stderr, "ouro-greedy: cannot create a context\n");
        return 1;
    }

    struct llama_batch batch = llama_batch_get_one(tokens, n_prompt);
    for (int step = 0; step <= n_predict; step++) {
        if (llama_decode(ctx, batch) != 0) {
            fprintf(stderr, "ouro-greedy: decode failed at step %d\n", step);
            return 1;
        }
        const float * logits = llama_get_logits_ith(ctx, -1);
        int best = 0;
        for (int v = 1; v < n_vocab; v++) {
            if (logits[v] > logits[best]) {
                best = v;
            }
        }
        printf("step %d token %d logits", step, best);
        for (int v = 0; v < n_vocab; v++) {
            printf(" %.9g", logits[v]);
        }
        printf("\n");
        tokens[n_prompt + step] = best;
        batch = llama_batch_get_one(&tokens[n_prompt + step], 1);
    }

    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    free(tokens);
    return 0;
}
