/* The router weights of a mergekit-moe output (mergekit/moe/router.py get_gate_params), computed once per
 * mount for every layer on the first read of a router, then kept (and each router's rows are cached in
 * the block cache under its recipe like any statistic, so a remount reads them from there).
 *
 * random: standard normal values; uniform_random: uniform in [-1/sqrt(hidden), 1/sqrt(hidden)) as
 * torch.nn.Linear initialises (rand * 2 * scale - scale in float32). Both come from our counter-based
 * generator (D6), keyed by --random-seed: deterministic, but not torch's values. mergekit returns these
 * without normalising them.
 * cheap_embed: per expert, the sum of the base's input embedding rows over every token of every
 * positive prompt, normalised; minus the same over the negative prompts; normalised again; the same
 * vector at every layer. Prompts are tokenised as mergekit does (scripts/moe.py, router.py
 * tokenize_prompts): the bos_token's text prepended, no special tokens added (formats/tokencode.h);
 * padding does not matter here (masked out). Sums are in double, where torch sums float32 in its own
 * order: within float32 rounding of mergekit's.
 * hidden, hidden_last, hidden_avg: per expert, the base model's hidden states at every layer input
 * (merge/moe/forward.h, handed over in the plan options) for its prompts, batched and left-padded with the
 * bos token (else eos) as mergekit-moe's tokenizer setup has it; per layer the state at the last position
 * (hidden, hidden_last) or the mean over every position, padding included (hidden_avg, as mergekit
 * averages), then the mean over the prompts; the negative prompts' the same, subtracted; normalised per
 * layer. Computed in float32 from the stored weights where mergekit runs transformers in bfloat16: rows
 * agree to within bfloat16's precision, not bit for bit (docs/merge-contract.md D20). */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "base/philox.h"
#include "formats/numeric.h"
#include "formats/tokencode.h"
#include "merge/plan/lora.h"
#include "moe.h"
#include "plan_internal.h"
#include "recipe.h"

typedef enum { GATE_RANDOM, GATE_UNIFORM, GATE_CHEAP, GATE_LAST, GATE_AVG } gate_mode;

/* The token ids of a list of prompts. */
typedef struct prompts {
    int32_t **ids;
    size_t *len;
    size_t n;
} prompts;

struct mm_moe_gates {
    gate_mode mode;
    uint64_t seed;
    size_t layers, rows;
    uint64_t hidden;
    prompts *pos, *neg;               /* [rows], prompt-based modes */
    const mm_model_tensor *embed;     /* cheap_embed: the base's model.embed_tokens.weight */
    const mm_model *base;             /* hidden modes: the model run, */
    mm_hidden_fn forward;             /* the forward pass, */
    int32_t pad_id;                   /* and the padding token */
    _Atomic(float *) vec;             /* [layers][rows][hidden], NULL until computed */
    pthread_mutex_t lock;
};

static void prompts_free(prompts *p)
{
    for (size_t i = 0; i < p->n; i++)
        free(p->ids[i]);
    free(p->ids);
    free(p->len);
}

/* tokenize_prompts: each prompt with the bos_token's text in front, add_special_tokens=False. */
static int tokenize(const mm_tok_encoder *enc, const char *bos, char *const *texts, size_t n, prompts *out,
                    mm_err *err)
{
    out->ids = mm_xcalloc(n ? n : 1, sizeof *out->ids);
    out->len = mm_xcalloc(n ? n : 1, sizeof *out->len);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        char *text = mm_xasprintf("%s%s", bos ? bos : "", texts[i]);
        rc = mm_tok_encoder_encode(enc, text, strlen(text), &out->ids[i], &out->len[i], err);
        free(text);
        out->n = i + 1;
    }
    return rc;
}

/* The prompts of every gated expert, tokenized with the base's tokenizer. */
static int load_prompts(mm_plan *p, size_t base, mm_moe_gates *g, mm_err *err)
{
    const mm_moe_def *m = p->cfg->moe;
    mm_tokenizer *t = NULL;
    mm_tok_encoder *enc = NULL;
    int rc = mm_tokenizer_load(p->models[base]->path, &t, err);
    if (rc == 0)
        rc = mm_tok_encoder_new(t, &enc, err);
    if (rc < 0) {
        mm_err_prefix(err, "gate_mode %s tokenizes the prompts with the base model's tokenizer", m->gate_mode);
        mm_tokenizer_free(t);
        return rc;
    }
    /* scripts/moe.py: pad_token_id = bos_token_id, or eos when there is no bos */
    const char *pad = t->bos_token ? t->bos_token : t->eos_token;
    g->pad_id = pad ? mm_tokenizer_id(t, pad, strlen(pad)) : -1;
    if (g->pad_id < 0)
        g->pad_id = 0;
    g->pos = mm_xcalloc(g->rows, sizeof *g->pos);
    g->neg = mm_xcalloc(g->rows, sizeof *g->neg);
    for (size_t r = 0; r < g->rows && rc == 0; r++) {
        const mm_moe_expert *e = r < m->nexperts ? &m->experts[r] : &m->shared[r - m->nexperts];
        rc = tokenize(enc, t->bos_token, e->positive, e->npositive, &g->pos[r], err);
        if (rc == 0)
            rc = tokenize(enc, t->bos_token, e->negative, e->nnegative, &g->neg[r], err);
    }
    mm_tok_encoder_free(enc);
    mm_tokenizer_free(t);
    return rc;
}

int mm_moe_gates_new(mm_plan *p, size_t base, size_t layers, uint64_t hidden, mm_moe_gates **out, mm_err *err)
{
    const mm_moe_def *m = p->cfg->moe;
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
    int cheap = strcmp(m->gate_mode, "cheap_embed") == 0, avg = strcmp(m->gate_mode, "hidden_avg") == 0;
    int by_states = !random && !uniform && !cheap;
    if (by_states) {
        char gpos[512];
        mm_srcpos_format(&m->gate_pos, gpos, sizeof gpos);
        if (!p->opt.moe_hidden || !p->opt.moe_dims)
            return mm_err_set(err, -ENOTSUP, "%s: gate_mode %s needs the base model's forward pass, which this program "
                              "was not given (use mergemount's mount, build or plan)",
                              m->gate_pos.file ? gpos : p->cfg->path, m->gate_mode);
        size_t fl, fh;
        int rc = p->opt.moe_dims(p->models[base], &fl, &fh, err);
        if (rc < 0) {
            mm_err_prefix(err, "%s: gate_mode %s runs the base model '%s'", m->gate_pos.file ? gpos : p->cfg->path,
                          m->gate_mode, p->cfg->base_model->ref);
            return rc;
        }
        if (fl != layers || fh != hidden)
            return mm_err_set(err, -EINVAL, "%s: the base model's forward pass has %zu layers of %zu, its config "
                              "%zu of %llu", pos, fl, fh, layers, (unsigned long long)hidden);
    }
    const mm_model_tensor *embed = NULL;
    if (cheap && !(embed = mm_model_find(p->models[base], "model.embed_tokens.weight")))
        return mm_err_set(err, -EINVAL, "%s: gate_mode cheap_embed reads the base model's model.embed_tokens.weight, "
                          "which '%s' does not have", pos, p->cfg->base_model->ref);
    if (embed && (embed->st->ndim != 2 || embed->st->shape[1] != hidden || !mm_dtype_is_computable(embed->st->dtype)))
        return mm_err_set(err, -EINVAL, "%s: the base model's model.embed_tokens.weight is not a [vocab, %llu] float "
                          "tensor", pos, (unsigned long long)hidden);
    mm_moe_gates *g = mm_xcalloc(1, sizeof *g);
    g->mode = random ? GATE_RANDOM : uniform ? GATE_UNIFORM : cheap ? GATE_CHEAP : avg ? GATE_AVG : GATE_LAST;
    g->base = p->models[base];
    g->forward = p->opt.moe_hidden;
    g->seed = p->opt.random_seed;
    g->layers = layers;
    g->hidden = hidden;
    g->embed = embed;
    g->rows = m->nexperts + (has || random || uniform ? m->nshared : 0);
    pthread_mutex_init(&g->lock, NULL);
    *out = g;
    int rc = cheap || by_states ? load_prompts(p, base, g, err) : 0;
    for (size_t r = 0; r < g->rows * 2 && rc == 0 && cheap; r++) {
        const prompts *ps = r % 2 ? &g->neg[r / 2] : &g->pos[r / 2];
        for (size_t i = 0; i < ps->n && rc == 0; i++)
            for (size_t k = 0; k < ps->len[i] && rc == 0; k++)
                if ((uint64_t)ps->ids[i][k] >= embed->st->shape[0])
                    rc = mm_err_set(err, -EINVAL, "%s: a prompt's token id %d is beyond the base model's %llu "
                                    "embedding rows (its tokenizer and weights do not belong together)",
                                    pos, ps->ids[i][k], (unsigned long long)embed->st->shape[0]);
    }
    return rc;
}

size_t mm_moe_gates_rows(const mm_moe_gates *g)
{
    return g->rows;
}

/* get_cheap_embedding: the embedding rows of every token of every prompt, summed (sum[hidden] is
 * added to), in double. */
static int embed_sum(const mm_moe_gates *g, const prompts *ps, double *sum, unsigned char *raw, float *row)
{
    const mm_model_tensor *e = g->embed;
    const size_t h = (size_t)g->hidden, es = mm_dtype_size(e->st->dtype);
    for (size_t i = 0; i < ps->n; i++)
        for (size_t k = 0; k < ps->len[i]; k++) {
            uint64_t off = e->shard->hdr.data_start + e->st->begin + (uint64_t)ps->ids[i][k] * h * es;
            int rc = mm_pread_full(e->shard->fd, raw, h * es, off);
            if (rc < 0)
                return mm_srcfile_failed(e->shard->src, rc);
            mm_load_f32(e->st->dtype, raw, row, h);
            for (size_t c = 0; c < h; c++)
                sum[c] += row[c];
        }
    return 0;
}

/* v /= max(||v||, 1e-8) */
static void normalize(double *v, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += v[i] * v[i];
    s = sqrt(s);
    if (s < 1e-8)
        s = 1e-8;
    for (size_t i = 0; i < n; i++)
        v[i] /= s;
}

static int cheap_embed(mm_moe_gates *g, float *v)
{
    const size_t h = (size_t)g->hidden;
    double *pos = calloc(h, sizeof *pos), *neg = calloc(h, sizeof *neg);
    unsigned char *raw = malloc(h * 8);
    float *row = malloc(h * sizeof *row);
    int rc = pos && neg && raw && row ? 0 : -ENOMEM;
    for (size_t r = 0; r < g->rows && rc == 0; r++) {
        memset(pos, 0, h * sizeof *pos);
        memset(neg, 0, h * sizeof *neg);
        if ((rc = embed_sum(g, &g->pos[r], pos, raw, row)) < 0)
            break;
        normalize(pos, h);
        if (g->neg[r].n) {
            if ((rc = embed_sum(g, &g->neg[r], neg, raw, row)) < 0)
                break;
            normalize(neg, h);
            for (size_t c = 0; c < h; c++)
                pos[c] -= neg[c];
        }
        normalize(pos, h);
        for (size_t l = 0; l < g->layers; l++)
            for (size_t c = 0; c < h; c++)
                v[(l * g->rows + r) * h + c] = (float)pos[c];
    }
    if (rc == 0)
        rc = mm_srcfile_verify(g->embed->shard->src);
    free(pos);
    free(neg);
    free(raw);
    free(row);
    return rc;
}

/* get_hidden_states of every prompt list at once, with one forward pass: mergekit runs one batch per
 * list, each padded on the left to its own longest prompt; here all prompts share one batch padded to the
 * longest of all. A row's states do not depend on how much masked padding precedes it (RoPE sees only
 * relative positions; a padding query attends to nothing), so each list's states are its rows' last
 * `own` positions, own = its longest prompt. Per list: the last position's state (or the mean over its own
 * positions, padding included, for hidden_avg), averaged over its prompts, into acc[list][layers][hidden]
 * (double). The base model's weights are read once instead of once per list. */
static int hidden_states(const mm_moe_gates *g, const prompts *const *lists, size_t nlists, double *acc)
{
    const size_t h = (size_t)g->hidden;
    size_t b = 0, s = 0;
    for (size_t j = 0; j < nlists; j++)
        for (size_t i = 0; i < lists[j]->n; i++, b++)
            if (lists[j]->len[i] > s)
                s = lists[j]->len[i];
    if (!b || !s)
        return 0;
    int32_t *ids = malloc(b * s * sizeof *ids);
    uint8_t *mask = calloc(b * s, 1);
    float *out = malloc(g->layers * b * s * h * sizeof *out);
    int rc = ids && mask && out ? 0 : -ENOMEM;
    for (size_t j = 0, row = 0; j < nlists && rc == 0; j++)
        for (size_t i = 0; i < lists[j]->n; i++, row++) {
            size_t pad = s - lists[j]->len[i]; /* padding_side = "left" */
            for (size_t k = 0; k < s; k++) {
                ids[row * s + k] = k < pad ? g->pad_id : lists[j]->ids[i][k - pad];
                mask[row * s + k] = k >= pad;
            }
        }
    mm_err err = {0};
    if (rc == 0 && (rc = g->forward(g->base, ids, mask, b, s, out, &err)) < 0)
        mm_log_warn("MoE router weights: %s", err.msg);
    for (size_t j = 0, row0 = 0; j < nlists && rc == 0; row0 += lists[j]->n, j++) {
        const prompts *ps = lists[j];
        size_t own = 0;
        for (size_t i = 0; i < ps->n; i++)
            if (ps->len[i] > own)
                own = ps->len[i];
        for (size_t l = 0; l < g->layers; l++)
            for (size_t i = 0; i < ps->n; i++) {
                const float *x = out + ((l * b + row0 + i) * s) * h;
                double *dst = acc + (j * g->layers + l) * h;
                for (size_t c = 0; c < h; c++) {
                    double v = 0;
                    if (g->mode == GATE_AVG) {
                        for (size_t k = s - own; k < s; k++)
                            v += x[k * h + c];
                        v /= (double)own;
                    } else {
                        v = x[(s - 1) * h + c];
                    }
                    dst[c] += v / (double)ps->n;
                }
            }
    }
    free(ids);
    free(mask);
    free(out);
    return rc < 0 ? -EIO : 0;
}

static int hidden_gates(mm_moe_gates *g, float *v)
{
    const size_t h = (size_t)g->hidden, n = g->layers * h;
    /* lists 2r and 2r+1: row r's positive and negative prompts */
    const prompts **lists = malloc(2 * g->rows * sizeof *lists);
    double *acc = calloc(2 * g->rows * n, sizeof *acc);
    int rc = lists && acc ? 0 : -ENOMEM;
    for (size_t r = 0; r < g->rows && rc == 0; r++) {
        lists[2 * r] = &g->pos[r];
        lists[2 * r + 1] = &g->neg[r];
    }
    if (rc == 0)
        rc = hidden_states(g, lists, 2 * g->rows, acc);
    for (size_t r = 0; r < g->rows && rc == 0; r++)
        for (size_t l = 0; l < g->layers; l++) {
            double *x = acc + (2 * r * g->layers + l) * h;
            const double *neg = acc + ((2 * r + 1) * g->layers + l) * h;
            for (size_t c = 0; c < h; c++)
                x[c] -= neg[c];
            normalize(x, h);
            for (size_t c = 0; c < h; c++)
                v[(l * g->rows + r) * h + c] = (float)x[c];
        }
    free(lists);
    free(acc);
    return rc;
}

static int compute(mm_moe_gates *g, float *v)
{
    if (g->mode == GATE_CHEAP)
        return cheap_embed(g, v);
    if (g->mode == GATE_LAST || g->mode == GATE_AVG)
        return hidden_gates(g, v);
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

/* Eigenvalues of the symmetric n x n matrix a (destroyed) by cyclic Jacobi rotations, into ev. */
static void sym_eigen(double *a, size_t n, double *ev)
{
    for (int sweep = 0; sweep < 60; sweep++) {
        double off = 0;
        for (size_t p = 0; p < n; p++)
            for (size_t q = p + 1; q < n; q++)
                off += a[p * n + q] * a[p * n + q];
        if (off < 1e-30)
            break;
        for (size_t p = 0; p < n; p++)
            for (size_t q = p + 1; q < n; q++) {
                double apq = a[p * n + q];
                if (fabs(apq) < 1e-300)
                    continue;
                double theta = (a[q * n + q] - a[p * n + p]) / (2 * apq);
                double t = (theta >= 0 ? 1 : -1) / (fabs(theta) + sqrt(theta * theta + 1));
                double c = 1 / sqrt(t * t + 1), sn = t * c;
                for (size_t k = 0; k < n; k++) { /* A <- A J (columns p, q) */
                    double akp = a[k * n + p], akq = a[k * n + q];
                    a[k * n + p] = c * akp - sn * akq;
                    a[k * n + q] = sn * akp + c * akq;
                }
                for (size_t k = 0; k < n; k++) { /* A <- J^T A (rows p, q) */
                    double apk = a[p * n + k], aqk = a[q * n + k];
                    a[p * n + k] = c * apk - sn * aqk;
                    a[q * n + k] = sn * apk + c * aqk;
                }
            }
    }
    for (size_t i = 0; i < n; i++)
        ev[i] = a[i * n + i];
}

/* mergekit's warn_degenerate_gates: a layer whose gate matrix [rows, hidden] has a condition number
 * (largest over smallest singular value) above 5, from the eigenvalues of its Gram matrix. */
static void warn_degenerate(const mm_moe_gates *g, const float *v)
{
    const size_t n = g->rows, h = (size_t)g->hidden;
    if (n < 2)
        return;
    double *gram = malloc(n * n * sizeof *gram), *ev = malloc(n * sizeof *ev);
    mm_buf layers = {0};
    size_t bad = 0, last = 0;
    for (size_t l = 0; l < g->layers && gram && ev; l++) {
        const float *x = v + l * n * h;
        for (size_t i = 0; i < n; i++)
            for (size_t j = i; j < n; j++) {
                double d = 0;
                for (size_t c = 0; c < h; c++)
                    d += (double)x[i * h + c] * x[j * h + c];
                gram[i * n + j] = gram[j * n + i] = d;
            }
        sym_eigen(gram, n, ev);
        double lo = INFINITY, hi = 0;
        for (size_t i = 0; i < n; i++) {
            lo = fmin(lo, ev[i]);
            hi = fmax(hi, ev[i]);
        }
        /* more experts than hidden dimensions: rank-deficient, as torch's SVD would find */
        if (n > h || lo <= 0 || sqrt(hi / lo) > 5.0) {
            mm_buf_printf(&layers, "%s%zu", bad ? ", " : "", l);
            bad++;
            last = l;
        }
    }
    if (bad)
        mm_log_warn("MoE router: %s%s %s degenerate routing parameters - your prompts may be too similar; one or "
                    "more experts will be underutilized in your model",
                    bad >= g->layers ? "ALL layers" : bad == 1 ? "layer " : "layers ",
                    bad >= g->layers ? "" : layers.data, bad == 1 ? "has" : "have");
    (void)last;
    mm_buf_free(&layers);
    free(gram);
    free(ev);
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
            if (rc == 0) {
                warn_degenerate(g, v);
                atomic_store_explicit(&g->vec, v, memory_order_release);
            }
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

static void hash_prompts(mm_sha256 *s, const prompts *p)
{
    mm_sha256_u64(s, p->n);
    for (size_t i = 0; i < p->n; i++) {
        mm_sha256_u64(s, p->len[i]);
        mm_sha256_update(s, p->ids[i], p->len[i] * sizeof *p->ids[i]);
    }
}

void mm_router_hash(mm_sha256 *s, const mm_router *r)
{
    static const char *const names[] = {"moe random", "moe uniform_random", "moe cheap_embed", "moe hidden_last",
                                        "moe hidden_avg"};
    const mm_moe_gates *g = r->gates;
    mm_sha256_str(s, names[g->mode]);
    int prompted = g->mode != GATE_RANDOM && g->mode != GATE_UNIFORM;
    mm_sha256_u64(s, prompted ? 0 : g->seed);
    mm_sha256_u64(s, g->rows);
    mm_sha256_u64(s, g->hidden);
    mm_sha256_u64(s, (uint64_t)r->layer);
    mm_sha256_u64(s, r->first);
    mm_sha256_u64(s, r->count);
    if (!prompted)
        return;
    /* the token ids stand for the prompts and the tokenizer; the weights are source files */
    for (size_t i = 0; i < g->rows; i++) {
        hash_prompts(s, &g->pos[i]);
        hash_prompts(s, &g->neg[i]);
    }
    if (g->mode == GATE_CHEAP) {
        const mm_shard *sh = g->embed->shard;
        mm_recipe_put_file(s, sh->path, mm_srcfile_id(sh->src));
        mm_sha256_u64(s, sh->hdr.data_start + g->embed->st->begin);
        mm_sha256_u64(s, (uint64_t)g->embed->st->dtype);
        return;
    }
    /* the forward pass reads the whole base model (and its adapter) */
    mm_sha256_u64(s, (uint64_t)(uint32_t)g->pad_id);
    for (size_t i = 0; i <= g->base->nshards; i++) {
        const mm_shard *sh = i < g->base->nshards ? &g->base->shards[i] : g->base->lora ? &g->base->lora->file : NULL;
        if (sh)
            mm_recipe_put_file(s, sh->path, mm_srcfile_id(sh->src));
    }
}

void mm_moe_free(mm_plan *p)
{
    mm_moe_gates *g = p->moe_gates;
    if (g) {
        for (size_t i = 0; g->pos && i < g->rows; i++) {
            prompts_free(&g->pos[i]);
            prompts_free(&g->neg[i]);
        }
        free(g->pos);
        free(g->neg);
        free(atomic_load(&g->vec));
        pthread_mutex_destroy(&g->lock);
        free(g);
    }
    free(p->routers);
    free(p->moe_arch);
    free(p->moe_config);
}

void mm_moe_expert_effects(mm_dtype dt, float *v, size_t n, uint64_t e0, double scale, double noise, uint64_t seed,
                           uint64_t stream)
{
    if (!isnan(noise)) {
        const float s = (float)noise;
        for (size_t k = 0; k < n; k++) {
            float z = mm_round_to(dt, mm_rng_normal(seed, stream, e0 + k));
            v[k] = mm_round_to(dt, v[k] + mm_round_to(dt, z * s));
        }
    }
    if (!isnan(scale)) {
        for (size_t k = 0; k < n; k++)
            v[k] *= (float)scale;
        mm_vround(dt, v, n);
    }
}
