/* A test-only program (not installed): prints what formats/tokenizer.c and formats/spm.c read, as JSON,
 * for tests/integration/test_tokenizer_read.py to compare with sentencepiece's own view.
 *
 *   tok_dump FOLDER        the folder's tokenizer (mm_tokenizer_load)
 *   tok_dump --spm FILE    one tokenizer.model (mm_spm_read_file)
 *
 * Output: {"kind", "model_type", "n_ids", "base_size", "id_end", "tokens": [token or null, by id],
 * "added": [{"id", "content", "special", "single_word", "lstrip", "rstrip", "normalized"}, by id],
 * "chat_template", "spm": {...} or null}; with --spm only the "spm" object. Strings are written with
 * their exact bytes (raw UTF-8, control characters escaped). On error: the message on stderr, exit 1. */
#include <stdio.h>
#include <string.h>

#include "formats/tokenizer.h"

static void str(const char *s, size_t len)
{
    putchar('"');
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20 || c == 0x7f)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

static void cstr(const char *s)
{
    if (s)
        str(s, strlen(s));
    else
        fputs("null", stdout);
}

static void dump_spm(const mm_spm_model *m)
{
    if (!m) {
        fputs("null", stdout);
        return;
    }
    printf("{\"model_type\": \"%s\", \"vocab_size\": %d, \"byte_fallback\": %s, ",
           mm_spm_model_type_name(m->model_type), m->vocab_size, m->byte_fallback ? "true" : "false");
    printf("\"unk_id\": %d, \"bos_id\": %d, \"eos_id\": %d, \"pad_id\": %d, ", m->unk_id, m->bos_id, m->eos_id,
           m->pad_id);
    fputs("\"unk_piece\": ", stdout);
    cstr(m->unk_piece);
    fputs(", \"bos_piece\": ", stdout);
    cstr(m->bos_piece);
    fputs(", \"eos_piece\": ", stdout);
    cstr(m->eos_piece);
    fputs(", \"pad_piece\": ", stdout);
    cstr(m->pad_piece);
    fputs(", \"normalizer_name\": ", stdout);
    cstr(m->normalizer_name);
    printf(", \"add_dummy_prefix\": %s, \"remove_extra_whitespaces\": %s, \"escape_whitespaces\": %s, ",
           m->add_dummy_prefix ? "true" : "false", m->remove_extra_whitespaces ? "true" : "false",
           m->escape_whitespaces ? "true" : "false");
    printf("\"precompiled_charsmap_len\": %zu, \"raw_len\": %zu, \"pieces\": [", m->precompiled_charsmap_len,
           m->raw_len);
    for (size_t i = 0; i < m->npieces; i++) {
        printf("%s[", i ? ", " : "");
        str(m->pieces[i].piece, m->pieces[i].len);
        printf(", %.17g, \"%s\"]", (double)m->pieces[i].score, mm_spm_type_name(m->pieces[i].type));
    }
    fputs("]}", stdout);
}

int main(int argc, char **argv)
{
    mm_err err = {{0}};
    if (argc == 3 && strcmp(argv[1], "--spm") == 0) {
        mm_spm_model *m;
        if (mm_spm_read_file(argv[2], &m, &err) < 0) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
        dump_spm(m);
        putchar('\n');
        mm_spm_free(m);
        return 0;
    }
    if (argc != 2) {
        fprintf(stderr, "usage: tok_dump FOLDER | tok_dump --spm FILE\n");
        return 2;
    }
    mm_tokenizer *t;
    if (mm_tokenizer_load(argv[1], &t, &err) < 0) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    printf("{\"kind\": \"%s\", \"model_type\": ", t->kind == MM_TOK_FAST ? "fast" : "spm");
    cstr(t->model_type);
    printf(", \"n_ids\": %zu, \"base_size\": %zu, \"id_end\": %zu, \"nmerges\": %zu, \"tokens\": [", t->n_ids,
           t->base_size, t->id_end, t->nmerges);
    for (size_t id = 0; id < t->id_end; id++) {
        if (id)
            fputs(", ", stdout);
        if (t->tokens[id])
            str(t->tokens[id], t->token_lens[id]);
        else
            fputs("null", stdout);
    }
    fputs("], \"added\": [", stdout);
    for (size_t i = 0; i < t->nadded; i++) {
        const mm_tok_added *a = &t->added[i];
        printf("%s{\"id\": %d, \"content\": ", i ? ", " : "", a->id);
        str(a->content, a->len);
        printf(", \"special\": %s, \"single_word\": %s, \"lstrip\": %s, \"rstrip\": %s, \"normalized\": %s}",
               a->special ? "true" : "false", a->single_word ? "true" : "false", a->lstrip ? "true" : "false",
               a->rstrip ? "true" : "false", a->normalized ? "true" : "false");
    }
    fputs("], \"chat_template\": ", stdout);
    cstr(t->chat_template);
    fputs(", \"spm\": ", stdout);
    dump_spm(t->spm);
    fputs("}\n", stdout);
    mm_tokenizer_free(t);
    return 0;
}
