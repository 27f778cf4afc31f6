#include "tokvocab.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Token text lives in large blocks that never move, so tokens[] and added[] can point into them and
 * a vocabulary of 256000 tokens costs a few allocations, not 256000. */
typedef struct mm_tok_arena {
    struct mm_tok_arena *next;
    size_t used, cap;
    char data[];
} mm_tok_arena;

static char *arena_copy(mm_tokenizer *t, const char *s, size_t len)
{
    mm_tok_arena *a = t->arena;
    if (!a || a->cap - a->used < len + 1) {
        size_t cap = len + 1 > (1u << 20) ? len + 1 : (1u << 20);
        a = mm_xmalloc(sizeof *a + cap);
        a->next = t->arena;
        a->used = 0;
        a->cap = cap;
        t->arena = a;
    }
    char *p = a->data + a->used;
    memcpy(p, s, len);
    p[len] = 0;
    a->used += len + 1;
    return p;
}

/* FNV-1a: tokens are short, and a vocabulary is read once. */
static uint64_t hash_bytes(const char *s, size_t len)
{
    uint64_t h = 14695981039346656037ull;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

/* The slot holding `token`, or the empty slot where it would go. */
static size_t find_slot(const mm_tokenizer *t, const char *token, size_t len)
{
    size_t mask = t->nslots - 1, i = (size_t)hash_bytes(token, len) & mask;
    for (;; i = (i + 1) & mask) {
        int32_t id = t->slots[i];
        if (id < 0 || (t->token_lens[id] == len && memcmp(t->tokens[id], token, len) == 0))
            return i;
    }
}

int mm_tokenizer_id(const mm_tokenizer *t, const char *token, size_t len)
{
    if (!t->nslots)
        return -1;
    return t->slots[find_slot(t, token, len)];
}

const char *mm_tokenizer_token(const mm_tokenizer *t, long id, size_t *len)
{
    if (id < 0 || (size_t)id >= t->id_end || !t->tokens[id])
        return NULL;
    if (len)
        *len = t->token_lens[id];
    return t->tokens[id];
}

const mm_tok_added *mm_tokenizer_added(const mm_tokenizer *t, long id)
{
    if (id < 0 || (size_t)id >= t->id_end || t->added_of[id] < 0)
        return NULL;
    return &t->added[t->added_of[id]];
}

/* Load at most 1/2, so probes stay short. */
static void hash_grow(mm_tokenizer *t, size_t entries)
{
    if (2 * (entries + 1) <= t->nslots)
        return;
    size_t n = t->nslots ? t->nslots : 1024;
    while (n < 2 * (entries + 1))
        n *= 2;
    free(t->slots);
    t->slots = mm_xmalloc(n * sizeof *t->slots);
    memset(t->slots, 0xff, n * sizeof *t->slots);
    t->nslots = n;
    for (size_t id = 0; id < t->id_end; id++)
        if (t->tokens[id])
            t->slots[find_slot(t, t->tokens[id], t->token_lens[id])] = (int32_t)id;
}

/* Makes ids [0, end) addressable. */
static void ids_reserve(mm_tokenizer *t, size_t end)
{
    if (end > t->ids_cap) {
        size_t cap = t->ids_cap ? t->ids_cap : 1024;
        while (cap < end)
            cap *= 2;
        t->tokens = mm_xrealloc(t->tokens, cap * sizeof *t->tokens);
        t->token_lens = mm_xrealloc(t->token_lens, cap * sizeof *t->token_lens);
        t->added_of = mm_xrealloc(t->added_of, cap * sizeof *t->added_of);
        for (size_t i = t->ids_cap; i < cap; i++) {
            t->tokens[i] = NULL;
            t->token_lens[i] = 0;
            t->added_of[i] = -1;
        }
        t->ids_cap = cap;
    }
    if (end > t->id_end)
        t->id_end = end;
}

void mm_tokv_begin(mm_tokenizer *t, size_t count)
{
    t->model_limit = count + MM_TOK_MAX_GAP;
    if (t->model_limit > INT32_MAX)
        t->model_limit = INT32_MAX;
    ids_reserve(t, 0);
    hash_grow(t, count);
}

int mm_tokv_model_add(mm_tokenizer *t, const char *token, size_t len, uint64_t id, const char *where, mm_err *err)
{
    char q[160], q2[160];
    if (id >= t->model_limit)
        return mm_err_set(err, -EINVAL,
                          "%s: %s has id %llu, beyond what a vocabulary of this size can span "
                          "(ids up to %zu)",
                          where, mm_quote(q, sizeof q, token, len), (unsigned long long)id, t->model_limit - 1);
    hash_grow(t, t->model_count + 1);
    size_t slot = find_slot(t, token, len);
    if (t->slots[slot] >= 0)
        return mm_err_set(err, -EINVAL, "%s: %s appears twice (ids %d and %llu)", where,
                          mm_quote(q, sizeof q, token, len), t->slots[slot], (unsigned long long)id);
    ids_reserve(t, (size_t)id + 1);
    if (t->tokens[id])
        return mm_err_set(err, -EINVAL, "%s: %s has id %llu, which %s has already", where,
                          mm_quote(q, sizeof q, token, len), (unsigned long long)id,
                          mm_quote(q2, sizeof q2, t->tokens[id], t->token_lens[id]));
    t->tokens[id] = arena_copy(t, token, len);
    t->token_lens[id] = len;
    t->slots[slot] = (int32_t)id;
    t->model_count++;
    return 0;
}

void mm_tokv_model_done(mm_tokenizer *t, size_t size)
{
    t->base_size = size;
}

static int same_flags(const mm_tok_added *a, const mm_tok_spec *s)
{
    return a->special == s->special && a->single_word == s->single_word && a->lstrip == s->lstrip &&
           a->rstrip == s->rstrip && a->normalized == s->normalized;
}

int mm_tokv_add_tokens(mm_tokenizer *t, const mm_tok_spec *toks, size_t n, long *ids, const char *where, mm_err *err)
{
    char q[160], q2[160];
    /* next_id, as AddedVocabulary::add_tokens computes it once per call: 1 + the largest added id
     * (added_end) if that id is at least the model's size (or the model is empty), else the size */
    size_t next;
    if (t->added_end == 0)
        next = t->base_size;
    else if (t->added_end - 1 >= t->base_size || t->base_size == 0)
        next = t->added_end;
    else
        next = t->base_size;
    for (size_t i = 0; i < n; i++) {
        const mm_tok_spec *s = &toks[i];
        if (ids)
            ids[i] = -1;
        if (s->len == 0)
            continue;
        hash_grow(t, t->model_count + t->nadded + 1);
        size_t slot = find_slot(t, s->content, s->len);
        int32_t id = t->slots[slot];
        if (id >= 0 && t->added_of[id] >= 0 && same_flags(&t->added[t->added_of[id]], s)) {
            if (ids)
                ids[i] = id;
            continue;
        }
        if (id < 0) {
            if (next >= INT32_MAX)
                return mm_err_set(err, -EINVAL, "%s: %s would get id %zu, beyond what this reader keeps", where,
                                  mm_quote(q, sizeof q, s->content, s->len), next);
            ids_reserve(t, next + 1);
            if (t->tokens[next])
                return mm_err_set(err, -EINVAL,
                                  "%s: added token %s would get id %zu, which the model's vocabulary gives "
                                  "to %s (its ids have a gap; the tokenizers library would map both to one id)",
                                  where, mm_quote(q, sizeof q, s->content, s->len), next,
                                  mm_quote(q2, sizeof q2, t->tokens[next], t->token_lens[next]));
            id = (int32_t)next++;
            t->tokens[id] = arena_copy(t, s->content, s->len);
            t->token_lens[id] = s->len;
            t->slots[slot] = id;
        }
        if (t->added_of[id] < 0) {
            if (t->nadded == t->added_cap) {
                t->added_cap = t->added_cap ? 2 * t->added_cap : 64;
                t->added = mm_xrealloc(t->added, t->added_cap * sizeof *t->added);
            }
            t->added_of[id] = (int32_t)t->nadded++;
            if ((size_t)id + 1 > t->added_end)
                t->added_end = (size_t)id + 1;
        }
        mm_tok_added *a = &t->added[t->added_of[id]];
        *a = (mm_tok_added){t->tokens[id],  t->token_lens[id], id,        s->special,
                            s->single_word, s->lstrip,         s->rstrip, s->normalized};
        if (ids)
            ids[i] = id;
    }
    return 0;
}

static int cmp_added(const void *a, const void *b)
{
    const mm_tok_added *x = a, *y = b;
    return (x->id > y->id) - (x->id < y->id);
}

void mm_tokv_finish(mm_tokenizer *t)
{
    if (t->nadded > 1)
        qsort(t->added, t->nadded, sizeof *t->added, cmp_added);
    for (size_t i = 0; i < t->nadded; i++)
        t->added_of[t->added[i].id] = (int32_t)i;
    t->n_ids = 0;
    for (size_t id = 0; id < t->id_end; id++)
        t->n_ids += t->tokens[id] != NULL;
}

void mm_tokv_free(mm_tokenizer *t)
{
    while (t->arena) {
        mm_tok_arena *next = t->arena->next;
        free(t->arena);
        t->arena = next;
    }
    free(t->tokens);
    free(t->token_lens);
    free(t->added_of);
    free(t->added);
    free(t->slots);
}

int mm_tokv_copy(const mm_tokenizer *src, mm_tokenizer **out, mm_err *err)
{
    mm_tokenizer *t = mm_xcalloc(1, sizeof *t);
    t->kind = src->kind;
    t->model_type = src->model_type ? mm_xstrdup(src->model_type) : NULL;
    ids_reserve(t, src->id_end);
    for (size_t id = 0; id < src->id_end; id++) {
        if (src->tokens[id])
            t->tokens[id] = arena_copy(t, src->tokens[id], src->token_lens[id]);
        t->token_lens[id] = src->token_lens[id];
        t->added_of[id] = src->added_of[id];
    }
    t->nadded = t->added_cap = src->nadded;
    t->added = mm_xmalloc((src->nadded ? src->nadded : 1) * sizeof *t->added);
    for (size_t i = 0; i < src->nadded; i++) {
        t->added[i] = src->added[i];
        t->added[i].content = t->tokens[src->added[i].id]; /* the copy's own storage */
    }
    /* the hash holds ids, which are the same: its table is valid as it is */
    t->nslots = src->nslots;
    t->slots = mm_xmalloc((src->nslots ? src->nslots : 1) * sizeof *t->slots);
    if (src->nslots)
        memcpy(t->slots, src->slots, src->nslots * sizeof *t->slots);
    t->n_ids = src->n_ids;
    t->base_size = src->base_size;
    t->nmerges = src->nmerges;
    t->model_count = src->model_count;
    t->model_limit = src->model_limit;
    t->added_end = src->added_end;
    t->chat_template = src->chat_template ? mm_xstrdup(src->chat_template) : NULL;
    t->bos_token = src->bos_token ? mm_xstrdup(src->bos_token) : NULL;
    t->eos_token = src->eos_token ? mm_xstrdup(src->eos_token) : NULL;
    t->tokenizer_json = src->tokenizer_json ? cJSON_Duplicate(src->tokenizer_json, 1) : NULL;
    t->tokenizer_config = src->tokenizer_config ? cJSON_Duplicate(src->tokenizer_config, 1) : NULL;
    if ((src->tokenizer_json && !t->tokenizer_json) || (src->tokenizer_config && !t->tokenizer_config)) {
        mm_tokenizer_free(t);
        return mm_err_set(err, -ENOMEM, "out of memory copying a tokenizer");
    }
    int rc = src->spm ? mm_spm_parse(src->spm->raw, src->spm->raw_len, &t->spm, err) : 0;
    if (rc < 0) {
        mm_tokenizer_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

cJSON *mm_tokv_added_state(const mm_tok_added *a, int with_id)
{
    cJSON *o = cJSON_CreateObject();
    if (with_id)
        cJSON_AddNumberToObject(o, "id", a->id);
    cJSON_AddStringToObject(o, "content", a->content);
    cJSON_AddBoolToObject(o, "single_word", a->single_word);
    cJSON_AddBoolToObject(o, "lstrip", a->lstrip);
    cJSON_AddBoolToObject(o, "rstrip", a->rstrip);
    cJSON_AddBoolToObject(o, "normalized", a->normalized);
    cJSON_AddBoolToObject(o, "special", a->special);
    return o;
}

cJSON *mm_tokv_added_json(const mm_tokenizer *t)
{
    cJSON *arr = cJSON_CreateArray();
    for (size_t i = 0; i < t->nadded; i++)
        cJSON_AddItemToArray(arr, mm_tokv_added_state(&t->added[i], 1));
    return arr;
}
