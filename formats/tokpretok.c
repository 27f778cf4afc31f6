/* The pre-tokenizers of the encoder (formats/tokenc.h): the split patterns of the known tokenizer
 * families matched by hand (the library runs them with onig / fancy-regex: leftmost-first alternation,
 * greedy quantifiers with backtracking; each matcher below gives what that gives), ByteLevel's byte
 * alphabet (pre_tokenizers/byte_level.rs: bytes_char) and Metaspace (pre_tokenizers/metaspace.rs). */
#include "tokenc.h"

#include "unicat.h"

#include <stdlib.h>
#include <string.h>

/* The text being split and the class tests the patterns use. */
typedef struct cur {
    const char *s;
    size_t len;
} cur;

/* The code point at i and its length (0 at the end). */
static size_t at(const cur *c, size_t i, uint32_t *cp)
{
    if (i >= c->len) {
        *cp = 0;
        return 0;
    }
    return mm_utf8_next(c->s + i, cp);
}

static int is_l(uint32_t cp)
{
    return (mm_unicat(cp) & MM_UNI_L) != 0;
}

static int is_n(uint32_t cp)
{
    return (mm_unicat(cp) & MM_UNI_N) != 0;
}

static int is_nl(uint32_t cp) /* [\r\n] */
{
    return cp == '\r' || cp == '\n';
}

/* [^\s\p{L}\p{N}] */
static int is_other(uint32_t cp)
{
    return !mm_uni_space(cp) && !is_l(cp) && !is_n(cp);
}

/* The end of the longest run from i of characters satisfying f (i when none). */
static size_t run(const cur *c, size_t i, int (*f)(uint32_t))
{
    uint32_t cp;
    size_t n;
    while ((n = at(c, i, &cp)) && f(cp))
        i += n;
    return i;
}

/* 's|'t|'re|'ve|'m|'ll|'d, case-insensitive with `fold` ((?i): simple case folding, where ſ U+017F
 * folds to s). The length matched, 0 for none. */
static size_t contraction(const cur *c, size_t i, int fold)
{
    if (i >= c->len || c->s[i] != '\'')
        return 0;
    static const char *const tails[] = {"s", "t", "re", "ve", "m", "ll", "d"};
    for (size_t k = 0; k < sizeof tails / sizeof tails[0]; k++) {
        size_t p = i + 1, ok = 1;
        for (const char *t = tails[k]; *t && ok; t++) {
            uint32_t cp;
            size_t n = at(c, p, &cp);
            if (!n)
                ok = 0;
            else if (cp == (uint32_t)*t || (fold && (cp == (uint32_t)*t - 32 || (*t == 's' && cp == 0x17f))))
                p += n;
            else
                ok = 0;
        }
        if (ok)
            return p - i;
    }
    return 0;
}

/* \s+(?!\S) then \s+ (both patterns end so): a whitespace run, less its last character when a
 * non-space follows and the run is longer than one; the run itself otherwise. */
static size_t spaces(const cur *c, size_t i)
{
    size_t end = run(c, i, mm_uni_space), last = i;
    if (end == i)
        return 0;
    if (end == c->len)
        return end - i;
    uint32_t cp;
    for (size_t p = i; p < end; p += at(c, p, &cp))
        last = p; /* the start of the run's last character */
    return last > i ? last - i : end - i;
}

/* \s*[\r\n]+: up to and including the last \r or \n of the whitespace run at i; 0 when it has none. */
static size_t spaces_newline(const cur *c, size_t i)
{
    size_t end = run(c, i, mm_uni_space), stop = 0;
    uint32_t cp;
    for (size_t p = i, n; p < end; p += n) {
        n = at(c, p, &cp);
        if (is_nl(cp))
            stop = p + n;
    }
    return stop ? stop - i : 0;
}

/* GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
static size_t match_gpt2(const cur *c, size_t i)
{
    size_t n;
    if ((n = contraction(c, i, 0)))
        return n;
    size_t j = i < c->len && c->s[i] == ' ' ? i + 1 : i; /* " ?": taking the space is the only way the
                                                             three classes below can match after it */
    if ((n = run(c, j, is_l)) > j || (n = run(c, j, is_n)) > j || (n = run(c, j, is_other)) > j)
        return n - i;
    return spaces(c, i);
}

/* Llama 3 (digits 3) and Qwen 2 (digits 1):
 * (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,D}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+ */
static size_t match_llama3(const cur *c, size_t i, int digits)
{
    size_t n, e;
    uint32_t cp;
    if ((n = contraction(c, i, 1)))
        return n;
    n = at(c, i, &cp);
    /* [^\r\n\p{L}\p{N}]?\p{L}+: the optional character is taken when it is one of the class and a
     * letter follows; else the letters from i */
    if (!is_nl(cp) && !is_l(cp) && !is_n(cp) && (e = run(c, i + n, is_l)) > i + n)
        return e - i;
    if ((e = run(c, i, is_l)) > i)
        return e - i;
    if (is_n(cp)) {
        size_t p = i;
        for (int k = 0; k < digits && at(c, p, &cp) && is_n(cp); k++)
            p += at(c, p, &cp);
        return p - i;
    }
    size_t j = i < c->len && c->s[i] == ' ' ? i + 1 : i;
    if ((e = run(c, j, is_other)) > j)
        return run(c, e, is_nl) - i;
    if ((n = spaces_newline(c, i)))
        return n;
    return spaces(c, i);
}

/* \w+|[^\w\s]+ */
static int is_punct(uint32_t cp)
{
    return !mm_uni_word(cp) && !mm_uni_space(cp);
}

void mm_tokpre_split(mm_tok_pattern pattern, const char *s, size_t len, mm_spans *out)
{
    cur c = {s, len};
    size_t gap = 0; /* start of text not yet in a piece */
    for (size_t i = 0; i < len;) {
        size_t n;
        uint32_t cp;
        switch (pattern) {
        case MM_PAT_GPT2:
            n = match_gpt2(&c, i);
            break;
        case MM_PAT_LLAMA3:
            n = match_llama3(&c, i, 3);
            break;
        case MM_PAT_QWEN2:
            n = match_llama3(&c, i, 1);
            break;
        default: /* MM_PAT_WHITESPACE */
            n = run(&c, i, mm_uni_word) - i;
            if (!n)
                n = run(&c, i, is_punct) - i;
            break;
        }
        if (!n) { /* no match starts here: the character joins the gap */
            i += at(&c, i, &cp);
            continue;
        }
        /* Isolated: the gap before the match is a piece of its own; the Whitespace pre-tokenizer
         * (invert: the matches are the words) drops gaps, which are whitespace only */
        if (gap < i && pattern != MM_PAT_WHITESPACE)
            mm_spans_push(out, gap, i - gap);
        mm_spans_push(out, i, n);
        i += n;
        gap = i;
    }
    if (gap < len && pattern != MM_PAT_WHITESPACE)
        mm_spans_push(out, gap, len - gap);
}

/* bytes_char: the printable bytes !..~, ¡..¬, ®..ÿ stand for themselves; the 68 others, in byte order,
 * for U+0100 onwards (0x00..0x20 first, then 0x7f..0xa0, then 0xad). */
static uint32_t byte_char(unsigned char b)
{
    if (b <= 0x20)
        return 256u + b;
    if (b >= 0x7f && b <= 0xa0)
        return 256u + 33 + (b - 0x7fu);
    if (b == 0xad)
        return 256u + 67;
    return b;
}

void mm_tokpre_bytelevel(const char *s, size_t len, mm_buf *out)
{
    char u[4];
    for (size_t i = 0; i < len; i++)
        mm_buf_append(out, u, mm_utf8_put(byte_char((unsigned char)s[i]), u));
}

/* One step on every current word: words in `in` (into text `src`) become words in `out` (into `dst`). */
static void step(const mm_tok_prestep *st, const char *src, const mm_spans *in, int first, mm_buf *dst, mm_spans *out)
{
    for (size_t w = 0; w < in->n; w++) {
        const char *s = src + in->v[w].off;
        size_t len = in->v[w].len;
        if (st->kind == MM_PRE_SPLIT) {
            mm_spans parts = {0};
            mm_tokpre_split(st->pattern, s, len, &parts);
            for (size_t k = 0; k < parts.n; k++) {
                mm_spans_push(out, dst->len, parts.v[k].len);
                mm_buf_append(dst, s + parts.v[k].off, parts.v[k].len);
            }
            free(parts.v);
        } else if (st->kind == MM_PRE_BYTELEVEL) {
            mm_buf piece = {0};
            if (st->add_prefix_space && (len == 0 || s[0] != ' '))
                mm_buf_append(&piece, " ", 1);
            mm_buf_append(&piece, s, len);
            mm_spans parts = {0};
            if (st->use_regex)
                mm_tokpre_split(MM_PAT_GPT2, piece.data, piece.len, &parts);
            else if (piece.len)
                mm_spans_push(&parts, 0, piece.len);
            for (size_t k = 0; k < parts.n; k++) {
                size_t at0 = dst->len;
                mm_tokpre_bytelevel(piece.data + parts.v[k].off, parts.v[k].len, dst);
                mm_spans_push(out, at0, dst->len - at0);
            }
            free(parts.v);
            mm_buf_free(&piece);
        } else { /* METASPACE: spaces become the replacement, which may start the text, and words
                    split before each replacement (MergedWithNext) */
            size_t rl = strlen(st->replacement);
            size_t at0 = dst->len;
            int prepend = st->prepend == 1 || (st->prepend == 2 && first && w == 0);
            /* the library replaces spaces first, then prepends unless the text starts with the
             * replacement: a leading space counts */
            if (prepend && !(len && s[0] == ' ') && !(len >= rl && memcmp(s, st->replacement, rl) == 0))
                mm_buf_append(dst, st->replacement, rl);
            for (size_t i = 0; i < len; i++) {
                if (s[i] == ' ')
                    mm_buf_append(dst, st->replacement, rl);
                else
                    mm_buf_append(dst, s + i, 1);
            }
            size_t end = dst->len, start = at0;
            if (st->split) {
                for (size_t p = at0 + 1; p + rl <= end; p++)
                    if (memcmp(dst->data + p, st->replacement, rl) == 0) {
                        mm_spans_push(out, start, p - start);
                        start = p;
                    }
            }
            if (end > start)
                mm_spans_push(out, start, end - start);
        }
    }
}

void mm_tokpre_run(const mm_tok_encoder *e, const char *s, size_t len, int first, mm_buf *words, mm_spans *out)
{
    mm_buf a = {0}, b = {0};
    mm_spans sa = {0}, sb = {0};
    mm_buf_append(&a, s, len);
    if (len)
        mm_spans_push(&sa, 0, len);
    for (size_t k = 0; k < e->nsteps; k++) {
        b.len = 0;
        sb.n = 0;
        step(&e->steps[k], a.data, &sa, first, &b, &sb);
        mm_buf tb = a;
        a = b, b = tb;
        mm_spans ts = sa;
        sa = sb, sb = ts;
    }
    mm_buf_free(&b);
    free(sb.v);
    *words = a;
    *out = sa;
}
