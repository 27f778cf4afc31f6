/* formats/pbwire, formats/spm, formats/tokenizer: the protobuf wire reader, sentencepiece models built
 * byte by byte here, and tokenizer folders written here, one per rule of transformers' loading and per
 * refusal. (tests/integration/test_tokenizer_read.py compares models trained by sentencepiece.) */
#include <errno.h>
#include <stdarg.h>
#include <sys/stat.h>

#include "check.h"
#include "formats/pbwire.h"
#include "formats/tokenizer.h"
#include "tests/pbwrite.h"

/* ---- building protobuf bytes (with tests/pbwrite.h) ------------------------------------------------------ */

/* A piece message as ModelProto field 1. type 0: not written (NORMAL). */
static void spm_piece(mm_buf *m, const char *piece, float score, int type)
{
    mm_buf p = {0};
    if (piece)
        pb_str(&p, 1, piece);
    pb_float(&p, 2, &score);
    if (type)
        pb_int(&p, 3, type);
    pb_len(m, 1, p.data, p.len);
    mm_buf_free(&p);
}

/* <unk>, <s>, </s> and n normal pieces p0.. */
static void spm_basic(mm_buf *m, int n)
{
    spm_piece(m, "<unk>", 0, MM_SPM_UNKNOWN);
    spm_piece(m, "<s>", 0, MM_SPM_CONTROL);
    spm_piece(m, "</s>", 0, MM_SPM_CONTROL);
    for (int i = 0; i < n; i++) {
        char s[16];
        snprintf(s, sizeof s, "p%d", i);
        spm_piece(m, s, -(float)i, 0);
    }
}

/* spm_basic(0), the byte pieces <0x00> to <0x(n-1)> and trainer_spec.byte_fallback true. */
static void spm_byte_fallback(mm_buf *m, int n)
{
    spm_basic(m, 0);
    for (int i = 0; i < n; i++) {
        char s[16]; /* "<0xNN>" for n <= 256; room for any int keeps -Wformat-truncation quiet */
        snprintf(s, sizeof s, "<0x%02X>", i);
        spm_piece(m, s, 0, MM_SPM_BYTE);
    }
    mm_buf t = {0};
    pb_int(&t, 35, 1);
    pb_len(m, 2, t.data, t.len);
    mm_buf_free(&t);
}

static int spm_parse(const mm_buf *b, mm_spm_model **m, mm_err *err)
{
    return mm_spm_parse(b->data ? b->data : "", b->len, m, err);
}

/* Parses and expects an error containing `want`. */
static void spm_bad(const mm_buf *b, const char *want)
{
    mm_spm_model *m = NULL;
    mm_err err = {{0}};
    int rc = spm_parse(b, &m, &err);
    CHECK(rc == -EINVAL && m == NULL);
    CHECK_STR_CONTAINS(err.msg, want);
    if (rc == 0)
        mm_spm_free(m);
}

static void test_pbwire(void)
{
    mm_err err;
    uint64_t v;
    uint32_t f32, field;
    int w;
    /* a varint of 10 bytes holding 2^64 - 1; an 11th byte, a tenth above 1, a truncated one */
    static const uint8_t max[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    mm_pb r = mm_pb_init(max, sizeof max);
    CHECK(mm_pb_varint(&r, &v, &err) == 0 && v == UINT64_MAX && mm_pb_offset(&r) == 10);
    static const uint8_t eleven[] = {0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00};
    r = mm_pb_init(eleven, sizeof eleven);
    CHECK(mm_pb_varint(&r, &v, &err) == -EINVAL);
    CHECK_STR_CONTAINS(err.msg, "byte 0: varint does not fit in 64 bits");
    static const uint8_t big10[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02};
    r = mm_pb_init(big10, sizeof big10);
    CHECK(mm_pb_varint(&r, &v, &err) == -EINVAL);
    CHECK_STR_CONTAINS(err.msg, "does not fit in 64 bits");
    static const uint8_t cut[] = {0x08, 0x96};
    r = mm_pb_init(cut, sizeof cut);
    CHECK(mm_pb_next(&r, &field, &w, &err) == 1 && field == 1 && w == MM_PB_VARINT);
    CHECK(mm_pb_varint(&r, &v, &err) == -EINVAL);
    CHECK_STR_CONTAINS(err.msg, "byte 1: varint runs past the end");
    /* non-minimal varints are protobuf: accepted */
    static const uint8_t padded[] = {0x80, 0x80, 0x00};
    r = mm_pb_init(padded, sizeof padded);
    CHECK(mm_pb_varint(&r, &v, &err) == 0 && v == 0);
    /* keys: field 0, groups, wire types 6 and 7 */
    static const uint8_t f0[] = {0x00}, grp[] = {0x0b}, wt7[] = {0x0f}, wt6[] = {0x0e};
    r = mm_pb_init(f0, 1);
    CHECK(mm_pb_next(&r, &field, &w, &err) == -EINVAL);
    CHECK_STR_CONTAINS(err.msg, "field number 0 is not valid");
    r = mm_pb_init(grp, 1);
    CHECK(mm_pb_next(&r, &field, &w, &err) == -EINVAL);
    CHECK_STR_CONTAINS(err.msg, "is a group");
    r = mm_pb_init(wt7, 1);
    CHECK(mm_pb_next(&r, &field, &w, &err) == -EINVAL);
    CHECK_STR_CONTAINS(err.msg, "wire type 7");
    r = mm_pb_init(wt6, 1);
    CHECK(mm_pb_next(&r, &field, &w, &err) == -EINVAL);
    /* fixed32 little-endian; lengths past the end */
    static const uint8_t fx[] = {0x15, 0x01, 0x02, 0x03, 0x04, 0x12, 0x05, 'a'};
    r = mm_pb_init(fx, sizeof fx);
    CHECK(mm_pb_next(&r, &field, &w, &err) == 1 && field == 2 && w == MM_PB_FIXED32);
    CHECK(mm_pb_fixed32(&r, &f32, &err) == 0 && f32 == 0x04030201);
    CHECK(mm_pb_next(&r, &field, &w, &err) == 1 && w == MM_PB_LEN);
    const uint8_t *d;
    size_t n;
    CHECK(mm_pb_bytes(&r, &d, &n, &err) == -EINVAL);
    CHECK_STR_CONTAINS(err.msg, "byte 6: length-delimited value of 5 bytes, but its message has 1 left");
    static const uint8_t fx64[] = {0x09, 1, 2, 3};
    r = mm_pb_init(fx64, sizeof fx64);
    CHECK(mm_pb_next(&r, &field, &w, &err) == 1 && mm_pb_skip(&r, w, &err) == -EINVAL);
    CHECK_STR_CONTAINS(err.msg, "8-byte value runs past the end");
    /* a length beyond size_t on 32 bits, beyond the buffer anywhere */
    static const uint8_t huge[] = {0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    r = mm_pb_init(huge, sizeof huge);
    CHECK(mm_pb_next(&r, &field, &w, &err) == 1 && mm_pb_bytes(&r, &d, &n, &err) == -EINVAL);
    CHECK(mm_pb_next(&(mm_pb){fx, fx, fx}, &field, &w, &err) == 0); /* end of message */
}

static void test_spm_model(void)
{
    mm_buf b = {0}, ts = {0}, ns = {0};
    spm_basic(&b, 3);
    spm_piece(&b, "\xe2\x96\x81h\xc3\xa9", -2.5f, MM_SPM_USER_DEFINED);
    spm_piece(&b, "unused", 0, MM_SPM_UNUSED);
    spm_piece(&b, "a", 0, 0);
    pb_int(&ts, 3, MM_SPM_BPE);
    pb_int(&ts, 4, 32000);
    pb_int(&ts, 40, 0);
    pb_int(&ts, 43, -1); /* a negative int32: ten bytes */
    pb_str(&ts, 46, "<bos>");
    pb_int(&ts, 99, 5); /* unknown fields of every wire type, skipped */
    pb_key(&ts, 100, MM_PB_FIXED64);
    mm_buf_append(&ts, "12345678", 8);
    pb_key(&ts, 101, MM_PB_FIXED32);
    mm_buf_append(&ts, "1234", 4);
    pb_str(&ts, 102, "\xff not utf-8 but unknown");
    pb_len(&b, 2, ts.data, ts.len);
    pb_str(&ns, 1, "nmt_nfkc");
    pb_len(&ns, 2, "\x00\x01\x02", 3);
    pb_int(&ns, 3, 0);
    pb_int(&ns, 5, 1);
    pb_len(&b, 3, ns.data, ns.len);
    pb_str(&b, 4, "self test data: skipped");
    pb_str(&b, 250, "an extension: skipped");
    /* trainer_spec again: merged (later scalars win) */
    mm_buf ts2 = {0};
    pb_int(&ts2, 42, 1);
    pb_len(&b, 2, ts2.data, ts2.len);
    mm_spm_model *m = NULL;
    mm_err err = {{0}};
    CHECK(spm_parse(&b, &m, &err) == 0);
    if (m) {
        CHECK(m->npieces == 9);
        CHECK_STR_EQ(m->pieces[0].piece, "<unk>");
        CHECK(m->pieces[0].type == MM_SPM_UNKNOWN && m->pieces[1].type == MM_SPM_CONTROL);
        CHECK(m->pieces[3].type == MM_SPM_NORMAL && m->pieces[5].score == -2.0f);
        CHECK(m->pieces[6].len == 6 && m->pieces[6].score == -2.5f && m->pieces[6].type == MM_SPM_USER_DEFINED);
        CHECK(m->pieces[7].type == MM_SPM_UNUSED);
        CHECK(m->model_type == MM_SPM_BPE && m->vocab_size == 32000 && !m->byte_fallback);
        CHECK(m->unk_id == 0 && m->bos_id == 1 && m->eos_id == 1 && m->pad_id == -1);
        CHECK_STR_EQ(m->bos_piece, "<bos>");
        CHECK_STR_EQ(m->unk_piece, "<unk>"); /* defaults */
        CHECK_STR_EQ(m->eos_piece, "</s>");
        CHECK_STR_EQ(m->pad_piece, "<pad>");
        CHECK_STR_EQ(m->normalizer_name, "nmt_nfkc");
        CHECK(m->precompiled_charsmap_len == 3 && m->precompiled_charsmap[2] == 2);
        CHECK(!m->add_dummy_prefix && m->remove_extra_whitespaces && m->escape_whitespaces);
        CHECK(m->raw_len == b.len && memcmp(m->raw, b.data, b.len) == 0);
        mm_spm_free(m);
    }
    mm_buf_free(&b);
    mm_buf_free(&ts);
    mm_buf_free(&ts2);
    mm_buf_free(&ns);

    /* defaults of an empty trainer_spec (ids 0, 1, 2: three pieces at least); a piece holding U+0000 */
    b = (mm_buf){0};
    spm_basic(&b, 0);
    mm_buf p = {0};
    pb_len(&p, 1, "x\0y", 3);
    pb_len(&b, 1, p.data, p.len);
    mm_buf_free(&p);
    m = NULL;
    CHECK(spm_parse(&b, &m, &err) == 0);
    if (m) {
        CHECK(m->model_type == MM_SPM_UNIGRAM && m->vocab_size == 8000 && m->unk_id == 0 && m->bos_id == 1 &&
              m->eos_id == 2 && m->pad_id == -1);
        CHECK(m->pieces[3].len == 3 && memcmp(m->pieces[3].piece, "x\0y", 4) == 0);
        CHECK(m->add_dummy_prefix && m->normalizer_name[0] == 0 && m->precompiled_charsmap == NULL);
        mm_spm_free(m);
    }
    mm_buf_free(&b);
}

static void test_spm_refusals(void)
{
    mm_buf b = {0}, t = {0};
    /* wire errors, with the place */
    spm_basic(&b, 1);
    mm_buf_append(&b,
                  "\x0a\x05"
                  "ab",
                  4);
    spm_bad(&b, "length-delimited value of 5 bytes");
    mm_buf_free(&b);
    spm_basic(&b, 1);
    pb_int(&b, 1, 3);
    spm_bad(&b, "pieces (byte 56): written as varint, but the field is a message");
    mm_buf_free(&b);
    /* a field's value: one or two varint or string fields in a message after spm_basic(1)'s pieces */
    static const struct {
        unsigned msg; /* the ModelProto field: 1 pieces, 2 trainer_spec, 3 normalizer_spec */
        struct {
            unsigned field; /* 0: none */
            int64_t v;
            const char *s; /* a string field; NULL: the varint v */
        } f[2];
        const char *want;
    } fields[] = {
        {1, {{2, 1, NULL}}, "pieces[4].score (byte 58): written as varint, but the field is fixed32"},
        {1, {{3, 7, NULL}}, "pieces[4].type (byte 59): 7 is not one of the .proto's values (1 to 6)"},
        {1, {{3, 0, "x"}}, "pieces[4].type (byte 58): written as length-delimited, but the field is varint"},
        {1, {{1, 0, "ab\xc3"}}, "pieces[4].piece (byte 59): not valid UTF-8 (at byte 2 of the string)"},
        {2, {{3, 9, NULL}}, "trainer_spec.model_type (byte 59): 9 is not one of the .proto's values (1 to 4)"},
        {2,
         {{40, (int64_t)1 << 40, NULL}},
         "trainer_spec.unk_id (byte 60): 1099511627776 does not fit the field's int32"},
        {2, {{35, 2, NULL}}, "trainer_spec.byte_fallback (byte 60): 2 for a bool"},
        /* add_dummy_prefix as a varint is fine; name as one is not */
        {3, {{4, 1, NULL}, {1, 1, NULL}}, "normalizer_spec.name (byte 60): written as varint"},
        {2, {{41, 4, NULL}}, "trainer_spec.bos_id is 4, beyond the 4 pieces"},
        {2, {{43, -2, NULL}}, "trainer_spec.pad_id is -2"},
    };
    for (size_t i = 0; i < MM_COUNT(fields); i++) {
        spm_basic(&b, 1);
        for (size_t k = 0; k < 2 && fields[i].f[k].field; k++) {
            if (fields[i].f[k].s)
                pb_str(&t, fields[i].f[k].field, fields[i].f[k].s);
            else
                pb_int(&t, fields[i].f[k].field, fields[i].f[k].v);
        }
        pb_len(&b, fields[i].msg, t.data, t.len);
        mm_buf_free(&t);
        spm_bad(&b, fields[i].want);
        mm_buf_free(&b);
    }
    spm_basic(&b, 1);
    mm_buf_append(&b, "\x0b", 1); /* a group */
    spm_bad(&b, "is a group");
    mm_buf_free(&b);

    /* sentencepiece's own checks */
    spm_basic(&b, 1);
    spm_piece(&b, NULL, 0, 0);
    spm_bad(&b, "pieces[4]: empty piece");
    mm_buf_free(&b);
    spm_basic(&b, 3);
    spm_piece(&b, "p1", 0, MM_SPM_USER_DEFINED);
    spm_piece(&b, "p0", 0, MM_SPM_UNUSED);
    spm_bad(&b, "pieces[6]: 'p1' is already defined (pieces[4])");
    mm_buf_free(&b);
    spm_basic(&b, 1);
    spm_piece(&b, "<s>", 0, MM_SPM_NORMAL); /* normal and control: sentencepiece allows it */
    mm_spm_model *m = NULL;
    mm_err err;
    CHECK(spm_parse(&b, &m, &err) == 0 && m && m->npieces == 5);
    mm_spm_free(m);
    spm_piece(&b, "<s>", 0, MM_SPM_UNKNOWN);
    spm_bad(&b, "pieces[5]: a second UNKNOWN piece (the first is pieces[0])");
    mm_buf_free(&b);
    spm_piece(&b, "a", 0, 0);
    spm_bad(&b, "no UNKNOWN piece");
    spm_piece(&b, "<0x41>", 0, MM_SPM_BYTE);
    spm_bad(&b, "byte piece '<0x41>' although trainer_spec.byte_fallback is false");
    mm_buf_free(&b);
    /* byte_fallback: all 256 "<0xHH>" pieces, upper-case */
    spm_byte_fallback(&b, 256);
    m = NULL;
    CHECK(spm_parse(&b, &m, &err) == 0 && m && m->byte_fallback && m->npieces == 259);
    mm_spm_free(m);
    mm_buf_free(&b);
    spm_byte_fallback(&b, 255);
    spm_bad(&b, "no byte piece <0xFF>");
    mm_buf_free(&b);
    spm_byte_fallback(&b, 0);
    spm_piece(&b, "<0xff>", 0, MM_SPM_BYTE);
    spm_bad(&b, "byte piece '<0xff>' is not <0xHH>");
    mm_buf_free(&b);
    /* not a model at all */
    mm_buf_append(&b, "{\"version\": \"1.0\"}", 18);
    spm_parse(&b, &m, &err);
    CHECK(err.msg[0] != 0);
    mm_buf_free(&b);
    spm_bad(&b, "no UNKNOWN piece"); /* an empty file */
}

/* ---- tokenizer folders ---------------------------------------------------------------------------------- */

static char tmp[PATH_MAX];
static int ncase;

/* JSON text written with ' for " (none of the tests' tokens holds a '). Heap. */
__attribute__((format(printf, 1, 2))) static char *J(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s;
    if (vasprintf(&s, fmt, ap) < 0)
        abort();
    va_end(ap);
    for (char *p = s; *p; p++)
        if (*p == '\'')
            *p = '"';
    return s;
}

/* A new folder holding the files given as name, text pairs (NULL-terminated); the texts are freed. */
static char *folder(const char *name, ...)
{
    char *dir = mm_xasprintf("%s/case%d", tmp, ncase++);
    CHECK(mkdir(dir, 0755) == 0);
    va_list ap;
    va_start(ap, name);
    for (const char *n = name; n; n = va_arg(ap, const char *)) {
        char *text = va_arg(ap, char *);
        char *path = mm_path_join(dir, n);
        char *slash = strrchr(path, '/');
        if (strchr(n, '/')) { /* one level of subfolder */
            *slash = 0;
            mkdir(path, 0755);
            *slash = '/';
        }
        check_write_file(path, text, strlen(text));
        free(path);
        free(text);
    }
    va_end(ap);
    return dir;
}

static mm_tokenizer *load(char *dir, mm_err *err)
{
    mm_tokenizer *t = NULL;
    err->msg[0] = 0;
    int rc = mm_tokenizer_load(dir, &t, err);
    if (rc < 0) {
        CHECK(t == NULL);
        t = NULL;
    }
    free(dir);
    return t;
}

/* Loads and expects an error whose message contains `want` (and names the folder). */
static void bad(char *dir, const char *want)
{
    mm_err err;
    char *copy = mm_xstrdup(dir);
    mm_tokenizer *t = load(dir, &err);
    CHECK(t == NULL);
    CHECK_STR_CONTAINS(err.msg, want);
    CHECK_STR_CONTAINS(err.msg, copy);
    free(copy);
    mm_tokenizer_free(t);
}

static const char *ADDED_FLAGS = "'single_word': false, 'lstrip': false, 'rstrip': false";

/* tokenizer.json with a BPE model of vocab (an object's inside), merges (a list's inside) and added
 * tokens (a list's inside). */
static char *bpe_json(const char *vocab, const char *merges, const char *added)
{
    return J(
        "{'version': '1.0', 'truncation': null, 'padding': null, 'added_tokens': [%s], 'normalizer': null, "
        "'pre_tokenizer': {'type': 'ByteLevel'}, 'post_processor': null, 'decoder': null, 'model': {'type': 'BPE', "
        "'dropout': null, 'unk_token': null, 'continuing_subword_prefix': null, 'end_of_word_suffix': null, "
        "'fuse_unk': false, 'byte_fallback': false, 'vocab': {%s}, 'merges': [%s]}}",
        added, vocab, merges);
}

/* One added_tokens entry of tokenizer.json. */
static char *added_entry(int id, const char *content, int special)
{
    return J("{'id': %d, 'content': '%s', %s, 'normalized': %s, 'special': %s}", id, content, ADDED_FLAGS,
             special ? "false" : "true", special ? "true" : "false");
}

static const char VOCAB6[] = "'a': 0, 'b': 1, 'ab': 2, 'c': 3, 'abc': 4, '<|endoftext|>': 5";
static const char MERGES6[] = "'a b', 'ab c'";

/* A refusal: a folder of tokenizer.json and maybe one more file, and what the message must contain.
 * Texts are J's (' for "). */
typedef struct bad_case {
    const char *json;                   /* tokenizer.json; NULL: bpe_json(...) of the next three, else the default */
    const char *vocab, *merges, *added; /* bpe_json's; NULL: VOCAB6, "", "" */
    const char *file, *text;            /* the other file (NULL: bad_cases' default, maybe none) and its text */
    const char *want;
} bad_case;

/* bad() for each case, each in a folder of its own; json and file: the defaults of the cases. */
static void bad_cases(const char *json, const char *file, const bad_case *c, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char *tj = c[i].json                                ? J("%s", c[i].json)
                   : c[i].vocab || c[i].merges || c[i].added ? bpe_json(c[i].vocab ? c[i].vocab : VOCAB6,
                                                                        c[i].merges ? c[i].merges : "",
                                                                        c[i].added ? c[i].added : "")
                                                             : J("%s", json);
        const char *name = c[i].file ? c[i].file : file;
        bad(folder("tokenizer.json", tj, name, name ? J("%s", c[i].text) : NULL, NULL), c[i].want);
    }
}

static int is_added(const mm_tokenizer *t, int id, const char *content, int special, int normalized)
{
    const mm_tok_added *a = mm_tokenizer_added(t, id);
    return a && a->id == id && strcmp(a->content, content) == 0 && a->len == strlen(content) && a->special == special &&
           a->normalized == normalized;
}

static void test_bpe_gpt2_style(void)
{
    mm_err err;
    char *e5 = added_entry(5, "<|endoftext|>", 1);
    mm_tokenizer *t = load(folder("tokenizer.json", bpe_json(VOCAB6, MERGES6, e5), NULL), &err);
    free(e5);
    CHECK(t != NULL);
    if (!t) {
        fprintf(stderr, "%s\n", err.msg);
        return;
    }
    CHECK(t->kind == MM_TOK_FAST);
    CHECK_STR_EQ(t->model_type, "BPE");
    CHECK(t->n_ids == 6 && t->base_size == 6 && t->id_end == 6 && t->nmerges == 2);
    CHECK(t->nadded == 1 && is_added(t, 5, "<|endoftext|>", 1, 0));
    CHECK(mm_tokenizer_id(t, "abc", 3) == 4 && mm_tokenizer_id(t, "ab", 2) == 2 && mm_tokenizer_id(t, "abcd", 4) == -1);
    CHECK(mm_tokenizer_id(t, "", 0) == -1);
    size_t len;
    CHECK(mm_tokenizer_token(t, 2, &len) && len == 2 && mm_tokenizer_token(t, 6, NULL) == NULL &&
          mm_tokenizer_token(t, -1, NULL) == NULL);
    CHECK(mm_tokenizer_added(t, 4) == NULL && mm_tokenizer_added(t, 99) == NULL);
    CHECK(t->tokenizer_json && !t->tokenizer_config && !t->spm && !t->chat_template);
    mm_tokenizer_free(t);
}

static void test_merges(void)
{
    mm_err err;
    /* [a, b] pairs; a "#version" line in the string form; continuing_subword_prefix */
    mm_tokenizer *t = load(folder("tokenizer.json", bpe_json(VOCAB6, "['a', 'b'], ['ab', 'c']", ""), NULL), &err);
    CHECK(t && t->nmerges == 2);
    mm_tokenizer_free(t);
    t = load(folder("tokenizer.json", bpe_json(VOCAB6, "'#version: 0.2', 'a b'", ""), NULL), &err);
    CHECK(t && t->nmerges == 1);
    mm_tokenizer_free(t);
    char *text = J("{'added_tokens': [], 'model': {'type': 'BPE', 'continuing_subword_prefix': '##', "
                   "'vocab': {'a': 0, '##b': 1, 'ab': 2}, 'merges': ['a ##b']}}");
    t = load(folder("tokenizer.json", text, NULL), &err);
    CHECK(t && t->nmerges == 1);
    mm_tokenizer_free(t);
    static const bad_case cases[] = {
        {.merges = "'a b', ['ab', 'c']", .want = "tokenizer.json: model.merges[1]: a list among strings"},
        {.merges = "'a  b'", .want = "model.merges[0]: \"a  b\" is not two tokens split by one space"},
        {.merges = "'a b c'", .want = "is not two tokens"},
        {.merges = "'a x'", .want = "model.merges[0]: 'x' is not in model.vocab"},
        {.merges = "'b c'", .want = "model.merges[0]: the merged token 'bc' is not in model.vocab"},
        {.merges = "['a']", .want = "a merge is a string \"a b\" or a pair"},
        {.json = "{'added_tokens': [], 'model': {'type': 'BPE', 'vocab': {'a': 0}}}",
         .want = "BPE needs \"merges\", a list, not nothing"},
        {.json = "{'added_tokens': [], 'model': {'type': 'BPE', 'continuing_subword_prefix': '###', 'vocab': {'a': 0, "
                 "'#': 1}, 'merges': ['a #']}}",
         .want = "'#' is shorter than continuing_subword_prefix"},
    };
    bad_cases(NULL, NULL, cases, MM_COUNT(cases));
}

static void test_added_token_ids(void)
{
    mm_err err;
    /* Llama 3 / Qwen: added tokens after the model's vocabulary, in order */
    char *e6 = added_entry(6, "<|im_start|>", 1), *e7 = added_entry(7, "<|im_end|>", 1),
         *e5 = added_entry(5, "<|endoftext|>", 1);
    char *added = J("%s, %s, %s", e5, e6, e7);
    mm_tokenizer *t = load(folder("tokenizer.json", bpe_json(VOCAB6, MERGES6, added), NULL), &err);
    CHECK(t && t->n_ids == 8 && t->base_size == 6 && t->nadded == 3);
    if (t)
        CHECK(is_added(t, 6, "<|im_start|>", 1, 0) && is_added(t, 7, "<|im_end|>", 1, 0) &&
              mm_tokenizer_id(t, "<|im_end|>", 10) == 7);
    mm_tokenizer_free(t);
    free(added);
    /* out of order: the library numbers them in file order, so each would name the other's row */
    added = J("%s, %s", e7, e6);
    bad(folder("tokenizer.json", bpe_json(VOCAB6, MERGES6, added), NULL),
        "tokenizer.json: added_tokens[0]: '<|im_end|>' is declared at id 7 but transformers gives it id 6 (id 7 holds "
        "'<|im_start|>')");
    free(added);
    /* a gap among the added ids */
    added = J("%s", e7);
    bad(folder("tokenizer.json", bpe_json(VOCAB6, MERGES6, added), NULL),
        "declared at id 7 but transformers gives it id 6");
    free(added);
    /* a model token declared at another id than the model's */
    char *wrong = added_entry(3, "abc", 0);
    bad(folder("tokenizer.json", bpe_json(VOCAB6, MERGES6, wrong), NULL),
        "'abc' is declared at id 3 but transformers gives it id 4");
    free(wrong);
    /* empty content: the library skips it */
    wrong = added_entry(6, "", 1);
    bad(folder("tokenizer.json", bpe_json(VOCAB6, MERGES6, wrong), NULL),
        "added_tokens[0]: an added token with empty content");
    free(wrong);
    /* the same token twice: the later flags win, the id stays */
    char *e6n = added_entry(6, "<|im_start|>", 0);
    added = J("%s, %s", e6, e6n);
    t = load(folder("tokenizer.json", bpe_json(VOCAB6, MERGES6, added), NULL), &err);
    CHECK(t && t->nadded == 1 && t->n_ids == 7 && is_added(t, 6, "<|im_start|>", 0, 1));
    mm_tokenizer_free(t);
    free(added);
    free(e6n);
    free(e5);
    free(e6);
    free(e7);
}

static void test_vocab_refusals(void)
{
    static const bad_case cases[] = {
        {.vocab = "'a': 0, 'b': 1, 'a': 2", .want = "tokenizer.json: model.vocab: 'a' appears twice (ids 0 and 2)"},
        {.vocab = "'a': 0, 'b': 0", .want = "model.vocab: 'b' has id 0, which 'a' has already"},
        {.vocab = "'a': 1.0", .want = "the id of 'a' is a number, not an integer"},
        {.vocab = "'a': -1", .want = "not an integer from 0 to 2^32 - 1"},
        {.vocab = "'a': 1e3", .want = "not an integer"},
        {.vocab = "'a': '3'", .want = "the id of 'a' is a string"},
        {.vocab = "'a': 4294967296", .want = "not an integer"},
        {.vocab = "'a': 4294967295", .want = "'a' has id 4294967295, beyond what a vocabulary of this size can span"},
        {.json = "{'added_tokens': [], 'model': {'type': 'BPE', 'vocab': ['a'], 'merges': []}}",
         .want = "model.vocab: the vocabulary is an object of token: id, not a list"},
        {.json = "{'added_tokens': [], 'model': {'vocab': {}, 'merges': []}}",
         .want = "model: \"type\" must name the model"},
        {.json = "{'added_tokens': [], 'model': {'type': 'Tiktoken', 'vocab': {}}}",
         .want = "unknown model type \"Tiktoken\""},
        {.json = "{'added_tokens': []}", .want = "tokenizer.json: model: needs an object, not nothing"},
        {.json = "{'model': {'type': 'WordLevel', 'vocab': {}, 'unk_token': 'u'}}",
         .want = "added_tokens: needs a list"},
        {.json = "{'added_tokens': [], 'model': {'type': 'WordLevel', 'vocab': {}, 'unk_token': 'u'}, "
                 "'model': {'type': 'WordLevel', 'vocab': {}, 'unk_token': 'u'}}",
         .want = "\"model\" is written twice"},
        {.json = "{'version': '2.0', 'added_tokens': []}", .want = "\"version\" must be \"1.0\""},
        {.json = "[1, 2]", .want = "tokenizer.json: the file holds an object, not a list"},
        {.json = "{'added_tokens': [}", .want = "tokenizer.json: not valid JSON (syntax error at byte"},
        {.json = "{'added_tokens': [], 'model': {'type': 'BPE', 'vocab': {'a\\u0000b': 0}, 'merges': []}}",
         .want = "a string holds \\u0000 (at byte 58)"},
        {.json = "{\"added_tokens\": [], \"x\": \"\xc3\x28\"}", .want = "tokenizer.json: not valid UTF-8 (at byte 27)"},
        /* added_tokens entries: every field, of its type */
        {.added = "{'id': 6, 'content': 'x', 'single_word': false, 'lstrip': false, 'rstrip': false, "
                  "'normalized': false}",
         .want = "tokenizer.json: added_tokens[0]: \"special\" must be a bool, not nothing"},
        {.added = "{'id': 6, 'content': 'x', 'single_word': 0, 'lstrip': false, 'rstrip': false, 'normalized': false, "
                  "'special': true}",
         .want = "\"single_word\" must be a bool, not a number"},
        {.added = "{'id': 6.5, 'content': 'x'}", .want = "added_tokens[0]: \"id\" must be an integer"},
        {.added = "{'id': 6, 'content': 7}", .want = "\"content\" must be a string, not a number"},
        {.added = "{'id': 6, 'id': 7, 'content': 'x'}", .want = "added_tokens[0]: \"id\" is written twice"},
        {.added = "3", .want = "added_tokens[0]: an added token is an object, not a number"},
        /* padding: an object needs its pad_token */
        {.json = "{'added_tokens': [], 'padding': {'strategy': 'BatchLongest'}, 'model': {'type': 'WordLevel', "
                 "'vocab': {}, 'unk_token': 'u'}}",
         .want = "tokenizer.json: padding: needs \"pad_token\", a string"},
    };
    bad_cases(NULL, NULL, cases, MM_COUNT(cases));
}

static void test_gaps(void)
{
    mm_err err;
    /* WordLevel allows ids with gaps (the library's own test has {"<unk>": 0, "b": 2}) */
    char *text = J("{'added_tokens': [], 'model': {'type': 'WordLevel', 'vocab': {'<unk>': 0, 'b': 2}, "
                   "'unk_token': '<unk>'}}");
    mm_tokenizer *t = load(folder("tokenizer.json", text, NULL), &err);
    CHECK(t && t->n_ids == 2 && t->base_size == 2 && t->id_end == 3);
    if (t)
        CHECK(t->tokens[1] == NULL && mm_tokenizer_token(t, 1, NULL) == NULL && mm_tokenizer_id(t, "b", 1) == 2);
    mm_tokenizer_free(t);
    /* ... but a new added token then gets id 2 (the model's size): two tokens at one id */
    char *e = added_entry(2, "<x>", 1);
    text = J("{'added_tokens': [%s], 'model': {'type': 'WordLevel', 'vocab': {'<unk>': 0, 'b': 2}, 'unk_token': "
             "'<unk>'}}",
             e);
    free(e);
    bad(folder("tokenizer.json", text, NULL),
        "added token '<x>' would get id 2, which the model's vocabulary gives to 'b'");
    /* an id far beyond the vocabulary's size */
    text = J("{'added_tokens': [], 'model': {'type': 'WordLevel', 'vocab': {'<unk>': 0, 'b': 2000000}, "
             "'unk_token': '<unk>'}}");
    bad(folder("tokenizer.json", text, NULL), "'b' has id 2000000, beyond what a vocabulary of this size can span");
}

static void test_unigram_wordpiece(void)
{
    mm_err err;
    char *e = added_entry(0, "<unk>", 1);
    char *text = J("{'added_tokens': [%s], 'model': {'type': 'Unigram', 'unk_id': 0, 'byte_fallback': false, "
                   "'vocab': [['<unk>', 0.0], ['\xe2\x96\x81"
                   "a', -1.5], ['b', -2]]}}",
                   e);
    mm_tokenizer *t = load(folder("tokenizer.json", text, NULL), &err);
    CHECK(t && t->n_ids == 3 && t->base_size == 3 && t->nadded == 1);
    if (t) {
        CHECK_STR_EQ(t->model_type, "Unigram");
        CHECK(mm_tokenizer_id(t,
                              "\xe2\x96\x81"
                              "a",
                              4) == 1 &&
              is_added(t, 0, "<unk>", 1, 0));
    }
    mm_tokenizer_free(t);
    free(e);
    static const bad_case cases[] = {
        {.json = "{'added_tokens': [], 'model': {'type': 'Unigram', 'vocab': [['a', 0], ['a', -1]]}}",
         .want = "model.vocab: 'a' appears twice (ids 0 and 1)"},
        {.json = "{'added_tokens': [], 'model': {'type': 'Unigram', 'vocab': [['a', 0], ['b']]}}",
         .want = "model.vocab[1]: an entry is [piece, score]"},
        {.json = "{'added_tokens': [], 'model': {'type': 'Unigram', 'vocab': [['a', '0']]}}",
         .want = "model.vocab[0]: an entry is [piece, score]"},
        {.json = "{'added_tokens': [], 'model': {'type': 'Unigram', 'unk_id': 2, 'vocab': [['a', 0]]}}",
         .want = "\"unk_id\" must be null or the index of a vocabulary entry (0 to 0)"},
        {.json = "{'added_tokens': [], 'model': {'type': 'Unigram', 'vocab': {'a': 0}}}",
         .want = "a Unigram vocabulary is a list of [piece, score], not an object"},
        {.json = "{'added_tokens': [], 'model': {'type': 'WordPiece', 'vocab': {'a': 0}}}",
         .want = "model: needs \"unk_token\", a string, not nothing"},
    };
    bad_cases(NULL, NULL, cases, MM_COUNT(cases));
    text = J("{'added_tokens': [], 'model': {'type': 'WordPiece', 'unk_token': '[UNK]', 'continuing_subword_prefix': "
             "'##', 'vocab': {'[UNK]': 0, 'a': 1, '##b': 2}}}");
    t = load(folder("tokenizer.json", text, NULL), &err);
    CHECK(t && t->n_ids == 3 && t->nadded == 0 && t->nmerges == 0);
    if (t)
        CHECK_STR_EQ(t->model_type, "WordPiece");
    mm_tokenizer_free(t);
}

/* tokenizer_config.json: added_tokens_decoder, the special tokens, and how they join the backend's. */
static void test_config(void)
{
    mm_err err;
    char *e5 = added_entry(5, "<|endoftext|>", 1);
    /* Qwen: the decoder repeats tokenizer.json's and adds one; pad_token is new; bos is a model token */
    char *cfg = J("{'added_tokens_decoder': {'5': {'content': '<|endoftext|>', %s, 'normalized': false, 'special': "
                  "true}, '6': {'content': '<tool>', %s, 'normalized': true, 'special': false}}, "
                  "'bos_token': 'abc', 'eos_token': '<|endoftext|>', 'pad_token': '<pad>', 'unk_token': null, "
                  "'tokenizer_class': 'Qwen2Tokenizer', 'model_max_length': 32768}",
                  ADDED_FLAGS, ADDED_FLAGS);
    mm_tokenizer *t =
        load(folder("tokenizer.json", bpe_json(VOCAB6, MERGES6, e5), "tokenizer_config.json", cfg, NULL), &err);
    CHECK(t != NULL);
    if (t) {
        CHECK(t->n_ids == 8 && t->base_size == 6 && t->nadded == 4);
        CHECK(is_added(t, 4, "abc", 1, 0)); /* a named special token already in the model: now an added token */
        CHECK(is_added(t, 5, "<|endoftext|>", 1, 0));
        CHECK(is_added(t, 6, "<tool>", 0, 1));
        CHECK(is_added(t, 7, "<pad>", 1, 0)); /* new: appended, special */
        CHECK(t->added[0].id == 4 && t->added[3].id == 7);
        CHECK(t->tokenizer_config != NULL);
    } else {
        fprintf(stderr, "%s\n", err.msg);
    }
    mm_tokenizer_free(t);
    /* the decoder's flags replace tokenizer.json's; a named token's entry is made special */
    cfg = J("{'added_tokens_decoder': {'5': {'content': '<|endoftext|>', 'lstrip': true, 'special': false}}, "
            "'eos_token': '<|endoftext|>'}");
    t = load(folder("tokenizer.json", bpe_json(VOCAB6, MERGES6, e5), "tokenizer_config.json", cfg, NULL), &err);
    CHECK(t && t->nadded == 1);
    if (t)
        CHECK(t->added[0].lstrip && t->added[0].special && t->added[0].normalized && !t->added[0].rstrip);
    mm_tokenizer_free(t);
    /* named tokens as AddedToken objects; model-specific *_token keys; extra_special_tokens */
    cfg = J("{'added_tokens_decoder': {}, 'pad_token': {'__type': 'AddedToken', 'content': '<pad>', 'lstrip': true, "
            "'normalized': true, 'rstrip': false, 'single_word': false, 'special': false}, 'image_token': '<image>', "
            "'extra_special_tokens': ['<e1>', {'__type': 'AddedToken', 'content': '<e2>', 'special': false}], "
            "'additional_special_tokens': ['<ignored: extra wins>']}");
    t = load(folder("tokenizer.json", bpe_json(VOCAB6, MERGES6, ""), "tokenizer_config.json", cfg, NULL), &err);
    CHECK(t && t->nadded == 4 && t->n_ids == 10);
    if (t) {
        CHECK(is_added(t, 6, "<pad>", 1, 1) && t->added[0].lstrip); /* named: made special, the rest kept */
        CHECK(is_added(t, 7, "<image>", 1, 0));
        CHECK(is_added(t, 8, "<e1>", 1, 0));
        CHECK(is_added(t, 9, "<e2>", 0, 1)); /* an extra AddedToken keeps special=false */
    } else {
        fprintf(stderr, "%s\n", err.msg);
    }
    mm_tokenizer_free(t);
    /* additional_special_tokens when extra_special_tokens is not given; padding's pad_token */
    char *tj = J("{'added_tokens': [], 'padding': {'pad_token': '[PAD]', 'pad_id': 3}, 'model': {'type': 'WordLevel', "
                 "'vocab': {'<unk>': 0, 'a': 1, '[PAD]': 2}, 'unk_token': '<unk>'}}");
    cfg = J("{'added_tokens_decoder': {}, 'additional_special_tokens': ['<a1>']}");
    t = load(folder("tokenizer.json", tj, "tokenizer_config.json", cfg, NULL), &err);
    CHECK(t && t->nadded == 2 && is_added(t, 2, "[PAD]", 1, 0) && is_added(t, 3, "<a1>", 1, 0));
    mm_tokenizer_free(t);
    /* the declared ids of the decoder; refusals */
    static const bad_case cases[] = {
        {.text = "{'added_tokens_decoder': {'9': {'content': '<tool>'}}}",
         .want = "tokenizer_config.json: added_tokens_decoder['9']: '<tool>' is declared at id 9 but transformers "
                 "gives it id 6 (id 9 holds nothing)"},
        {.text = "{'added_tokens_decoder': {'2': {'content': '<tool>'}}}",
         .want = "declared at id 2 but transformers gives it id 6 (id 2 holds 'ab')"},
        {.text = "{'added_tokens_decoder': {'6': {'content': 'x'}, '06': {'content': 'y'}}}",
         .want = "added_tokens_decoder['06']: id 6 is given twice ('x' and 'y')"},
        {.text = "{'added_tokens_decoder': {'-6': {'content': 'x'}}}",
         .want = "added_tokens_decoder['-6']: the key must be an id"},
        {.text = "{'added_tokens_decoder': {'6': {'content': 'x', 'bold': true}}}",
         .want = "added_tokens_decoder['6']: unknown key \"bold\" for an AddedToken"},
        {.text = "{'added_tokens_decoder': {'6': {'special': true}}}",
         .want = "an AddedToken needs \"content\" (a string), not nothing"},
        {.text = "{'added_tokens_decoder': {'6': 'x'}}",
         .want = "added_tokens_decoder['6']: an added token is an object, not a string"},
        {.text = "{'added_tokens_decoder': [1]}",
         .want = "added_tokens_decoder: is an object of id: AddedToken, not a list"},
        {.text = "{'added_tokens_decoder': {}, 'bos_token': {'content': '<s>'}}",
         .want = "tokenizer_config.json: bos_token: a special token must be a string or an object with \"__type\""},
        {.text = "{'added_tokens_decoder': {}, 'bos_token': 3}", .want = "bos_token: a special token must be a string"},
        {.text = "{'added_tokens_decoder': {}, 'extra_special_tokens': ['a', null]}",
         .want = "extra_special_tokens[1]: null is no special token"},
        {.text = "{'added_tokens_decoder': {}, 'eos_token': 'a', 'eos_token': 'b'}",
         .want = "tokenizer_config.json: \"eos_token\" is written twice"},
        {.text = "{'fast_tokenizer_files': ['tokenizer.4.json']}", .want = "\"fast_tokenizer_files\""},
        {.text = "['a']", .want = "tokenizer_config.json: the file holds an object, not a list"},
    };
    char *tj5 = bpe_json(VOCAB6, MERGES6, e5);
    bad_cases(tj5, "tokenizer_config.json", cases, MM_COUNT(cases));
    free(tj5);
    /* an empty named token is ignored, as the library ignores empty tokens */
    cfg = J("{'added_tokens_decoder': {}, 'pad_token': ''}");
    t = load(folder("tokenizer.json", bpe_json(VOCAB6, MERGES6, e5), "tokenizer_config.json", cfg, NULL), &err);
    CHECK(t && t->nadded == 1 && t->n_ids == 6);
    mm_tokenizer_free(t);
    free(e5);
}

/* No added_tokens_decoder in the config: special_tokens_map.json, added_tokens.json and tokenizer.json's
 * added_tokens make it (transformers before 4.34 wrote such folders). */
static void test_legacy(void)
{
    mm_err err;
    char *e5 = added_entry(5, "<|endoftext|>", 1);
    mm_tokenizer *t = load(folder("tokenizer.json", bpe_json(VOCAB6, MERGES6, e5), "tokenizer_config.json",
                                  J("{'additional_special_tokens': ['<x>'], 'eos_token': '<|endoftext|>'}"),
                                  "added_tokens.json", J("{'<x>': 6, '<y>': 7}"), "special_tokens_map.json",
                                  J("{'pad_token': {'content': '<pad>', 'lstrip': false, 'normalized': true, "
                                    "'rstrip': false, 'single_word': false}, 'bos_token': 'abc'}"),
                                  NULL),
                           &err);
    CHECK(t != NULL);
    if (t) {
        CHECK(t->n_ids == 9 && t->nadded == 5);
        CHECK(is_added(t, 4, "abc", 1, 0)); /* special_tokens_map.json's bos, a model token */
        CHECK(is_added(t, 5, "<|endoftext|>", 1, 0));
        CHECK(is_added(t, 6, "<x>", 1, 0));   /* in additional_special_tokens: special */
        CHECK(is_added(t, 7, "<y>", 0, 1));   /* not special: normalized */
        CHECK(is_added(t, 8, "<pad>", 1, 1)); /* the map's object: made special, normalized as written */
    } else {
        fprintf(stderr, "%s\n", err.msg);
    }
    mm_tokenizer_free(t);
    /* the files are not read when the config has the decoder */
    t = load(folder("tokenizer.json", bpe_json(VOCAB6, MERGES6, e5), "tokenizer_config.json",
                    J("{'added_tokens_decoder': {}}"), "added_tokens.json", J("{'<x>': 6}"), "special_tokens_map.json",
                    J("{'pad_token': '<pad>'}"), NULL),
             &err);
    CHECK(t && t->n_ids == 6 && t->nadded == 1);
    mm_tokenizer_free(t);
    static const bad_case cases[] = {
        {.text = "{'<x>': 9}",
         .want = "added_tokens.json: '<x>': '<x>' is declared at id 9 but transformers gives it id 6"},
        {.text = "{'<x>': 5}", .want = "tokenizer.json: added_tokens[0]: '<|endoftext|>' at id 5, where"},
        {.text = "{'<x>': 6, '<y>': 6}", .want = "id 6 is given twice ('<x>' and '<y>')"},
        {.text = "{'<x>': '6'}",
         .want = "added_tokens.json: '<x>': the id must be an integer from 0 to 2^32 - 1, not a string"},
        {.text = "['<x>']", .want = "added_tokens.json: the file holds an object of token: id, not a list"},
        {.file = "special_tokens_map.json",
         .text = "{'bos_token': 1}",
         .want = "special_tokens_map.json: bos_token: a special token is a string or an object, not a number"},
    };
    char *tj5 = bpe_json(VOCAB6, MERGES6, e5);
    bad_cases(tj5, "added_tokens.json", cases, MM_COUNT(cases));
    free(tj5);
    free(e5);
}

static void spm_file(mm_buf *b)
{
    spm_basic(b, 3);
    spm_piece(b, "<|im_start|>", 0, MM_SPM_USER_DEFINED);
    spm_piece(b, "<ctl>", 0, MM_SPM_CONTROL);
}

static void test_spm_folder(void)
{
    mm_err err;
    mm_buf b = {0};
    spm_file(&b);
    /* the model holds NUL bytes: written by hand, not through folder() */
    char *dir = folder("tokenizer_config.json",
                       J("{'added_tokens_decoder': {'8': {'content': '<|im_end|>', 'special': true}}, "
                         "'chat_template': 'cfg'}"),
                       NULL);
    char *path = mm_path_join(dir, "tokenizer.model");
    check_write_file(path, b.data, b.len);
    free(path);
    mm_tokenizer *t = load(dir, &err);
    CHECK(t != NULL);
    if (t) {
        CHECK(t->kind == MM_TOK_SPM && t->spm && t->spm->npieces == 8);
        CHECK_STR_EQ(t->model_type, "Unigram");
        CHECK(t->base_size == 8 && t->n_ids == 9 && t->id_end == 9);
        CHECK(mm_tokenizer_id(t, "p2", 2) == 5);
        CHECK(is_added(t, 0, "<unk>", 1, 0) && is_added(t, 1, "<s>", 1, 0) && is_added(t, 2, "</s>", 1, 0));
        CHECK(is_added(t, 6, "<|im_start|>", 0, 0) && is_added(t, 7, "<ctl>", 1, 0) &&
              is_added(t, 8, "<|im_end|>", 1, 0));
        CHECK(t->nadded == 6 && mm_tokenizer_added(t, 3) == NULL);
        CHECK_STR_EQ(t->chat_template, "cfg");
    } else {
        fprintf(stderr, "%s\n", err.msg);
    }
    mm_tokenizer_free(t);
    /* the config's names win over trainer_spec's; extra_special_tokens replaces the pieces' list */
    dir = folder("tokenizer_config.json",
                 J("{'added_tokens_decoder': {}, 'bos_token': null, 'unk_token': 'p0', 'extra_special_tokens': []}"),
                 NULL);
    path = mm_path_join(dir, "tokenizer.model");
    check_write_file(path, b.data, b.len);
    free(path);
    t = load(dir, &err);
    CHECK(t && t->nadded == 2 && is_added(t, 2, "</s>", 1, 0) && is_added(t, 3, "p0", 1, 0));
    mm_tokenizer_free(t);
    /* a decoder entry at a piece's id with another text: the generic class renames the piece, the
     * model-specific ones append the token: refused */
    dir = folder("tokenizer_config.json", J("{'added_tokens_decoder': {'4': {'content': '<new>'}}}"), NULL);
    path = mm_path_join(dir, "tokenizer.model");
    check_write_file(path, b.data, b.len);
    free(path);
    bad(dir, "added_tokens_decoder['4']: '<new>' is declared at id 4 but transformers gives it id 8 (id 4 holds 'p1')");
    /* a text both normal and control: one key of get_vocab() cannot hold two ids */
    spm_piece(&b, "<s>", 0, 0);
    dir = folder(NULL);
    path = mm_path_join(dir, "tokenizer.model");
    check_write_file(path, b.data, b.len);
    free(path);
    bad(dir, "tokenizer.model: pieces: '<s>' appears twice (ids 1 and 8)");
    /* a broken model names the file */
    dir = folder("tokenizer.model", mm_xstrdup("\x0a\x09"), NULL);
    bad(dir, "tokenizer.model: byte 1: length-delimited value of 9 bytes");
    mm_buf_free(&b);
}

static void test_chat_template(void)
{
    mm_err err;
    const char *tj = "{'added_tokens': [], 'model': {'type': 'WordLevel', 'vocab': {'u': 0}, 'unk_token': 'u'}}";
    mm_tokenizer *t = load(folder("tokenizer.json", J("%s", tj), "tokenizer_config.json",
                                  J("{'chat_template': [{'name': 'tool_use', 'template': 'T'}, {'name': 'default', "
                                    "'template': 'D'}]}"),
                                  NULL),
                           &err);
    CHECK(t && t->chat_template && strcmp(t->chat_template, "D") == 0);
    mm_tokenizer_free(t);
    t = load(folder("tokenizer.json", J("%s", tj), "tokenizer_config.json",
                    J("{'chat_template': [{'name': 'tool_use', 'template': 'T'}]}"), NULL),
             &err);
    CHECK(t && t->chat_template == NULL);
    mm_tokenizer_free(t);
    /* chat_template.jinja replaces the config's */
    t = load(folder("tokenizer.json", J("%s", tj), "tokenizer_config.json", J("{'chat_template': 'cfg'}"),
                    "chat_template.jinja", mm_xstrdup("{{ file }}\n"), NULL),
             &err);
    CHECK(t && t->chat_template && strcmp(t->chat_template, "{{ file }}\n") == 0);
    mm_tokenizer_free(t);
    t = load(folder("tokenizer.json", J("%s", tj), "chat_template.jinja", mm_xstrdup("file"),
                    "additional_chat_templates/default.jinja", mm_xstrdup("dir default"), NULL),
             &err);
    CHECK(t && t->chat_template && strcmp(t->chat_template, "dir default") == 0);
    mm_tokenizer_free(t);
    /* additional templates alone replace the config's too: no default then */
    t = load(folder("tokenizer.json", J("%s", tj), "tokenizer_config.json", J("{'chat_template': 'cfg'}"),
                    "additional_chat_templates/tool_use.jinja", mm_xstrdup("tools"), NULL),
             &err);
    CHECK(t && t->chat_template == NULL);
    mm_tokenizer_free(t);
    static const bad_case cases[] = {
        {.text = "{'chat_template': 7}",
         .want = "tokenizer_config.json: chat_template: is a string or a list of {name, template}, not a number"},
        {.text = "{'chat_template': [{'name': 'default'}]}",
         .want = "chat_template[0]: needs \"name\" and \"template\", both strings"},
        {.text = "{'chat_template': [{'name': 'a', 'template': '1'}, {'name': 'a', 'template': '2'}]}",
         .want = "chat_template[1]: a second template named \"a\""},
        {.file = "chat_template.jinja", .text = "\xff", .want = "chat_template.jinja: not UTF-8 text"},
    };
    bad_cases(tj, "tokenizer_config.json", cases, MM_COUNT(cases));
}

static void test_missing_and_large(void)
{
    mm_err err;
    char *dir = folder("config.json", J("{}"), NULL);
    char *copy = mm_xstrdup(dir);
    mm_tokenizer *t = NULL;
    CHECK(mm_tokenizer_load(dir, &t, &err) == -ENOENT && t == NULL);
    CHECK_STR_CONTAINS(err.msg, "no tokenizer.json nor tokenizer.model");
    free(dir);
    free(copy);
    /* 200000 tokens: the hash finds every one (and the load takes well under a second) */
    mm_buf v = {0};
    for (int i = 0; i < 200000; i++)
        mm_buf_printf(&v, "%s'tok%d': %d", i ? ", " : "", i, 199999 - i);
    char *text = J("{'added_tokens': [], 'model': {'type': 'WordLevel', 'unk_token': 'tok0', 'vocab': {%s}}}", v.data);
    mm_buf_free(&v);
    t = load(folder("tokenizer.json", text, NULL), &err);
    CHECK(t && t->n_ids == 200000);
    if (t) {
        int ok = 1;
        for (int i = 0; i < 200000; i++) {
            char s[16];
            int n = snprintf(s, sizeof s, "tok%d", i);
            ok &= mm_tokenizer_id(t, s, (size_t)n) == 199999 - i;
            ok &= t->token_lens[199999 - i] == (size_t)n && memcmp(t->tokens[199999 - i], s, (size_t)n) == 0;
        }
        CHECK(ok);
    }
    mm_tokenizer_free(t);
}

int main(void)
{
    char *old;
    if (check_enter_tmpdir(tmp, "mm-test-tokenizer", &old) < 0)
        return 1;
    test_pbwire();
    test_spm_model();
    test_spm_refusals();
    test_bpe_gpt2_style();
    test_merges();
    test_added_token_ids();
    test_vocab_refusals();
    test_gaps();
    test_unigram_wordpiece();
    test_config();
    test_legacy();
    test_spm_folder();
    test_chat_template();
    test_missing_and_large();
    check_leave_tmpdir(tmp, old);
    return mm_check_report();
}
