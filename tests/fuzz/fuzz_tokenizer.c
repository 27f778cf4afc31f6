/* Fuzzes a model folder's tokenizer (mm_tokenizer_load, formats/tokenizer.c and tokvocab.c): the input is
 * the folder's files, split by lines "=====": tokenizer.json, then tokenizer_config.json,
 * special_tokens_map.json, added_tokens.json, chat_template.jinja (a part that is empty, or missing at
 * the end, is a file that is absent). A first part starting "SPM:" is a tokenizer.model (the bytes
 * after the prefix) instead of tokenizer.json. The files are written into one folder under $TMPDIR.
 *
 * Properties of every accepted folder: the id table and the hash agree (every id that has a token is
 * what looking its token up gives; n_ids is the number of such ids, the largest below id_end); tokens are
 * UTF-8 and NUL-terminated; the added tokens are sorted by id, not empty, each the token of its id and
 * found by mm_tokenizer_added; base_size <= n_ids <= base_size + nadded; a sentencepiece folder's
 * first ids are its pieces, in order; loading the same folder again gives the same tokenizer.
 * Then the folder is the base of output vocabularies (merge/plan/vocab.c): `base`, and a `union` of it
 * with itself plus a `tokens:` entry, whose ids run without holes; every output token a model has maps
 * to its own id in that model's permutation (or is marked beyond its vocab_size); the served files (vocab_files.c) are made without error for
 * a tokenizer.json donor. */
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"
#include "formats/tokenizer.h"
#include "merge/plan/vocab.h"

static const char *const FILES[] = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                                    "added_tokens.json", "chat_template.jinja"};
enum { NFILES = 5 };

static char dir[4096];

static void check(const mm_tokenizer *t)
{
    size_t have = 0;
    for (size_t id = 0; id < t->id_end; id++) {
        const char *s = t->tokens[id];
        if (!s)
            continue;
        have++;
        size_t len = t->token_lens[id];
        FUZZ_CHECK(s[len] == 0 && mm_utf8_valid_len(s, len) == len);
        FUZZ_CHECK(mm_tokenizer_id(t, s, len) == (int)id);
        FUZZ_CHECK(mm_tokenizer_token(t, (long)id, NULL) == s);
        const mm_tok_added *a = mm_tokenizer_added(t, (long)id);
        FUZZ_CHECK(!a || (a->id == (int)id && a->content == s && a->len == len));
    }
    FUZZ_CHECK(have == t->n_ids && (t->id_end == 0 || t->tokens[t->id_end - 1]));
    for (size_t i = 0; i < t->nadded; i++) {
        const mm_tok_added *a = &t->added[i];
        FUZZ_CHECK(a->len > 0 && a->id >= 0 && (size_t)a->id < t->id_end);
        FUZZ_CHECK(i == 0 || t->added[i - 1].id < a->id);
        FUZZ_CHECK(mm_tokenizer_added(t, a->id) == a);
    }
    FUZZ_CHECK(t->base_size <= t->n_ids && t->n_ids <= t->base_size + t->nadded);
    FUZZ_CHECK(t->model_type);
    if (t->kind == MM_TOK_SPM) {
        FUZZ_CHECK(t->spm && !t->tokenizer_json && t->base_size == t->spm->npieces);
        for (size_t i = 0; i < t->spm->npieces; i++)
            FUZZ_CHECK(t->token_lens[i] == t->spm->pieces[i].len &&
                       memcmp(t->tokens[i], t->spm->pieces[i].piece, t->token_lens[i]) == 0);
    } else {
        FUZZ_CHECK(t->tokenizer_json && !t->spm);
    }
}

static void check_same(const mm_tokenizer *a, const mm_tokenizer *b)
{
    FUZZ_CHECK(a->n_ids == b->n_ids && a->id_end == b->id_end && a->base_size == b->base_size &&
               a->nadded == b->nadded && a->kind == b->kind);
    for (size_t id = 0; id < a->id_end; id++)
        FUZZ_CHECK((!a->tokens[id] && !b->tokens[id]) ||
                   (a->tokens[id] && b->tokens[id] && a->token_lens[id] == b->token_lens[id] &&
                    memcmp(a->tokens[id], b->tokens[id], a->token_lens[id]) == 0));
    for (size_t i = 0; i < a->nadded; i++)
        FUZZ_CHECK(a->added[i].id == b->added[i].id && a->added[i].special == b->added[i].special &&
                   a->added[i].normalized == b->added[i].normalized && a->added[i].lstrip == b->added[i].lstrip);
    FUZZ_CHECK((!a->chat_template && !b->chat_template) ||
               (a->chat_template && b->chat_template && strcmp(a->chat_template, b->chat_template) == 0));
}

static void check_vocab(mm_vocab_source source)
{
    const mm_vocab_model models[2] = {{"base", dir, -1}, {"other", dir, -1}};
    const char *tokens[] = {"<fuzz-token>"};
    mm_vocab_spec spec = {.source = source, .source_model = -1, .tokens = tokens, .ntokens = 1};
    mm_vocab *v = NULL;
    mm_err err;
    err.msg[0] = 0;
    if (mm_vocab_build(models, 2, 0, &spec, &v, &err) < 0) {
        FUZZ_CHECK(v == NULL && err.msg[0] != 0);
        return;
    }
    const mm_tokenizer *o = v->out;
    FUZZ_CHECK(v->n_tokens == o->n_ids && o->id_end == o->n_ids && mm_tokenizer_id(o, "<fuzz-token>", 12) >= 0);
    for (size_t m = 0; m < 2; m++)
        for (size_t t = 0; t < v->n_tokens; t++) {
            size_t len;
            const char *s = mm_tokenizer_token(o, (long)t, &len);
            int own = mm_tokenizer_id(v->tok[m] ? v->tok[m] : v->tok[v->base], s, len);
            FUZZ_CHECK(v->perm[m][t] == own || (own >= 0 && v->perm[m][t] == MM_VOCAB_BEYOND));
        }
    mm_vocab_file *files = NULL;
    size_t n = 0;
    err.msg[0] = 0;
    int rc = mm_vocab_files(v, "{{ messages }} fuzz chat template", &files, &n, &err);
    FUZZ_CHECK(rc == 0 || (o->kind == MM_TOK_SPM && err.msg[0] != 0));
    mm_vocab_files_free(files, n);
    mm_vocab_free(v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!dir[0]) {
        const char *tmp = getenv("TMPDIR");
        snprintf(dir, sizeof dir, "%s/mm-fuzz-tokenizer-XXXXXX", tmp ? tmp : "/tmp");
        if (!mkdtemp(dir))
            abort();
    }
    fuzz_put_parts(dir, data, data + size, FILES, NFILES, 1);
    mm_tokenizer *t = NULL, *again = NULL;
    mm_err err;
    err.msg[0] = 0;
    if (mm_tokenizer_load(dir, &t, &err) == 0) {
        check(t);
        FUZZ_CHECK(mm_tokenizer_load(dir, &again, &err) == 0);
        check_same(t, again);
        mm_tokenizer_free(again);
        mm_tokenizer_free(t);
        check_vocab(MM_VOCAB_BASE);
        check_vocab(MM_VOCAB_UNION);
    } else {
        FUZZ_CHECK(t == NULL && err.msg[0] != 0 && strstr(err.msg, dir));
    }
    return 0;
}
