#include "spm.h"

#include "pbwire.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Field numbers of src/sentencepiece_model.proto's ModelProto (those of its messages are in the tables). */
enum { MODEL_PIECES = 1, MODEL_TRAINER_SPEC = 2, MODEL_NORMALIZER_SPEC = 3 };

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
    span unk_piece, bos_piece, eos_piece, pad_piece, normalizer_name, charsmap;
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

/* A refusal of a field's value: "<place> (byte <at>): <what>". */
__attribute__((format(printf, 4, 5))) static int field_err(mm_err *err, const place *pl, size_t at, const char *fmt,
                                                           ...)
{
    char where[96], what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return mm_err_set(err, -EINVAL, "%s (byte %zu): %s", place_str(pl, where, sizeof where), at, what);
}

static int wrong_wtype(const place *pl, size_t at, int got, int want, mm_err *err)
{
    return field_err(err, pl, at, "written as %s, but the field is %s", mm_pb_wtype_name(got), mm_pb_wtype_name(want));
}

/* The value of a known field whose key (wire type `wtype`, at byte `at`) was just read: a varint,
 * starting at byte *vat. */
static int read_varint(mm_pb *r, const place *pl, size_t at, int wtype, size_t *vat, uint64_t *v, mm_err *err)
{
    *vat = mm_pb_offset(r);
    if (wtype != MM_PB_VARINT)
        return wrong_wtype(pl, at, wtype, MM_PB_VARINT, err);
    return mm_pb_varint(r, v, err);
}

static int read_int32(mm_pb *r, const place *pl, size_t at, int wtype, int32_t *out, mm_err *err)
{
    size_t vat;
    uint64_t v;
    int rc = read_varint(r, pl, at, wtype, &vat, &v, err);
    if (rc < 0)
        return rc;
    /* An int32 is written as its sign extension to 64 bits: negatives take ten bytes. */
    if (v > INT32_MAX && v < (uint64_t)0 - ((uint64_t)1 << 31))
        return field_err(err, pl, vat, "%llu does not fit the field's int32", (unsigned long long)v);
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
    if (v < lo || v > hi)
        return field_err(err, pl, vat, "%d is not one of the .proto's values (%d to %d)", v, lo, hi);
    *out = v;
    return 0;
}

static int read_bool(mm_pb *r, const place *pl, size_t at, int wtype, int *out, mm_err *err)
{
    size_t vat;
    uint64_t v;
    int rc = read_varint(r, pl, at, wtype, &vat, &v, err);
    if (rc < 0)
        return rc;
    if (v > 1)
        return field_err(err, pl, vat, "%llu for a bool (0 or 1)", (unsigned long long)v);
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
    if (valid < n)
        return field_err(err, pl, vat, "not valid UTF-8 (at byte %zu of the string)", valid);
    *out = (span){(size_t)(d - r->base), n, 1};
    return 0;
}

/* How a field of a message is read, and what it is stored as. */
typedef enum field_kind {
    K_INT32,   /* int32_t */
    K_BOOL,    /* int, 0 or 1 */
    K_ENUM,    /* an enum of int's size, lo to hi */
    K_STRING,  /* span; UTF-8 */
    K_BYTES,   /* span */
    K_FIXED32, /* float */
} field_kind;

typedef struct field {
    uint32_t number; /* the .proto's */
    const char *name;
    field_kind kind;
    int lo, hi;   /* K_ENUM: the .proto's values */
    int in_parse; /* the value goes into the parse state; else into the struct the message fills */
    size_t off;   /* offsetof in that struct */
} field;

typedef struct message {
    const char *name; /* for the place in messages */
    const field *fields;
    size_t nfields;
} message;

#define IN_PIECE(member) 0, offsetof(raw_piece, member)
#define IN_MODEL(member) 0, offsetof(mm_spm_model, member)
#define IN_PARSE(member) 1, offsetof(parse, member)

static const field piece_fields[] = {
    {1, "piece", K_STRING, 0, 0, IN_PIECE(text)},
    {2, "score", K_FIXED32, 0, 0, IN_PIECE(score)},
    {3, "type", K_ENUM, MM_SPM_NORMAL, MM_SPM_BYTE, IN_PIECE(type)},
};
static const field trainer_fields[] = {
    {3, "model_type", K_ENUM, MM_SPM_UNIGRAM, MM_SPM_CHAR, IN_MODEL(model_type)},
    {4, "vocab_size", K_INT32, 0, 0, IN_MODEL(vocab_size)},
    {35, "byte_fallback", K_BOOL, 0, 0, IN_MODEL(byte_fallback)},
    {40, "unk_id", K_INT32, 0, 0, IN_MODEL(unk_id)},
    {41, "bos_id", K_INT32, 0, 0, IN_MODEL(bos_id)},
    {42, "eos_id", K_INT32, 0, 0, IN_MODEL(eos_id)},
    {43, "pad_id", K_INT32, 0, 0, IN_MODEL(pad_id)},
    {45, "unk_piece", K_STRING, 0, 0, IN_PARSE(unk_piece)},
    {46, "bos_piece", K_STRING, 0, 0, IN_PARSE(bos_piece)},
    {47, "eos_piece", K_STRING, 0, 0, IN_PARSE(eos_piece)},
    {48, "pad_piece", K_STRING, 0, 0, IN_PARSE(pad_piece)},
};
static const field normalizer_fields[] = {
    {1, "name", K_STRING, 0, 0, IN_PARSE(normalizer_name)},
    {2, "precompiled_charsmap", K_BYTES, 0, 0, IN_PARSE(charsmap)},
    {3, "add_dummy_prefix", K_BOOL, 0, 0, IN_MODEL(add_dummy_prefix)},
    {4, "remove_extra_whitespaces", K_BOOL, 0, 0, IN_MODEL(remove_extra_whitespaces)},
    {5, "escape_whitespaces", K_BOOL, 0, 0, IN_MODEL(escape_whitespaces)},
};

static const message piece_msg = {"pieces", piece_fields, MM_COUNT(piece_fields)};
static const message trainer_msg = {"trainer_spec", trainer_fields, MM_COUNT(trainer_fields)};
static const message normalizer_msg = {"normalizer_spec", normalizer_fields, MM_COUNT(normalizer_fields)};

/* K_ENUM stores an int into the enum members above (model_type) and raw_piece.type. */
_Static_assert(sizeof(mm_spm_model_type) == sizeof(int), "mm_spm_model_type is not int-sized");

/* The value of the known field `fd` into `dst`. */
static int read_field(mm_pb *r, const field *fd, const place *pl, size_t at, int wtype, void *dst, mm_err *err)
{
    int rc;
    switch (fd->kind) {
    case K_INT32: return read_int32(r, pl, at, wtype, dst, err);
    case K_BOOL: return read_bool(r, pl, at, wtype, dst, err);
    case K_ENUM: {
        int v = 0;
        if ((rc = read_enum(r, pl, at, wtype, fd->lo, fd->hi, &v, err)) == 0)
            memcpy(dst, &v, sizeof v);
        return rc;
    }
    case K_STRING:
    case K_BYTES: return read_span(r, pl, at, wtype, fd->kind == K_STRING, dst, err);
    case K_FIXED32: {
        uint32_t bits;
        if (wtype != MM_PB_FIXED32)
            return wrong_wtype(pl, at, wtype, MM_PB_FIXED32, err);
        if ((rc = mm_pb_fixed32(r, &bits, err)) == 0)
            memcpy(dst, &bits, sizeof bits);
        return rc;
    }
    }
    return mm_err_set(err, -EINVAL, "%s.%s: no reader for the field", pl->msg, pl->field); /* not reached */
}

/* Reads the message `msg` from r: its fields into obj (the struct it fills) or ps, the others skipped.
 * `index`: the piece's, for messages; SIZE_MAX for the others. */
static int parse_message(parse *ps, mm_pb *r, const message *msg, size_t index, void *obj, mm_err *err)
{
    uint32_t f;
    int w, rc;
    size_t at = mm_pb_offset(r);
    while ((rc = mm_pb_next(r, &f, &w, err)) == 1) {
        const field *fd = NULL;
        for (size_t i = 0; i < msg->nfields && !fd; i++)
            if (msg->fields[i].number == f)
                fd = &msg->fields[i];
        if (fd) {
            place pl = {msg->name, index, fd->name};
            rc = read_field(r, fd, &pl, at, w, (char *)(fd->in_parse ? (void *)ps : obj) + fd->off, err);
        } else {
            rc = mm_pb_skip(r, w, err);
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
            rc = parse_message(ps, &sub, &piece_msg, ps->npieces, &ps->pieces[ps->npieces], err);
            ps->npieces++;
            break;
        case MODEL_TRAINER_SPEC: rc = parse_message(ps, &sub, &trainer_msg, SIZE_MAX, ps->m, err); break;
        case MODEL_NORMALIZER_SPEC: rc = parse_message(ps, &sub, &normalizer_msg, SIZE_MAX, ps->m, err); break;
        default: rc = mm_pb_skip(r, w, err);
        }
        if (rc < 0)
            return rc;
        at = mm_pb_offset(r);
    }
    return rc;
}

/* Copies every string into one allocation and points the model at it (and at the charsmap, in raw). */
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
    if (ps->charsmap.set) { /* bytes, kept where they are */
        m->precompiled_charsmap = m->raw + ps->charsmap.off;
        m->precompiled_charsmap_len = ps->charsmap.len;
    }
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

int mm_spm_parse_file(const char *path, char *data, size_t len, mm_spm_model **out, mm_err *err)
{
    int text = looks_like_text((const uint8_t *)data, len);
    int rc = parse_owned((uint8_t *)data, len, out, err);
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

int mm_spm_read_file(const char *path, mm_spm_model **out, mm_err *err)
{
    char *data;
    size_t len;
    int rc = mm_file_read_all(path, MM_SPM_MAX_FILE, &data, &len, err);
    if (rc < 0)
        return rc;
    return mm_spm_parse_file(path, data, len, out, err);
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
