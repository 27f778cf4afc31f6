#include "spm.h"

#include "pbwire.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Field numbers of src/sentencepiece_model.proto. */
enum { MODEL_PIECES = 1, MODEL_TRAINER_SPEC = 2, MODEL_NORMALIZER_SPEC = 3 };
enum { PIECE_PIECE = 1, PIECE_SCORE = 2, PIECE_TYPE = 3 };
enum {
    TRAINER_MODEL_TYPE = 3,
    TRAINER_VOCAB_SIZE = 4,
    TRAINER_BYTE_FALLBACK = 35,
    TRAINER_UNK_ID = 40,
    TRAINER_BOS_ID = 41,
    TRAINER_EOS_ID = 42,
    TRAINER_PAD_ID = 43,
    TRAINER_UNK_PIECE = 45,
    TRAINER_BOS_PIECE = 46,
    TRAINER_EOS_PIECE = 47,
    TRAINER_PAD_PIECE = 48
};
enum {
    NORM_NAME = 1,
    NORM_CHARSMAP = 2,
    NORM_ADD_DUMMY_PREFIX = 3,
    NORM_REMOVE_EXTRA_WHITESPACES = 4,
    NORM_ESCAPE_WHITESPACES = 5
};

const char *mm_spm_type_name(mm_spm_type t)
{
    static const char *const names[] = {"NORMAL", "UNKNOWN", "CONTROL", "USER_DEFINED", "UNUSED", "BYTE"};
    return t >= 1 && t <= 6 ? names[t - 1] : "?";
}

const char *mm_spm_model_type_name(mm_spm_model_type t)
{
    static const char *const names[] = {"UNIGRAM", "BPE", "WORD", "CHAR"};
    return t >= 1 && t <= 4 ? names[t - 1] : "?";
}

/* A string field while parsing: where its bytes are in the buffer. Strings are copied out once the
 * sizes are known, so pieces cost one allocation, not one each. */
typedef struct span {
    size_t off, len;
    int set;
} span;

typedef struct raw_piece {
    span text;
    float score;
    int type;
} raw_piece;

typedef struct parse {
    mm_spm_model *m;
    raw_piece *pieces;
    size_t npieces, cap;
    span unk_piece, bos_piece, eos_piece, pad_piece, normalizer_name;
    mm_pb whole;
} parse;

/* The place of a field in messages: "pieces[12].type" or "trainer_spec.unk_id". */
typedef struct place {
    const char *msg;
    size_t index; /* for pieces; SIZE_MAX for the others */
    const char *field;
} place;

static const char *place_str(const place *pl, char *buf, size_t size)
{
    if (pl->index != SIZE_MAX)
        snprintf(buf, size, "%s[%zu].%s", pl->msg, pl->index, pl->field);
    else
        snprintf(buf, size, "%s.%s", pl->msg, pl->field);
    return buf;
}

static int wrong_wtype(const place *pl, size_t at, int got, int want, mm_err *err)
{
    char where[96];
    return mm_err_set(err, -EINVAL, "%s (byte %zu): written as %s, but the field is %s",
                      place_str(pl, where, sizeof where), at, mm_pb_wtype_name(got), mm_pb_wtype_name(want));
}

/* The value of a known field whose key (wire type `wtype`, at byte `at`) was just read. */
static int read_int32(mm_pb *r, const place *pl, size_t at, int wtype, int32_t *out, mm_err *err)
{
    if (wtype != MM_PB_VARINT)
        return wrong_wtype(pl, at, wtype, MM_PB_VARINT, err);
    size_t vat = mm_pb_offset(r);
    uint64_t v;
    int rc = mm_pb_varint(r, &v, err);
    if (rc < 0)
        return rc;
    /* An int32 is written as its sign extension to 64 bits: negatives take ten bytes. */
    if (v > INT32_MAX && v < (uint64_t)0 - ((uint64_t)1 << 31)) {
        char where[96];
        return mm_err_set(err, -EINVAL, "%s (byte %zu): %llu does not fit the field's int32",
                          place_str(pl, where, sizeof where), vat, (unsigned long long)v);
    }
    *out = (int32_t)(int64_t)v;
    return 0;
}

static int read_enum(mm_pb *r, const place *pl, size_t at, int wtype, int lo, int hi, int *out, mm_err *err)
{
    size_t vat = mm_pb_offset(r);
    int32_t v;
    int rc = read_int32(r, pl, at, wtype, &v, err);
    if (rc < 0)
        return rc;
    if (v < lo || v > hi) {
        char where[96];
        return mm_err_set(err, -EINVAL, "%s (byte %zu): %d is not one of the .proto's values (%d to %d)",
                          place_str(pl, where, sizeof where), vat, v, lo, hi);
    }
    *out = v;
    return 0;
}

static int read_bool(mm_pb *r, const place *pl, size_t at, int wtype, int *out, mm_err *err)
{
    if (wtype != MM_PB_VARINT)
        return wrong_wtype(pl, at, wtype, MM_PB_VARINT, err);
    size_t vat = mm_pb_offset(r);
    uint64_t v;
    int rc = mm_pb_varint(r, &v, err);
    if (rc < 0)
        return rc;
    if (v > 1) {
        char where[96];
        return mm_err_set(err, -EINVAL, "%s (byte %zu): %llu for a bool (0 or 1)", place_str(pl, where, sizeof where),
                          vat, (unsigned long long)v);
    }
    *out = (int)v;
    return 0;
}

/* A string or bytes field; `utf8` for proto `string` fields, which must hold UTF-8 text. */
static int read_span(mm_pb *r, const place *pl, size_t at, int wtype, int utf8, span *out, mm_err *err)
{
    if (wtype != MM_PB_LEN)
        return wrong_wtype(pl, at, wtype, MM_PB_LEN, err);
    size_t vat = mm_pb_offset(r);
    const uint8_t *d;
    size_t n;
    int rc = mm_pb_bytes(r, &d, &n, err);
    if (rc < 0)
        return rc;
    size_t valid = utf8 ? mm_utf8_valid_len((const char *)d, n) : n;
    if (valid < n) {
        char where[96];
        return mm_err_set(err, -EINVAL, "%s (byte %zu): not valid UTF-8 (at byte %zu of the string)",
                          place_str(pl, where, sizeof where), vat, valid);
    }
    *out = (span){(size_t)(d - r->base), n, 1};
    return 0;
}

static int parse_piece(mm_pb *r, raw_piece *p, size_t index, mm_err *err)
{
    uint32_t f;
    int w, rc;
    size_t at = mm_pb_offset(r);
    while ((rc = mm_pb_next(r, &f, &w, err)) == 1) {
        place pl = {"pieces", index, "?"};
        switch (f) {
        case PIECE_PIECE:
            pl.field = "piece";
            rc = read_span(r, &pl, at, w, 1, &p->text, err);
            break;
        case PIECE_SCORE: {
            pl.field = "score";
            uint32_t bits;
            if (w != MM_PB_FIXED32)
                return wrong_wtype(&pl, at, w, MM_PB_FIXED32, err);
            if ((rc = mm_pb_fixed32(r, &bits, err)) == 0)
                memcpy(&p->score, &bits, sizeof bits);
            break;
        }
        case PIECE_TYPE:
            pl.field = "type";
            rc = read_enum(r, &pl, at, w, MM_SPM_NORMAL, MM_SPM_BYTE, &p->type, err);
            break;
        default: rc = mm_pb_skip(r, w, err);
        }
        if (rc < 0)
            return rc;
        at = mm_pb_offset(r);
    }
    return rc;
}

static int parse_trainer(parse *ps, mm_pb *r, mm_err *err)
{
    mm_spm_model *m = ps->m;
    uint32_t f;
    int w, rc;
    size_t at = mm_pb_offset(r);
    while ((rc = mm_pb_next(r, &f, &w, err)) == 1) {
        place pl = {"trainer_spec", SIZE_MAX, "?"};
        int v;
        switch (f) {
        case TRAINER_MODEL_TYPE:
            pl.field = "model_type";
            if ((rc = read_enum(r, &pl, at, w, MM_SPM_UNIGRAM, MM_SPM_CHAR, &v, err)) == 0)
                m->model_type = (mm_spm_model_type)v;
            break;
        case TRAINER_VOCAB_SIZE:
            pl.field = "vocab_size";
            rc = read_int32(r, &pl, at, w, &m->vocab_size, err);
            break;
        case TRAINER_BYTE_FALLBACK:
            pl.field = "byte_fallback";
            rc = read_bool(r, &pl, at, w, &m->byte_fallback, err);
            break;
        case TRAINER_UNK_ID:
            pl.field = "unk_id";
            rc = read_int32(r, &pl, at, w, &m->unk_id, err);
            break;
        case TRAINER_BOS_ID:
            pl.field = "bos_id";
            rc = read_int32(r, &pl, at, w, &m->bos_id, err);
            break;
        case TRAINER_EOS_ID:
            pl.field = "eos_id";
            rc = read_int32(r, &pl, at, w, &m->eos_id, err);
            break;
        case TRAINER_PAD_ID:
            pl.field = "pad_id";
            rc = read_int32(r, &pl, at, w, &m->pad_id, err);
            break;
        case TRAINER_UNK_PIECE:
            pl.field = "unk_piece";
            rc = read_span(r, &pl, at, w, 1, &ps->unk_piece, err);
            break;
        case TRAINER_BOS_PIECE:
            pl.field = "bos_piece";
            rc = read_span(r, &pl, at, w, 1, &ps->bos_piece, err);
            break;
        case TRAINER_EOS_PIECE:
            pl.field = "eos_piece";
            rc = read_span(r, &pl, at, w, 1, &ps->eos_piece, err);
            break;
        case TRAINER_PAD_PIECE:
            pl.field = "pad_piece";
            rc = read_span(r, &pl, at, w, 1, &ps->pad_piece, err);
            break;
        default: rc = mm_pb_skip(r, w, err);
        }
        if (rc < 0)
            return rc;
        at = mm_pb_offset(r);
    }
    return rc;
}

static int parse_normalizer(parse *ps, mm_pb *r, mm_err *err)
{
    mm_spm_model *m = ps->m;
    uint32_t f;
    int w, rc;
    size_t at = mm_pb_offset(r);
    while ((rc = mm_pb_next(r, &f, &w, err)) == 1) {
        place pl = {"normalizer_spec", SIZE_MAX, "?"};
        span charsmap;
        switch (f) {
        case NORM_NAME:
            pl.field = "name";
            rc = read_span(r, &pl, at, w, 1, &ps->normalizer_name, err);
            break;
        case NORM_CHARSMAP:
            pl.field = "precompiled_charsmap";
            if ((rc = read_span(r, &pl, at, w, 0, &charsmap, err)) == 0) {
                m->precompiled_charsmap = m->raw + charsmap.off;
                m->precompiled_charsmap_len = charsmap.len;
            }
            break;
        case NORM_ADD_DUMMY_PREFIX:
            pl.field = "add_dummy_prefix";
            rc = read_bool(r, &pl, at, w, &m->add_dummy_prefix, err);
            break;
        case NORM_REMOVE_EXTRA_WHITESPACES:
            pl.field = "remove_extra_whitespaces";
            rc = read_bool(r, &pl, at, w, &m->remove_extra_whitespaces, err);
            break;
        case NORM_ESCAPE_WHITESPACES:
            pl.field = "escape_whitespaces";
            rc = read_bool(r, &pl, at, w, &m->escape_whitespaces, err);
            break;
        default: rc = mm_pb_skip(r, w, err);
        }
        if (rc < 0)
            return rc;
        at = mm_pb_offset(r);
    }
    return rc;
}

/* The message itself. A message field written twice is merged, as protobuf does (the later scalars
 * win): parsing into the same struct again is exactly that. */
static int parse_model(parse *ps, mm_err *err)
{
    mm_pb *r = &ps->whole;
    uint32_t f;
    int w, rc;
    size_t at = mm_pb_offset(r);
    while ((rc = mm_pb_next(r, &f, &w, err)) == 1) {
        mm_pb sub;
        const char *name = f == MODEL_PIECES ? "pieces" : f == MODEL_TRAINER_SPEC ? "trainer_spec" : "normalizer_spec";
        if (f == MODEL_PIECES || f == MODEL_TRAINER_SPEC || f == MODEL_NORMALIZER_SPEC) {
            if (w != MM_PB_LEN)
                return mm_err_set(err, -EINVAL, "%s (byte %zu): written as %s, but the field is a message", name, at,
                                  mm_pb_wtype_name(w));
            if ((rc = mm_pb_sub(r, &sub, err)) < 0)
                return rc;
        }
        switch (f) {
        case MODEL_PIECES:
            if (ps->npieces == ps->cap) {
                ps->cap = ps->cap ? 2 * ps->cap : 1024;
                ps->pieces = mm_xrealloc(ps->pieces, ps->cap * sizeof *ps->pieces);
            }
            ps->pieces[ps->npieces] = (raw_piece){{0, 0, 0}, 0.0f, MM_SPM_NORMAL};
            rc = parse_piece(&sub, &ps->pieces[ps->npieces], ps->npieces, err);
            ps->npieces++;
            break;
        case MODEL_TRAINER_SPEC: rc = parse_trainer(ps, &sub, err); break;
        case MODEL_NORMALIZER_SPEC: rc = parse_normalizer(ps, &sub, err); break;
        default: rc = mm_pb_skip(r, w, err);
        }
        if (rc < 0)
            return rc;
        at = mm_pb_offset(r);
    }
    return rc;
}

/* Copies every string into one allocation and points the model at it. */
static void copy_strings(parse *ps)
{
    mm_spm_model *m = ps->m;
    static const struct {
        const char *def;
        size_t span_off, field_off;
    } names[] = {
        {"<unk>", offsetof(parse, unk_piece), offsetof(mm_spm_model, unk_piece)},
        {"<s>", offsetof(parse, bos_piece), offsetof(mm_spm_model, bos_piece)},
        {"</s>", offsetof(parse, eos_piece), offsetof(mm_spm_model, eos_piece)},
        {"<pad>", offsetof(parse, pad_piece), offsetof(mm_spm_model, pad_piece)},
        {"", offsetof(parse, normalizer_name), offsetof(mm_spm_model, normalizer_name)},
    };
    size_t total = 0;
    for (size_t i = 0; i < ps->npieces; i++)
        total += ps->pieces[i].text.len + 1;
    for (size_t k = 0; k < MM_COUNT(names); k++) {
        const span *s = (const span *)((const char *)ps + names[k].span_off);
        total += (s->set ? s->len : strlen(names[k].def)) + 1;
    }
    char *o = m->strings = mm_xmalloc(total);
    m->pieces = mm_xcalloc(ps->npieces, sizeof *m->pieces);
    m->npieces = ps->npieces;
    for (size_t i = 0; i < ps->npieces; i++) {
        const raw_piece *rp = &ps->pieces[i];
        memcpy(o, m->raw + rp->text.off, rp->text.len);
        o[rp->text.len] = 0;
        m->pieces[i] = (mm_spm_piece){o, rp->text.len, rp->score, (mm_spm_type)rp->type};
        o += rp->text.len + 1;
    }
    for (size_t k = 0; k < MM_COUNT(names); k++) {
        const span *s = (const span *)((const char *)ps + names[k].span_off);
        size_t n = s->set ? s->len : strlen(names[k].def);
        memcpy(o, s->set ? (const char *)m->raw + s->off : names[k].def, n);
        o[n] = 0;
        *(const char **)((char *)m + names[k].field_off) = o;
        o += n + 1;
    }
}

typedef struct keyed {
    const char *p;
    size_t len, index;
    int reserved; /* sentencepiece's second namespace: CONTROL, UNKNOWN, BYTE */
} keyed;

static int cmp_keyed(const void *a, const void *b)
{
    const keyed *x = a, *y = b;
    if (x->reserved != y->reserved)
        return x->reserved - y->reserved;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->p, y->p, n);
    if (c)
        return c;
    if (x->len != y->len)
        return x->len < y->len ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

/* "<0x00>" .. "<0xFF>", as sentencepiece's ByteToPiece writes them: the byte, or -1. */
static int byte_of_piece(const char *s, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    if (len != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>')
        return -1;
    const char *hi = memchr(hex, s[3], 16), *lo = memchr(hex, s[4], 16);
    if (!hi || !lo)
        return -1;
    return (int)((hi - hex) * 16 + (lo - hex));
}

/* sentencepiece's load-time checks (ModelInterface::InitializePieces), in its order and words. */
static int check_pieces(const mm_spm_model *m, mm_err *err)
{
    char q[128];
    long unk = -1;
    unsigned char bytes[256] = {0};
    for (size_t i = 0; i < m->npieces; i++) {
        const mm_spm_piece *p = &m->pieces[i];
        if (p->len == 0)
            return mm_err_set(err, -EINVAL, "pieces[%zu]: empty piece (sentencepiece: \"piece must not be empty\")", i);
        if (p->type == MM_SPM_UNKNOWN) {
            if (unk >= 0)
                return mm_err_set(err, -EINVAL, "pieces[%zu]: a second UNKNOWN piece (the first is pieces[%ld])", i,
                                  unk);
            unk = (long)i;
        }
        if (p->type == MM_SPM_BYTE) {
            if (!m->byte_fallback)
                return mm_err_set(err, -EINVAL,
                                  "pieces[%zu]: byte piece %s although trainer_spec.byte_fallback is false", i,
                                  mm_quote(q, sizeof q, p->piece, p->len));
            int b = byte_of_piece(p->piece, p->len);
            if (b < 0)
                return mm_err_set(err, -EINVAL, "pieces[%zu]: byte piece %s is not <0xHH> (upper-case hex)", i,
                                  mm_quote(q, sizeof q, p->piece, p->len));
            bytes[b] = 1;
        }
    }
    /* Duplicates, by sorting: a file can hold millions of pieces. The one reported is the first piece,
     * in file order, whose text an earlier piece of the same kind already has. */
    keyed *k = mm_xmalloc((m->npieces ? m->npieces : 1) * sizeof *k);
    for (size_t i = 0; i < m->npieces; i++) {
        mm_spm_type t = m->pieces[i].type;
        k[i] = (keyed){m->pieces[i].piece, m->pieces[i].len, i,
                       t == MM_SPM_CONTROL || t == MM_SPM_UNKNOWN || t == MM_SPM_BYTE};
    }
    qsort(k, m->npieces, sizeof *k, cmp_keyed);
    size_t dup = SIZE_MAX, first = 0;
    for (size_t i = 1; i < m->npieces; i++)
        if (k[i].reserved == k[i - 1].reserved && k[i].len == k[i - 1].len &&
            memcmp(k[i].p, k[i - 1].p, k[i].len) == 0 && k[i].index < dup) {
            dup = k[i].index;
            /* the run's first element is the earliest definition */
            size_t j = i - 1;
            while (j > 0 && k[j - 1].reserved == k[i].reserved && k[j - 1].len == k[i].len &&
                   memcmp(k[j - 1].p, k[i].p, k[i].len) == 0)
                j--;
            first = k[j].index;
        }
    free(k);
    if (dup != SIZE_MAX)
        return mm_err_set(err, -EINVAL, "pieces[%zu]: %s is already defined (pieces[%zu])", dup,
                          mm_quote(q, sizeof q, m->pieces[dup].piece, m->pieces[dup].len), first);
    if (unk < 0)
        return mm_err_set(err, -EINVAL, "no UNKNOWN piece (sentencepiece: \"unk is not defined\")");
    if (m->byte_fallback)
        for (int b = 0; b < 256; b++)
            if (!bytes[b])
                return mm_err_set(err, -EINVAL,
                                  "trainer_spec.byte_fallback is true but there is no byte piece <0x%02X> "
                                  "(sentencepiece wants all 256)",
                                  b);
    const struct {
        const char *name;
        int32_t id;
    } ids[] = {{"unk_id", m->unk_id}, {"bos_id", m->bos_id}, {"eos_id", m->eos_id}, {"pad_id", m->pad_id}};
    for (size_t i = 0; i < MM_COUNT(ids); i++)
        if (ids[i].id < -1 || (ids[i].id >= 0 && (size_t)ids[i].id >= m->npieces))
            return mm_err_set(err, -EINVAL, "trainer_spec.%s is %d, beyond the %zu pieces (-1 for none)", ids[i].name,
                              ids[i].id, m->npieces);
    return 0;
}

/* Takes ownership of raw (len bytes). */
static int parse_owned(uint8_t *raw, size_t len, mm_spm_model **out, mm_err *err)
{
    mm_spm_model *m = mm_xcalloc(1, sizeof *m);
    m->raw = raw;
    m->raw_len = len;
    m->model_type = MM_SPM_UNIGRAM;
    m->vocab_size = 8000;
    m->unk_id = 0, m->bos_id = 1, m->eos_id = 2, m->pad_id = -1;
    m->add_dummy_prefix = m->remove_extra_whitespaces = m->escape_whitespaces = 1;
    parse ps = {.m = m, .whole = mm_pb_init(raw, len)};
    int rc = parse_model(&ps, err);
    if (rc == 0) {
        copy_strings(&ps);
        rc = check_pieces(m, err);
    }
    free(ps.pieces);
    if (rc < 0) {
        mm_spm_free(m);
        return rc;
    }
    *out = m;
    return 0;
}

int mm_spm_parse(const void *data, size_t len, mm_spm_model **out, mm_err *err)
{
    uint8_t *raw = mm_xmalloc(len + 1);
    if (len)
        memcpy(raw, data, len);
    return parse_owned(raw, len, out, err);
}

/* Whether the bytes look like text (tiktoken's "base64 rank" lines, which transformers also reads from a
 * file named tokenizer.model), for a hint in the message. */
static int looks_like_text(const uint8_t *p, size_t n)
{
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n && i < 4096; i++)
        if ((p[i] < 0x20 && p[i] != '\n' && p[i] != '\r' && p[i] != '\t') || p[i] >= 0x7f)
            return 0;
    return 1;
}

int mm_spm_read_file(const char *path, mm_spm_model **out, mm_err *err)
{
    char *data;
    size_t len;
    int rc = mm_file_read_all(path, MM_SPM_MAX_FILE, &data, &len, err);
    if (rc < 0)
        return rc;
    int text = looks_like_text((const uint8_t *)data, len);
    rc = parse_owned((uint8_t *)data, len, out, err);
    if (rc < 0) {
        mm_err_prefix(err, "%s", path);
        if (text && err) {
            size_t n = strlen(err->msg);
            snprintf(
                err->msg + n, sizeof err->msg - n,
                " (the file is text, not a sentencepiece model: a tiktoken vocabulary? only sentencepiece is read)");
        }
    }
    return rc;
}

void mm_spm_free(mm_spm_model *m)
{
    if (!m)
        return;
    free(m->pieces);
    free(m->strings);
    free(m->raw);
    free(m);
}
