/* merge/safetensors: strict header validation (every malformed case named in the issues, hostile
 * input included), the index reader, and the writer layout. */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "check.h"
#include "formats/safetensors.h"

static int parse(const char *json, uint64_t data_len, mm_err *err)
{
    mm_st_header h;
    size_t n = strlen(json);
    int rc = mm_st_parse(json, n, 8 + n + data_len, &h, err);
    if (rc == 0)
        mm_st_header_free(&h);
    return rc;
}

/* A header of n zero-size F32 tensors "t0".."t<n-1>" (all at [0, 0]), optionally naming one twice. */
static char *many_tensors(size_t n, int dup)
{
    mm_buf b = {0};
    mm_buf_puts(&b, "{");
    for (size_t i = 0; i < n; i++)
        mm_buf_printf(&b, "%s\"t%zu\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}", i ? "," : "",
                      dup && i == n - 1 ? (size_t)7 : i);
    mm_buf_puts(&b, "}");
    return b.data;
}

/* What a file from a stranger may hold: every case is an error with a message, never a crash, and
 * none takes time beyond O(n log n). */
static void test_hostile_headers(void)
{
    mm_err err;
    /* Element count, then byte size, beyond 64 bits (shape entries themselves stop at 2^53). */
    CHECK(parse("{\"a\":{\"dtype\":\"F32\",\"shape\":[9007199254740992,9007199254740992],\"data_offsets\":[0,4]}}", 4,
                &err) == -EOVERFLOW);
    CHECK_STR_CONTAINS(err.msg, "element count overflows");
    CHECK(parse("{\"a\":{\"dtype\":\"F64\",\"shape\":[4503599627370496,2048],\"data_offsets\":[0,8]}}", 8, &err) ==
          -EOVERFLOW);
    CHECK_STR_CONTAINS(err.msg, "byte size");
    CHECK(parse("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,18446744073709551616]}}", 1, &err) < 0);
    /* Names must be UTF-8, as the reference reader requires of the whole header. */
    CHECK(parse("{\"\xff\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, &err) < 0);
    CHECK_STR_CONTAINS(err.msg, "not valid UTF-8 (at byte 2");
    /* JSON nested beyond cJSON's limit is refused by name; a syntax error says where. */
    mm_buf deep = {0};
    mm_buf_puts(&deep, "{\"__metadata__\":");
    for (int i = 0; i < 5000; i++)
        mm_buf_puts(&deep, "[");
    for (int i = 0; i < 5000; i++)
        mm_buf_puts(&deep, "]");
    mm_buf_puts(&deep, "}");
    CHECK(parse(deep.data, 0, &err) < 0);
    CHECK_STR_CONTAINS(err.msg, "nested more than 1000 levels");
    mm_buf_free(&deep);
    CHECK(parse("{\"a\": [1, 2,, 3]}", 0, &err) < 0);
    CHECK_STR_CONTAINS(err.msg, "not valid JSON (syntax error at byte 12)");
    /* Many entries: the uniqueness check sorts (quadratic, 200000 names would take minutes). */
    char *many = many_tensors(200000, 0);
    CHECK(parse(many, 0, &err) == 0);
    free(many);
    many = many_tensors(200000, 1);
    CHECK(parse(many, 0, &err) < 0);
    CHECK_STR_CONTAINS(err.msg, "'t7' appears twice");
    free(many);
}

static int index_parse(const char *json, mm_st_index *ix, mm_err *err)
{
    return mm_st_index_parse(json, strlen(json), ix, err);
}

static void test_index(void)
{
    mm_st_index ix;
    mm_err err;
    CHECK(index_parse("{\"metadata\": {\"total_size\": 8}, \"weight_map\": {\"a\": \"2.st\", \"b\": \"1.st\", "
                      "\"c\": \"2.st\", \"d\": \"3.st\"}}",
                      &ix, &err) == 0);
    CHECK(ix.n == 4 && ix.nfiles == 3);
    CHECK(strcmp(ix.files[0], "2.st") == 0 && strcmp(ix.files[1], "1.st") == 0 && strcmp(ix.files[2], "3.st") == 0);
    CHECK(strcmp(ix.names[2], "c") == 0 && ix.file_of[0] == 0 && ix.file_of[1] == 1 && ix.file_of[2] == 0 &&
          ix.file_of[3] == 2);
    mm_st_index_free(&ix);
    CHECK(index_parse("{\"weight_map\": {}}", &ix, &err) == 0 && ix.n == 0 && ix.nfiles == 0);
    mm_st_index_free(&ix);

    /* Shard names that would leave the model folder, or are no file name at all. */
    static const char *const unsafe[] = {"../model.safetensors", "..", ".", "/etc/passwd", "sub/x.safetensors", "",
                                         "x/"};
    for (size_t i = 0; i < MM_COUNT(unsafe); i++) {
        char *json = mm_xasprintf("{\"weight_map\": {\"w\": \"%s\"}}", unsafe[i]);
        CHECK(index_parse(json, &ix, &err) == -EINVAL);
        CHECK_STR_CONTAINS(err.msg, "not a plain file name in the model folder");
        free(json);
    }
    CHECK(index_parse("{\"weight_map\": {\"w\": 3}}", &ix, &err) < 0);
    CHECK_STR_CONTAINS(err.msg, "'w' is not a shard file name");
    CHECK(index_parse("{\"weight_map\": [\"x\"]}", &ix, &err) < 0);
    CHECK_STR_CONTAINS(err.msg, "\"weight_map\" object");
    CHECK(index_parse("[1]", &ix, &err) < 0);
    CHECK(index_parse("{\"weight_map\": {\"\xed\xa0\x80\": \"x\"}}", &ix, &err) < 0);
    CHECK_STR_CONTAINS(err.msg, "UTF-8");
    mm_buf deep = {0};
    mm_buf_puts(&deep, "{\"metadata\": ");
    for (int i = 0; i < 100000; i++)
        mm_buf_puts(&deep, "{\"a\":");
    CHECK(index_parse(deep.data, &ix, &err) < 0);
    CHECK_STR_CONTAINS(err.msg, "nested more than 1000 levels");
    mm_buf_free(&deep);

    /* 200000 distinct shard names: numbered by sorting, not by comparing each with all before it. */
    mm_buf big = {0};
    mm_buf_puts(&big, "{\"weight_map\": {");
    for (int i = 0; i < 200000; i++)
        mm_buf_printf(&big, "%s\"t%d\": \"s%d\"", i ? ", " : "", i, 199999 - i);
    mm_buf_puts(&big, "}}");
    CHECK(index_parse(big.data, &ix, &err) == 0);
    CHECK(ix.nfiles == 200000 && strcmp(ix.files[0], "s199999") == 0 && ix.file_of[199999] == 199999);
    mm_st_index_free(&ix);
    mm_buf_free(&big);
}

int main(void)
{
    test_index();
    mm_err err;
    /* Valid: two tensors, any order in JSON, contiguous data. */
    const char *ok = "{\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]},"
                     "\"__metadata__\":{\"format\":\"pt\"},\"a\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[0,4]}}";
    mm_st_header h;
    CHECK(mm_st_parse(ok, strlen(ok), 8 + strlen(ok) + 12, &h, &err) == 0);
    CHECK(h.n == 2 && strcmp(h.tensors[0].name, "a") == 0 && h.tensors[1].begin == 4);
    CHECK(h.data_start == 8 + strlen(ok));
    CHECK(mm_st_numel(&h.tensors[1]) == 2);
    mm_st_header_free(&h);
    /* Scalars (shape []) have one element. */
    CHECK(parse("{\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}", 4, &err) == 0);

    CHECK(parse("not json", 0, &err) < 0);
    CHECK_STR_CONTAINS(err.msg, "does not start with '{'");
    CHECK(parse("{\"a\":", 0, &err) < 0);
    CHECK_STR_CONTAINS(err.msg, "not valid JSON");
    CHECK(parse("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4, &err) < 0);
    CHECK_STR_CONTAINS(err.msg, "needs 8");
    CHECK(parse("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[2,6]}}",
                6, &err) < 0);
    CHECK_STR_CONTAINS(err.msg, "overlap");
    CHECK(parse("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 2, &err) < 0);
    CHECK_STR_CONTAINS(err.msg, "truncated");
    CHECK(parse("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8, &err) < 0);
    CHECK(parse("{\"a\":{\"dtype\":\"Q4\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, &err) < 0);
    CHECK_STR_CONTAINS(err.msg, "unknown dtype");
    CHECK(parse("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, &err) < 0);
    CHECK(parse("{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4, &err) < 0);
    CHECK(parse("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],\"data_offsets\":[0,4]}}", 4,
                &err) < 0);
    CHECK_STR_CONTAINS(err.msg, "overflows");
    CHECK(parse("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 4, &err) < 0);
    CHECK(parse("{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, &err) < 0);
    CHECK(parse("[1,2]", 0, &err) < 0);
    CHECK(parse("{\"__metadata__\":[1]}", 0, &err) < 0);
    /* A gap between tensors is refused too (the reference reader requires contiguity). */
    CHECK(parse("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, &err) < 0);
    test_hostile_headers();

    /* Files: header length past EOF, truncated, too short. */
    char dir[] = "/tmp/mm-st-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[256];
    snprintf(path, sizeof path, "%s/x.safetensors", dir);
    unsigned char big[16] = {0xff, 0xff, 0, 0, 0, 0, 0, 0, '{', '}'};
    check_write_file(path, big, 10);
    CHECK(mm_st_read_file(path, &h, &err) < 0);
    CHECK_STR_CONTAINS(err.msg, "past the end");
    CHECK_STR_CONTAINS(err.msg, path);
    check_write_file(path, big, 4);
    CHECK(mm_st_read_file(path, &h, &err) < 0);
    CHECK_STR_CONTAINS(err.msg, "too short");
    unsigned char huge[8] = {0, 0, 0, 0x10, 0, 0, 0, 0};
    check_write_file(path, huge, 8);
    CHECK(mm_st_read_file(path, &h, &err) < 0);
    CHECK_STR_CONTAINS(err.msg, "limit");

    /* Writer layout: dtype descending, then name; padded to 8; round trip through the parser. */
    mm_st_tensor t[3] = {
        {.name = "b", .dtype = MM_DT_BF16, .ndim = 2, .shape = {2, 3}},
        {.name = "a", .dtype = MM_DT_BF16, .ndim = 1, .shape = {1}},
        {.name = "c", .dtype = MM_DT_F32, .ndim = 1, .shape = {2}},
    };
    char *bytes;
    size_t size;
    CHECK(mm_st_layout(t, 3, &bytes, &size) == 0);
    CHECK(strcmp(t[0].name, "c") == 0 && strcmp(t[1].name, "a") == 0 && strcmp(t[2].name, "b") == 0);
    CHECK(t[0].begin == 0 && t[0].end == 8 && t[1].begin == 8 && t[1].end == 10 && t[2].end == 22);
    CHECK(size % 8 == 0);
    const char *want = "{\"__metadata__\":{\"format\":\"pt\"},\"c\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                       "\"a\":{\"dtype\":\"BF16\",\"shape\":[1],\"data_offsets\":[8,10]},"
                       "\"b\":{\"dtype\":\"BF16\",\"shape\":[2,3],\"data_offsets\":[10,22]}}";
    CHECK(strncmp(bytes + 8, want, strlen(want)) == 0);
    for (size_t i = 8 + strlen(want); i < size; i++)
        CHECK(bytes[i] == ' ');
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = (n << 8) | (unsigned char)bytes[i];
    CHECK(n == size - 8);
    CHECK(mm_st_parse(bytes + 8, n, size + 22, &h, &err) == 0);
    mm_st_header_free(&h);
    free(bytes);

    const char *names[] = {"z.weight", "a.weight"}, *files[] = {"model-00002-of-00002.safetensors",
                                                                "model-00001-of-00002.safetensors"};
    char *idx = mm_st_index_json(names, files, 2, 1234);
    CHECK(strcmp(idx, "{\n  \"metadata\": {\n    \"total_size\": 1234\n  },\n  \"weight_map\": {\n"
                      "    \"a.weight\": \"model-00001-of-00002.safetensors\",\n"
                      "    \"z.weight\": \"model-00002-of-00002.safetensors\"\n  }\n}\n") == 0);
    free(idx);
    unlink(path);
    rmdir(dir);
    return mm_check_report();
}
