/* Unit tests of the forward pass's parts (merge/moe): RoPE frequencies, attention masking, activations,
 * the thread split, and the family description's errors. Whole-model values are compared with the numpy
 * reference in tests/integration/test_forward.py. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdatomic.h>

#include "check.h"
#include "merge/moe/fwd_arch.h"
#include "merge/moe/fwd_math.h"
#include "merge/moe/fwd_par.h"

static int near(double got, double want, double rel)
{
    return fabs(got - want) <= rel * fabs(want);
}

static void test_inv_freq(void)
{
    float f[4];
    mm_fwd_rope r = { .type = MM_ROPE_DEFAULT, .theta = 10000, .rot_dim = 8, .max_pos = 2048 };
    { mm_fwd_rot rot = { .inv_freq = f }; mm_fwd_rope_freqs(&r, 10, &rot); }
    CHECK(f[0] == 1.0f && near(f[1], 0.1, 1e-6) && near(f[2], 0.01, 1e-6) && near(f[3], 0.001, 1e-6));

    r.type = MM_ROPE_LINEAR, r.factor = 4;
    { mm_fwd_rot rot = { .inv_freq = f }; mm_fwd_rope_freqs(&r, 10, &rot); }
    CHECK(f[0] == 0.25f && near(f[3], 0.00025, 1e-6));

    /* Llama 3.1's scaling: kept, interpolated (wavelength between 2048 and 8192), divided by 8; the values
     * are transformers' formula evaluated in float64 (tests/reference/forward_eval.py) */
    r = (mm_fwd_rope){ .type = MM_ROPE_LLAMA3, .theta = 500000, .factor = 8, .low_freq_factor = 1,
                       .high_freq_factor = 4, .original_max_pos = 8192, .max_pos = 131072, .rot_dim = 8 };
    { mm_fwd_rot rot = { .inv_freq = f }; mm_fwd_rope_freqs(&r, 10, &rot); }
    CHECK(f[0] == 1.0f && near(f[1], 0.03760603093086393, 1e-6) && near(f[2], 0.0005248461609929549, 1e-6) &&
          near(f[3], 6.647869871181236e-06, 1e-6));

    /* dynamic NTK: idle up to max_position_embeddings, a larger base beyond */
    r = (mm_fwd_rope){ .type = MM_ROPE_DYNAMIC, .theta = 10000, .factor = 4, .max_pos = 16, .rot_dim = 8 };
    { mm_fwd_rot rot = { .inv_freq = f }; mm_fwd_rope_freqs(&r, 16, &rot); }
    CHECK(near(f[3], 0.001, 1e-6));
    { mm_fwd_rot rot = { .inv_freq = f }; mm_fwd_rope_freqs(&r, 32, &rot); }
    CHECK(near(f[1], 0.05848035476425732, 1e-6) && near(f[3], 0.0002, 1e-6));

    /* yarn: the ramp between extrapolated and interpolated frequencies, with and without rounding its ends
     * outwards, and the mscale of cos and sin (values: tests/reference/forward_eval.py) */
    float y[8];
    mm_fwd_rot rot = { .inv_freq = y };
    r = (mm_fwd_rope){ .type = MM_ROPE_YARN, .theta = 10000, .factor = 4, .original_max_pos = 64, .rot_dim = 16,
                       .attention_factor = -1, .beta_fast = 32, .beta_slow = 1, .truncate = 1 };
    mm_fwd_rope_freqs(&r, 10, &rot);
    CHECK(rot.dim == 16 && near(rot.scale, 1.138629436111989, 1e-6));
    CHECK(y[0] == 1.0f && near(y[1], 0.23717082451262847, 1e-6) && near(y[2], 0.05, 1e-6) &&
          near(y[7], 7.905694150420948e-05, 1e-6));
    r.truncate = 0;
    mm_fwd_rope_freqs(&r, 10, &rot);
    CHECK(near(y[1], 0.19858352015369318, 1e-6) && near(y[2], 0.02559524589192421, 1e-6));

    /* longrope: short factors up to the original length, long ones beyond */
    double shorts[2] = { 1, 2 }, longs[2] = { 3, 4 };
    r = (mm_fwd_rope){ .type = MM_ROPE_LONGROPE, .theta = 10000, .factor = 4, .original_max_pos = 64, .rot_dim = 4,
                       .attention_factor = -1, .short_factor = shorts, .long_factor = longs };
    mm_fwd_rope_freqs(&r, 64, &rot);
    CHECK(y[0] == 1.0f && near(y[1], 0.005, 1e-6) && near(rot.scale, 1.1547005383792517, 1e-6));
    mm_fwd_rope_freqs(&r, 100, &rot);
    CHECK(near(y[0], 1.0 / 3.0, 1e-6) && near(y[1], 0.0025, 1e-6));
}

static void test_rope_pairs_halves(void)
{
    /* rotate_half layout: element i turns with element i + rot_dim/2; the rest is untouched */
    float x[6] = { 1, 0, 0, 0, 5, 6 }, inv[2] = { 1, 0 };
    mm_fwd_apply_rope(x, &(mm_fwd_rot){ .inv_freq = inv, .dim = 4, .scale = 1.0f }, 1);
    CHECK(near(x[0], cos(1.0), 1e-6) && x[1] == 0 && near(x[2], sin(1.0), 1e-6) && x[3] == 0 && x[4] == 5 && x[5] == 6);
}

static void test_attend_masks(void)
{
    /* head_dim 1, three positions; v = 10, 20, 30; q.k = 0 so every allowed key weighs the same */
    const float q[3] = { 0, 0, 0 }, k[3] = { 1, 1, 1 }, v[3] = { 10, 20, 30 };
    float out[3], scores[3];
    const uint8_t left_pad[3] = { 0, 1, 1 };
    mm_fwd_attend(q, k, v, 1, 1, 1, 3, left_pad, 0, 1.0f, 0, scores, out);
    CHECK(out[0] == 0.0f);             /* no key to attend: zeros, as sdpa gives */
    CHECK(out[1] == 20.0f);            /* only itself: the padded key is never attended */
    CHECK(near(out[2], 25.0, 1e-6));
    mm_fwd_attend(q, k, v, 1, 1, 1, 3, NULL, 2, 1.0f, 0, scores, out);
    CHECK(out[0] == 10.0f && near(out[1], 15.0, 1e-6) && near(out[2], 25.0, 1e-6)); /* window 2: j > i - 2 */

    /* softcapping bounds the logits: with cap 1 a huge score weighs at most e^2 more than a score of -1 */
    const float q2[2] = { 1, 1 }, k2[2] = { -1, 1000 }, v2[2] = { 0, 1 };
    float out2[2];
    mm_fwd_attend(q2, k2, v2, 1, 1, 1, 2, NULL, 0, 1.0f, 1.0f, scores, out2);
    CHECK(near(out2[1], exp(1.0) / (exp(1.0) + exp(tanh(-1.0))), 1e-5));
}

static void test_activations(void)
{
    float g[3] = { 1, 1, 1 }, u[3] = { 1, 2, 3 };
    mm_fwd_gate(MM_ACT_SILU, g, u, 3);
    CHECK(near(g[0], 1.0 / (1.0 + exp(-1.0)), 1e-6) && near(g[2], 3.0 / (1.0 + exp(-1.0)), 1e-6));
    g[0] = 1;
    mm_fwd_gate(MM_ACT_GELU_ERF, g, u, 1);
    CHECK(near(g[0], 0.8413447460685429, 1e-6));
    g[0] = 1;
    mm_fwd_gate(MM_ACT_GELU_TANH, g, u, 1);
    CHECK(near(g[0], 0.8411919906082768, 1e-6));
}

static atomic_int hits[100];

static void mark(void *ctx, size_t b, size_t e)
{
    (void)ctx;
    for (size_t i = b; i < e; i++)
        atomic_fetch_add(&hits[i], 1);
}

static void test_parallel_covers_once(void)
{
    for (size_t threads = 1; threads <= 5; threads++) {
        for (size_t i = 0; i < 100; i++)
            atomic_store(&hits[i], 0);
        mm_fwd_parallel(97, threads, mark, NULL);
        int ok = 1;
        for (size_t i = 0; i < 100; i++)
            ok &= atomic_load(&hits[i]) == (i < 97);
        CHECK(ok);
    }
    mm_fwd_parallel(0, 4, mark, NULL); /* nothing to do, nothing run */
    CHECK(mm_fwd_threads() >= 1);
}

/* mm_fwd_arch_open on a config alone: no tensors, so a supported family stops at the embedding. */
static int open_config(const char *json, mm_err *err)
{
    mm_model_tensor none[1]; /* no tensors, but a real array for mm_model_find's bsearch */
    mm_model m = { .path = "/m", .config = cJSON_Parse(json), .tensors = none };
    mm_fwd_arch a;
    int rc = mm_fwd_arch_open(&m, &a, err);
    if (rc == 0)
        mm_fwd_arch_free(&a);
    cJSON_Delete(m.config);
    return rc;
}

static void test_arch_errors(void)
{
    mm_err err = { 0 };
    CHECK(open_config("{\"model_type\": \"gpt2\", \"hidden_size\": 8}", &err) == -EINVAL);
    CHECK_STR_CONTAINS(err.msg, "model_type gpt2 is not supported");
    CHECK_STR_CONTAINS(err.msg, "llama, mistral, qwen2, qwen3, gemma, gemma2, gemma3_text (gemma3), phi3");
    mm_model none = { .path = "/m" };
    mm_fwd_arch a;
    CHECK(mm_fwd_arch_open(&none, &a, &err) == -EINVAL);
    CHECK_STR_CONTAINS(err.msg, "no config.json");

    const char *sizes = "\"hidden_size\": 8, \"intermediate_size\": 16, \"num_attention_heads\": 2, "
                        "\"num_hidden_layers\": 2";
    char cfg[512];
    snprintf(cfg, sizeof cfg, "{\"model_type\": \"llama\", %s, \"rope_scaling\": {\"rope_type\": \"su\", \"factor\": 2}}",
             sizes);
    CHECK(open_config(cfg, &err) == -EINVAL);
    CHECK_STR_CONTAINS(err.msg, "rope type su is not supported");
    snprintf(cfg, sizeof cfg, "{\"model_type\": \"llama\", %s, \"hidden_act\": \"relu\"}", sizes);
    CHECK(open_config(cfg, &err) == -EINVAL);
    CHECK_STR_CONTAINS(err.msg, "hidden_act relu is not supported");
    snprintf(cfg, sizeof cfg, "{\"model_type\": \"llama\", %s, \"num_key_value_heads\": 3}", sizes);
    CHECK(open_config(cfg, &err) == -EINVAL);
    CHECK_STR_CONTAINS(err.msg, "not a multiple of num_key_value_heads 3");
    CHECK(open_config("{\"model_type\": \"llama\", \"hidden_size\": 8}", &err) == -EINVAL);
    CHECK_STR_CONTAINS(err.msg, "intermediate_size must be a positive integer");
    /* a gemma3 wrapper is read through its text_config */
    snprintf(cfg, sizeof cfg, "{\"model_type\": \"gemma3\", \"text_config\": {\"model_type\": \"gemma3_text\", %s}}",
             sizes);
    CHECK(open_config(cfg, &err) == -EINVAL);
    CHECK_STR_CONTAINS(err.msg, "no embed_tokens.weight");
}

int main(void)
{
    test_inv_freq();
    test_rope_pairs_halves();
    test_attend_masks();
    test_activations();
    test_parallel_covers_once();
    test_arch_errors();
    printf("%d passed, %d failed\n", mm_check_pass, mm_check_fail);
    return mm_check_fail ? 1 : 0;
}
