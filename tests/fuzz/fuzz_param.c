/* Fuzzes parameter evaluation (config/param.c): scalars, gradients (numbers interpolated, other values
 * stepped), conditional {filter, value} lists and the precedence levels, evaluated for every layer of
 * a slice and for layer and non-layer tensor names, as the planner evaluates them.
 *
 * The input is decoded into up to three levels of parameter maps (the settings any config could hold,
 * within mm_psetting's contract: gradients have at least one entry, all numbers or all non-numbers;
 * condition values are scalars or gradients), a layer count, tensor names and extra positions t
 * (including NaN, infinities and values outside [0, 1]). Numbers come from a table of awkward doubles
 * or from raw input bytes.
 *
 * Properties: evaluation is deterministic; a scalar yields itself; a numeric gradient yields its first
 * entry at t = 0 and its last at t = 1, and for t in [0, 1] stays between its smallest and largest entry
 * (when they are finite); a non-numeric gradient yields one of its entries; a conditional list yields
 * what its first matching condition yields, and nothing when none matches; across levels the first
 * level whose setting yields a value wins. */
#include <float.h>
#include <math.h>
#include <string.h>

#include "config/config.h"
#include "fuzz.h"
#include "merge/plan/model.h"

#define MAX_LEVELS 3

typedef struct input {
    const uint8_t *p;
    size_t n;
} input;

static unsigned take(input *in)
{
    if (!in->n)
        return 0;
    in->n--;
    return *in->p++;
}

static double take_double(input *in)
{
    static const double awkward[] = {0.0,     -0.0,    1.0,     -1.0,    0.5,      0.25,    1e-8,    1e308,
                                     -1e308,  DBL_MIN, 4.9e-324, DBL_MAX, INFINITY, -INFINITY, NAN,  9007199254740993.0,
                                     0.1,     0.3,     2.0,     100.0};
    unsigned k = take(in);
    if (k < 200)
        return awkward[k % (MM_COUNT(awkward))];
    double d = 0;
    uint8_t raw[sizeof d] = {0};
    for (size_t i = 0; i < sizeof raw; i++)
        raw[i] = (uint8_t)take(in);
    memcpy(&d, raw, sizeof d);
    return d;
}

/* Text from a table of tensor-name fragments, or a few raw input bytes. */
static char *take_text(input *in)
{
    static const char *const words[] = {"mlp", "self_attn", "*", "", "layers.1", "norm", "up_proj", "weight", ".",
                                        "model.layers.0.mlp.up_proj.weight", "lm_head", "embed_tokens"};
    unsigned k = take(in);
    if (k < 128)
        return mm_xstrdup(words[k % (MM_COUNT(words))]);
    size_t len = k % 8;
    char *s = mm_xcalloc(len + 1, 1);
    for (size_t i = 0; i < len; i++)
        s[i] = (char)(take(in) | 1); /* never NUL inside */
    return s;
}

static mm_pvalue take_value(input *in, int numeric)
{
    mm_pvalue v = {0};
    unsigned k = numeric ? 0 : 1 + take(in) % 2;
    if (k == 0) {
        v.kind = MM_PV_NUM;
        v.num = take_double(in);
    } else if (k == 1) {
        v.kind = MM_PV_BOOL;
        v.b = (int)(take(in) & 1);
    } else {
        v.kind = MM_PV_STR;
        v.str = take_text(in);
    }
    return v;
}

static mm_psetting *take_setting(input *in, int allow_cond)
{
    mm_psetting *s = mm_xcalloc(1, sizeof *s);
    unsigned kind = take(in) % (allow_cond ? 3 : 2);
    if (kind == MM_PS_SCALAR) {
        s->kind = MM_PS_SCALAR;
        s->scalar = take_value(in, take(in) % 3 == 0 ? 0 : 1);
    } else if (kind == MM_PS_GRADIENT) {
        s->kind = MM_PS_GRADIENT;
        s->ngrad = 1 + take(in) % 8;
        s->grad = mm_xcalloc(s->ngrad, sizeof *s->grad);
        int numeric = take(in) % 4 != 0;
        for (size_t i = 0; i < s->ngrad; i++)
            s->grad[i] = take_value(in, numeric);
    } else {
        s->kind = MM_PS_CONDITIONAL;
        s->nconds = 1 + take(in) % 4;
        s->conds = mm_xcalloc(s->nconds, sizeof *s->conds);
        for (size_t i = 0; i < s->nconds; i++) {
            s->conds[i].filter = take(in) % 4 == 0 ? NULL : take_text(in);
            s->conds[i].value = take_setting(in, 0);
        }
    }
    return s;
}

static const char *const param_names[] = {"weight", "density", "t", "epsilon"};
#define NPARAMS (MM_COUNT(param_names))

static int same_value(const mm_pvalue *a, const mm_pvalue *b)
{
    if (a->kind != b->kind)
        return 0;
    if (a->kind == MM_PV_NUM)
        return memcmp(&a->num, &b->num, sizeof a->num) == 0;
    if (a->kind == MM_PV_BOOL)
        return a->b == b->b;
    return a->kind == MM_PV_UNSET || a->str == b->str;
}

static int filter_matches(const char *filter, const char *tensor)
{
    return !filter || strcmp(filter, "*") == 0 || (*tensor && strstr(tensor, filter));
}

/* The properties of one setting at one (tensor, t). */
static void check_setting(const mm_psetting *s, const char *tensor, double t)
{
    mm_pvalue v, again;
    int got = mm_psetting_eval(s, tensor, t, &v);
    FUZZ_CHECK(mm_psetting_eval(s, tensor, t, &again) == got && same_value(&v, &again));
    if (s->kind == MM_PS_SCALAR) {
        FUZZ_CHECK(got == 1 && same_value(&v, &s->scalar));
    } else if (s->kind == MM_PS_GRADIENT) {
        FUZZ_CHECK(got == 1);
        if (s->grad[0].kind != MM_PV_NUM) {
            size_t hit = 0;
            for (size_t i = 0; i < s->ngrad; i++)
                hit += same_value(&v, &s->grad[i]);
            FUZZ_CHECK(hit > 0);
            if (t == 0)
                FUZZ_CHECK(same_value(&v, &s->grad[0]));
            if (t == 1)
                FUZZ_CHECK(same_value(&v, &s->grad[s->ngrad - 1]));
            return;
        }
        double lo = INFINITY, hi = -INFINITY;
        int finite = 1;
        for (size_t i = 0; i < s->ngrad; i++) {
            finite &= isfinite(s->grad[i].num) != 0;
            lo = fmin(lo, s->grad[i].num);
            hi = fmax(hi, s->grad[i].num);
        }
        /* Finite entries only: NaN propagates, and with an infinity mergekit's own formula gives NaN
         * (0 * inf). */
        if (!finite || !(t >= 0 && t <= 1))
            return;
        FUZZ_CHECK(v.kind == MM_PV_NUM);
        if (t == 0)
            FUZZ_CHECK(v.num == s->grad[0].num);
        if (t == 1)
            FUZZ_CHECK(v.num == s->grad[s->ngrad - 1].num);
        /* (1 - f) * a + f * b rounds three times; allow a few ulps of the larger magnitude beyond the ends,
         * and a few of the smallest subnormal (half of it rounds to 0). */
        double slack = 4 * DBL_EPSILON * fmax(fabs(lo), fabs(hi)) + 4 * DBL_TRUE_MIN;
        FUZZ_CHECK(v.num >= lo - slack && v.num <= hi + slack);
    } else {
        size_t i = 0;
        while (i < s->nconds && !filter_matches(s->conds[i].filter, tensor))
            i++;
        if (i == s->nconds) {
            FUZZ_CHECK(got == 0 && v.kind == MM_PV_UNSET);
            return;
        }
        mm_pvalue want;
        FUZZ_CHECK(got == mm_psetting_eval(s->conds[i].value, tensor, t, &want) && same_value(&v, &want));
        check_setting(s->conds[i].value, tensor, t);
    }
}

/* The properties of the precedence lookup at one (tensor, t), and of each setting it consults. */
static void check_levels(const mm_params *const *levels, size_t nlevels, const char *tensor, double t)
{
    for (size_t k = 0; k < NPARAMS; k++) {
        mm_pvalue v;
        const mm_psetting *from = NULL;
        int got = mm_params_eval(levels, nlevels, param_names[k], tensor, t, &v, &from);
        const mm_psetting *first = NULL;
        mm_pvalue want = {.kind = MM_PV_UNSET};
        for (size_t i = 0; i < nlevels && !first; i++) {
            const mm_psetting *s = levels[i] ? mm_params_find(levels[i], param_names[k]) : NULL;
            if (s) {
                check_setting(s, tensor, t);
                if (mm_psetting_eval(s, tensor, t, &want))
                    first = s;
            }
        }
        FUZZ_CHECK(got == (first != NULL) && same_value(&v, &want));
        FUZZ_CHECK(!got || from == first);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    input in = {data, size};
    mm_params params[MAX_LEVELS] = {{0}};
    const mm_params *levels[MAX_LEVELS];
    size_t nlevels = 1 + take(&in) % MAX_LEVELS;
    for (size_t l = 0; l < nlevels; l++) {
        /* An absent level (a source without parameters) is NULL to the lookup. */
        levels[l] = take(&in) % 5 == 0 ? NULL : &params[l];
        mm_params *p = &params[l];
        p->n = take(&in) % 4;
        p->items = mm_xcalloc(p->n ? p->n : 1, sizeof *p->items);
        for (size_t i = 0; i < p->n; i++) {
            p->items[i].name = mm_xstrdup(param_names[take(&in) % NPARAMS]);
            p->items[i].setting = take_setting(&in, 1);
        }
    }
    int nlayers = 1 + (int)(take(&in) % 40);
    char *own_name = take_text(&in);
    double extra_t[3] = {take_double(&in), take_double(&in), take_double(&in)};

    static const char *const templates[] = {"model.layers.{}.mlp.up_proj.weight", "model.layers.{}.self_attn.q_proj.weight",
                                            "model.layers.{}.input_layernorm.weight"};
    static const char *const others[] = {"model.embed_tokens.weight", "lm_head.weight", "model.norm.weight", ""};
    for (int j = 0; j < nlayers; j++) {
        double t = mm_param_layer_t(j, nlayers);
        FUZZ_CHECK(t >= 0 && t <= 1);
        for (size_t k = 0; k < MM_COUNT(templates); k++) {
            char *name = mm_layer_name(templates[k], j);
            check_levels(levels, nlevels, name, t);
            free(name);
        }
        check_levels(levels, nlevels, own_name, t);
    }
    /* Non-layer tensors are planned at t = 0; the extra positions probe the edges. */
    for (size_t k = 0; k < MM_COUNT(others); k++)
        check_levels(levels, nlevels, others[k], 0.0);
    for (size_t k = 0; k < 3; k++)
        check_levels(levels, nlevels, own_name, extra_t[k]);

    free(own_name);
    for (size_t l = 0; l < nlevels; l++)
        mm_params_free(&params[l]);
    return 0;
}
