/* formats/tokencode.c and its pre-tokenizers on small cases worked out by hand (the comparison with
 * sentencepiece and the Python reference on many texts is tests/integration/test_tokenize.py). */
#include <errno.h>
#include <stdarg.h>
#include <sys/stat.h>

#include "check.h"
#include "formats/tokenc.h"
#include "formats/unicat.h"

/* The pieces `pattern` splits text into, joined with '|'. */
static char *split(mm_tok_pattern pattern, const char *text)
{
    mm_spans sp = {0};
    mm_tokpre_split(pattern, text, strlen(text), &sp);
    mm_buf b = {0};
    mm_buf_append(&b, "", 0);
    for (size_t i = 0; i < sp.n; i++) {
        if (i)
            mm_buf_append(&b, "|", 1);
        mm_buf_append(&b, text + sp.v[i].off, sp.v[i].len);
    }
    free(sp.v);
    return b.data;
}

#define CHECK_SPLIT(pattern, text, want)                                                                             \
    do {                                                                                                             \
        char *got_ = split(pattern, text);                                                                           \
        CHECK_STR_EQ(got_, want);                                                                                    \
        free(got_);                                                                                                  \
    } while (0)

static void test_patterns(void)
{
    /* GPT-2: a space joins the word after it; a run of spaces leaves its last one to that word */
    CHECK_SPLIT(MM_PAT_GPT2, "Hello world's  x\n1234", "Hello| world|'s| | x|\n|1234");
    CHECK_SPLIT(MM_PAT_GPT2, "x 1234567\n\n  y.Z's", "x| 1234567|\n\n | y|.|Z|'s");
    CHECK_SPLIT(MM_PAT_GPT2, "don'T", "don|'|T"); /* case-sensitive contractions */
    CHECK_SPLIT(MM_PAT_GPT2, "end  ", "end|  ");  /* trailing spaces: \s+(?!\S) takes them all */
    /* Llama 3: digits by three, newlines with the whitespace before them, punctuation before letters */
    CHECK_SPLIT(MM_PAT_LLAMA3, "x 1234567\n\n  y.Z's", "x| |123|456|7|\n\n| | y|.Z|'s");
    CHECK_SPLIT(MM_PAT_LLAMA3, "don'T 'LL", "don|'T| '|LL"); /* the space takes the quote: no contraction */
    CHECK_SPLIT(MM_PAT_LLAMA3, "a ... b!!\n\nc", "a| ...| b|!!\n\n|c");
    CHECK_SPLIT(MM_PAT_LLAMA3, "a\tb", "a|\tb");
    /* Qwen 2: single digits */
    CHECK_SPLIT(MM_PAT_QWEN2, "x 1234567\n\n  y.Z's", "x| |1|2|3|4|5|6|7|\n\n| | y|.Z|'s");
    CHECK_SPLIT(MM_PAT_QWEN2, "\xc2\xbd\xd9\xa3", "\xc2\xbd|\xd9\xa3"); /* ½ and Arabic-Indic 3: \p{N} */
    /* Whitespace: words and punctuation runs, whitespace dropped */
    CHECK_SPLIT(MM_PAT_WHITESPACE, "hi, there!! 42 na\xc3\xafve_x", "hi|,|there|!!|42|na\xc3\xafve_x");
    CHECK_SPLIT(MM_PAT_WHITESPACE, "   ", "");
}

static void test_classes(void)
{
    CHECK(mm_unicat('a') & MM_UNI_L);
    CHECK(mm_unicat(0x65e5) & MM_UNI_L); /* 日 */
    CHECK(mm_unicat(0xbd) & MM_UNI_N);   /* ½ */
    CHECK(!(mm_unicat('!') & (MM_UNI_L | MM_UNI_N)));
    CHECK(mm_uni_space(0x3000) && mm_uni_space('\n') && !mm_uni_space(0x1c) && !mm_uni_space(0x200b));
    CHECK(mm_uni_word('_') && mm_uni_word(0x301) && !mm_uni_word('-'));
    CHECK(mm_unicat(0x301) & MM_UNI_NFC_UNSAFE); /* combining acute */
    CHECK(!(mm_unicat(0xe9) & MM_UNI_NFC_UNSAFE));
}

static void test_bytelevel(void)
{
    mm_buf b = {0};
    mm_tokpre_bytelevel(" \n\xc3\xa9!", 5, &b);
    CHECK_STR_EQ(b.data, "\xc4\xa0\xc4\x8a\xc3\x83\xc2\xa9!"); /* Ġ Ċ Ã © ! */
    mm_buf_free(&b);
}

static char tmp[PATH_MAX];
static int ncase;

static char *write_folder(const char *tokenizer_json)
{
    char *dir = mm_xasprintf("%s/case%d", tmp, ncase++);
    CHECK(mkdir(dir, 0755) == 0);
    char *path = mm_path_join(dir, "tokenizer.json");
    check_write_file(path, tokenizer_json, strlen(tokenizer_json));
    free(path);
    return dir;
}

/* tokenizer.json with the given pre_tokenizer and model extras; vocab and merges fixed (see below). */
static char *bpe_json(const char *pre, const char *extra)
{
    return mm_xasprintf(
        "{\"version\": \"1.0\", \"added_tokens\": [{\"id\": 8, \"content\": \"<x>\", \"single_word\": false, "
        "\"lstrip\": false, \"rstrip\": false, \"normalized\": false, \"special\": true}], \"normalizer\": null, "
        "\"pre_tokenizer\": %s, \"model\": {\"type\": \"BPE\", \"dropout\": null, \"unk_token\": \"<unk>\", %s"
        "\"vocab\": {\"<unk>\": 0, \"a\": 1, \"b\": 2, \"ab\": 3, \"c\": 4, \"abc\": 5, \"\xc4\xa0\": 6, "
        "\"\xc4\xa0" "a\": 7}, \"merges\": [\"a b\", \"ab c\", \"\xc4\xa0 a\"]}}",
        pre, extra);
}

static int encode(const char *dir, const char *text, int32_t *want, size_t nwant, mm_err *err)
{
    mm_tokenizer *t;
    int rc = mm_tokenizer_load(dir, &t, err);
    if (rc < 0)
        return rc;
    int32_t *ids;
    size_t n;
    rc = mm_tokenizer_encode(t, text, strlen(text), &ids, &n, err);
    mm_tokenizer_free(t);
    if (rc < 0)
        return rc;
    int same = n == nwant && memcmp(ids, want, n * sizeof *ids) == 0;
    if (!same) {
        fprintf(stderr, "encode '%s': got", text);
        for (size_t i = 0; i < n; i++)
            fprintf(stderr, " %d", ids[i]);
        fputc('\n', stderr);
    }
    free(ids);
    return same ? 0 : 1;
}

static void test_bpe(void)
{
    mm_err err = {{0}};
    const char *byte_level = "{\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"use_regex\": true}";
    char *j = bpe_json(byte_level, "");
    char *dir = write_folder(j);
    /* "abc ab" | <x> | "cab d": abc: a+b (rank 0) then ab+c = abc; " ab" = Ġ a b: a+b ranks before Ġ+a,
     * leaving Ġ ab; cab: c ab; " d": Ġ and an unknown d = <unk> */
    int32_t want[] = {5, 6, 3, 8, 4, 3, 6, 0};
    CHECK(encode(dir, "abc ab<x>cab d", want, MM_COUNT(want), &err) == 0);
    /* fuse_unk: two unknown characters are one <unk>; without it two */
    int32_t two[] = {1, 0, 0, 2}, one[] = {1, 0, 2};
    CHECK(encode(dir, "adeb", two, MM_COUNT(two), &err) == 0);
    free(j);
    free(dir);
    j = bpe_json(byte_level, "\"fuse_unk\": true, ");
    dir = write_folder(j);
    CHECK(encode(dir, "adeb", one, MM_COUNT(one), &err) == 0);
    free(j);
    free(dir);
    /* ignore_merges: " a" is a token (Ġa) as a whole word, though a+b would not make it */
    j = bpe_json(byte_level, "\"ignore_merges\": true, ");
    dir = write_folder(j);
    int32_t whole[] = {7};
    CHECK(encode(dir, " a", whole, MM_COUNT(whole), &err) == 0);
    free(j);
    free(dir);
    /* refusals name the key and value */
    j = bpe_json("{\"type\": \"BertPreTokenizer\"}", "");
    dir = write_folder(j);
    CHECK(encode(dir, "a", NULL, 0, &err) == -ENOTSUP);
    CHECK_STR_CONTAINS(err.msg, "pre_tokenizer.type: \"BertPreTokenizer\" is not supported");
    free(j);
    free(dir);
    j = bpe_json(byte_level, "");
    dir = write_folder(j);
    CHECK(encode(dir, "a\xff", NULL, 0, &err) == -EINVAL);
    CHECK_STR_CONTAINS(err.msg, "byte 1: not UTF-8");
    free(j);
    free(dir);
}

int main(void)
{
    char *old;
    if (check_enter_tmpdir(tmp, "mm-test-tokencode", &old) < 0)
        return 1;
    test_patterns();
    test_classes();
    test_bytelevel();
    test_bpe();
    check_leave_tmpdir(tmp, old);
    return mm_check_report();
}
