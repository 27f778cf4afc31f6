/* Text to ids (formats/tokencode.h): the pipeline read from the folder's files, the added tokens split
 * out, the normalizer, then formats/tokpretok.c's pre-tokenizers and formats/tokmodel.c's models.
 * The steps follow the `tokenizers` library 0.22 (tokenizer/mod.rs encode_single_sequence,
 * tokenizer/added_vocabulary.rs extract_and_normalize / find_matches, normalizers/, pre_tokenizers/)
 * and transformers 5's construction of the pipeline (tokenization_utils_tokenizers.py,
 * convert_slow_tokenizer.py). */
#include "tokenc.h"

#include "unicat.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

void mm_idvec_push(mm_idvec *iv, int32_t id)
{
    if (iv->n == iv->cap) {
        iv->cap = iv->cap ? 2 * iv->cap : 64;
        iv->v = mm_xrealloc(iv->v, iv->cap * sizeof *iv->v);
    }
    iv->v[iv->n++] = id;
}

void mm_spans_push(mm_spans *sp, size_t off, size_t len)
{
    if (sp->n == sp->cap) {
        sp->cap = sp->cap ? 2 * sp->cap : 16;
        sp->v = mm_xrealloc(sp->v, sp->cap * sizeof *sp->v);
    }
    sp->v[sp->n++] = (mm_span){off, len};
}

/* ---- reading the pipeline ------------------------------------------------------------------------- */

/* A member that must be absent, null or a bool: its value (def when absent or null). */
static int get_bool(const cJSON *o, const char *key, int def, const char *where, int *out, mm_err *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) {
        *out = def;
        return 0;
    }
    if (!cJSON_IsBool(v))
        return mm_err_set(err, -EINVAL, "%s.%s: must be true or false", where, key);
    *out = cJSON_IsTrue(v);
    return 0;
}

static const char *type_of(const cJSON *o)
{
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "type");
    return cJSON_IsString(t) ? t->valuestring : NULL;
}

static int unsupported(const char *path, const char *key, const char *value, mm_err *err)
{
    return mm_err_set(err, -ENOTSUP, "%s: %s: \"%s\" is not supported by the encoder", path, key,
                      value ? value : "(no type)");
}

/* A "Sequence" step: each entry of its list `member` read by fn, with its place in messages. */
typedef int (*step_fn)(mm_tok_encoder *e, const cJSON *n, const char *path, const char *key, mm_err *err);

static int read_sequence(mm_tok_encoder *e, const cJSON *n, const char *member, step_fn fn, const char *path,
                         const char *key, mm_err *err)
{
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(n, member), *s;
    if (!cJSON_IsArray(list))
        return mm_err_set(err, -EINVAL, "%s: %s.%s: must be a list", path, key, member);
    int i = 0, rc;
    cJSON_ArrayForEach(s, list)
    {
        char sub[128];
        snprintf(sub, sizeof sub, "%s.%s[%d]", key, member, i++);
        if ((rc = fn(e, s, path, sub, err)) < 0)
            return rc;
    }
    return 0;
}

static int read_normalizer(mm_tok_encoder *e, const cJSON *n, const char *path, const char *key, mm_err *err)
{
    if (!n || cJSON_IsNull(n))
        return 0;
    const char *type = type_of(n);
    char k[128];
    snprintf(k, sizeof k, "%s.type", key);
    if (type && strcmp(type, "NFC") == 0) {
        e->nfc = 1;
        return 0;
    }
    if (type && strcmp(type, "Sequence") == 0) {
        return read_sequence(e, n, "normalizers", read_normalizer, path, key, err);
    }
    return unsupported(path, k, type, err);
}

/* The Split patterns known, as tokenizer.json writes them. */
static const struct {
    const char *regex;
    mm_tok_pattern pattern;
} known_patterns[] = {
    {"'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+", MM_PAT_GPT2},
    {"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
     "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
     MM_PAT_LLAMA3},
    {"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
     "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
     MM_PAT_QWEN2},
};

static int add_step(mm_tok_encoder *e, mm_tok_prestep st, const char *path, const char *key, mm_err *err)
{
    if (e->nsteps == MM_TOK_MAX_STEPS)
        return mm_err_set(err, -ENOTSUP, "%s: %s: more than %d pre-tokenizer steps", path, key, MM_TOK_MAX_STEPS);
    e->steps[e->nsteps++] = st;
    return 0;
}

static int read_split(mm_tok_encoder *e, const cJSON *p, const char *path, const char *key, mm_err *err)
{
    const cJSON *pat = cJSON_GetObjectItemCaseSensitive(p, "pattern");
    const cJSON *re = pat ? cJSON_GetObjectItemCaseSensitive(pat, "Regex") : NULL;
    const cJSON *beh = cJSON_GetObjectItemCaseSensitive(p, "behavior");
    int invert, rc;
    if ((rc = get_bool(p, "invert", 0, key, &invert, err)) < 0)
        return rc;
    if (!cJSON_IsString(beh) || strcmp(beh->valuestring, "Isolated") != 0 || invert)
        return mm_err_set(err, -ENOTSUP, "%s: %s: only behavior \"Isolated\" without invert is supported", path, key);
    if (!cJSON_IsString(re))
        return mm_err_set(err, -ENOTSUP, "%s: %s.pattern: only a {\"Regex\": ...} pattern is supported", path, key);
    for (size_t i = 0; i < MM_COUNT(known_patterns); i++)
        if (strcmp(re->valuestring, known_patterns[i].regex) == 0)
            return add_step(e, (mm_tok_prestep){.kind = MM_PRE_SPLIT, .pattern = known_patterns[i].pattern}, path,
                            key, err);
    char q[200];
    return mm_err_set(err, -ENOTSUP,
                      "%s: %s.pattern.Regex: %s is not a pattern the encoder knows (those of GPT-2, Llama 3 and Qwen 2)",
                      path, key, mm_quote(q, sizeof q, re->valuestring, strlen(re->valuestring)));
}

static int read_metaspace(mm_tok_encoder *e, const cJSON *p, const char *path, const char *key, mm_err *err)
{
    mm_tok_prestep st = {.kind = MM_PRE_METASPACE, .prepend = 1, .split = 1};
    const cJSON *rep = cJSON_GetObjectItemCaseSensitive(p, "replacement");
    const cJSON *scheme = cJSON_GetObjectItemCaseSensitive(p, "prepend_scheme");
    int rc, aps;
    uint32_t cp;
    if (!cJSON_IsString(rep) || !*rep->valuestring || mm_utf8_next(rep->valuestring, &cp) != strlen(rep->valuestring))
        return mm_err_set(err, -EINVAL, "%s: %s.replacement: must be one character", path, key);
    strcpy(st.replacement, rep->valuestring);
    if ((rc = get_bool(p, "split", 1, key, &st.split, err)) < 0 || (rc = get_bool(p, "add_prefix_space", 1, key, &aps, err)) < 0)
        return rc;
    if (cJSON_IsString(scheme)) {
        static const char *const names[] = {"never", "always", "first"};
        size_t i;
        for (i = 0; i < 3 && strcmp(scheme->valuestring, names[i]) != 0; i++)
            ;
        if (i == 3)
            return unsupported(path, "prepend_scheme", scheme->valuestring, err);
        st.prepend = (int)i;
    } else { /* files written before prepend_scheme: add_prefix_space (default true) */
        st.prepend = aps;
    }
    return add_step(e, st, path, key, err);
}

static int read_pretokenizer(mm_tok_encoder *e, const cJSON *p, const char *path, const char *key, mm_err *err)
{
    if (!p || cJSON_IsNull(p))
        return 0;
    const char *type = type_of(p);
    char k[128];
    snprintf(k, sizeof k, "%s.type", key);
    int rc;
    if (!type)
        return unsupported(path, k, NULL, err);
    if (strcmp(type, "Sequence") == 0) {
        return read_sequence(e, p, "pretokenizers", read_pretokenizer, path, key, err);
    }
    if (strcmp(type, "ByteLevel") == 0) {
        mm_tok_prestep st = {.kind = MM_PRE_BYTELEVEL};
        if ((rc = get_bool(p, "add_prefix_space", 1, key, &st.add_prefix_space, err)) < 0 ||
            (rc = get_bool(p, "use_regex", 1, key, &st.use_regex, err)) < 0)
            return rc;
        return add_step(e, st, path, key, err);
    }
    if (strcmp(type, "Split") == 0)
        return read_split(e, p, path, key, err);
    if (strcmp(type, "Whitespace") == 0)
        return add_step(e, (mm_tok_prestep){.kind = MM_PRE_SPLIT, .pattern = MM_PAT_WHITESPACE}, path, key, err);
    if (strcmp(type, "Metaspace") == 0)
        return read_metaspace(e, p, path, key, err);
    return unsupported(path, k, type, err);
}

static void find_byte_tokens(mm_tok_encoder *e)
{
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        int id = mm_tokenizer_id(e->t, name, 6);
        e->byte_id[b] = id >= 0 && e->in_model[id] ? id : -1;
    }
}

/* unk_token's id among the model's tokens: -1 when there is none, -2 when it is not in the vocabulary
 * (an error only once a text needs it, as in the library). */
static int32_t unk_of(const mm_tok_encoder *e, const char *unk)
{
    if (!unk)
        return -1;
    int id = mm_tokenizer_id(e->t, unk, strlen(unk));
    return id >= 0 && e->in_model[id] ? id : -2;
}

static int read_bpe(mm_tok_encoder *e, const cJSON *model, const char *path, mm_err *err)
{
    const char *k = "model";
    const cJSON *v;
    int rc;
    v = cJSON_GetObjectItemCaseSensitive(model, "dropout");
    if (v && !cJSON_IsNull(v) && !(cJSON_IsNumber(v) && v->valuedouble == 0))
        return mm_err_set(err, -ENOTSUP, "%s: model.dropout: BPE dropout (random merges) is not supported", path);
    static const char *const affixes[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (size_t i = 0; i < 2; i++) {
        v = cJSON_GetObjectItemCaseSensitive(model, affixes[i]);
        if (v && !cJSON_IsNull(v) && !(cJSON_IsString(v) && !*v->valuestring))
            return mm_err_set(err, -ENOTSUP, "%s: model.%s: is not supported by the encoder", path, affixes[i]);
    }
    if ((rc = get_bool(model, "fuse_unk", 0, k, &e->fuse_unk, err)) < 0 ||
        (rc = get_bool(model, "byte_fallback", 0, k, &e->byte_fallback, err)) < 0 ||
        (rc = get_bool(model, "ignore_merges", 0, k, &e->ignore_merges, err)) < 0)
        return rc;
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab"), *t;
    cJSON_ArrayForEach(t, vocab)
    {
        int id = mm_tokenizer_id(e->t, t->string, strlen(t->string));
        if (id >= 0)
            e->in_model[id] = 1;
    }
    v = cJSON_GetObjectItemCaseSensitive(model, "unk_token");
    if (v && !cJSON_IsNull(v) && !cJSON_IsString(v))
        return mm_err_set(err, -EINVAL, "%s: model.unk_token: must be a string or null", path);
    e->unk_id = unk_of(e, cJSON_IsString(v) ? v->valuestring : NULL);
    find_byte_tokens(e);
    char where[512];
    snprintf(where, sizeof where, "%s: model.merges", path);
    return mm_tokm_bpe_init(e, cJSON_GetObjectItemCaseSensitive(model, "merges"), where, err);
}

static int read_fast(mm_tok_encoder *e, mm_err *err)
{
    const cJSON *root = e->t->tokenizer_json;
    const char *path = "tokenizer.json";
    if (!root)
        return mm_err_set(err, -EINVAL, "tokenizer.json: its parsed tree was released; the encoder needs it");
    int rc;
    if ((rc = read_normalizer(e, cJSON_GetObjectItemCaseSensitive(root, "normalizer"), path, "normalizer", err)) < 0 ||
        (rc = read_pretokenizer(e, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"), path, "pre_tokenizer",
                                err)) < 0)
        return rc;
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const char *type = type_of(model);
    if (!type || strcmp(type, "BPE") != 0)
        return unsupported(path, "model.type", type, err);
    return read_bpe(e, model, path, err);
}

/* SpmConverter.build_tokenizer_from_spm_proto (tokenizers backend of a bare tokenizer.model). */
static int read_spm(mm_tok_encoder *e, mm_err *err)
{
    const mm_spm_model *m = e->t->spm;
    const cJSON *cls = e->t->tokenizer_config
                           ? cJSON_GetObjectItemCaseSensitive(e->t->tokenizer_config, "tokenizer_class")
                           : NULL;
    if (cJSON_IsString(cls) && strcmp(cls->valuestring, "PreTrainedTokenizerFast") != 0 &&
        strcmp(cls->valuestring, "TokenizersBackend") != 0)
        return mm_err_set(err, -ENOTSUP,
                          "tokenizer_config.json: tokenizer_class: \"%s\" builds its own pipeline from tokenizer.model; "
                          "the encoder knows only the generic one (PreTrainedTokenizerFast)",
                          cls->valuestring);
    if (m->precompiled_charsmap_len)
        return mm_err_set(err, -ENOTSUP,
                          "tokenizer.model: normalizer_spec: the precompiled_charsmap of normalization rule \"%s\" is "
                          "not supported by the encoder (only identity)",
                          m->normalizer_name);
    e->space_to_meta = 1;
    for (size_t i = 0; i < m->npieces; i++)
        e->in_model[i] = 1;
    e->byte_fallback = m->byte_fallback;
    find_byte_tokens(e);
    if (m->model_type == MM_SPM_UNIGRAM) {
        e->unigram = 1;
        e->unk_id = m->unk_id;
        mm_tokm_unigram_init(e);
        return 0;
    }
    e->fuse_unk = 1;
    e->unk_id = unk_of(e, m->unk_piece);
    return mm_tokm_bpe_init_spm(e, err);
}

static int by_first_byte_then_longest(const void *pa, const void *pb)
{
    const mm_tok_added *a = *(const mm_tok_added *const *)pa, *b = *(const mm_tok_added *const *)pb;
    unsigned char fa = (unsigned char)a->content[0], fb = (unsigned char)b->content[0];
    if (fa != fb)
        return fa < fb ? -1 : 1;
    if (a->len != b->len)
        return a->len > b->len ? -1 : 1;
    return a->id < b->id ? -1 : a->id > b->id;
}

/* The added tokens with `normalized` as given (empty ones never match), grouped by first byte, longest
 * first: a position is compared only with the tokens that can start there (Gemma has thousands). */
static void addlist_build(mm_tok_addlist *l, const mm_tokenizer *t, int normalized)
{
    l->v = mm_xcalloc(t->nadded + 1, sizeof *l->v);
    l->n = 0;
    for (size_t i = 0; i < t->nadded; i++)
        if (t->added[i].len && (int)t->added[i].normalized == normalized)
            l->v[l->n++] = &t->added[i];
    qsort(l->v, l->n, sizeof *l->v, by_first_byte_then_longest);
    size_t k = 0;
    for (unsigned b = 0; b < 256; b++) {
        l->first[b] = k;
        while (k < l->n && (unsigned char)l->v[k]->content[0] == b)
            k++;
    }
    l->first[256] = k;
}

int mm_tok_encoder_new(const mm_tokenizer *t, mm_tok_encoder **out, mm_err *err)
{
    mm_tok_encoder *e = mm_xcalloc(1, sizeof *e);
    e->t = t;
    e->in_model = mm_xcalloc(t->id_end ? t->id_end : 1, 1);
    addlist_build(&e->added_raw, t, 0);
    addlist_build(&e->added_norm, t, 1);
    int rc = t->kind == MM_TOK_SPM ? read_spm(e, err) : read_fast(e, err);
    if (rc < 0) {
        mm_tok_encoder_free(e);
        return rc;
    }
    *out = e;
    return 0;
}

void mm_tok_encoder_free(mm_tok_encoder *e)
{
    if (!e)
        return;
    mm_tokm_free(e);
    free(e->in_model);
    free(e->added_raw.v);
    free(e->added_norm.v);
    free(e);
}

/* ---- encoding ------------------------------------------------------------------------------------- */

/* ends_with_word / starts_with_word of added_vocabulary.rs: char::is_alphanumeric or '_' */
static int word_char(uint32_t cp)
{
    return cp == '_' || (mm_unicat(cp) & (MM_UNI_L | MM_UNI_N)) != 0;
}

/* The start of the character that ends at `end` (s[..end) is UTF-8). */
static size_t char_before(const char *s, size_t end)
{
    size_t p = end - 1;
    while (p > 0 && ((unsigned char)s[p] & 0xc0) == 0x80)
        p--;
    return p;
}

/* The next added token in s[from..len) (find_matches): at the leftmost position where one starts, the
 * longest; a single_word match touching a word character is passed over (the search goes on after
 * it, as the automaton's iteration does); lstrip / rstrip widen it over whitespace, not before `floor`.
 * 1 with [*ms, *me) and *id, or 0. */
static int next_added(const mm_tok_addlist *l, const char *s, size_t len, size_t from, size_t floor, size_t *ms,
                      size_t *me, int32_t *id)
{
    uint32_t cp;
    for (size_t p = from; p < len;) {
        const mm_tok_added *best = NULL;
        unsigned char b = (unsigned char)s[p];
        for (size_t k = l->first[b]; k < l->first[b + 1] && !best; k++) /* longest first */
            if (l->v[k]->len <= len - p && memcmp(s + p, l->v[k]->content, l->v[k]->len) == 0)
                best = l->v[k];
        if (!best) {
            p += mm_utf8_next(s + p, &cp);
            continue;
        }
        size_t start = p, stop = p + best->len;
        if (best->single_word) {
            int before = start > 0 && (mm_utf8_next(s + char_before(s, start), &cp), word_char(cp));
            int after = stop < len && (mm_utf8_next(s + stop, &cp), word_char(cp));
            if (before || after) {
                p = stop;
                continue;
            }
        }
        if (best->lstrip)
            while (start > floor) {
                size_t q = char_before(s, start);
                mm_utf8_next(s + q, &cp);
                if (!mm_uni_space(cp))
                    break;
                start = q;
            }
        if (best->rstrip)
            while (stop < len) {
                size_t l = mm_utf8_next(s + stop, &cp);
                if (!mm_uni_space(cp))
                    break;
                stop += l;
            }
        *ms = start, *me = stop, *id = best->id;
        return 1;
    }
    return 0;
}

/* The normalizer on one piece of text into out; -ENOTSUP when NFC would change it. */
static int normalize(const mm_tok_encoder *e, const char *s, size_t len, size_t off, mm_buf *out, mm_err *err)
{
    out->len = 0;
    mm_buf_append(out, "", 0);
    uint32_t cp;
    for (size_t i = 0, n; i < len; i += n) {
        n = mm_utf8_next(s + i, &cp);
        /* below U+0300 (the first combining mark) NFC changes nothing: no table lookup there */
        if (e->nfc && cp >= 0x300 && (mm_unicat(cp) & MM_UNI_NFC_UNSAFE))
            return mm_err_set(err, -ENOTSUP,
                              "text byte %zu: U+%04X may change under NFC, which the encoder does not implement", off + i,
                              (unsigned)cp);
        if (e->space_to_meta && cp == ' ')
            mm_buf_append(out, "\xe2\x96\x81", 3); /* U+2581 ▁ */
        else
            mm_buf_append(out, s + i, n);
    }
    return 0;
}

/* Pre-tokenizer and model over one normalized piece. */
static int encode_piece(const mm_tok_encoder *e, const char *s, size_t len, int first, mm_idvec *out, mm_err *err)
{
    if (!len)
        return 0;
    mm_buf words = {0};
    mm_spans sp = {0};
    mm_tokpre_run(e, s, len, first, &words, &sp);
    int rc = 0;
    for (size_t k = 0; k < sp.n && rc == 0; k++)
        rc = mm_tokm_encode(e, words.data + sp.v[k].off, sp.v[k].len, out, err);
    mm_buf_free(&words);
    free(sp.v);
    return rc;
}

/* A piece of raw text between non-normalized added tokens: normalized, split at the normalized added
 * tokens, the rest encoded. */
static int encode_text(const mm_tok_encoder *e, const char *s, size_t len, size_t off, mm_idvec *out, mm_err *err)
{
    mm_buf norm = {0};
    int rc = normalize(e, s, len, off, &norm, err);
    size_t pos = 0, ms, me;
    int32_t id;
    while (rc == 0 && next_added(&e->added_norm, norm.data, norm.len, pos, pos, &ms, &me, &id)) {
        rc = encode_piece(e, norm.data + pos, ms - pos, off == 0 && pos == 0, out, err);
        if (rc == 0)
            mm_idvec_push(out, id);
        pos = me;
    }
    if (rc == 0)
        rc = encode_piece(e, norm.data + pos, norm.len - pos, off == 0 && pos == 0, out, err);
    mm_buf_free(&norm);
    return rc;
}

int mm_tok_encoder_encode(const mm_tok_encoder *e, const char *text, size_t len, int32_t **ids, size_t *n,
                          mm_err *err)
{
    size_t valid = mm_utf8_valid_len(text, len);
    if (valid < len)
        return mm_err_set(err, -EINVAL, "text byte %zu: not UTF-8", valid);
    mm_idvec out = {0};
    size_t pos = 0, ms, me;
    int32_t id;
    int rc = 0;
    while (rc == 0 && next_added(&e->added_raw, text, len, pos, pos, &ms, &me, &id)) {
        rc = encode_text(e, text + pos, ms - pos, pos, &out, err);
        if (rc == 0)
            mm_idvec_push(&out, id);
        pos = me;
    }
    if (rc == 0)
        rc = encode_text(e, text + pos, len - pos, pos, &out, err);
    if (rc < 0) {
        free(out.v);
        return rc;
    }
    *ids = out.v ? out.v : mm_xmalloc(sizeof(int32_t));
    *n = out.n;
    return 0;
}

mm_tok_pipeline mm_tok_encoder_pipeline(const mm_tok_encoder *e)
{
    if (e->space_to_meta || e->unigram)
        return MM_TOK_PIPE_OTHER;
    const mm_tok_prestep *s = e->steps;
    if (e->nsteps == 1 && !e->nfc && s[0].kind == MM_PRE_BYTELEVEL && s[0].use_regex && !s[0].add_prefix_space)
        return MM_TOK_PIPE_GPT2;
    if (e->nsteps != 2 || s[0].kind != MM_PRE_SPLIT || s[1].kind != MM_PRE_BYTELEVEL || s[1].use_regex ||
        s[1].add_prefix_space)
        return MM_TOK_PIPE_OTHER;
    if (s[0].pattern == MM_PAT_LLAMA3 && !e->nfc)
        return MM_TOK_PIPE_LLAMA3;
    if (s[0].pattern == MM_PAT_QWEN2 && e->nfc)
        return MM_TOK_PIPE_QWEN2;
    return MM_TOK_PIPE_OTHER;
}

int mm_tokenizer_encode(const mm_tokenizer *t, const char *text, size_t len, int32_t **ids, size_t *n, mm_err *err)
{
    mm_tok_encoder *e;
    int rc = mm_tok_encoder_new(t, &e, err);
    if (rc < 0)
        return rc;
    rc = mm_tok_encoder_encode(e, text, len, ids, n, err);
    mm_tok_encoder_free(e);
    return rc;
}
