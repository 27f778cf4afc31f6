/* The router weights of a mergekit-moe output (mergekit/moe/router.py get_gate_params), computed once per
 * mount for every layer on the first read of a router, then kept (and each router's rows are cached in
 * the block cache under its recipe like any statistic, so a remount reads them from there).
 *
 * random: standard normal values; uniform_random: uniform in [-1/sqrt(hidden), 1/sqrt(hidden)) as
 * torch.nn.Linear initialises (rand * 2 * scale - scale in float32). Both come from our counter-based
 * generator (D6), keyed by --random-seed: deterministic, but not torch's values. mergekit returns these
 * without normalising them. The prompt-based modes (hidden, hidden_avg, hidden_last, cheap_embed) need
 * the base model's tokenizer and forward pass and are refused for now, with that said. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "base/philox.h"
#include "moe.h"
#include "plan_internal.h"

typedef enum { GATE_RANDOM, GATE_UNIFORM } gate_mode;

struct mm_moe_gates {
    gate_mode mode;
    uint64_t seed;
    size_t layers, rows;
    uint64_t hidden;
    _Atomic(float *) vec; /* [layers][rows][hidden], NULL until computed */
    pthread_mutex_t lock;
};

int mm_moe_gates_new(mm_plan *p, size_t base, size_t layers, uint64_t hidden, mm_moe_gates **out, mm_err *err)
{
    const mm_moe_def *m = p->cfg->moe;
    (void)base;
    int has = 0, all = 1;
    for (size_t i = 0; i < m->nshared; i++) {
        has |= m->shared[i].npositive > 0;
        all &= m->shared[i].npositive > 0;
    }
    char pos[512];
    mm_srcpos_format(&m->pos, pos, sizeof pos);
    if (has && !all)
        return mm_err_set(err, -EINVAL, "%s: some shared experts have positive_prompts and some not: give every "
                          "shared expert prompts, or none", pos);
    int random = strcmp(m->gate_mode, "random") == 0, uniform = strcmp(m->gate_mode, "uniform_random") == 0;
    if (!random && !uniform) {
        mm_srcpos_format(&m->gate_pos, pos, sizeof pos);
        return mm_err_set(err, -ENOTSUP, "%s: gate_mode %s is not implemented yet in mergemount (it needs the base "
                          "model's tokenizer%s); use gate_mode: random or uniform_random",
                          m->gate_pos.file ? pos : p->cfg->path, m->gate_mode,
                          strcmp(m->gate_mode, "cheap_embed") ? " and forward pass" : "");
    }
    mm_moe_gates *g = mm_xcalloc(1, sizeof *g);
    g->mode = random ? GATE_RANDOM : GATE_UNIFORM;
    g->seed = p->opt.random_seed;
    g->layers = layers;
    g->hidden = hidden;
    g->rows = m->nexperts + (has || random || uniform ? m->nshared : 0);
    pthread_mutex_init(&g->lock, NULL);
    *out = g;
    return 0;
}

size_t mm_moe_gates_rows(const mm_moe_gates *g)
{
    return g->rows;
}

static int compute(mm_moe_gates *g, float *v)
{
    const uint64_t n = (uint64_t)g->layers * g->rows * g->hidden;
    const uint64_t stream = mm_rng_stream("mergemount moe router", 0);
    const float scale = (float)sqrt(1.0 / (double)g->hidden);
    for (uint64_t i = 0; i < n; i++) {
        if (g->mode == GATE_RANDOM) {
            v[i] = mm_rng_normal(g->seed, stream, i);
        } else {
            /* torch: rand(...) * 2 * scale - scale, each a float32 operation */
            float u = mm_rng_uniform(g->seed, stream, i) * 2.0f;
            v[i] = u * scale - scale;
        }
    }
    return 0;
}

int mm_router_rows(const mm_router *r, float *out)
{
    mm_moe_gates *g = r->gates;
    float *v = atomic_load_explicit(&g->vec, memory_order_acquire);
    int rc = 0;
    if (!v) {
        pthread_mutex_lock(&g->lock);
        if (!(v = atomic_load_explicit(&g->vec, memory_order_acquire))) {
            v = malloc(g->layers * g->rows * g->hidden * sizeof *v);
            rc = v ? compute(g, v) : -ENOMEM;
            if (rc == 0)
                atomic_store_explicit(&g->vec, v, memory_order_release);
            else {
                free(v);
                v = NULL;
            }
        }
        pthread_mutex_unlock(&g->lock);
    }
    if (rc == 0)
        memcpy(out, v + ((size_t)r->layer * g->rows + r->first) * g->hidden, r->count * g->hidden * sizeof *out);
    return rc;
}

void mm_router_hash(mm_sha256 *s, const mm_router *r)
{
    const mm_moe_gates *g = r->gates;
    mm_sha256_str(s, g->mode == GATE_RANDOM ? "moe random" : "moe uniform_random");
    mm_sha256_u64(s, g->seed);
    mm_sha256_u64(s, g->rows);
    mm_sha256_u64(s, g->hidden);
    mm_sha256_u64(s, (uint64_t)r->layer);
    mm_sha256_u64(s, r->first);
    mm_sha256_u64(s, r->count);
}

void mm_moe_free(mm_plan *p)
{
    if (p->moe_gates) {
        free(atomic_load(&p->moe_gates->vec));
        pthread_mutex_destroy(&p->moe_gates->lock);
        free(p->moe_gates);
    }
    free(p->routers);
    free(p->moe_arch);
    free(p->moe_config);
}
