/* Parameter evaluation, mirroring mergekit's evaluate_setting operation for
 * operation so that gradients give the same doubles. */
#include "config.h"

#include <math.h>
#include <string.h>

/* mergekit: None filter, "*", or `filter in tensor_name` (a plain substring; an empty name matches no
 * substring filter because Python tests `tensor_name and ...`). */
static int filter_matches(const char *filter, const char *name)
{
    if (!filter || strcmp(filter, "*") == 0)
        return 1;
    return name && *name && strstr(name, filter) != NULL;
}

static size_t position_index(double s, size_t n)
{
    /* Python's int() truncates; t is in [0,1] so s >= 0, but stay in range whatever t is. */
    double i = floor(s);
    if (!(i >= 0))
        return 0;
    return i >= (double)(n - 1) ? n - 1 : (size_t)i;
}

static mm_pvalue eval_gradient(const mm_psetting *s, double t)
{
    size_t n = s->ngrad;
    double scaled = t * (double)(n - 1);
    size_t i0 = position_index(scaled, n);
    if (s->grad[0].kind != MM_PV_NUM)
        return s->grad[i0];
    size_t i1 = i0 + 1 < n ? i0 + 1 : n - 1;
    double frac = scaled - (double)i0;
    /* Same expression as mergekit, even for n == 1 (where it can turn an infinity into NaN). */
    mm_pvalue v = {.kind = MM_PV_NUM};
    v.num = (1 - frac) * s->grad[i0].num + frac * s->grad[i1].num;
    return v;
}

int mm_psetting_eval(const mm_psetting *s, const char *tensor_name, double t, mm_pvalue *out)
{
    switch (s->kind) {
    case MM_PS_SCALAR:
        *out = s->scalar;
        return 1;
    case MM_PS_GRADIENT:
        *out = eval_gradient(s, t);
        return 1;
    case MM_PS_CONDITIONAL:
        for (size_t i = 0; i < s->nconds; i++)
            if (filter_matches(s->conds[i].filter, tensor_name))
                return mm_psetting_eval(s->conds[i].value, tensor_name, t, out);
        break;
    }
    *out = (mm_pvalue){.kind = MM_PV_UNSET};
    return 0;
}

const mm_psetting *mm_params_find(const mm_params *p, const char *name)
{
    for (size_t i = 0; i < p->n; i++)
        if (strcmp(p->items[i].name, name) == 0)
            return p->items[i].setting;
    return NULL;
}

int mm_params_eval(const mm_params *const *levels, size_t nlevels, const char *name, const char *tensor_name,
                   double t, mm_pvalue *out, const mm_psetting **from)
{
    for (size_t i = 0; i < nlevels; i++) {
        const mm_psetting *s = levels[i] ? mm_params_find(levels[i], name) : NULL;
        if (s && mm_psetting_eval(s, tensor_name, t, out)) {
            if (from)
                *from = s;
            return 1;
        }
    }
    *out = (mm_pvalue){.kind = MM_PV_UNSET};
    return 0;
}

double mm_param_layer_t(int j, int nlayers)
{
    return nlayers == 1 ? 1.0 : (double)j / (double)(nlayers - 1);
}

void mm_srcpos_format(const mm_srcpos *p, char *buf, size_t len)
{
    snprintf(buf, len, "%s:%d:%d", p->file ? p->file : "?", p->line, p->col);
}
