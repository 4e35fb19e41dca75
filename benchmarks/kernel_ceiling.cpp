// Throughput of ggml's CPU kernels on their own, outside any model: the ceiling of what decode and prompt
// passes can reach on this machine (benchmarks/kernel_ceiling.py builds and runs this; see there).
//
//   kernel_ceiling TYPE REPACK MATRICES ROWS COLS TOKENS ITERS THREADS
//
// TYPE q8_0, q4_K or q6_K: MATRICES weight matrices of ROWS x COLS (ggml: ne0 = COLS, the dot-product
// length) of TYPE, in the CPU backend's repacking buffer when REPACK is 1, each multiplied by the same
// activation of TOKENS columns.
// TYPE attn_f16: one-token flash attention (the decode path) over MATRICES layers of an F16 KV cache laid
// out like llama.cpp's (token-major rows of COLS = heads x 128 values), ROWS cached tokens; TOKENS is 1.
//
// The graph runs ITERS times. Prints one JSON object: the median time of one pass, the bytes of weights
// (or K and V) that pass reads, the weights' buffer type (CPU_REPACK: the repacked kernels), and the
// relative error of one output against float arithmetic on the same data (so that a broken kernel cannot
// look fast).

#include "ggml.h"
#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

static constexpr int HEAD_SIZE = 128;  // the published Ouro models'

struct Result {
    const char * buffer;
    size_t       bytes;
    double       seconds;
    double       relative_error;
};

static ggml_backend_buffer_type_t repack_buffer_type() {
    ggml_backend_dev_t dev = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    auto get_extra = (ggml_backend_dev_get_extra_bufts_t) ggml_backend_reg_get_proc_address(
        ggml_backend_dev_backend_reg(dev), "ggml_backend_dev_get_extra_bufts");
    ggml_backend_buffer_type_t * extra = get_extra ? get_extra(dev) : nullptr;
    return extra && extra[0] ? extra[0] : nullptr;
}

static std::vector<float> normal_values(size_t n, float scale, std::mt19937 & rng) {
    std::normal_distribution<float> normal(0.0f, scale);
    std::vector<float> v(n);
    for (auto & x : v) x = normal(rng);
    return v;
}

// Median seconds of `iters` computations of `graph`, after one warm-up (pages touched, caches filled).
static double median_seconds(ggml_backend_t backend, ggml_cgraph * graph, int iters) {
    ggml_backend_graph_compute(backend, graph);
    std::vector<double> seconds;
    for (int it = 0; it < iters; it++) {
        const auto t0 = std::chrono::steady_clock::now();
        ggml_backend_graph_compute(backend, graph);
        seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(seconds.begin(), seconds.end());
    return seconds[seconds.size() / 2];
}

static double relative_error(const std::vector<float> & got, const std::vector<double> & want) {
    double err = 0, norm = 0;
    for (size_t i = 0; i < want.size(); i++) {
        err += (got[i] - want[i]) * (got[i] - want[i]);
        norm += want[i] * want[i];
    }
    return std::sqrt(err / norm);
}

static Result mul_mat(ggml_backend_t backend, ggml_type type, bool repack, int n_mat, int rows, int cols,
                      int tokens, int iters) {
    ggml_backend_buffer_type_t weight_buft = repack ? repack_buffer_type() : ggml_backend_cpu_buffer_type();
    if (!weight_buft) {
        fprintf(stderr, "this CPU backend has no repacking buffer type\n");
        exit(1);
    }
    // One random matrix, quantized once and uploaded n_mat times (the upload repacks it when asked).
    std::mt19937 rng(1);
    const std::vector<float> w = normal_values((size_t) rows * cols, 1.0f, rng);
    const std::vector<float> x = normal_values((size_t) tokens * cols, 1.0f, rng);
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
    ggml_tensor * out = nullptr;
    for (auto * t : weights) {
        out = ggml_mul_mat(gctx, t, act);
        ggml_set_output(out);
        ggml_build_forward_expand(graph, out);
    }
    ggml_gallocr_t galloc = ggml_gallocr_new(ggml_backend_cpu_buffer_type());
    ggml_gallocr_alloc_graph(galloc, graph);
    ggml_backend_tensor_set(act, x.data(), 0, x.size() * sizeof(float));

    const double seconds = median_seconds(backend, graph, iters);

    // The last matrix's first token against float arithmetic on the dequantized weights.
    std::vector<float> wd((size_t) rows * cols), y(rows);
    ggml_get_type_traits(type)->to_float(wq.data(), wd.data(), (int64_t) rows * cols);
    ggml_backend_tensor_get(out, y.data(), 0, rows * sizeof(float));
    std::vector<double> want(rows, 0.0);
    for (int r = 0; r < rows; r++) {
        for (int c = 0; c < cols; c++) want[r] += (double) wd[(size_t) r * cols + c] * x[c];
    }
    const Result result = { ggml_backend_buft_name(weight_buft), wq.size() * n_mat, seconds, relative_error(y, want) };

    ggml_gallocr_free(galloc);
    ggml_free(gctx);
    ggml_backend_buffer_free(wbuf);
    ggml_free(wctx);
    return result;
}

static Result attention(ggml_backend_t backend, int layers, int n_kv, int width, int iters) {
    const int heads = width / HEAD_SIZE;
    const int n_nodes = 5 * layers + 8;  // per layer: the K and V caches, their views and the attention
    ggml_init_params params = { ggml_tensor_overhead() * n_nodes + ggml_graph_overhead_custom(n_nodes, false),
                                nullptr, true };
    ggml_context * ctx = ggml_init(params);
    std::vector<ggml_tensor *> k_cache(layers), v_cache(layers);
    for (int l = 0; l < layers; l++) {
        k_cache[l] = ggml_new_tensor_2d(ctx, GGML_TYPE_F16, width, n_kv);
        v_cache[l] = ggml_new_tensor_2d(ctx, GGML_TYPE_F16, width, n_kv);
    }
    ggml_tensor * q = ggml_new_tensor_3d(ctx, GGML_TYPE_F32, HEAD_SIZE, 1, heads);
    ggml_cgraph * graph = ggml_new_graph_custom(ctx, n_nodes, false);
    ggml_tensor * out = nullptr;
    const float scale = 1.0f / std::sqrt((float) HEAD_SIZE);
    for (int l = 0; l < layers; l++) {
        // [head size, tokens, heads] views of token-major rows, as llama.cpp's KV cache hands them over
        ggml_tensor * k = ggml_view_3d(ctx, k_cache[l], HEAD_SIZE, n_kv, heads, k_cache[l]->nb[1],
                                       HEAD_SIZE * sizeof(ggml_fp16_t), 0);
        ggml_tensor * v = ggml_view_3d(ctx, v_cache[l], HEAD_SIZE, n_kv, heads, v_cache[l]->nb[1],
                                       HEAD_SIZE * sizeof(ggml_fp16_t), 0);
        out = ggml_flash_attn_ext(ctx, q, k, v, nullptr, scale, 0.0f, 0.0f);
        ggml_build_forward_expand(graph, out);
    }
    ggml_backend_buffer_t buf = ggml_backend_alloc_ctx_tensors(ctx, backend);

    std::mt19937 rng(1);
    const std::vector<float> kf = normal_values((size_t) width * n_kv, 1.0f, rng);
    const std::vector<float> vf = normal_values((size_t) width * n_kv, 1.0f, rng);
    const std::vector<float> qf = normal_values((size_t) width, 0.3f, rng);
    std::vector<ggml_fp16_t> kh(kf.size()), vh(vf.size());
    ggml_fp32_to_fp16_row(kf.data(), kh.data(), (int64_t) kf.size());
    ggml_fp32_to_fp16_row(vf.data(), vh.data(), (int64_t) vf.size());
    for (int l = 0; l < layers; l++) {
        ggml_backend_tensor_set(k_cache[l], kh.data(), 0, kh.size() * sizeof(ggml_fp16_t));
        ggml_backend_tensor_set(v_cache[l], vh.data(), 0, vh.size() * sizeof(ggml_fp16_t));
    }
    ggml_backend_tensor_set(q, qf.data(), 0, qf.size() * sizeof(float));

    const double seconds = median_seconds(backend, graph, iters);

    // softmax(q.K * scale) V per head, in double, on the F16-rounded cache
    std::vector<float> got(width);
    ggml_backend_tensor_get(out, got.data(), 0, width * sizeof(float));
    std::vector<double> want(width, 0.0), p(n_kv);
    for (int h = 0; h < heads; h++) {
        double mx = -INFINITY, sum = 0;
        for (int t = 0; t < n_kv; t++) {
            double s = 0;
            for (int d = 0; d < HEAD_SIZE; d++) {
                s += (double) ggml_fp16_to_fp32(kh[(size_t) t * width + h * HEAD_SIZE + d]) * qf[h * HEAD_SIZE + d];
            }
            p[t] = s * scale;
            mx = std::max(mx, p[t]);
        }
        for (int t = 0; t < n_kv; t++) sum += p[t] = std::exp(p[t] - mx);
        for (int t = 0; t < n_kv; t++) {
            for (int d = 0; d < HEAD_SIZE; d++) {
                want[h * HEAD_SIZE + d] += p[t] / sum * ggml_fp16_to_fp32(vh[(size_t) t * width + h * HEAD_SIZE + d]);
            }
        }
    }
    const Result result = { "CPU", 2 * kh.size() * sizeof(ggml_fp16_t) * layers, seconds, relative_error(got, want) };

    ggml_backend_buffer_free(buf);
    ggml_free(ctx);
    return result;
}

int main(int argc, char ** argv) {
    if (argc != 9) {
        fprintf(stderr, "usage: %s TYPE REPACK MATRICES ROWS COLS TOKENS ITERS THREADS\n", argv[0]);
        return 2;
    }
    const std::string name = argv[1];
    const bool repack = atoi(argv[2]) != 0;
    const int n_mat = atoi(argv[3]), rows = atoi(argv[4]), cols = atoi(argv[5]), tokens = atoi(argv[6]);
    const int iters = atoi(argv[7]), threads = atoi(argv[8]);

    ggml_backend_t backend = ggml_backend_cpu_init();
    ggml_backend_cpu_set_n_threads(backend, threads);
    Result r;
    if (name == "attn_f16") {
        if (tokens != 1 || repack || cols % HEAD_SIZE != 0) {
            fprintf(stderr, "attn_f16 takes one token, no repacking and COLS a multiple of %d\n", HEAD_SIZE);
            return 2;
        }
        r = attention(backend, n_mat, rows, cols, iters);
    } else {
        const ggml_type type = name == "q8_0" ? GGML_TYPE_Q8_0 : name == "q4_K" ? GGML_TYPE_Q4_K
                             : name == "q6_K" ? GGML_TYPE_Q6_K : GGML_TYPE_COUNT;
        if (type == GGML_TYPE_COUNT) {
            fprintf(stderr, "unknown type %s (q8_0, q4_K, q6_K, attn_f16)\n", name.c_str());
            return 2;
        }
        r = mul_mat(backend, type, repack, n_mat, rows, cols, tokens, iters);
    }
    printf("{\"type\": \"%s\", \"buffer\": \"%s\", \"matrices\": %d, \"rows\": %d, \"cols\": %d, \"tokens\": %d, "
           "\"threads\": %d, \"weight_bytes\": %zu, \"median_seconds\": %.9g, \"relative_error\": %.3g}\n",
           name.c_str(), r.buffer, n_mat, rows, cols, tokens, threads, r.bytes, r.seconds, r.relative_error);
    ggml_backend_free(backend);
    return 0;
}
