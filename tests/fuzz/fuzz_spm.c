/* Fuzzes the sentencepiece model reader (mm_spm_parse, formats/spm.c, over formats/pbwire.c): the input
 * is a tokenizer.model's bytes.
 *
 * Properties of every accepted model: the checks sentencepiece makes hold (pieces not empty, UTF-8 and
 * NUL-terminated, one UNKNOWN piece, no text twice among the normal and among the reserved pieces, byte
 * pieces "<0xHH>" only with byte_fallback and then all 256), enum values within the .proto's, the
 * unk/bos/eos/pad ids -1 or a piece's, the raw bytes kept whole and the charsmap within them; and the
 * writer round trip: the model written again with the fields read (in another field order, with the
 * defaults written out) reads back to the same model. */
#include <string.h>

#include "fuzz.h"
#include "base/util.h"
#include "formats/pbwire.h"
#include "formats/spm.h"
#include "tests/pbwrite.h"

static void check_model(const mm_spm_model *m, const uint8_t *data, size_t size)
{
    FUZZ_CHECK(m->raw_len == size && memcmp(m->raw, data, size) == 0);
    FUZZ_CHECK(m->model_type >= MM_SPM_UNIGRAM && m->model_type <= MM_SPM_CHAR);
    FUZZ_CHECK(m->npieces >= 1);
    int unk = 0, bytes[256] = {0}, nbytes = 0;
    for (size_t i = 0; i < m->npieces; i++) {
        const mm_spm_piece *p = &m->pieces[i];
        FUZZ_CHECK(p->len > 0 && p->piece[p->len] == 0 && mm_utf8_valid_len(p->piece, p->len) == p->len);
        FUZZ_CHECK(p->type >= MM_SPM_NORMAL && p->type <= MM_SPM_BYTE);
        unk += p->type == MM_SPM_UNKNOWN;
        if (p->type == MM_SPM_BYTE) {
            FUZZ_CHECK(m->byte_fallback && p->len == 6 && memcmp(p->piece, "<0x", 3) == 0);
            unsigned b;
            FUZZ_CHECK(strchr("0123456789ABCDEF", p->piece[3]) && strchr("0123456789ABCDEF", p->piece[4]));
            FUZZ_CHECK(sscanf(p->piece, "<0x%2X>", &b) == 1 && b < 256 && !bytes[b]);
            bytes[b] = 1;
            nbytes++;
        }
    }
    FUZZ_CHECK(unk == 1);
    FUZZ_CHECK(!m->byte_fallback || nbytes == 256);
    if (m->npieces <= 4000) /* inputs are small; the reader itself sorts */
        for (size_t i = 0; i < m->npieces; i++)
            for (size_t j = 0; j < i; j++) {
                const mm_spm_piece *a = &m->pieces[i], *b = &m->pieces[j];
                int ra = a->type == MM_SPM_CONTROL || a->type == MM_SPM_UNKNOWN || a->type == MM_SPM_BYTE;
                int rb = b->type == MM_SPM_CONTROL || b->type == MM_SPM_UNKNOWN || b->type == MM_SPM_BYTE;
                FUZZ_CHECK(ra != rb || a->len != b->len || memcmp(a->piece, b->piece, a->len) != 0);
            }
    const int32_t ids[] = {m->unk_id, m->bos_id, m->eos_id, m->pad_id};
    for (int i = 0; i < 4; i++)
        FUZZ_CHECK(ids[i] >= -1 && ids[i] < (int32_t)m->npieces);
    FUZZ_CHECK(!m->precompiled_charsmap || (m->precompiled_charsmap >= m->raw &&
                                            m->precompiled_charsmap + m->precompiled_charsmap_len <= m->raw + size));
    const char *names[] = {m->unk_piece, m->bos_piece, m->eos_piece, m->pad_piece, m->normalizer_name};
    for (int i = 0; i < 5; i++)
        FUZZ_CHECK(names[i] && mm_utf8_valid_len(names[i], strlen(names[i])) == strlen(names[i]));
}

/* ---- the round trip ---- */

static void write_model(const mm_spm_model *m, mm_buf *out)
{
    mm_buf ts = {0}, ns = {0};
    /* trainer_spec and normalizer_spec first (the reader must not care), every field written */
    pb_int(&ts, 3, m->model_type);
    pb_int(&ts, 4, m->vocab_size);
    pb_int(&ts, 35, m->byte_fallback);
    pb_int(&ts, 40, m->unk_id);
    pb_int(&ts, 41, m->bos_id);
    pb_int(&ts, 42, m->eos_id);
    pb_int(&ts, 43, m->pad_id);
    pb_str(&ts, 45, m->unk_piece);
    pb_str(&ts, 46, m->bos_piece);
    pb_str(&ts, 47, m->eos_piece);
    pb_str(&ts, 48, m->pad_piece);
    pb_len(out, 2, ts.data ? ts.data : "", ts.len);
    pb_str(&ns, 1, m->normalizer_name);
    if (m->precompiled_charsmap)
        pb_len(&ns, 2, m->precompiled_charsmap, m->precompiled_charsmap_len);
    pb_int(&ns, 3, m->add_dummy_prefix);
    pb_int(&ns, 4, m->remove_extra_whitespaces);
    pb_int(&ns, 5, m->escape_whitespaces);
    pb_len(out, 3, ns.data ? ns.data : "", ns.len);
    for (size_t i = 0; i < m->npieces; i++) {
        mm_buf p = {0};
        pb_int(&p, 3, m->pieces[i].type);
        pb_float(&p, 2, &m->pieces[i].score);
        pb_len(&p, 1, m->pieces[i].piece, m->pieces[i].len);
        pb_len(out, 1, p.data, p.len);
        mm_buf_free(&p);
    }
    mm_buf_free(&ts);
    mm_buf_free(&ns);
}

static void check_round_trip(const mm_spm_model *m)
{
    mm_buf b = {0};
    write_model(m, &b);
    mm_spm_model *back = NULL;
    mm_err err;
    int rc = mm_spm_parse(b.data, b.len, &back, &err);
    if (rc < 0)
        fprintf(stderr, "round trip refused: %s\n", err.msg);
    FUZZ_CHECK(rc == 0 && back->npieces == m->npieces);
    for (size_t i = 0; i < m->npieces; i++) {
        FUZZ_CHECK(back->pieces[i].len == m->pieces[i].len &&
                   memcmp(back->pieces[i].piece, m->pieces[i].piece, m->pieces[i].len) == 0);
        FUZZ_CHECK(memcmp(&back->pieces[i].score, &m->pieces[i].score, 4) == 0 &&
                   back->pieces[i].type == m->pieces[i].type);
    }
    FUZZ_CHECK(back->model_type == m->model_type && back->vocab_size == m->vocab_size &&
               back->byte_fallback == m->byte_fallback);
    FUZZ_CHECK(back->unk_id == m->unk_id && back->bos_id == m->bos_id && back->eos_id == m->eos_id &&
               back->pad_id == m->pad_id);
    FUZZ_CHECK(strcmp(back->unk_piece, m->unk_piece) == 0 && strcmp(back->bos_piece, m->bos_piece) == 0 &&
               strcmp(back->eos_piece, m->eos_piece) == 0 && strcmp(back->pad_piece, m->pad_piece) == 0);
    FUZZ_CHECK(strcmp(back->normalizer_name, m->normalizer_name) == 0 &&
               back->add_dummy_prefix == m->add_dummy_prefix &&
               back->remove_extra_whitespaces == m->remove_extra_whitespaces &&
               back->escape_whitespaces == m->escape_whitespaces);
    FUZZ_CHECK(back->precompiled_charsmap_len == m->precompiled_charsmap_len);
    mm_spm_free(back);
    mm_buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mm_spm_model *m = NULL;
    mm_err err;
    err.msg[0] = 0;
    if (mm_spm_parse(data, size, &m, &err) == 0) {
        check_model(m, data, size);
        check_round_trip(m);
        mm_spm_free(m);
    } else {
        FUZZ_CHECK(m == NULL && err.msg[0] != 0);
    }
    return 0;
}
