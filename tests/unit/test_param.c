/* Parameter evaluation (mergekit's evaluate_setting): gradients, stepwise lists, conditional filters, precedence
 * levels, and layer positions. */
#include <math.h>
#include <string.h>

#include "check.h"
#include "config/config.h"

static mm_pvalue num(double v)
{
    return (mm_pvalue){.kind = MM_PV_NUM, .num = v};
}

static mm_pvalue str(const char *s)
{
    return (mm_pvalue){.kind = MM_PV_STR, .str = (char *)s};
}

static mm_psetting gradient(mm_pvalue *v, size_t n)
{
    return (mm_psetting){.kind = MM_PS_GRADIENT, .grad = v, .ngrad = n};
}

static double eval_num(const mm_psetting *s, const char *name, double t)
{
    mm_pvalue out;
    if (mm_psetting_eval(s, name, t, &out) != 1 || out.kind != MM_PV_NUM)
        return NAN;
    return out.num;
}

static void test_scalar(void)
{
    mm_psetting s = {.kind = MM_PS_SCALAR, .scalar = num(0.3)};
    CHECK(eval_num(&s, "model.layers.0.mlp.up_proj.weight", 0.7) == 0.3);
    mm_psetting b = {.kind = MM_PS_SCALAR, .scalar = {.kind = MM_PV_BOOL, .b = 1}};
    mm_pvalue out;
    CHECK(mm_psetting_eval(&b, "x", 0, &out) == 1 && out.kind == MM_PV_BOOL && out.b == 1);
}

static void test_gradient(void)
{
    mm_pvalue v[] = {num(0), num(0.5), num(1)};
    mm_psetting g = gradient(v, 3);
    /* 3 anchors over 5 layers: t = j/4 */
    double want[] = {0, 0.25, 0.5, 0.75, 1};
    for (int j = 0; j < 5; j++)
        CHECK(eval_num(&g, "w", j / 4.0) == want[j]);

    /* The exact double expression (1-f)*v0 + f*v1 of mergekit, not a rearranged one. */
    mm_pvalue w[] = {num(0.1), num(0.7), num(0.3)};
    mm_psetting g2 = gradient(w, 3);
    double t = 1.0 / 3.0, s = t * 2, f = s - 0;
    CHECK(eval_num(&g2, "w", t) == (1 - f) * 0.1 + f * 0.7);
    t = 0.9, s = t * 2, f = s - 1;
    CHECK(eval_num(&g2, "w", t) == (1 - f) * 0.7 + f * 0.3);

    mm_pvalue one[] = {num(0.42)};
    mm_psetting g1 = gradient(one, 1);
    CHECK(eval_num(&g1, "w", 0) == 0.42);
    CHECK(eval_num(&g1, "w", 1) == 0.42);
}

static void test_stepwise(void)
{
    mm_pvalue v[] = {str("a"), str("b"), str("c")};
    mm_psetting g = gradient(v, 3);
    const char *want[] = {"a", "a", "b", "b", "c"}; /* v[floor(t*(n-1))] at t = j/4 */
    for (int j = 0; j < 5; j++) {
        mm_pvalue out;
        CHECK(mm_psetting_eval(&g, "w", j / 4.0, &out) == 1);
        CHECK(out.kind == MM_PV_STR && strcmp(out.str, want[j]) == 0);
    }
    mm_pvalue bools[] = {{.kind = MM_PV_BOOL, .b = 0}, {.kind = MM_PV_BOOL, .b = 1}};
    mm_psetting gb = gradient(bools, 2);
    mm_pvalue out;
    CHECK(mm_psetting_eval(&gb, "w", 0.99, &out) == 1 && out.kind == MM_PV_BOOL && out.b == 0);
    CHECK(mm_psetting_eval(&gb, "w", 1.0, &out) == 1 && out.b == 1);
}

static void test_conditional(void)
{
    mm_psetting attn = {.kind = MM_PS_SCALAR, .scalar = num(0.1)};
    mm_pvalue gv[] = {num(0), num(1)};
    mm_psetting mlp = gradient(gv, 2);
    mm_psetting star = {.kind = MM_PS_SCALAR, .scalar = num(0.9)};
    mm_pcond conds[] = {{.filter = (char *)"self_attn", .value = &attn}, {.filter = (char *)"mlp", .value = &mlp}};
    mm_psetting s = {.kind = MM_PS_CONDITIONAL, .conds = conds, .nconds = 2};

    CHECK(eval_num(&s, "model.layers.3.self_attn.q_proj.weight", 0.5) == 0.1);
    CHECK(eval_num(&s, "model.layers.3.mlp.up_proj.weight", 0.25) == 0.25); /* gradient inside a condition */
    mm_pvalue out = num(7);
    CHECK(mm_psetting_eval(&s, "model.norm.weight", 0, &out) == 0); /* no match: unset */
    CHECK(out.kind == MM_PV_UNSET);
    CHECK(mm_psetting_eval(&s, "", 0, &out) == 0);  /* an empty name matches no substring filter */
    CHECK(mm_psetting_eval(&s, NULL, 0, &out) == 0);

    /* Plain substring, no glob: "*.mlp" never matches. */
    mm_pcond glob[] = {{.filter = (char *)"*.mlp", .value = &attn}};
    mm_psetting g = {.kind = MM_PS_CONDITIONAL, .conds = glob, .nconds = 1};
    CHECK(mm_psetting_eval(&g, "model.layers.0.mlp.up_proj.weight", 0, &out) == 0);

    /* "*" and a null filter match everything; the first match wins. */
    mm_pcond catch_all[] = {{.filter = (char *)"*", .value = &star}, {.filter = NULL, .value = &attn}};
    mm_psetting c = {.kind = MM_PS_CONDITIONAL, .conds = catch_all, .nconds = 2};
    CHECK(eval_num(&c, "anything", 0) == 0.9);
    mm_pcond null_first[] = {{.filter = NULL, .value = &attn}, {.filter = (char *)"*", .value = &star}};
    mm_psetting n = {.kind = MM_PS_CONDITIONAL, .conds = null_first, .nconds = 2};
    CHECK(eval_num(&n, "", 0) == 0.1);
}

static void test_find_and_format(void)
{
    mm_psetting a = {.kind = MM_PS_SCALAR, .scalar = num(1)}, b = {.kind = MM_PS_SCALAR, .scalar = num(2)};
    mm_param items[] = {{.name = (char *)"weight", .setting = &a}, {.name = (char *)"density", .setting = &b}};
    mm_params p = {items, 2};
    CHECK(mm_params_find(&p, "density") == &b);
    CHECK(mm_params_find(&p, "weight") == &a);
    CHECK(mm_params_find(&p, "t") == NULL);
    mm_params empty = {0};
    CHECK(mm_params_find(&empty, "weight") == NULL);

    char buf[64];
    mm_srcpos pos = {"merge.yml", 12, 5};
    mm_srcpos_format(&pos, buf, sizeof buf);
    CHECK(strcmp(buf, "merge.yml:12:5") == 0);
}

/* The most specific level that yields a value wins; a level whose conditions match nothing, or that
 * lacks the parameter, or is absent (NULL), falls through. */
static void test_precedence(void)
{
    mm_psetting one = {.kind = MM_PS_SCALAR, .scalar = num(1)}, two = {.kind = MM_PS_SCALAR, .scalar = num(2)};
    mm_pcond only_mlp[] = {{.filter = (char *)"mlp", .value = &one}};
    mm_psetting cond = {.kind = MM_PS_CONDITIONAL, .conds = only_mlp, .nconds = 1};
    mm_param src_items[] = {{.name = (char *)"weight", .setting = &cond}};
    mm_param top_items[] = {{.name = (char *)"weight", .setting = &two}, {.name = (char *)"t", .setting = &one}};
    mm_params src = {src_items, 1}, top = {top_items, 2};
    const mm_params *levels[] = {&src, NULL, &top};
    mm_pvalue v;
    const mm_psetting *from = NULL;
    CHECK(mm_params_eval(levels, 3, "weight", "model.layers.0.mlp.up_proj.weight", 0.5, &v, &from) == 1);
    CHECK(v.kind == MM_PV_NUM && v.num == 1 && from == &cond);
    CHECK(mm_params_eval(levels, 3, "weight", "model.layers.0.self_attn.q_proj.weight", 0.5, &v, &from) == 1);
    CHECK(v.num == 2 && from == &two);
    CHECK(mm_params_eval(levels, 3, "t", "x", 0, &v, NULL) == 1 && v.num == 1);
    CHECK(mm_params_eval(levels, 3, "density", "x", 0, &v, &from) == 0 && v.kind == MM_PV_UNSET);
    CHECK(mm_params_eval(levels, 1, "weight", "model.norm.weight", 0, &v, NULL) == 0);
    CHECK(mm_params_eval(levels, 0, "weight", "x", 0, &v, NULL) == 0);
}

static void test_layer_t(void)
{
    CHECK(mm_param_layer_t(0, 1) == 1.0);
    CHECK(mm_param_layer_t(0, 5) == 0.0 && mm_param_layer_t(4, 5) == 1.0 && mm_param_layer_t(1, 5) == 0.25);
    CHECK(mm_param_layer_t(2, 3) == 1.0 && mm_param_layer_t(1, 3) == 0.5);
}

int main(void)
{
    test_precedence();
    test_layer_t();
    test_scalar();
    test_gradient();
    test_stepwise();
    test_conditional();
    test_find_and_format();
    return mm_check_report();
}
