/* The tokenizer keys of the GGUF view (gguf_vocab.h): each family's set_vocab as llama.cpp's converter
 * has it, over the plan's served files.
 *
 * The converter's paths (conversion/base.py, llama.py, qwen.py, gemma.py, phi.py):
 *  - sentencepiece (_set_vocab_sentencepiece): tokenizer.model's pieces padded to config.json's
 *    vocab_size with "[PAD{i}]" (score -10000, UNUSED); a piece's type UNKNOWN, CONTROL, UNUSED or BYTE
 *    as sentencepiece says, any other NORMAL (user-defined pieces too); then added_tokens.json's entries
 *    (USER_DEFINED, score -1000) and tokenizer_config.json's added_tokens_decoder (CONTROL when special or
 *    when it looks special, else USER_DEFINED with U+2581 made a space; score -1000), ids beyond
 *    vocab_size skipped. Keys: model "llama", pre "default", tokens, scores, token types.
 *  - phi3's own sentencepiece variant (Phi3MiniModel.set_vocab): the same pieces, then added_tokens.json,
 *    tokenizer_config.json's decoder and tokenizer.json's added_tokens, each USER_DEFINED or CONTROL
 *    when special (no look, no U+2581 rule, no range check).
 *  - BPE (_set_vocab_gpt2 / get_vocab_base): transformers' get_vocab() by id up to vocab_size,
 *    "[PAD{i}]" (UNUSED) for ids without a token; added tokens CONTROL when special or looking special,
 *    else USER_DEFINED with U+2581 made a space; the others NORMAL. Keys: model "gpt2", pre (gguf_pre.c),
 *    tokens, token types, then the merges with the special vocabulary.
 * Each ends with gguf-py's SpecialVocab (gguf_special.c). */
#include "gguf_vocab_int.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* gguf-py's TokenType */
enum { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER_DEFINED = 4, TT_UNUSED = 5, TT_BYTE = 6 };

#define LABEL "<merged folder>"

/* ---- the served files ------------------------------------------------------------------------------------ */

static int plan_read(void *ctx, const char *name, size_t max, char **data, size_t *len, mm_err *err)
{
    int rc = mm_plan_file_bytes(ctx, name, data, len, err);
    if (rc == -EISDIR) /* a shard has no such name; a plan's files are all plain */
        return -ENOENT;
    if (rc == 0 && *len > max) {
        free(*data);
        return mm_err_set(err, -EFBIG, "%s/%s: larger than %zu bytes", LABEL, name, max);
    }
    return rc;
}

static void plan_list(void *ctx, const char *dir, char ***names, size_t *n)
{
    const mm_plan *p = ctx;
    size_t dlen = strlen(dir), cap = 0;
    *names = NULL;
    *n = 0;
    for (size_t i = 0; i < p->nfiles; i++) {
        const char *f = p->files[i].name;
        if (strncmp(f, dir, dlen) != 0 || f[dlen] != '/' || strchr(f + dlen + 1, '/'))
            continue;
        if (*n == cap) {
            cap = cap ? 2 * cap : 8;
            *names = mm_xrealloc(*names, cap * sizeof **names);
        }
        (*names)[(*n)++] = mm_xstrdup(f + dlen + 1);
    }
}

char *mm_gv_path(const mm_gv *g, const char *name)
{
    return mm_path_join(g->files.label, name);
}

int mm_gv_read_text(const mm_gv *g, const char *name, char **out, mm_err *err)
{
    size_t len;
    char *s;
    int rc = g->files.read(g->files.ctx, name, MM_TOK_MAX_JSON, &s, &len, err);
    if (rc < 0)
        return rc;
    if (mm_utf8_valid_len(s, len) < len) {
        free(s);
        char *path = mm_gv_path(g, name);
        rc = mm_err_set(err, -EINVAL, "%s: not UTF-8 text", path);
        free(path);
        return rc;
    }
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '\r') {
            s[o++] = '\n';
            if (i + 1 < len && s[i + 1] == '\n')
                i++;
        } else {
            s[o++] = s[i];
        }
    }
    s[o] = 0;
    *out = s;
    return 0;
}

static int exists(const mm_gv *g, const char *name)
{
    char *data;
    size_t len;
    mm_err ignored = {{0}};
    int rc = g->files.read(g->files.ctx, name, MM_TOK_MAX_JSON, &data, &len, &ignored);
    if (rc == 0)
        free(data);
    return rc != -ENOENT;
}

/* The converter's hparams[key]: config.json with text_config's keys over the top level's. */
static const cJSON *hparam(const mm_gv *g, const char *key)
{
    const cJSON *tc = cJSON_GetObjectItemCaseSensitive(g->config, "text_config");
    const cJSON *v = cJSON_IsObject(tc) ? cJSON_GetObjectItemCaseSensitive(tc, key) : NULL;
    return v ? v : cJSON_GetObjectItemCaseSensitive(g->config, key);
}

/* config.json's vocab_size (vocab_size_per_layer_input first when `per_layer`, as find_hparam): 1 with
 * *n, 0 when absent, or an error for a value that is no count. */
static int vocab_size(const mm_gv *g, int per_layer, long long *n, mm_err *err)
{
    const cJSON *v = per_layer ? hparam(g, "vocab_size_per_layer_input") : NULL;
    const char *key = v ? "vocab_size_per_layer_input" : "vocab_size";
    if (!v)
        v = hparam(g, key);
    if (!v)
        return 0;
    if (!mm_gv_int(v, n) || *n < 0 || *n > INT32_MAX) {
        char *path = mm_gv_path(g, "config.json");
        int rc = mm_err_set(err, -EINVAL, "%s: %s: must be a count of tokens", path, key);
        free(path);
        return rc;
    }
    return 1;
}

/* does_token_look_special: tokens some models mark as not special that are control tokens all the same. */
static int looks_special(const char *s, size_t n)
{
    static const char *const names[] = {"<pad>", "<mask>", "<2mass>", "[@BOS@]"};
    for (size_t i = 0; i < MM_COUNT(names); i++)
        if (n == strlen(names[i]) && memcmp(s, names[i], n) == 0)
            return 1;
#define AFFIXED(pre, suf)                                                                                             \
    (n >= strlen(pre) && n >= strlen(suf) && memcmp(s, pre, strlen(pre)) == 0 &&                                      \
     memcmp(s + n - strlen(suf), suf, strlen(suf)) == 0)
    return AFFIXED("<|", "|>") || AFFIXED("<\xef\xbd\x9c", "\xef\xbd\x9c>") || AFFIXED("<unused", ">");
#undef AFFIXED
}

/* ---- the token list -------------------------------------------------------------------------------------- */

typedef struct vocab {
    char **s;
    size_t *len;
    float *score;
    int32_t *type;
    size_t n;
} vocab;

/* n entries "[PAD{i}]" with `score`, UNUSED */
static void vocab_init(vocab *v, size_t n, float score)
{
    v->n = n;
    v->s = mm_xcalloc(n ? n : 1, sizeof *v->s);
    v->len = mm_xcalloc(n ? n : 1, sizeof *v->len);
    v->score = mm_xcalloc(n ? n : 1, sizeof *v->score);
    v->type = mm_xcalloc(n ? n : 1, sizeof *v->type);
    for (size_t i = 0; i < n; i++) {
        v->s[i] = mm_xasprintf("[PAD%zu]", i);
        v->len[i] = strlen(v->s[i]);
        v->score[i] = score;
        v->type[i] = TT_UNUSED;
    }
}

static void vocab_put(vocab *v, size_t i, const char *s, size_t len, float score, int type)
{
    free(v->s[i]);
    v->s[i] = mm_xmalloc(len + 1);
    memcpy(v->s[i], s, len);
    v->s[i][len] = 0;
    v->len[i] = len;
    v->score[i] = score;
    v->type[i] = type;
}

/* token.replace("\u2581", " ") in place */
static void meta_to_space(vocab *v, size_t i)
{
    char *s = v->s[i];
    size_t o = 0;
    for (size_t k = 0; k < v->len[i]; k++) {
        if (k + 3 <= v->len[i] && memcmp(s + k, "\xe2\x96\x81", 3) == 0) {
            s[o++] = ' ';
            k += 2;
        } else {
            s[o++] = s[k];
        }
    }
    s[o] = 0;
    v->len[i] = o;
}

static void vocab_free(vocab *v)
{
    for (size_t i = 0; i < v->n; i++)
        free(v->s[i]);
    free(v->s);
    free(v->len);
    free(v->score);
    free(v->type);
}

/* tokenizer.ggml.model, .pre, .tokens, (.scores,) .token_type */
static void add_tokens(const mm_gv *g, const char *model, const char *pre, const vocab *v, int scores)
{
    mm_gguf_set_str(g->kv, "tokenizer.ggml.model", model);
    mm_gguf_set_str(g->kv, "tokenizer.ggml.pre", pre);
    mm_gguf_set_arr_str(g->kv, "tokenizer.ggml.tokens", (const char *const *)v->s, v->len, v->n);
    if (scores)
        mm_gguf_set_arr_f32(g->kv, "tokenizer.ggml.scores", v->score, v->n);
    mm_gguf_set_arr_i32(g->kv, "tokenizer.ggml.token_type", v->type, v->n);
}

/* SpecialVocab(dir, load_merges, n_vocab=n).add_to_gguf */
static int add_special(const mm_gv *g, int load_merges, long long n_vocab, mm_err *err)
{
    mm_gv_special sv;
    int rc = mm_gv_special_load(g, load_merges, NULL, 0, n_vocab, &sv, err);
    if (rc == 0)
        rc = mm_gv_special_add(g, &sv, err);
    mm_gv_special_free(&sv);
    return rc;
}

/* ---- sentencepiece --------------------------------------------------------------------------------------- */

/* The served tokenizer.model: the loader's when it read one, else parsed here (*own to free). */
static int spm_model(const mm_gv *g, const mm_spm_model **m, mm_spm_model **own, mm_err *err)
{
    *own = NULL;
    if (g->tok->spm) {
        *m = g->tok->spm;
        return 0;
    }
    char *data, *path = mm_gv_path(g, "tokenizer.model");
    size_t len;
    int rc = g->files.read(g->files.ctx, "tokenizer.model", MM_SPM_MAX_FILE, &data, &len, err);
    if (rc == 0)
        rc = mm_spm_parse_file(path, data, len, own, err);
    else if (rc == -ENOENT)
        rc = mm_err_set(err, -ENOENT, "%s: not in the folder; llama.cpp's converter needs it for this family", path);
    free(path);
    *m = *own;
    return rc;
}

/* "WHERE: id N is beyond the vocabulary of M tokens" (the converter's IndexError) */
static int beyond(const mm_gv *g, const char *file, const char *what, long long id, size_t n, mm_err *err)
{
    char *path = mm_gv_path(g, file);
    int rc = mm_err_set(err, -EINVAL,
                        "%s: %s: id %lld is beyond the %zu tokens config.json's vocab_size gives (the converter stops "
                        "there)",
                        path, what, id, n);
    free(path);
    return rc;
}

/* added_tokens.json's entries over the list: USER_DEFINED, score -1000; ids at or beyond vocab_size
 * skipped. */
static int spm_added_tokens_json(const mm_gv *g, vocab *v, mm_err *err)
{
    cJSON *atj = NULL;
    int rc = mm_tokenizer_read_json(&g->files, "added_tokens.json", &atj, err);
    const cJSON *e;
    cJSON_ArrayForEach(e, (cJSON_IsObject(atj) ? atj : NULL))
    {
        long long id;
        if (!mm_gv_int(e, &id) || id < 0) {
            char *path = mm_gv_path(g, "added_tokens.json");
            rc = mm_err_set(err, -EINVAL, "%s: \"%s\": the id must be a non-negative integer", path, e->string);
            free(path);
            break;
        }
        if ((size_t)id < v->n)
            vocab_put(v, (size_t)id, e->string, strlen(e->string), -1000.0f, TT_USER_DEFINED);
    }
    cJSON_Delete(atj);
    return rc;
}

/* One added token of tokenizer_config.json's decoder or tokenizer.json's added_tokens over the list.
 * phi3: no range check, type by `special` only; the others: ids beyond skipped, a token that looks
 * special is CONTROL, a USER_DEFINED one gets its U+2581 made spaces. */
static int spm_added(const mm_gv *g, vocab *v, const char *file, const char *what, long long id, const cJSON *data,
                     int phi3, mm_err *err)
{
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(data, "content");
    if (!cJSON_IsString(c)) {
        char *path = mm_gv_path(g, file);
        int rc = mm_err_set(err, -EINVAL, "%s: %s: no \"content\" string", path, what);
        free(path);
        return rc;
    }
    if (id < 0 || (size_t)id >= v->n)
        return phi3 ? beyond(g, file, what, id, v->n, err) : 0;
    const char *s = c->valuestring;
    size_t n = strlen(s);
    int special = mm_gv_truthy(cJSON_GetObjectItemCaseSensitive(data, "special"));
    int control = special || (!phi3 && looks_special(s, n));
    vocab_put(v, (size_t)id, s, n, -1000.0f, control ? TT_CONTROL : TT_USER_DEFINED);
    if (!control && !phi3)
        meta_to_space(v, (size_t)id);
    return 0;
}

static int spm_config_decoder(const mm_gv *g, vocab *v, int phi3, mm_err *err)
{
    const cJSON *dec = cJSON_GetObjectItemCaseSensitive(g->tok->tokenizer_config, "added_tokens_decoder"), *e;
    cJSON_ArrayForEach(e, (cJSON_IsObject(dec) ? dec : NULL))
    {
        /* the loader has checked the keys: decimal ids */
        char what[64];
        snprintf(what, sizeof what, "added_tokens_decoder['%.20s']", e->string);
        int rc = spm_added(g, v, "tokenizer_config.json", what, strtoll(e->string, NULL, 10), e, phi3, err);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* The sentencepiece pieces into a list of vocab_size entries. `stop_at_size`: pieces beyond it are
 * dropped (with a warning); otherwise they are an error (phi3 indexes past its list). */
static int spm_pieces(const mm_gv *g, const mm_spm_model *m, vocab *v, int stop_at_size, mm_err *err)
{
    for (size_t i = 0; i < m->npieces; i++) {
        if (i >= v->n) {
            if (stop_at_size)
                break;
            return beyond(g, "tokenizer.model", "pieces", (long long)i, v->n, err);
        }
        const mm_spm_piece *p = &m->pieces[i];
        int type = p->type == MM_SPM_UNKNOWN   ? TT_UNKNOWN
                   : p->type == MM_SPM_CONTROL ? TT_CONTROL
                   : p->type == MM_SPM_UNUSED  ? TT_UNUSED
                   : p->type == MM_SPM_BYTE    ? TT_BYTE
                                               : TT_NORMAL;
        vocab_put(v, i, p->piece, p->len, p->score, type);
    }
    return 0;
}

/* tokenizer.json's added_tokens over the list, as phi3's set_vocab reads them after the decoder's. */
static int spm_tokenizer_json_added(const mm_gv *g, vocab *v, mm_err *err)
{
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(g->tok->tokenizer_json, "added_tokens"), *e;
    size_t i = 0;
    cJSON_ArrayForEach(e, (cJSON_IsArray(added) ? added : NULL))
    {
        char what[64];
        long long id = -1;
        snprintf(what, sizeof what, "added_tokens[%zu]", i++);
        mm_gv_int(cJSON_GetObjectItemCaseSensitive(e, "id"), &id);
        int rc = spm_added(g, v, "tokenizer.json", what, id, e, 1, err);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* _set_vocab_sentencepiece, or with `phi3` Phi3MiniModel.set_vocab's sentencepiece part. One function
 * because phi3's code is the same steps with these differences: its vocab_size is
 * hparams.get('vocab_size', tokenizer.vocab_size()) (no vocab_size_per_layer_input, and a 0 is kept),
 * pieces past it are an error rather than dropped, the decoder's tokens are typed its way (spm_added),
 * and tokenizer.json's added_tokens come last. */
static int set_vocab_spm(const mm_gv *g, int phi3, mm_err *err)
{
    const mm_spm_model *m;
    mm_spm_model *own;
    vocab v = {0};
    long long n = 0;
    int rc = spm_model(g, &m, &own, err);
    if (rc == 0 && (rc = vocab_size(g, !phi3, &n, err)) >= 0) {
        if (rc == 0 || (n == 0 && !phi3)) /* find_hparam(...) or tokenizer.vocab_size() */
            n = (long long)m->npieces;
        vocab_init(&v, (size_t)n, -10000.0f);
        rc = spm_pieces(g, m, &v, !phi3, err);
    }
    if (rc == 0)
        rc = spm_added_tokens_json(g, &v, err);
    if (rc == 0)
        rc = spm_config_decoder(g, &v, phi3, err);
    if (rc == 0 && phi3)
        rc = spm_tokenizer_json_added(g, &v, err);
    if (rc == 0) {
        add_tokens(g, "llama", "default", &v, 1);
        rc = add_special(g, 0, (long long)v.n, err);
    }
    vocab_free(&v);
    mm_spm_free(own);
    return rc;
}

/* ---- BPE ----------------------------------------------------------------------------------------------- */

/* get_vocab_base + _set_vocab_gpt2 */
static int set_vocab_gpt2(const mm_gv *g, mm_err *err)
{
    const mm_tokenizer *t = g->tok;
    long long n;
    int rc = vocab_size(g, 0, &n, err);
    if (rc < 0)
        return rc;
    if (rc == 0) /* hparams.get("vocab_size", len(tokenizer.vocab)) */
        n = (long long)t->n_ids;
    if (t->id_end > (size_t)n) {
        char *path = mm_gv_path(g, "config.json");
        rc = mm_err_set(err, -EINVAL,
                        "%s: vocab_size %lld, but the tokenizer has id %zu (the converter asserts every id is below "
                        "vocab_size)",
                        path, n, t->id_end - 1);
        free(path);
        return rc;
    }
    const char *pre;
    if ((rc = mm_gv_pre_name(g, &pre, err)) < 0)
        return rc;
    vocab v = {0};
    vocab_init(&v, (size_t)n, 0.0f);
    for (size_t i = 0; i < t->id_end && rc == 0; i++) {
        size_t len;
        const char *s = mm_tokenizer_token(t, (long)i, &len);
        if (!s)
            continue;
        const mm_tok_added *a = mm_tokenizer_added(t, (long)i);
        if (!a) {
            vocab_put(&v, i, s, len, 0.0f, TT_NORMAL);
            continue;
        }
        /* A token that is not `normalized` goes through tokenizer.decode(tokenizer.encode(token)) first:
         * the identity for text of printable ASCII (the byte-level alphabet maps it to itself, and no
         * clean-up rule applies without spaces); for other text the round trip is not reproduced. */
        for (size_t k = 0; k < len && !a->normalized; k++)
            if ((unsigned char)s[k] <= 0x20 || (unsigned char)s[k] >= 0x7f) {
                char *path = mm_gv_path(g, "tokenizer.json"), q[160];
                rc = mm_err_set(err, -ENOTSUP,
                                "%s: added token %s (id %zu): the converter re-encodes and decodes a token that is not "
                                "normalized, which is reproduced only for printable ASCII without spaces",
                                path, mm_quote(q, sizeof q, s, len), i);
                free(path);
                break;
            }
        int control = a->special || looks_special(s, len);
        vocab_put(&v, i, s, len, 0.0f, control ? TT_CONTROL : TT_USER_DEFINED);
        if (!control)
            meta_to_space(&v, i);
    }
    if (rc == 0) {
        add_tokens(g, "gpt2", pre, &v, 0);
        rc = add_special(g, 1, -1, err);
    }
    vocab_free(&v);
    return rc;
}

/* ---- the families ---------------------------------------------------------------------------------------- */

/* LlamaModel.set_vocab */
static int llama_vocab(const mm_gv *g, mm_err *err)
{
    const cJSON *cfg = g->tok->tokenizer_config, *v;
    int rc;
    v = cJSON_GetObjectItemCaseSensitive(cfg, "tokenizer_class");
    if (cJSON_IsString(v) && strcmp(v->valuestring, "HybridDNATokenizer") == 0)
        return mm_err_set(err, -ENOTSUP, "%s/tokenizer_config.json: tokenizer_class HybridDNATokenizer is not supported",
                          g->files.label);
    v = cJSON_GetObjectItemCaseSensitive(cfg, "add_prefix_space");
    if (v && !cJSON_IsNull(v))
        mm_gguf_set_bool(g->kv, "tokenizer.ggml.add_space_prefix", mm_gv_truthy(v));
    if (exists(g, "tokenizer.model")) {
        rc = set_vocab_spm(g, 0, err);
    } else {
        /* LlamaHfVocab takes a tokenizer.json BPE with byte fallback and a Sequence decoder (a Llama 2
         * tokenizer without its tokenizer.model); anything else goes to the GPT-2 path (Llama 3). */
        const cJSON *tj = g->tok->tokenizer_json, *model = cJSON_GetObjectItemCaseSensitive(tj, "model");
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(model, "type");
        const cJSON *dec = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(tj, "decoder"), "type");
        if (cJSON_IsString(type) && strcmp(type->valuestring, "BPE") == 0 &&
            mm_gv_truthy(cJSON_GetObjectItemCaseSensitive(model, "byte_fallback")) && cJSON_IsString(dec) &&
            strcmp(dec->valuestring, "Sequence") == 0)
            return mm_err_set(err, -ENOTSUP,
                              "%s: a sentencepiece-style BPE tokenizer.json without tokenizer.model (the converter's "
                              "LlamaHfVocab path) is not supported: serve the tokenizer.model",
                              g->files.label);
        rc = set_vocab_gpt2(g, err);
    }
    if (rc < 0)
        return rc;
    long long n = 32000;
    if ((rc = vocab_size(g, 0, &n, err)) < 0)
        return rc;
    if (rc == 0)
        n = 32000;
    if (n == 32016) { /* CodeLlama's infill tokens: of its four types only eot has a GGUF key */
        static const char *const types[] = {"prefix", "suffix", "middle", "eot"};
        mm_gv_special sv;
        if ((rc = mm_gv_special_load(g, 0, types, MM_COUNT(types), -1, &sv, err)) < 0)
            return rc;
        rc = mm_gv_special_set(&sv, "prefix", 32007, err);
        rc = rc < 0 ? rc : mm_gv_special_set(&sv, "suffix", 32008, err);
        rc = rc < 0 ? rc : mm_gv_special_set(&sv, "middle", 32009, err);
        rc = rc < 0 ? rc : mm_gv_special_set(&sv, "eot", 32010, err);
        rc = rc < 0 ? rc : mm_gv_special_add(g, &sv, err);
        mm_gv_special_free(&sv);
        if (rc < 0)
            return rc;
    }
    if (n == 49152) /* granite's small models */
        mm_gguf_set_bool(g->kv, "tokenizer.ggml.add_bos_token", 0);
    return 0;
}

/* GemmaModel.set_vocab: after the sentencepiece keys, CodeGemma's infill tokens (only eot has a GGUF
 * key), the chat template not written twice. */
static int gemma_vocab(const mm_gv *g, mm_err *err)
{
    static const char *const types[] = {"prefix", "suffix", "middle", "fsep", "eot"};
    static const struct {
        const char *type;
        long long id;
    } fixed[] = {{"prefix", 67}, {"suffix", 69}, {"middle", 68}, {"fsep", 70}, {"eot", 107}};
    mm_gv_special sv;
    int rc = set_vocab_spm(g, 0, err);
    if (rc < 0 || (rc = mm_gv_special_load(g, 0, types, MM_COUNT(types), -1, &sv, err)) < 0)
        return rc;
    for (size_t i = 0; i < MM_COUNT(fixed) && rc == 0; i++)
        rc = mm_gv_special_set(&sv, fixed[i].type, fixed[i].id, err);
    free(sv.template_str);
    sv.template_str = NULL;
    sv.has_template = 0;
    if (rc == 0)
        rc = mm_gv_special_add(g, &sv, err);
    mm_gv_special_free(&sv);
    if (rc == 0)
        mm_gguf_set_bool(g->kv, "tokenizer.ggml.add_space_prefix", 0);
    return rc;
}

static int family_vocab(const mm_gv *g, const char *arch, mm_err *err)
{
    int rc;
    if (strcmp(arch, "llama") == 0)
        return llama_vocab(g, err);
    if (strcmp(arch, "qwen2") == 0) /* Qwen2Model: sentencepiece if it can, else BPE */
        return exists(g, "tokenizer.model") ? set_vocab_spm(g, 0, err) : set_vocab_gpt2(g, err);
    if (strcmp(arch, "gemma") == 0)
        return gemma_vocab(g, err);
    if (strcmp(arch, "gemma2") == 0 || (strcmp(arch, "gemma3") == 0 && exists(g, "tokenizer.model"))) {
        if ((rc = set_vocab_spm(g, 0, err)) == 0)
            mm_gguf_set_bool(g->kv, "tokenizer.ggml.add_space_prefix", 0);
        return rc;
    }
    if (strcmp(arch, "gemma3") == 0)
        return set_vocab_gpt2(g, err);
    if (strcmp(arch, "phi3") == 0) {
        /* Phi-4 (same architecture) has a GPT-2 tokenizer; the converter reads tokenizer_class (a
         * tokenizer_config.json without it stops it) */
        const cJSON *cfg = g->tok->tokenizer_config;
        const cJSON *cls = cJSON_GetObjectItemCaseSensitive(cfg, "tokenizer_class");
        if (cfg && !cls)
            return mm_err_set(err, -EINVAL,
                              "%s/tokenizer_config.json: no tokenizer_class, which llama.cpp's converter reads for "
                              "phi3 models",
                              g->files.label);
        if (cJSON_IsString(cls) && strcmp(cls->valuestring, "GPT2Tokenizer") == 0)
            return set_vocab_gpt2(g, err);
        return set_vocab_spm(g, 1, err);
    }
    return mm_err_set(err, -ENOTSUP,
                      "the GGUF view's tokenizer keys are those of llama, qwen2, gemma, gemma2, gemma3 and phi3 "
                      "models, not \"%s\"",
                      arch);
}

int mm_gguf_vocab_build(const mm_plan *p, const char *arch, mm_gguf_kvs *kv, mm_err *err)
{
    mm_gv g = {.p = p, .kv = kv};
    g.files = (mm_tok_files){LABEL, plan_read, plan_list, (void *)(uintptr_t)p};
    int rc = mm_tokenizer_load_files(&g.files, &g.tok, err);
    if (rc == 0)
        rc = mm_tokenizer_read_json(&g.files, "config.json", &g.config, err);
    if (rc == 0)
        rc = family_vocab(&g, arch, err);
    mm_tokenizer_free(g.tok);
    cJSON_Delete(g.config);
    return rc;
}
