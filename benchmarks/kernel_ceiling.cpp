// Throughput of ggml's CPU mul_mat on its own, outside any model: the ceiling of what decode and prompt
// passes can reach on this machine (benchmarks/kernel_ceiling.py builds and runs this; see there).
//
//   kernel_ceiling TYPE REPACK MATRICES ROWS COLS TOKENS ITERS THREADS
//
// MATRICES weight matrices of ROWS x COLS (ggml: ne0 = COLS, the dot-product length) of TYPE (q8_0, q4_K,
// q6_K), in the CPU backend's repacking buffer when REPACK is 1, each multiplied by the same activation of
// TOKENS columns, ITERS times. Prints one JSON object: the median time of one pass over all matrices, the
// weight bytes that pass reads, the weights' buffer type (CPU_REPACK: the repacked kernels), and the
// relative error of one output against a float product of the dequantized weights (so that a broken
// kernel cannot look fast).

#include "ggml.h"
#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

static ggml_type parse_type(const std::string & name) {
    if (name == "q8_0") return GGML_TYPE_Q8_0;
    if (name == "q4_K") return GGML_TYPE_Q4_K;
    if (name == "q6_K") return GGML_TYPE_Q6_K;
    fprintf(stderr, "unknown type %s (q8_0, q4_K, q6_K)\n", name.c_str());
    exit(2);
}

static ggml_backend_buffer_type_t repack_buffer_type() {
    ggml_backend_dev_t dev = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    auto get_extra = (ggml_backend_dev_get_extra_bufts_t) ggml_backend_reg_get_proc_address(
        ggml_backend_dev_backend_reg(dev), "ggml_backend_dev_get_extra_bufts");
    ggml_backend_buffer_type_t * extra = get_extra ? get_extra(dev) : nullptr;
    return extra && extra[0] ? extra[0] : nullptr;
}

int main(int argc, char ** argv) {
    if (argc != 9) {
        fprintf(stderr, "usage: %s TYPE REPACK MATRICES ROWS COLS TOKENS ITERS THREADS\n", argv[0]);
        return 2;
    }
    const ggml_type type = parse_type(argv[1]);
    const bool repack = atoi(argv[2]) != 0;
    const int n_mat = atoi(argv[3]), rows = atoi(argv[4]), cols = atoi(argv[5]), tokens = atoi(argv[6]);
    const int iters = atoi(argv[7]), threads = atoi(argv[8]);

    ggml_backend_t backend = ggml_backend_cpu_init();
    ggml_backend_cpu_set_n_threads(backend, threads);
    ggml_backend_buffer_type_t weight_buft = repack ? repack_buffer_type() : ggml_backend_cpu_buffer_type();
    if (!weight_buft) {
        fprintf(stderr, "this CPU backend has no repacking buffer type\n");
        return 1;
    }

    // One random matrix, quantized once and uploaded n_mat times (the upload repacks it when asked).
    std::mt19937 rng(1);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> w((size_t) rows * cols), x((size_t) tokens * cols);
    for (auto & v : w) v = normal(rng);
    for (auto & v : x) v = normal(rng);
    std::vector<uint8_t> wq(ggml_row_size(type, cols) * rows);
    ggml_quantize_chunk(type, w.data(), wq.data(), 0, rows, cols, nullptr);

    ggml_init_params wparams = { ggml_tensor_overhead() * (size_t) n_mat, nullptr, true };
    ggml_context * wctx = ggml_init(wparams);
    std::vector<ggml_tensor *> weights(n_mat);
    for (auto & t : weights) t = ggml_new_tensor_2d(wctx, type, cols, rows);
    ggml_backend_buffer_t wbuf = ggml_backend_alloc_ctx_tensors_from_buft(wctx, weight_buft);
    for (auto * t : weights) ggml_backend_tensor_set(t, wq.data(), 0, wq.size());

    const int n_nodes = 2 * n_mat + 8;
    ggml_init_params gparams = { ggml_tensor_overhead() * n_nodes + ggml_graph_overhead_custom(n_nodes, false),
                                 nullptr, true };
    ggml_context * gctx = ggml_init(gparams);
    ggml_tensor * act = ggml_new_tensor_2d(gctx, GGML_TYPE_F32, cols, tokens);
    ggml_set_input(act);
    ggml_cgraph * graph = ggml_new_graph_custom(gctx, n_nodes, false);
    std::vector<ggml_tensor *> outs(n_mat);
    for (int i = 0; i < n_mat; i++) {
        outs[i] = ggml_mul_mat(gctx, weights[i], act);
        ggml_set_output(outs[i]);
        ggml_build_forward_expand(graph, outs[i]);
    }
    ggml_gallocr_t galloc = ggml_gallocr_new(ggml_backend_cpu_buffer_type());
    ggml_gallocr_alloc_graph(galloc, graph);
    ggml_backend_tensor_set(act, x.data(), 0, x.size() * sizeof(float));

    ggml_backend_graph_compute(backend, graph);  // warm-up: pages touched, caches filled
    std::vector<double> seconds;
    for (int it = 0; it < iters; it++) {
        const auto t0 = std::chrono::steady_clock::now();
        ggml_backend_graph_compute(backend, graph);
        seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(seconds.begin(), seconds.end());

    // Check the last matrix's first token against float arithmetic on the dequantized weights.
    std::vector<float> wd((size_t) rows * cols), y(rows);
    ggml_get_type_traits(type)->to_float(wq.data(), wd.data(), (int64_t) rows * cols);
    ggml_backend_tensor_get(outs.back(), y.data(), 0, rows * sizeof(float));
    double err = 0, norm = 0;
    for (int r = 0; r < rows; r++) {
        double ref = 0;
        for (int c = 0; c < cols; c++) ref += (double) wd[(size_t) r * cols + c] * x[c];
        err += (y[r] - ref) * (y[r] - ref);
        norm += ref * ref;
    }

    printf("{\"type\": \"%s\", \"buffer\": \"%s\", \"matrices\": %d, \"rows\": %d, \"cols\": %d, \"tokens\": %d, "
           "\"threads\": %d, \"weight_bytes\": %zu, \"median_seconds\": %.9g, \"relative_error\": %.3g}\n",
           argv[1], ggml_backend_buft_name(weight_buft), n_mat, rows, cols, tokens, threads, wq.size() * n_mat,
           seconds[seconds.size() / 2], std::sqrt(err / norm));

    ggml_gallocr_free(galloc);
    ggml_free(gctx);
    ggml_backend_buffer_free(wbuf);
    ggml_free(wctx);
    ggml_backend_free(backend);
    return 0;
}
