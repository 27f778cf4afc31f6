#include "safetensors.h"

#include "jsonpy.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

uint64_t mm_st_numel(const mm_st_tensor *t)
{
    uint64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= t->shape[i];
    return n;
}

void mm_st_shape_text(const mm_st_tensor *t, char *buf, size_t len)
{
    size_t o = (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < t->ndim && o < len; i++)
        o += (size_t)snprintf(buf + o, len - o, "%s%llu", i ? ", " : "", (unsigned long long)t->shape[i]);
    if (o < len)
        snprintf(buf + o, len - o, "]");
}

void mm_st_header_free(mm_st_header *h)
{
    if (!h)
        return;
    for (size_t i = 0; i < h->n; i++)
        free(h->tensors[i].name);
    free(h->tensors);
    h->tensors = NULL;
    h->n = 0;
}

/* JSON numbers arrive as doubles: accept only exact non-negative integers below 2^53. */
static int json_u64(const cJSON *j, uint64_t *out)
{
    if (!cJSON_IsNumber(j))
        return -1;
    double d = j->valuedouble;
    if (!(d >= 0) || d > 9007199254740992.0 || floor(d) != d)
        return -1;
    *out = (uint64_t)d;
    return 0;
}

static int parse_entry(const cJSON *e, mm_st_tensor *t, mm_err *err)
{
    const char *name = e->string;
    if (!cJSON_IsObject(e))
        return mm_err_set(err, -EINVAL, "tensor '%s': entry is not a JSON object", name);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(dt) || !cJSON_IsArray(shape) || !cJSON_IsArray(offs))
        return mm_err_set(err, -EINVAL, "tensor '%s': needs \"dtype\" (string), \"shape\" and \"data_offsets\" (arrays)",
                          name);
    t->dtype = mm_dtype_from_st_name(dt->valuestring);
    if (t->dtype == MM_DT_NONE)
        return mm_err_set(err, -EINVAL, "tensor '%s': unknown dtype '%s'", name, dt->valuestring);
    int nd = cJSON_GetArraySize(shape);
    if (nd > MM_MAX_DIMS)
        return mm_err_set(err, -EINVAL, "tensor '%s': %d dimensions (at most %d supported)", name, nd, MM_MAX_DIMS);
    t->ndim = nd;
    uint64_t numel = 1;
    int i = 0;
    const cJSON *d;
    cJSON_ArrayForEach(d, shape)
    {
        if (json_u64(d, &t->shape[i]) < 0)
            return mm_err_set(err, -EINVAL, "tensor '%s': shape entries must be non-negative integers", name);
        if (t->shape[i] && numel > UINT64_MAX / t->shape[i])
            return mm_err_set(err, -EOVERFLOW, "tensor '%s': element count overflows", name);
        numel *= t->shape[i];
        i++;
    }
    if (cJSON_GetArraySize(offs) != 2 || json_u64(cJSON_GetArrayItem(offs, 0), &t->begin) < 0 ||
        json_u64(cJSON_GetArrayItem(offs, 1), &t->end) < 0)
        return mm_err_set(err, -EINVAL, "tensor '%s': data_offsets must be two non-negative integers", name);
    if (t->end < t->begin)
        return mm_err_set(err, -EINVAL, "tensor '%s': data_offsets [%llu, %llu] end before they begin", name,
                          (unsigned long long)t->begin, (unsigned long long)t->end);
    uint64_t esz = mm_dtype_size(t->dtype);
    if (numel > UINT64_MAX / esz)
        return mm_err_set(err, -EOVERFLOW, "tensor '%s': byte size (%llu elements of %s) overflows", name,
                          (unsigned long long)numel, mm_dtype_name(t->dtype));
    if (t->end - t->begin != numel * esz)
        return mm_err_set(err, -EINVAL,
                          "tensor '%s': data_offsets span %llu bytes but dtype %s x shape needs %llu (file is corrupt)",
                          name, (unsigned long long)(t->end - t->begin), mm_dtype_name(t->dtype),
                          (unsigned long long)(numel * esz));
    return 0;
}

static int cmp_begin(const void *a, const void *b)
{
    const mm_st_tensor *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

static int cmp_name_ptr(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Sorting the names keeps the check O(n log n): a hostile header can hold millions of entries. */
static int check_unique(const mm_st_header *h, mm_err *err)
{
    const char **names = mm_xmalloc((h->n ? h->n : 1) * sizeof *names);
    for (size_t i = 0; i < h->n; i++)
        names[i] = h->tensors[i].name;
    qsort(names, h->n, sizeof *names, cmp_name_ptr);
    int rc = 0;
    for (size_t i = 1; i < h->n && rc == 0; i++)
        if (strcmp(names[i - 1], names[i]) == 0)
            rc = mm_err_set(err, -EINVAL, "tensor '%s' appears twice in the header", names[i]);
    free(names);
    return rc;
}

int mm_st_parse(const char *json, size_t json_len, uint64_t file_size, mm_st_header *out, mm_err *err)
{
    memset(out, 0, sizeof *out);
    out->header_len = json_len;
    out->data_start = 8 + (uint64_t)json_len;
    if (json_len == 0 || json[0] != '{')
        return mm_err_set(err, -EINVAL, "header does not start with '{' (not a safetensors file?)");
    /* The reference reader takes the header as a UTF-8 string before parsing it; cJSON would accept
     * any bytes in names, which we could not write back the way they were read. */
    size_t valid = mm_utf8_valid_len(json, json_len);
    if (valid < json_len)
        return mm_err_set(err, -EINVAL, "header is not valid UTF-8 (at byte %zu; file is corrupt)", valid);
    cJSON *root;
    int rc = mm_json_parse(json, json_len, &root, err);
    if (rc < 0) {
        mm_err_prefix(err, "header");
        return rc;
    }
    if (!cJSON_IsObject(root)) {
        rc = mm_err_set(err, -EINVAL, "header is not a JSON object");
        goto out;
    }
    size_t cap = (size_t)cJSON_GetArraySize(root);
    out->tensors = mm_xcalloc(cap, sizeof *out->tensors);
    const cJSON *e;
    cJSON_ArrayForEach(e, root)
    {
        if (strcmp(e->string, "__metadata__") == 0) {
            if (!cJSON_IsObject(e)) {
                rc = mm_err_set(err, -EINVAL, "__metadata__ is not a JSON object");
                goto out;
            }
            continue;
        }
        mm_st_tensor *t = &out->tensors[out->n];
        rc = parse_entry(e, t, err);
        if (rc < 0)
            goto out;
        t->name = mm_xstrdup(e->string);
        out->n++;
    }
    qsort(out->tensors, out->n, sizeof *out->tensors, cmp_begin);
    uint64_t pos = 0;
    for (size_t i = 0; i < out->n; i++) {
        const mm_st_tensor *t = &out->tensors[i];
        if (t->begin != pos) {
            rc = mm_err_set(err, -EINVAL, "tensor '%s': data_offsets start at %llu but the previous tensor ends at %llu "
                                          "(offsets overlap or leave a gap; file is corrupt)",
                            t->name, (unsigned long long)t->begin, (unsigned long long)pos);
            goto out;
        }
        pos = t->end;
    }
    if ((rc = check_unique(out, err)) < 0)
        goto out;
    if (file_size < out->data_start || pos != file_size - out->data_start) {
        rc = mm_err_set(err, -EINVAL, "tensor data ends at byte %llu but the file has %llu bytes of data "
                                      "(truncated or corrupt file)",
                        (unsigned long long)pos,
                        (unsigned long long)(file_size > out->data_start ? file_size - out->data_start : 0));
        goto out;
    }
out:
    cJSON_Delete(root);
    if (rc < 0)
        mm_st_header_free(out);
    return rc;
}

int mm_st_read_file(const char *path, mm_st_header *out, mm_err *err)
{
    memset(out, 0, sizeof *out);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return mm_err_set(err, -errno, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    int rc;
    char *json = NULL;
    if (fstat(fd, &st) < 0) {
        rc = mm_err_set(err, -errno, "%s: cannot stat: %s", path, strerror(errno));
        goto out;
    }
    uint64_t size = (uint64_t)st.st_size;
    unsigned char lenb[8];
    if (size < 8) {
        rc = mm_err_set(err, -EINVAL, "%s: only %llu bytes, too short for a safetensors file (truncated?)", path,
                        (unsigned long long)size);
        goto out;
    }
    rc = mm_pread_full(fd, lenb, 8, 0);
    if (rc < 0) {
        rc = mm_err_set(err, rc, "%s: cannot read: %s", path, strerror(-rc));
        goto out;
    }
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = (n << 8) | lenb[i];
    if (n > MM_ST_MAX_HEADER) {
        rc = mm_err_set(err, -EINVAL, "%s: header length %llu exceeds the %u-byte limit (corrupt file?)", path,
                        (unsigned long long)n, MM_ST_MAX_HEADER);
        goto out;
    }
    if (n > size - 8) {
        rc = mm_err_set(err, -EINVAL, "%s: header length %llu runs past the end of the %llu-byte file (truncated?)",
                        path, (unsigned long long)n, (unsigned long long)size);
        goto out;
    }
    json = mm_xmalloc(n + 1);
    rc = mm_pread_full(fd, json, n, 8);
    if (rc < 0) {
        rc = mm_err_set(err, rc, "%s: cannot read header: %s", path, strerror(-rc));
        goto out;
    }
    json[n] = 0; /* mm_json_parse wants a NUL after the text (see jsonpy.h) */
    rc = mm_st_parse(json, n, size, out, err);
    if (rc < 0)
        mm_err_prefix(err, "%s", path);
out:
    free(json);
    close(fd);
    return rc;
}

/* The reference writer's order: dtype descending, then name ascending (bytewise). */
static int cmp_layout(const void *a, const void *b)
{
    const mm_st_tensor *x = a, *y = b;
    if (x->dtype != y->dtype)
        return x->dtype > y->dtype ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* Tensor names are written as JSON strings; escape what JSON requires. */
static void json_string(mm_buf *b, const char *s)
{
    mm_buf_puts(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            mm_buf_printf(b, "\\%c", *p);
        else if (*p < 0x20)
            mm_buf_printf(b, "\\u%04x", *p);
        else
            mm_buf_append(b, p, 1);
    }
    mm_buf_puts(b, "\"");
}

int mm_st_layout(mm_st_tensor *t, size_t n, char **bytes, size_t *size)
{
    qsort(t, n, sizeof *t, cmp_layout);
    mm_buf b = {0};
    mm_buf_append(&b, "\0\0\0\0\0\0\0\0", 8);
    mm_buf_puts(&b, "{\"__metadata__\":{\"format\":\"pt\"}");
    uint64_t off = 0;
    for (size_t i = 0; i < n; i++) {
        t[i].begin = off;
        off += mm_st_numel(&t[i]) * mm_dtype_size(t[i].dtype);
        t[i].end = off;
        mm_buf_puts(&b, ",");
        json_string(&b, t[i].name);
        mm_buf_printf(&b, ":{\"dtype\":\"%s\",\"shape\":[", mm_dtype_name(t[i].dtype));
        for (int d = 0; d < t[i].ndim; d++)
            mm_buf_printf(&b, "%s%llu", d ? "," : "", (unsigned long long)t[i].shape[d]);
        mm_buf_printf(&b, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)t[i].begin,
                      (unsigned long long)t[i].end);
    }
    mm_buf_puts(&b, "}");
    while ((b.len - 8) % 8)
        mm_buf_puts(&b, " ");
    uint64_t hl = b.len - 8;
    for (int i = 0; i < 8; i++)
        b.data[i] = (char)((hl >> (8 * i)) & 0xff);
    *bytes = b.data;
    *size = b.len;
    return 0;
}

void mm_st_index_free(mm_st_index *ix)
{
    if (!ix)
        return;
    for (size_t i = 0; i < ix->nfiles; i++)
        free(ix->files[i]);
    for (size_t i = 0; i < ix->n; i++)
        free(ix->names[i]);
    free(ix->files);
    free(ix->names);
    free(ix->file_of);
    memset(ix, 0, sizeof *ix);
}

/* Shard names come from a file we did not write: only plain names inside the model folder. */
static int plain_file_name(const char *s)
{
    return *s && !strchr(s, '/') && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

/* Orders entries by shard name, then by position, so each name's first appearance leads its run. */
static int cmp_by_file(const void *a, const void *b, void *arg)
{
    const char *const *files = arg;
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    int c = strcmp(files[x], files[y]);
    return c ? c : (x > y) - (x < y);
}

static int cmp_size(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return (x > y) - (x < y);
}

/* Numbers the distinct shard names in order of first appearance. By sorting rather than by comparing
 * each entry with every name seen so far: an index may list millions of distinct names. */
static void number_files(mm_st_index *ix, const char *const *file)
{
    size_t n = ix->n;
    size_t *ord = mm_xmalloc((n ? n : 1) * sizeof *ord), *first = mm_xmalloc((n ? n : 1) * sizeof *first);
    for (size_t i = 0; i < n; i++)
        ord[i] = i;
    qsort_r(ord, n, sizeof *ord, cmp_by_file, (void *)file);
    size_t nf = 0;
    for (size_t k = 0; k < n; k++)
        if (k == 0 || strcmp(file[ord[k - 1]], file[ord[k]]) != 0)
            first[nf++] = ord[k];
    qsort(first, nf, sizeof *first, cmp_size);
    ix->files = mm_xcalloc(nf ? nf : 1, sizeof *ix->files);
    for (size_t f = 0; f < nf; f++)
        ix->files[f] = mm_xstrdup(file[first[f]]);
    ix->nfiles = nf;
    for (size_t k = 0, run = 0; k < n; k++) {
        if (k == 0 || strcmp(file[ord[k - 1]], file[ord[k]]) != 0)
            run = (size_t)((const size_t *)bsearch(&ord[k], first, nf, sizeof *first, cmp_size) - first);
        ix->file_of[ord[k]] = run;
    }
    free(first);
    free(ord);
}

int mm_st_index_parse(const char *json, size_t json_len, mm_st_index *out, mm_err *err)
{
    memset(out, 0, sizeof *out);
    /* Python's json.load of the file (transformers) needs UTF-8 too. */
    size_t valid = mm_utf8_valid_len(json, json_len);
    if (valid < json_len)
        return mm_err_set(err, -EINVAL, "not valid UTF-8 (at byte %zu)", valid);
    cJSON *root;
    int rc = mm_json_parse(json, json_len, &root, err);
    if (rc < 0)
        return rc;
    const cJSON *wm = cJSON_IsObject(root) ? cJSON_GetObjectItemCaseSensitive(root, "weight_map") : NULL;
    if (!cJSON_IsObject(wm)) {
        cJSON_Delete(root);
        return mm_err_set(err, -EINVAL, "not a JSON object with a \"weight_map\" object (is it a safetensors index?)");
    }
    size_t cap = (size_t)cJSON_GetArraySize(wm);
    const char **file = mm_xcalloc(cap ? cap : 1, sizeof *file);
    out->names = mm_xcalloc(cap ? cap : 1, sizeof *out->names);
    out->file_of = mm_xcalloc(cap ? cap : 1, sizeof *out->file_of);
    const cJSON *e;
    cJSON_ArrayForEach(e, wm)
    {
        if (!cJSON_IsString(e)) {
            rc = mm_err_set(err, -EINVAL, "weight_map entry '%s' is not a shard file name (a JSON string)", e->string);
            break;
        }
        if (!plain_file_name(e->valuestring)) {
            rc = mm_err_set(err, -EINVAL,
                            "weight_map entry '%s' names the shard '%s', which is not a plain file name in the model "
                            "folder (a shard name may not contain '/' or be empty, '.' or '..'; fix the index or "
                            "download the model again)",
                            e->string, e->valuestring);
            break;
        }
        file[out->n] = e->valuestring;
        out->names[out->n++] = mm_xstrdup(e->string);
    }
    if (rc == 0)
        number_files(out, file);
    free(file);
    cJSON_Delete(root);
    if (rc < 0)
        mm_st_index_free(out);
    return rc;
}

static int cmp_str_idx(const void *a, const void *b, void *arg)
{
    const char *const *names = arg;
    return strcmp(names[*(const size_t *)a], names[*(const size_t *)b]);
}

char *mm_st_index_json(const char *const *names, const char *const *files, size_t n, uint64_t total_size)
{
    size_t *ord = mm_xmalloc(n * sizeof *ord);
    for (size_t i = 0; i < n; i++)
        ord[i] = i;
    qsort_r(ord, n, sizeof *ord, cmp_str_idx, (void *)names);
    mm_buf b = {0};
    mm_buf_printf(&b, "{\n  \"metadata\": {\n    \"total_size\": %llu\n  },\n  \"weight_map\": {",
                  (unsigned long long)total_size);
    for (size_t k = 0; k < n; k++) {
        mm_buf_puts(&b, k ? ",\n    " : "\n    ");
        mm_json_string_py(names[ord[k]], &b);
        mm_buf_puts(&b, ": ");
        mm_json_string_py(files[ord[k]], &b);
    }
    mm_buf_puts(&b, n ? "\n  }\n}\n" : "}\n}\n");
    free(ord);
    return b.data;
}
