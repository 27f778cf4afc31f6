/* The two internal methods of mergekit-moe outputs (D20; merge/plan/moe.h), not available as a
 * merge_method: an expert's tensor with noise_scale (and residual_scale), and a router weight (or the
 * zero biases Qwen2-MoE needs), whose values come from the plan rather than from an input. */
#include "method_internal.h"
#include "merge/plan/moe.h"
#include "base/philox.h"

/* ---- moe_expert: mergekit's noise_and_scale ---- */
enum { EX_SCALE, EX_NOISE };
static const mm_param_def expert_m[] = {{"scale", MM_PT_NUM, 0, NAN}, {"noise", MM_PT_NUM, 0, NAN}};

/* tensor + randn_like(tensor) * noise_scale, then * residual_scale (down_proj), in the tensor's dtype. */
static void expert_kernel(const mm_kernel_args *a)
{
    const mm_out_tensor *t = a->t;
    const mm_input *in = &t->inputs[0];
    memcpy(a->out, a->in[0], a->n * sizeof *a->out);
    mm_moe_expert_effects(t->comp, a->out, a->n, a->e0, in->mvals[EX_SCALE], in->mvals[EX_NOISE], t->seed,
                          in->stream);
}

const mm_method mm_method_moe_expert = {
    .name = "moe_expert", .implemented = 1, .mparams = expert_m, .nmparams = MM_COUNT(expert_m),
    .single_input = 1, .random = 1, .dtype_rule = MM_DTR_SOURCE, .crop = MM_CROP_NONE, .kernel = expert_kernel};

/* ---- moe_packed: experts laid end to end (the engine reads them, noise and scale included, as one input
 * when t->concat_seg is set) ---- */
static void packed_kernel(const mm_kernel_args *a)
{
    memcpy(a->out, a->in[0], a->n * sizeof *a->out);
    mm_vround(a->t->comp, a->out, a->n);
}

const mm_method mm_method_moe_packed = {
    .name = "moe_packed", .implemented = 1, .mparams = expert_m, .nmparams = MM_COUNT(expert_m), .random = 1,
    .dtype_rule = MM_DTR_SOURCE, .crop = MM_CROP_NONE, .kernel = packed_kernel};

/* ---- moe_router: rows computed by the plan (merge/plan/moe_gates.c), or zeros ---- */

static size_t router_stats_size(const mm_out_tensor *t)
{
    return t->router ? t->numel * sizeof(float) : 0;
}

static int router_prepass(const mm_out_tensor *t, void *stats)
{
    return mm_router_rows(t->router, stats);
}

static void router_kernel(const mm_kernel_args *a)
{
    if (!a->stats) {
        memset(a->out, 0, a->n * sizeof *a->out);
        return;
    }
    memcpy(a->out, (const float *)a->stats + a->e0, a->n * sizeof *a->out);
    mm_vround(a->t->comp, a->out, a->n);
}

const mm_method mm_method_moe_router = {
    .name = "moe_router", .implemented = 1, .dtype_rule = MM_DTR_SOURCE, .crop = MM_CROP_NONE,
    .stats_size = router_stats_size, .prepass = router_prepass, .kernel = router_kernel};
