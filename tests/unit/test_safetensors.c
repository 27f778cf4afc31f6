/* merge/safetensors: strict header validation (every malformed case named in the issue) and the writer
 * layout. */
#include <stdlib.h>
#include <unistd.h>

#include "check.h"
#include "merge/safetensors.h"

static int parse(const char *json, uint64_t data_len, mm_err *err)
{
    mm_st_header h;
    size_t n = strlen(json);
    int rc = mm_st_parse(json, n, 8 + n + data_len, &h, err);
    if (rc == 0)
        mm_st_header_free(&h);
    return rc;
}

int main(void)
{
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
