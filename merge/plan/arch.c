/* Module inference (D18): layer stacks from tensor names, module names from words in their prefixes,
 * layer-count keys from config.json. The rules are in arch.h; why they are these rules is in
 * docs/merge-contract.md D18. */
#include "merge/plan/arch.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "merge/plan/model.h"

/* ---- words ---- */

static int has_word(const char *s, size_t len, const char *const *words, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        size_t w = strlen(words[i]);
        for (size_t k = 0; k + w <= len; k++)
            if (memcmp(s + k, words[i], w) == 0)
                return 1;
    }
    return 0;
}

/* Whether a dotted component of `name` other than the last names a multimodal projector
 * (`multi_modal_projector.`, `mm_projector.`, Qwen2-VL's `visual.merger.`, Qwen3-VL's
 * `deepstack_merger_list.`, InternVL's `mlp1.`, ...). */
static int names_projector(const char *name)
{
    static const char *const exact[] = {"mlp1", "connector", "resampler", "aligner", "img_projection"};
    static const char *const part[] = {"projector", "merger"};
    for (const char *p = name, *dot; (dot = strchr(p, '.')); p = dot + 1) {
        size_t len = (size_t)(dot - p);
        if (has_word(p, len, part, MM_COUNT(part)))
            return 1;
        for (size_t i = 0; i < MM_COUNT(exact); i++)
            if (strlen(exact[i]) == len && memcmp(p, exact[i], len) == 0)
                return 1;
    }
    return 0;
}

static mm_module_kind stack_kind(const char *prefix)
{
    static const char *const vision[] = {"vision", "visual", "vit", "image", "img"};
    static const char *const audio[] = {"audio", "speech", "whisper"};
    size_t len = strlen(prefix);
    char *probe = mm_xasprintf("%s.x", prefix); /* every component of the prefix is a non-last one */
    int projector = names_projector(probe);
    free(probe);
    if (projector)
        return MM_MOD_PROJECTOR;
    if (has_word(prefix, len, vision, MM_COUNT(vision)))
        return MM_MOD_VISION;
    if (has_word(prefix, len, audio, MM_COUNT(audio)))
        return MM_MOD_AUDIO;
    return MM_MOD_TEXT;
}

/* Whether `prefix` is `name` or a dotted-component prefix of it. */
static int starts_component(const char *name, const char *prefix, size_t plen)
{
    return strncmp(name, prefix, plen) == 0 && (name[plen] == '\0' || name[plen] == '.');
}

/* ---- layer stacks ---- */

typedef struct stack {
    char *prefix;
    int n;          /* highest index + 1 */
    int valid;      /* indices 0..n-1 all present */
    mm_module_kind kind; /* from the words of its prefix (stack_kind) */
    int module;
    size_t root;    /* length of the prefix of `prefix` that tells this stack from the others */
} stack;

typedef struct entry {
    const char *prefix; /* points into the tensor's template */
    size_t len;
    int layer;
    size_t tensor;
} entry;

static int cmp_entry(const void *a, const void *b)
{
    const entry *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->prefix, y->prefix, n);
    if (c == 0)
        c = (x->len > y->len) - (x->len < y->len);
    return c ? c : (x->layer > y->layer) - (x->layer < y->layer);
}

/* Groups the layer-indexed tensors by prefix; tstack[i] receives tensor i's stack (-1: none). Sorting,
 * not a search per tensor, so that a model with many prefixes stays linear-logarithmic. */
static stack *find_stacks(mm_model_tensor *t, size_t n, int *tstack, size_t *nstacks)
{
    entry *e = mm_xmalloc((n ? n : 1) * sizeof *e);
    size_t ne = 0;
    for (size_t i = 0; i < n; i++) {
        tstack[i] = -1;
        t[i].layer = mm_layer_of(t[i].name, &t[i].template_name);
        if (t[i].layer >= 0)
            e[ne++] = (entry){t[i].template_name, (size_t)(strstr(t[i].template_name, "{}") - t[i].template_name - 1),
                              t[i].layer, i};
    }
    qsort(e, ne, sizeof *e, cmp_entry);
    stack *s = NULL;
    size_t ns = 0;
    for (size_t i = 0; i < ne;) {
        size_t j = i;
        int expect = 0, gapless = 1;
        /* Sorted by layer within a prefix: gapless when each distinct index is the previous one + 1. */
        for (; j < ne && e[j].len == e[i].len && memcmp(e[j].prefix, e[i].prefix, e[i].len) == 0; j++) {
            if (e[j].layer == expect)
                expect++;
            else if (e[j].layer != expect - 1)
                gapless = 0;
            tstack[e[j].tensor] = (int)ns;
        }
        s = mm_xrealloc(s, (ns + 1) * sizeof *s);
        char *prefix = mm_xstrndup(e[i].prefix, e[i].len);
        s[ns] = (stack){prefix, e[j - 1].layer + 1, gapless, stack_kind(prefix), -1, 0};
        ns++;
        i = j;
    }
    free(e);
    /* A lone one-layer "stack" is a model of one layer; beside others it is an nn.Sequential's single
     * index more likely than a layer stack. */
    size_t nvalid = 0;
    for (size_t i = 0; i < ns; i++)
        nvalid += (size_t)s[i].valid;
    for (size_t i = 0; i < ns && nvalid > 1; i++)
        if (s[i].valid && s[i].n < 2) {
            s[i].valid = 0;
            nvalid--;
        }
    *nstacks = ns;
    return s;
}

/* ---- config.json keys ---- */

typedef struct count_rule {
    const char *const *holders; /* "" is the top level */
    size_t nholders;
    const char *const *keys;
    size_t nkeys;
} count_rule;

static const char *const text_holders[] = {"", "text_config", "llm_config", "language_config"};
static const char *const text_keys[] = {"num_hidden_layers", "n_layer", "num_layers", "n_layers"};
static const char *const vision_holders[] = {"vision_config"};
static const char *const vision_keys[] = {"num_hidden_layers", "depth", "num_layers", "n_layers"};
static const char *const audio_holders[] = {"audio_config"};
static const char *const audio_keys[] = {"num_hidden_layers", "encoder_layers", "num_layers", "n_layers"};

static const count_rule rules[] = {
    [MM_MOD_TEXT] = {text_holders, MM_COUNT(text_holders), text_keys, MM_COUNT(text_keys)},
    [MM_MOD_VISION] = {vision_holders, MM_COUNT(vision_holders), vision_keys, MM_COUNT(vision_keys)},
    [MM_MOD_AUDIO] = {audio_holders, MM_COUNT(audio_holders), audio_keys, MM_COUNT(audio_keys)},
};

static cJSON *holder_of(const cJSON *cfg, const char *holder)
{
    if (!cJSON_IsObject(cfg))
        return NULL;
    cJSON *h = holder[0] ? cJSON_GetObjectItemCaseSensitive(cfg, holder) : (cJSON *)cfg;
    return cJSON_IsObject(h) ? h : NULL;
}

/* The first (holder, key) of the rule for modules of `kind` whose value is `want`; with want < 0, the
 * first present. Projectors and other modules have no rule: mergekit gives them no config key either. */
static int find_count(mm_module_kind kind, const cJSON *cfg, int want, const char **holder, const char **key)
{
    if ((size_t)kind >= MM_COUNT(rules))
        return 0;
    const count_rule *r = &rules[kind];
    for (size_t h = 0; h < r->nholders; h++) {
        cJSON *obj = holder_of(cfg, r->holders[h]);
        for (size_t k = 0; obj && k < r->nkeys; k++) {
            cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, r->keys[k]);
            if (cJSON_IsNumber(v) && (want < 0 || v->valuedouble == want)) {
                *holder = r->holders[h];
                *key = r->keys[k];
                return 1;
            }
        }
    }
    return 0;
}

/* Sets m's count key: the rule's key that holds its layer count; for the text decoder of a single-stack
 * model whose config disagrees with its tensors, the first such key there is (the one to update). */
static void set_count_key(mm_module *m, const cJSON *cfg, int fallback)
{
    const char *holder, *key;
    if (!m->stack)
        return;
    if (find_count(m->kind, cfg, m->num_layers, &holder, &key) ||
        (fallback && find_count(m->kind, cfg, -1, &holder, &key))) {
        m->count_holder = mm_xstrdup(holder);
        m->count_key = mm_xstrdup(key);
    }
}

cJSON *mm_arch_count_holder(const mm_module *m, const cJSON *cfg, cJSON **key)
{
    if (!m->count_holder)
        return NULL;
    cJSON *h = holder_of(cfg, m->count_holder);
    cJSON *k = h ? cJSON_GetObjectItemCaseSensitive(h, m->count_key) : NULL;
    if (!cJSON_IsNumber(k))
        return NULL;
    *key = k;
    return h;
}

/* ---- modules ---- */

static int add_module(mm_arch *a, const char *name, mm_module_kind kind, const stack *s)
{
    a->mods = mm_xrealloc(a->mods, (a->n + 1) * sizeof *a->mods);
    a->mods[a->n] = (mm_module){mm_xstrdup(name), kind, s ? mm_xstrdup(s->prefix) : NULL, s ? s->n : 0, NULL, NULL};
    return (int)a->n++;
}

/* The module index for a name, added (without layers) when missing. */
static int module_named(mm_arch *a, const char *name, mm_module_kind kind)
{
    int i = mm_arch_find(a, name);
    return i >= 0 ? i : add_module(a, name, kind, NULL);
}

/* Names the stacks of one kind: the only one, or the one whose count config.json records, gets the kind's
 * name; the others are named by their prefix (as mergekit names inferred modules). Returns the index of
 * the module that got the name, or -1. */
static int name_kind(mm_arch *a, stack *s, size_t ns, mm_module_kind kind, const char *name, const cJSON *cfg)
{
    size_t count = 0, matched = 0, pick = 0;
    const char *h, *k;
    for (size_t i = 0; i < ns; i++)
        if (s[i].valid && s[i].kind == kind) {
            count++;
            if (find_count(kind, cfg, s[i].n, &h, &k)) {
                matched++;
                pick = i;
            }
            if (count == 1 && !matched)
                pick = i;
        }
    int named = -1;
    if (count == 1 || matched == 1)
        named = s[pick].module = add_module(a, name, kind, &s[pick]);
    for (size_t i = 0; i < ns; i++)
        if (s[i].valid && s[i].module < 0 && s[i].kind == kind)
            s[i].module = add_module(a, s[i].prefix, MM_MOD_OTHER, &s[i]);
    return named;
}

/* The shortest dotted prefix of each stack's prefix that is not also a prefix of another's: the names
 * under it belong to that stack's module (`visual` for `visual.blocks` beside `model.layers`).
 * Projector stacks take no part: their tensors are told by name (nonlayer_module), and one nested in
 * the vision tower (`model.visual.deepstack_merger_list`) must not push the tower's root down to its
 * stack. */
/* Whether stack s is one whose prefix makes a root: a stack, and not a projector's. */
static int rooted(const stack *s)
{
    return s->valid && s->kind != MM_MOD_PROJECTOR;
}

static void set_roots(stack *s, size_t ns)
{
    for (size_t i = 0; i < ns; i++) {
        if (!rooted(&s[i]))
            continue;
        size_t len = strlen(s[i].prefix);
        s[i].root = len;
        /* *p: an empty prefix (a name that starts ".0.") has no component to look past */
        for (const char *p = s[i].prefix; p && *p; p = strchr(p + 1, '.')) {
            size_t l = (size_t)(p - s[i].prefix);
            if (l == 0)
                continue;
            int shared = 0;
            for (size_t j = 0; j < ns && !shared; j++)
                shared = j != i && rooted(&s[j]) && starts_component(s[j].prefix, s[i].prefix, l);
            if (!shared) {
                s[i].root = l;
                break;
            }
        }
    }
}

static int nonlayer_module(mm_arch *a, const stack *s, size_t ns, const char *name)
{
    if (names_projector(name))
        return module_named(a, MM_MODULE_PROJECTOR, MM_MOD_PROJECTOR);
    for (size_t i = 0; i < ns; i++)
        if (rooted(&s[i]) && starts_component(name, s[i].prefix, s[i].root))
            return s[i].module;
    return a->text >= 0 ? a->text : module_named(a, MM_MODULE_DEFAULT, MM_MOD_OTHER);
}

void mm_arch_infer(mm_arch *a, mm_model_tensor *t, size_t n, const cJSON *cfg)
{
    memset(a, 0, sizeof *a);
    int *tstack = mm_xmalloc((n ? n : 1) * sizeof *tstack);
    size_t ns;
    stack *s = find_stacks(t, n, tstack, &ns);
    size_t nvalid = 0, only = 0;
    for (size_t i = 0; i < ns; i++)
        if (s[i].valid) {
            nvalid++;
            only = i;
        }
    if (nvalid <= 1) {
        /* One module holds everything: a text model (or a model of one stack of any kind). */
        a->text = add_module(a, MM_MODULE_TEXT, MM_MOD_TEXT, nvalid ? &s[only] : NULL);
        if (nvalid)
            s[only].module = a->text;
        set_count_key(&a->mods[a->text], cfg, 1);
    } else {
        a->text = name_kind(a, s, ns, MM_MOD_TEXT, MM_MODULE_TEXT, cfg);
        name_kind(a, s, ns, MM_MOD_VISION, MM_MODULE_VISION, cfg);
        name_kind(a, s, ns, MM_MOD_AUDIO, MM_MODULE_AUDIO, cfg);
        name_kind(a, s, ns, MM_MOD_PROJECTOR, MM_MODULE_PROJECTOR, cfg);
        for (size_t i = 0; i < a->n; i++)
            set_count_key(&a->mods[i], cfg, 0);
        set_roots(s, ns);
    }
    for (size_t i = 0; i < n; i++) {
        if (tstack[i] >= 0 && s[tstack[i]].valid) {
            t[i].module = s[tstack[i]].module;
            continue;
        }
        /* Not a layer: an index outside a stack (nn.Sequential) is part of the name. */
        t[i].layer = -1;
        free(t[i].template_name);
        t[i].template_name = NULL;
        t[i].module = nvalid <= 1 ? a->text : nonlayer_module(a, s, ns, t[i].name);
    }
    for (size_t i = 0; i < ns; i++)
        free(s[i].prefix);
    free(s);
    free(tstack);
}

void mm_arch_free(mm_arch *a)
{
    for (size_t i = 0; i < a->n; i++) {
        free(a->mods[i].name);
        free(a->mods[i].stack);
        free(a->mods[i].count_holder);
        free(a->mods[i].count_key);
    }
    free(a->mods);
    memset(a, 0, sizeof *a);
}

int mm_arch_find(const mm_arch *a, const char *name)
{
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->mods[i].name, name) == 0)
            return (int)i;
    return strcmp(name, MM_MODULE_DEFAULT) == 0 && a->n == 1 ? a->text : -1;
}

char *mm_arch_names(const mm_arch *a)
{
    mm_buf b = {0};
    for (size_t i = 0; i < a->n; i++)
        mm_buf_printf(&b, "%s%s", i ? ", " : "", a->mods[i].name);
    return b.data ? b.data : mm_xstrdup("");
}
