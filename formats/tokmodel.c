/* The models of the encoder (formats/tokenc.h): BPE (tokenizers' models/bpe/model.rs and word.rs:
 * merge_word, merge_all) and Unigram (models/unigram/model.rs: encode_optimized, a port of
 * sentencepiece's Viterbi). Rules in formats/tokencode.h. */
#include "tokenc.h"

#include "base/util.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

typedef struct mm_tok_merge {
    uint64_t key; /* left id << 32 | right id; UINT64_MAX: empty */
    int32_t rank, id;
} mm_tok_merge;

static uint64_t pair_key(int32_t a, int32_t b)
{
    return ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
}

static size_t slot_of(uint64_t key, size_t nslots)
{
    key ^= key >> 31; /* splitmix64's finaliser spreads the ids over the table */
    key *= 0x7fb5d329728ea185ull;
    key ^= key >> 27;
    return (size_t)key & (nslots - 1);
}

/* A model token's id, or -1 (an added token that is no model token is not the model's). */
static int32_t model_id(const mm_tok_encoder *e, const char *s, size_t len)
{
    int id = mm_tokenizer_id(e->t, s, len);
    return id >= 0 && e->in_model[id] ? id : -1;
}

static void merges_alloc(mm_tok_encoder *e, size_t n)
{
    size_t nslots = 16;
    while (nslots < 2 * n + 1)
        nslots *= 2;
    e->merges = mm_xmalloc(nslots * sizeof *e->merges);
    for (size_t i = 0; i < nslots; i++)
        e->merges[i].key = UINT64_MAX;
    e->nmerge_slots = nslots;
}

/* The pair gets (rank, merged); a pair already there keeps the rank it has when keep_first (a second
 * split of one piece in generate_merges ranks after the first), else takes the new one (tokenizers
 * collects merges into a HashMap: a later duplicate wins). */
static void merge_put(mm_tok_encoder *e, int32_t a, int32_t b, int32_t rank, int32_t merged, int keep_first)
{
    uint64_t key = pair_key(a, b);
    size_t i = slot_of(key, e->nmerge_slots);
    while (e->merges[i].key != UINT64_MAX && e->merges[i].key != key)
        i = (i + 1) & (e->nmerge_slots - 1);
    if (e->merges[i].key == key && keep_first)
        return;
    e->merges[i] = (mm_tok_merge){key, rank, merged};
}

static const mm_tok_merge *merge_get(const mm_tok_encoder *e, int32_t a, int32_t b)
{
    uint64_t key = pair_key(a, b);
    size_t i = slot_of(key, e->nmerge_slots);
    while (e->merges[i].key != UINT64_MAX) {
        if (e->merges[i].key == key)
            return &e->merges[i];
        i = (i + 1) & (e->nmerge_slots - 1);
    }
    return NULL;
}

int mm_tokm_bpe_init(mm_tok_encoder *e, const cJSON *merges, const char *where, mm_err *err)
{
    merges_alloc(e, (size_t)cJSON_GetArraySize(merges));
    mm_buf joined = {0};
    int32_t rank = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, merges)
    {
        const char *a, *b;
        size_t alen, blen;
        if (mm_tok_merge_parts(m, &a, &alen, &b, &blen) <= 0) /* the loader refused malformed ones */
            continue;
        joined.len = 0;
        mm_buf_append(&joined, a, alen);
        mm_buf_append(&joined, b, blen);
        int32_t ia = model_id(e, a, alen), ib = model_id(e, b, blen), im = model_id(e, joined.data, joined.len);
        if (ia < 0 || ib < 0 || im < 0) { /* the loader checked these against get_vocab, not the model's */
            mm_buf_free(&joined);
            return mm_err_set(err, -EINVAL, "%s: merge %d names a token that is only an added token", where, rank);
        }
        merge_put(e, ia, ib, rank++, im, 0);
    }
    mm_buf_free(&joined);
    return 0;
}

/* generate_merges(vocab) of transformers (tokenization_utils_base.py) for a sentencepiece BPE model:
 * for each piece in id order, each split into two pieces (at a character boundary, left part growing),
 * ranked in that order (its sort key is (id, len(left), len(right))). */
int mm_tokm_bpe_init_spm(mm_tok_encoder *e, mm_err *err)
{
    (void)err;
    const mm_spm_model *m = e->t->spm;
    size_t total = 0;
    for (size_t p = 0; p < m->npieces; p++)
        total += m->pieces[p].len;
    merges_alloc(e, total);
    int32_t rank = 0;
    for (size_t p = 0; p < m->npieces; p++) {
        const char *s = m->pieces[p].piece;
        size_t len = m->pieces[p].len;
        uint32_t cp;
        for (size_t k = mm_utf8_next(s, &cp); k < len; k += mm_utf8_next(s + k, &cp)) {
            int32_t a = model_id(e, s, k), b = model_id(e, s + k, len - k);
            if (a >= 0 && b >= 0)
                merge_put(e, a, b, rank++, (int32_t)p, 1);
        }
    }
    return 0;
}

void mm_tokm_unigram_init(mm_tok_encoder *e)
{
    const mm_spm_model *m = e->t->spm;
    e->scores = mm_xcalloc(m->npieces ? m->npieces : 1, sizeof *e->scores);
    double min = 0;
    for (size_t p = 0; p < m->npieces; p++) {
        e->scores[p] = m->pieces[p].score;
        if (p == 0 || e->scores[p] < min)
            min = e->scores[p];
        if (m->pieces[p].len > e->max_piece)
            e->max_piece = m->pieces[p].len;
    }
    e->unk_score = min - 10.0; /* kUnkPenalty of sentencepiece, K_UNK_PENALTY of tokenizers */
}

void mm_tokm_free(mm_tok_encoder *e)
{
    free(e->merges);
    free(e->scores);
}

/* The ids of an unknown run of text (Unigram::tokenize): its bytes' <0xNN> tokens with byte_fallback when
 * every one exists, else the unknown token. */
static int unknown(const mm_tok_encoder *e, const char *s, size_t len, mm_idvec *out, mm_err *err)
{
    if (e->byte_fallback) {
        size_t k;
        for (k = 0; k < len && e->byte_id[(unsigned char)s[k]] >= 0; k++)
            ;
        if (k == len) {
            for (k = 0; k < len; k++)
                mm_idvec_push(out, e->byte_id[(unsigned char)s[k]]);
            return 0;
        }
    }
    if (e->unk_id < 0)
        return mm_err_set(err, -EINVAL, "the model has no unknown token, and the text needs one");
    mm_idvec_push(out, e->unk_id);
    return 0;
}

typedef struct sym {
    int32_t id;
    size_t off, len;
} sym;

static int bpe(const mm_tok_encoder *e, const char *w, size_t len, mm_idvec *out, mm_err *err)
{
    if (e->ignore_merges) {
        int32_t id = model_id(e, w, len);
        if (id >= 0) {
            mm_idvec_push(out, id);
            return 0;
        }
    }
    /* merge_word: each character its token; one not in the vocabulary becomes its bytes' <0xNN> tokens
     * with byte_fallback when all exist, else unk_token, a run of them one unk with fuse_unk (a pending
     * unk is written when a known character follows, not before byte tokens: the library's order) */
    sym *r = mm_xmalloc((4 * len + 1) * sizeof *r);
    size_t rn = 0;
    int unk_pending = 0;
    uint32_t cp;
    for (size_t i = 0, cl; i < len; i += cl) {
        cl = mm_utf8_next(w + i, &cp);
        int32_t id = model_id(e, w + i, cl);
        if (id >= 0) {
            if (unk_pending)
                r[rn++] = (sym){e->unk_id, i, 0};
            unk_pending = 0;
            r[rn++] = (sym){id, i, cl};
            continue;
        }
        if (e->byte_fallback) {
            size_t k;
            for (k = 0; k < cl && e->byte_id[(unsigned char)w[i + k]] >= 0; k++)
                ;
            if (k == cl) {
                for (k = 0; k < cl; k++)
                    r[rn++] = (sym){e->byte_id[(unsigned char)w[i + k]], i + k, 1};
                continue;
            }
        }
        if (e->unk_id == -1) /* no unk_token: the character is dropped */
            continue;
        if (e->unk_id < 0) {
            free(r);
            return mm_err_set(err, -EINVAL, "the model's unk_token is not in its vocabulary, and the text needs it");
        }
        if (unk_pending && !e->fuse_unk)
            r[rn++] = (sym){e->unk_id, i, 0};
        unk_pending = 1;
    }
    if (unk_pending)
        r[rn++] = (sym){e->unk_id, len, 0};
    /* merge_all: the pair of lowest rank, leftmost among equals, until none is left */
    for (;;) {
        size_t best = SIZE_MAX;
        const mm_tok_merge *bm = NULL;
        for (size_t i = 0; i + 1 < rn; i++) {
            const mm_tok_merge *m = merge_get(e, r[i].id, r[i + 1].id);
            if (m && (!bm || m->rank < bm->rank))
                bm = m, best = i;
        }
        if (!bm)
            break;
        r[best].id = bm->id;
        memmove(&r[best + 1], &r[best + 2], (rn - best - 2) * sizeof *r);
        rn--;
    }
    for (size_t i = 0; i < rn; i++)
        mm_idvec_push(out, r[i].id);
    free(r);
    return 0;
}

typedef struct node {
    double score;
    size_t start; /* SIZE_MAX: not reached */
    int32_t id;
} node;

static int unigram(const mm_tok_encoder *e, const char *w, size_t len, mm_idvec *out, mm_err *err)
{
    node *best = mm_xmalloc((len + 1) * sizeof *best);
    for (size_t i = 0; i <= len; i++)
        best[i] = (node){0, SIZE_MAX, -1};
    best[0].start = 0;
    size_t npieces = e->t->spm->npieces;
    uint32_t cp;
    for (size_t pos = 0, cl; pos < len; pos += cl) {
        cl = mm_utf8_next(w + pos, &cp);
        if (best[pos].start == SIZE_MAX)
            continue;
        int single = 0;
        for (size_t end = pos + cl, el; end <= len && end - pos <= e->max_piece; end += el) {
            int32_t id = model_id(e, w + pos, end - pos);
            if (id >= 0 && (size_t)id < npieces) {
                double cand = best[pos].score + e->scores[id];
                if (best[end].start == SIZE_MAX || cand > best[end].score)
                    best[end] = (node){cand, pos, id};
                if (end == pos + cl)
                    single = 1;
            }
            if (end == len)
                break;
            el = mm_utf8_next(w + end, &cp);
        }
        if (!single) {
            double cand = best[pos].score + e->unk_score;
            if (best[pos + cl].start == SIZE_MAX || cand > best[pos + cl].score)
                best[pos + cl] = (node){cand, pos, e->unk_id};
        }
    }
    /* back from the end: the pieces in reverse */
    size_t cnt = 0;
    for (size_t p = len; p > 0; p = best[p].start)
        cnt++;
    sym *s = mm_xmalloc((cnt + 1) * sizeof *s);
    size_t k = cnt;
    for (size_t p = len; p > 0; p = best[p].start)
        s[--k] = (sym){best[p].id, best[p].start, p - best[p].start};
    free(best);
    /* unknown pieces fused (Unigram's fuse_unk is always on), then each run: a token if its text is one,
     * else byte fallback or unk (Unigram::tokenize) */
    int rc = 0;
    for (size_t i = 0; i < cnt && rc == 0;) {
        if (s[i].id != e->unk_id) {
            mm_idvec_push(out, s[i].id);
            i++;
            continue;
        }
        size_t j = i + 1;
        while (j < cnt && s[j].id == e->unk_id)
            j++;
        size_t off = s[i].off, l = s[j - 1].off + s[j - 1].len - off;
        int32_t id = model_id(e, w + off, l);
        if (id >= 0)
            mm_idvec_push(out, id);
        else
            rc = unknown(e, w + off, l, out, err);
        i = j;
    }
    free(s);
    return rc;
}

int mm_tokm_encode(const mm_tok_encoder *e, const char *w, size_t len, mm_idvec *out, mm_err *err)
{
    if (len == 0)
        return 0;
    return e->unigram ? unigram(e, w, len, out, err) : bpe(e, w, len, out, err);
}
