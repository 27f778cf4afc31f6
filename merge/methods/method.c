/* The registry of merge methods and the helpers the method files share. */
#include "method_internal.h"

float mm_method_weight_sum(const mm_out_tensor *t, int skip)
{
    float acc = 0.0f;
    for (size_t i = 0; i < t->ninputs; i++)
        if ((int)i != skip)
            acc += t->kc[i];
    return mm_round_to(t->comp, acc);
}

void mm_method_round_weights(mm_out_tensor *t, size_t widx)
{
    for (size_t i = 0; i < t->ninputs; i++)
        t->kc[i] = isnan(t->inputs[i].mvals[widx]) ? 0.0f : mm_round_to(t->comp, (float)t->inputs[i].mvals[widx]);
}

/* mergekit's method registry, in its order. */
static const mm_method *const methods[] = {
    &mm_method_linear,   &mm_method_slerp,       &mm_method_nuslerp,         &mm_method_multislerp,
    &mm_method_karcher,  &mm_method_passthrough, &mm_method_model_stock,     &mm_method_arcee_fusion,
    &mm_method_nearswap, &mm_method_sce,         &mm_method_ram,             &mm_method_ramplus_tl,
    &mm_method_task_arithmetic, &mm_method_ties, &mm_method_dare_ties,       &mm_method_dare_linear,
    &mm_method_breadcrumbs,     &mm_method_breadcrumbs_ties, &mm_method_della, &mm_method_della_linear,
};

const mm_method *mm_method_find(const char *name)
{
    for (size_t i = 0; i < MM_COUNT(methods); i++)
        if (strcmp(methods[i]->name, name) == 0)
            return methods[i];
    return NULL;
}

const char *const *mm_method_names(size_t *n)
{
    static const char *names[MM_COUNT(methods)];
    for (size_t i = 0; i < MM_COUNT(methods); i++)
        names[i] = methods[i]->name;
    *n = MM_COUNT(methods);
    return names;
}
