/* YAML text → position-carrying tree, with PyYAML's (YAML 1.1) scalar typing. See ytree.h. */
#include "ytree.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <regex.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

/* Aliases let a small file describe an exponentially large tree; everything that walks the tree is
 * bounded by refusing documents that expand to more nodes than any real config has. */
#define MAX_WEIGHT ((size_t)1 << 20)

/* Real configs nest a handful of levels. Code that walks the tree may recurse (a model reference written
 * as {model: {model: ...}} does), so a limit keeps every walk far from the end of the stack, whatever
 * thread it runs on. libyaml itself keeps its nesting on the heap. */
#define MAX_DEPTH 256

#define YAML_TAG(name) "tag:yaml.org,2002:" name

struct mm_ydoc {
    const mm_ynode *root;
    mm_ynode **nodes; /* every node once, so nodes shared by aliases are freed once */
    size_t nnodes, cap;
};

typedef struct frame {
    mm_ynode *node;
    const mm_ynode *key; /* a mapping key still waiting for its value */
    char *anchor;
    size_t cap;          /* capacity of node->items or node->pairs */
} frame;

typedef struct anchor {
    char *name;
    const mm_ynode *node;
} anchor;

/* PyYAML's implicit resolvers, in its order of precedence. The float pattern also admits the forms
 * described in ytree.h (1e-5, 1.0e5, -.5). */
enum { RE_NULL, RE_BOOL, RE_INT, RE_FLOAT, RE_COUNT };
static const char *const resolver_patterns[RE_COUNT] = {
    [RE_NULL] = "^(~|null|Null|NULL)?$",
    [RE_BOOL] = "^(yes|Yes|YES|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF)$",
    [RE_INT] = "^[-+]?(0b[01_]+|0[0-7_]+|0|[1-9][0-9_]*|0x[0-9a-fA-F_]+|[1-9][0-9_]*(:[0-5]?[0-9])+)$",
    [RE_FLOAT] = "^([-+]?([0-9][0-9_]*\\.[0-9_]*|\\.[0-9][0-9_]*)([eE][-+]?[0-9]+)?"
                 "|[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+"
                 "|[-+]?[0-9][0-9_]*(:[0-5]?[0-9])+\\.[0-9_]*"
                 "|[-+]?\\.(inf|Inf|INF)|\\.(nan|NaN|NAN))$",
};

typedef struct builder {
    const char *file;
    const char *text;
    size_t len;
    mm_ydoc *doc;
    frame *stack;
    size_t depth, scap;
    anchor *anchors;
    size_t nanchors, acap;
    int ndocs;
    regex_t re[RE_COUNT];
    size_t nre;
    mm_err *err;
} builder;

static void *grow(void *arr, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return arr;
    size_t c = *cap ? *cap * 2 : 8;
    while (c < need)
        c *= 2;
    *cap = c;
    return mm_xrealloc(arr, c * elem);
}

static mm_ynode *new_node(builder *b, mm_ynode_kind kind, yaml_mark_t mark)
{
    mm_ynode *n = mm_xcalloc(1, sizeof *n);
    n->kind = kind;
    n->line = (int)mark.line + 1;
    n->col = (int)mark.column + 1;
    n->weight = 1;
    mm_ydoc *d = b->doc;
    d->nodes = grow(d->nodes, &d->cap, d->nnodes + 1, sizeof *d->nodes);
    d->nodes[d->nnodes++] = n;
    return n;
}

static int fail_at(builder *b, const mm_ynode *n, const char *what, const char *fix)
{
    return mm_err_set(b->err, -EINVAL, "%s:%d:%d: %s (%s)", b->file, n->line, n->col, what, fix);
}

/* ---- scalars ---- */

static char *without_underscores(const char *s)
{
    char *out = mm_xmalloc(strlen(s) + 1), *o = out;
    for (; *s; s++)
        if (*s != '_')
            *o++ = *s;
    *o = 0;
    return out;
}

/* "1:30" is 90 and "1:30.5" is 90.5 in YAML 1.1. */
static double sexagesimal(const char *s)
{
    double sign = 1, v = 0;
    if (*s == '-' || *s == '+')
        sign = *s++ == '-' ? -1 : 1;
    for (;;) {
        char *end;
        v = v * 60 + strtod(s, &end);
        if (*end != ':')
            break;
        s = end + 1;
    }
    return sign * v;
}

static void set_int(mm_ynode *n, const char *clean)
{
    if (strchr(clean, ':')) {
        n->num = sexagesimal(clean);
        n->ival_ok = fabs(n->num) < 9e18;
        /* Only in range: converting a double beyond long long is undefined behaviour (fuzz_config). */
        n->ival = n->ival_ok ? (long long)n->num : 0;
        return;
    }
    const char *p = clean;
    int neg = 0;
    if (*p == '-' || *p == '+')
        neg = *p++ == '-';
    int base = 10;
    if (p[0] == '0' && p[1] == 'b')
        base = 2, p += 2;
    else if (p[0] == '0' && p[1] == 'x')
        base = 16, p += 2;
    else if (p[0] == '0' && p[1])
        base = 8, p++;
    errno = 0;
    unsigned long long u = strtoull(p, NULL, base);
    int overflow = errno == ERANGE || u > (unsigned long long)LLONG_MAX + (unsigned)neg;
    n->ival_ok = !overflow;
    if (!overflow)
        n->ival = neg ? (long long)(0ULL - u) : (long long)u;
    /* strtod rounds big decimal numbers correctly; other bases only matter for their exact ints. */
    n->num = base == 10 ? strtod(clean, NULL) : (neg ? -(double)u : (double)u);
}

static void set_float(mm_ynode *n, const char *clean)
{
    const char *p = clean + (clean[0] == '-' || clean[0] == '+');
    if (p[0] == '.' && (p[1] == 'n' || p[1] == 'N'))
        n->num = NAN;
    else if (p[0] == '.' && (p[1] == 'i' || p[1] == 'I'))
        n->num = clean[0] == '-' ? -INFINITY : INFINITY;
    else if (strchr(clean, ':'))
        n->num = sexagesimal(clean);
    else
        n->num = strtod(clean, NULL);
}

static mm_yscalar_type resolve(builder *b, const char *s)
{
    static const mm_yscalar_type types[RE_COUNT] = {MM_YS_NULL, MM_YS_BOOL, MM_YS_INT, MM_YS_FLOAT};
    for (int i = 0; i < RE_COUNT; i++)
        if (regexec(&b->re[i], s, 0, NULL, 0) == 0)
            return types[i];
    return MM_YS_STR;
}

static void set_value(mm_ynode *n, mm_yscalar_type t)
{
    n->type = t;
    if (t == MM_YS_BOOL) {
        char c = (char)tolower((unsigned char)n->text[0]);
        n->b = c == 'y' || c == 't' || (c == 'o' && tolower((unsigned char)n->text[1]) == 'n');
    } else if (t == MM_YS_INT || t == MM_YS_FLOAT) {
        char *clean = without_underscores(n->text);
        if (t == MM_YS_INT)
            set_int(n, clean);
        else
            set_float(n, clean);
        free(clean);
    }
}

/* The type an explicit tag asks for, or -1 for a tag we refuse. */
static int tag_type(const char *tag)
{
    static const struct {
        const char *tag;
        mm_yscalar_type t;
    } tags[] = {{"!", MM_YS_STR},
                {YAML_TAG("str"), MM_YS_STR},
                {YAML_TAG("null"), MM_YS_NULL},
                {YAML_TAG("bool"), MM_YS_BOOL},
                {YAML_TAG("int"), MM_YS_INT},
                {YAML_TAG("float"), MM_YS_FLOAT}};
    for (size_t i = 0; i < MM_COUNT(tags); i++)
        if (strcmp(tag, tags[i].tag) == 0)
            return (int)tags[i].t;
    return -1;
}

/* Tags as people write them: "tag:yaml.org,2002:int" is "!!int" in the file. */
static const char *tag_shown(const char *tag, char *buf, size_t len)
{
    static const char prefix[] = YAML_TAG("");
    if (strncmp(tag, prefix, sizeof prefix - 1) != 0)
        return tag;
    snprintf(buf, len, "!!%s", tag + sizeof prefix - 1);
    return buf;
}

static int bad_tag(builder *b, const mm_ynode *n, const char *tag)
{
    char what[512], shown[256];
    snprintf(what, sizeof what, "unsupported YAML tag '%.200s'", tag_shown(tag, shown, sizeof shown));
    return fail_at(b, n, what, "remove the tag; only !!str, !!int, !!float, !!bool, !!null, !!map and !!seq are read");
}

static int scalar_node(builder *b, const yaml_event_t *ev, mm_ynode *n)
{
    const char *value = (const char *)ev->data.scalar.value;
    size_t len = ev->data.scalar.length;
    const char *tag = (const char *)ev->data.scalar.tag;
    n->text = mm_xstrndup(value, len);
    n->quoted = ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE;
    if (memchr(value, 0, len))
        return fail_at(b, n, "a NUL character inside a value is not supported", "remove the \\0 escape");
    if (!tag) {
        set_value(n, n->quoted ? MM_YS_STR : resolve(b, n->text));
        return 0;
    }
    int want = tag_type(tag);
    if (want < 0)
        return bad_tag(b, n, tag);
    if (want == MM_YS_STR) {
        set_value(n, MM_YS_STR);
        return 0;
    }
    mm_yscalar_type got = resolve(b, n->text);
    if (want == MM_YS_FLOAT && got == MM_YS_INT) {
        set_value(n, MM_YS_INT);
        n->type = MM_YS_FLOAT;
        return 0;
    }
    if ((int)got != want) {
        char what[512], shown[256];
        snprintf(what, sizeof what, "'%.200s' does not fit its tag %.200s", n->text,
                 tag_shown(tag, shown, sizeof shown));
        return fail_at(b, n, what, "remove the tag or fix the value");
    }
    set_value(n, got);
    return 0;
}

/* ---- collections ---- */

static int collection_tag_ok(builder *b, const mm_ynode *n, const char *tag, const char *own)
{
    if (!tag || strcmp(tag, "!") == 0 || strcmp(tag, own) == 0)
        return 0;
    return bad_tag(b, n, tag);
}

static void push_pair(mm_ynode *m, size_t *cap, const mm_ynode *key, const mm_ynode *value)
{
    m->pairs = grow(m->pairs, cap, m->npairs + 1, sizeof *m->pairs);
    m->pairs[m->npairs++] = (mm_ypair){key, value};
}

static mm_ypair *find_pair(mm_ypair *pairs, size_t n, const char *key)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(pairs[i].key->text, key) == 0)
            return &pairs[i];
    return NULL;
}

static void merge_from(mm_ynode *m, size_t *cap, const mm_ynode *src)
{
    for (size_t i = 0; i < src->npairs; i++)
        if (!find_pair(m->pairs, m->npairs, src->pairs[i].key->text))
            push_pair(m, cap, src->pairs[i].key, src->pairs[i].value);
}

static int is_merge_key(const mm_ynode *key)
{
    return !key->quoted && strcmp(key->text, "<<") == 0;
}

/* Applies the merge keys `<<` and makes keys unique. PyYAML's precedence: explicit keys win over
 * merged ones, a later `<<` over an earlier one, and within `<<: [a, b]` the earlier mapping wins. */
static int finish_map(builder *b, mm_ynode *m)
{
    mm_ypair *in = m->pairs;
    size_t n = m->npairs, cap = 0;
    m->pairs = NULL;
    m->npairs = 0;
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        if (is_merge_key(in[i].key))
            continue;
        mm_ypair *dup = find_pair(m->pairs, m->npairs, in[i].key->text);
        if (!dup) {
            push_pair(m, &cap, in[i].key, in[i].value);
            continue;
        }
        mm_log_warn("%s:%d:%d: key '%s' appears more than once in this mapping; the last value is used "
                    "(remove the other ones)",
                    b->file, in[i].key->line, in[i].key->col, in[i].key->text);
        *dup = in[i];
    }
    for (size_t i = n; i-- > 0 && rc == 0;) {
        if (!is_merge_key(in[i].key))
            continue;
        const mm_ynode *v = in[i].value;
        if (v->kind == MM_YN_MAP) {
            merge_from(m, &cap, v);
            continue;
        }
        for (size_t j = 0; v->kind == MM_YN_SEQ && j < v->nitems && rc == 0; j++)
            if (v->items[j]->kind == MM_YN_MAP)
                merge_from(m, &cap, v->items[j]);
            else
                rc = fail_at(b, v->items[j], "the merge key '<<' takes mappings only",
                             "list aliases of mappings, e.g. <<: [*a, *b]");
        if (v->kind == MM_YN_SCALAR)
            rc = fail_at(b, v, "the merge key '<<' needs a mapping or a list of mappings",
                         "write <<: *anchor where &anchor names a mapping");
    }
    free(in);
    return rc;
}

static int add_child(builder *b, const mm_ynode *child)
{
    if (b->depth == 0) {
        b->doc->root = child;
        return 0;
    }
    frame *f = &b->stack[b->depth - 1];
    mm_ynode *p = f->node;
    if (p->kind == MM_YN_SEQ) {
        p->items = grow(p->items, &f->cap, p->nitems + 1, sizeof *p->items);
        p->items[p->nitems++] = child;
    } else if (!f->key) {
        if (child->kind != MM_YN_SCALAR)
            return fail_at(b, child, "a mapping key must be text, not a list or a mapping",
                           "write 'key: value' with a plain name as the key");
        f->key = child;
    } else {
        push_pair(p, &f->cap, f->key, child);
        f->key = NULL;
    }
    p->weight += child->weight;
    if (p->weight > MAX_WEIGHT)
        return fail_at(b, p, "this document expands to too many nodes through aliases",
                       "use fewer nested aliases");
    return 0;
}

static void add_anchor(builder *b, const char *name, const mm_ynode *n)
{
    if (!name)
        return;
    b->anchors = grow(b->anchors, &b->acap, b->nanchors + 1, sizeof *b->anchors);
    b->anchors[b->nanchors++] = (anchor){mm_xstrdup(name), n};
}

static const mm_ynode *find_anchor(const builder *b, const char *name)
{
    for (size_t i = b->nanchors; i-- > 0;) /* a redefined anchor means its latest definition */
        if (strcmp(b->anchors[i].name, name) == 0)
            return b->anchors[i].node;
    return NULL;
}

static int open_collection(builder *b, const yaml_event_t *ev)
{
    int is_map = ev->type == YAML_MAPPING_START_EVENT;
    mm_ynode *n = new_node(b, is_map ? MM_YN_MAP : MM_YN_SEQ, ev->start_mark);
    const char *tag = (const char *)(is_map ? ev->data.mapping_start.tag : ev->data.sequence_start.tag);
    const char *anc = (const char *)(is_map ? ev->data.mapping_start.anchor : ev->data.sequence_start.anchor);
    int rc = collection_tag_ok(b, n, tag, is_map ? YAML_TAG("map") : YAML_TAG("seq"));
    if (rc < 0)
        return rc;
    if (b->depth >= MAX_DEPTH) {
        char what[128];
        snprintf(what, sizeof what, "lists and mappings nested more than %d levels deep", MAX_DEPTH);
        return fail_at(b, n, what, "a merge config needs only a few levels; check the brackets and indentation");
    }
    b->stack = grow(b->stack, &b->scap, b->depth + 1, sizeof *b->stack);
    b->stack[b->depth++] = (frame){n, NULL, anc ? mm_xstrdup(anc) : NULL, 0};
    return 0;
}

static int close_collection(builder *b)
{
    frame f = b->stack[--b->depth];
    int rc = f.node->kind == MM_YN_MAP ? finish_map(b, f.node) : 0;
    /* Registered only once complete, so a recursive alias is reported as undefined. */
    if (rc == 0)
        add_anchor(b, f.anchor, f.node);
    free(f.anchor);
    return rc < 0 ? rc : add_child(b, f.node);
}

static int on_alias(builder *b, const yaml_event_t *ev)
{
    const char *name = (const char *)ev->data.alias.anchor;
    const mm_ynode *target = find_anchor(b, name);
    if (target)
        return add_child(b, target);
    return mm_err_set(b->err, -EINVAL, "%s:%zu:%zu: alias '*%s' refers to no complete anchor '&%s' defined before it "
                      "(define the anchor earlier; an alias cannot refer to its own enclosing node)",
                      b->file, ev->start_mark.line + 1, ev->start_mark.column + 1, name, name);
}

static int on_event(builder *b, const yaml_event_t *ev)
{
    switch (ev->type) {
    case YAML_DOCUMENT_START_EVENT:
        if (++b->ndocs > 1)
            return mm_err_set(b->err, -EINVAL,
                              "%s:%zu:%zu: a second YAML document starts here: several documents make a mergekit-multi "
                              "recipe, which is not supported yet (a config is one merge: put each stage in a "
                              "file of its own and mount them one after the other)",
                              b->file, ev->start_mark.line + 1, ev->start_mark.column + 1);
        return 0;
    case YAML_ALIAS_EVENT:
        return on_alias(b, ev);
    case YAML_SCALAR_EVENT: {
        mm_ynode *n = new_node(b, MM_YN_SCALAR, ev->start_mark);
        int rc = scalar_node(b, ev, n);
        if (rc < 0)
            return rc;
        add_anchor(b, (const char *)ev->data.scalar.anchor, n);
        return add_child(b, n);
    }
    case YAML_SEQUENCE_START_EVENT:
    case YAML_MAPPING_START_EVENT:
        return open_collection(b, ev);
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT:
        return close_collection(b);
    default:
        return 0;
    }
}

/* Whether the line `line` (0-based) is indented with a tab: libyaml's message for that is the
 * cryptic "found character that cannot start any token". */
static int line_has_tab_indent(const char *text, size_t len, size_t line)
{
    size_t i = 0;
    for (size_t l = 0; l < line && i < len; i++)
        if (text[i] == '\n')
            l++;
    for (; i < len && (text[i] == ' ' || text[i] == '\t'); i++)
        if (text[i] == '\t')
            return 1;
    return 0;
}

static int syntax_error(builder *b, const yaml_parser_t *p)
{
    size_t line = p->problem_mark.line, col = p->problem_mark.column;
    char hint[512];
    if (p->error == YAML_READER_ERROR) {
        line = col = 0;
        for (size_t i = 0; i < p->problem_offset && i < b->len; i++, col++)
            if (b->text[i] == '\n')
                line++, col = (size_t)-1;
        snprintf(hint, sizeof hint, "the file must be UTF-8 text without control characters");
    } else if (line_has_tab_indent(b->text, b->len, line)) {
        snprintf(hint, sizeof hint, "indent with spaces: YAML does not allow tabs for indentation");
    } else if (p->context) {
        snprintf(hint, sizeof hint, "%s at line %zu, column %zu; check the indentation and quoting", p->context,
                 p->context_mark.line + 1, p->context_mark.column + 1);
    } else {
        snprintf(hint, sizeof hint, "check the indentation and quoting");
    }
    return mm_err_set(b->err, -EINVAL, "%s:%zu:%zu: YAML syntax error: %s (%s)", b->file, line + 1, col + 1,
                      p->problem ? p->problem : "unknown problem", hint);
}

static int run_parser(builder *b)
{
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser))
        return mm_err_set(b->err, -ENOMEM, "%s: cannot initialise the YAML parser", b->file);
    yaml_parser_set_input_string(&parser, (const unsigned char *)b->text, b->len);
    int rc = 0, done = 0;
    while (!done && rc == 0) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&parser, &ev)) {
            rc = syntax_error(b, &parser);
            break;
        }
        rc = on_event(b, &ev);
        done = ev.type == YAML_STREAM_END_EVENT;
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&parser);
    return rc;
}

static void builder_free(builder *b)
{
    for (size_t i = 0; i < b->depth; i++)
        free(b->stack[i].anchor);
    free(b->stack);
    for (size_t i = 0; i < b->nanchors; i++)
        free(b->anchors[i].name);
    free(b->anchors);
    for (size_t i = 0; i < b->nre; i++)
        regfree(&b->re[i]);
}

int mm_yaml_parse(const char *file, const char *text, size_t len, mm_ydoc **doc, mm_err *err)
{
    builder b = {.file = file, .text = text, .len = len, .err = err};
    b.doc = mm_xcalloc(1, sizeof *b.doc);
    int rc = 0;
    for (; b.nre < RE_COUNT && rc == 0; b.nre++)
        if (regcomp(&b.re[b.nre], resolver_patterns[b.nre], REG_EXTENDED | REG_NOSUB) != 0)
            rc = mm_err_set(err, -ENOMEM, "%s: cannot compile the YAML scalar patterns", file);
    if (rc == 0)
        rc = run_parser(&b);
    builder_free(&b);
    if (rc < 0) {
        mm_ydoc_free(b.doc);
        return rc;
    }
    *doc = b.doc;
    return 0;
}

const mm_ynode *mm_ydoc_root(const mm_ydoc *doc)
{
    return doc->root;
}

void mm_ydoc_free(mm_ydoc *doc)
{
    if (!doc)
        return;
    for (size_t i = 0; i < doc->nnodes; i++) {
        free(doc->nodes[i]->text);
        free(doc->nodes[i]->items);
        free(doc->nodes[i]->pairs);
        free(doc->nodes[i]);
    }
    free(doc->nodes);
    free(doc);
}

const mm_ynode *mm_ymap_get(const mm_ynode *map, const char *key, const mm_ynode **keynode)
{
    if (!map || map->kind != MM_YN_MAP)
        return NULL;
    for (size_t i = 0; i < map->npairs; i++)
        if (strcmp(map->pairs[i].key->text, key) == 0) {
            if (keynode)
                *keynode = map->pairs[i].key;
            return map->pairs[i].value;
        }
    return NULL;
}

int mm_ynode_is_null(const mm_ynode *n)
{
    return n->kind == MM_YN_SCALAR && n->type == MM_YS_NULL;
}

int mm_ynode_is_str(const mm_ynode *n)
{
    return n->kind == MM_YN_SCALAR && n->type == MM_YS_STR;
}

const char *mm_ynode_describe(const mm_ynode *n)
{
    if (n->kind == MM_YN_MAP)
        return "a mapping";
    if (n->kind == MM_YN_SEQ)
        return "a list";
    switch (n->type) {
    case MM_YS_NULL:
        return "nothing (null)";
    case MM_YS_BOOL:
        return "a boolean";
    case MM_YS_INT:
    case MM_YS_FLOAT:
        return "a number";
    default:
        return n->text[0] ? "text" : "empty text";
    }
}
