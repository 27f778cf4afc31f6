/* mm-mkmodel: writes a small random Llama-shaped Hugging Face checkpoint, deterministically.
 *
 * Used by the tests and benchmarks: nothing is ever downloaded, every model the test suite merges is
 * made here. The same seed always gives the same values, whatever the dtype, the shard count or the
 * tied/untied choice: every tensor has its own random stream derived from (seed, tensor name), and the
 * values are drawn in float64, then rounded to the requested dtype with the project's own numerics
 * (mm_store_f32), so a bf16 and an f32 model of the same seed hold "the same" weights.
 *
 * Shard headers and the index are produced by the core library (mm_st_layout, mm_st_index_json): this
 * tool is deliberately not a second safetensors writer. */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "formats/dtype.h"
#include "formats/numeric.h"
#include "formats/safetensors.h"
#include "base/util.h"

#define PROG "mm-mkmodel"

typedef struct mk_opts {
    const char *outdir;
    uint64_t seed;
    mm_dtype dtype;
    long layers, hidden, intermediate, vocab, heads, kv_heads, shards;
    int tie, tokenizer;
    double scale;
} mk_opts;

/* One tensor of the checkpoint. `norm` tensors are 1 + noise (RMSNorm gains), the others noise. */
typedef struct mk_tensor {
    char *name;
    int ndim;
    uint64_t shape[2];
    int norm;
    uint64_t bytes;
    long shard; /* 0-based */
} mk_tensor;

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: " PROG " OUTDIR [options]\n"
            "Writes a small random Llama-shaped checkpoint (config.json, safetensors, tokenizer) to OUTDIR.\n"
            "The same options always give the same bytes.\n"
            "\n"
            "  --seed N            random seed (default 0)\n"
            "  --dtype D           bf16 | f16 | f32 (default bf16)\n"
            "  --layers L          number of decoder layers (default 2)\n"
            "  --hidden H          hidden size (default 32)\n"
            "  --intermediate I    MLP intermediate size (default 48)\n"
            "  --vocab V           vocabulary size (default 64)\n"
            "  --heads N           attention heads (default 4)\n"
            "  --kv-heads N        key/value heads (default 2)\n"
            "  --shards N          number of weight files (default 1: model.safetensors)\n"
            "  --tie-embeddings    no lm_head.weight; tie_word_embeddings true\n"
            "  --no-tokenizer      do not write tokenizer and generation files\n"
            "  --scale X           standard deviation of the weights (default 0.02)\n"
            "  -h, --help          show this help\n");
}

static int die_usage(const char *fmt, const char *arg)
{
    fprintf(stderr, PROG ": error: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nTry '" PROG " --help'.\n");
    return 2;
}

static int parse_long(const char *s, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max)
        return -1;
    *out = (long)v;
    return 0;
}

static int parse_args(int argc, char **argv, mk_opts *o)
{
    *o = (mk_opts){.seed = 0, .dtype = MM_DT_BF16, .layers = 2, .hidden = 32, .intermediate = 48, .vocab = 64,
                   .heads = 4, .kv_heads = 2, .shards = 1, .tie = 0, .tokenizer = 1, .scale = 0.02};
    static const struct {
        const char *name;
        size_t off;
        long min, max;
    } longs[] = {
        {"--layers", offsetof(mk_opts, layers), 1, 100000},
        {"--hidden", offsetof(mk_opts, hidden), 1, 1L << 20},
        {"--intermediate", offsetof(mk_opts, intermediate), 1, 1L << 22},
        {"--vocab", offsetof(mk_opts, vocab), 4, 1L << 22},
        {"--heads", offsetof(mk_opts, heads), 1, 1L << 16},
        {"--kv-heads", offsetof(mk_opts, kv_heads), 1, 1L << 16},
        {"--shards", offsetof(mk_opts, shards), 1, 99999},
    };
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            exit(0);
        }
        if (strcmp(a, "--tie-embeddings") == 0) {
            o->tie = 1;
            continue;
        }
        if (strcmp(a, "--no-tokenizer") == 0) {
            o->tokenizer = 0;
            continue;
        }
        if (a[0] != '-' || a[1] == 0) {
            if (a[0] == 0)
                return die_usage("%s", "OUTDIR must not be empty");
            if (o->outdir)
                return die_usage("more than one OUTDIR ('%s')", a);
            o->outdir = a;
            continue;
        }
        /* Options with a value: "--opt VALUE" or "--opt=VALUE". */
        char name[64];
        const char *val = NULL;
        const char *eq = strchr(a, '=');
        if (eq) {
            size_t n = (size_t)(eq - a);
            if (n >= sizeof name)
                return die_usage("unknown option '%s'", a);
            memcpy(name, a, n);
            name[n] = 0;
            val = eq + 1;
        } else {
            snprintf(name, sizeof name, "%s", a);
        }
        int known = strcmp(name, "--seed") == 0 || strcmp(name, "--dtype") == 0 || strcmp(name, "--scale") == 0;
        for (size_t k = 0; k < MM_COUNT(longs); k++)
            known |= strcmp(name, longs[k].name) == 0;
        if (!known)
            return die_usage("unknown option '%s'", a);
        if (!val) {
            if (i + 1 >= argc)
                return die_usage("option '%s' needs a value", name);
            val = argv[++i];
        }
        if (strcmp(name, "--seed") == 0) {
            char *end;
            errno = 0;
            unsigned long long v = strtoull(val, &end, 10);
            if (errno || end == val || *end || val[0] == '-')
                return die_usage("--seed wants a non-negative integer, not '%s'", val);
            o->seed = (uint64_t)v;
        } else if (strcmp(name, "--dtype") == 0) {
            if (strcmp(val, "bf16") == 0 || strcmp(val, "bfloat16") == 0)
                o->dtype = MM_DT_BF16;
            else if (strcmp(val, "f16") == 0 || strcmp(val, "float16") == 0 || strcmp(val, "fp16") == 0)
                o->dtype = MM_DT_F16;
            else if (strcmp(val, "f32") == 0 || strcmp(val, "float32") == 0 || strcmp(val, "fp32") == 0)
                o->dtype = MM_DT_F32;
            else
                return die_usage("--dtype must be bf16, f16 or f32, not '%s'", val);
        } else if (strcmp(name, "--scale") == 0) {
            char *end;
            errno = 0;
            double v = strtod(val, &end);
            if (errno || end == val || *end || !isfinite(v) || v < 0)
                return die_usage("--scale wants a finite number >= 0, not '%s'", val);
            o->scale = v;
        } else {
            for (size_t k = 0; k < MM_COUNT(longs); k++) {
                if (strcmp(name, longs[k].name) != 0)
                    continue;
                long *dst = (long *)(void *)((char *)o + longs[k].off);
                if (parse_long(val, longs[k].min, longs[k].max, dst) != 0) {
                    fprintf(stderr, PROG ": error: %s wants an integer in [%ld, %ld], not '%s'\n", name,
                            longs[k].min, longs[k].max, val);
                    fprintf(stderr, "Try '" PROG " --help'.\n");
                    return 2;
                }
            }
        }
    }
    if (!o->outdir)
        return die_usage("%s", "missing OUTDIR");
    if (o->hidden % o->heads != 0)
        return die_usage("%s", "--hidden must be a multiple of --heads");
    if (o->heads % o->kv_heads != 0)
        return die_usage("%s", "--heads must be a multiple of --kv-heads");
    long ntensors = 2 + 9 * o->layers + (o->tie ? 0 : 1);
    if (o->shards > ntensors) {
        fprintf(stderr, PROG ": error: --shards %ld is more than the %ld tensors of the model\n", o->shards, ntensors);
        fprintf(stderr, "Try '" PROG " --help'.\n");
        return 2;
    }
    return 0;
}

/* ---- deterministic random numbers ---------------------------------------------------------------- */

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t fnv1a64(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 0x100000001b3ull;
    }
    return h;
}

typedef struct mk_rng {
    uint64_t state;
    int have_spare;
    double spare;
} mk_rng;

/* One independent stream per (seed, tensor name). */
static void rng_init(mk_rng *r, uint64_t seed, const char *name)
{
    uint64_t s = seed;
    r->state = splitmix64(&s) ^ fnv1a64(name);
    r->have_spare = 0;
}

/* Standard normal by Box-Muller (both outputs used). */
static double rng_normal(mk_rng *r)
{
    if (r->have_spare) {
        r->have_spare = 0;
        return r->spare;
    }
    double u1 = (double)((splitmix64(&r->state) >> 11) + 1) * 0x1.0p-53; /* (0, 1] */
    double u2 = (double)(splitmix64(&r->state) >> 11) * 0x1.0p-53;       /* [0, 1) */
    double rad = sqrt(-2.0 * log(u1));
    double th = 6.283185307179586476925 * u2;
    r->spare = rad * sin(th);
    r->have_spare = 1;
    return rad * cos(th);
}

/* ---- files ----------------------------------------------------------------------------------------- */

static int mkdir_p(const char *path)
{
    char *p = mm_xstrdup(path);
    int rc = 0;
    for (char *s = p + 1; ; s++) {
        if (*s == '/' || *s == 0) {
            char c = *s;
            *s = 0;
            if (p[0] && mkdir(p, 0755) != 0 && errno != EEXIST) {
                rc = -errno;
                fprintf(stderr, PROG ": error: cannot create directory '%s': %s\n", p, strerror(errno));
                *s = c;
                break;
            }
            *s = c;
            if (c == 0)
                break;
        }
    }
    free(p);
    if (rc == 0) {
        struct stat st;
        if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) {
            fprintf(stderr, PROG ": error: '%s' is not a directory\n", path);
            return -ENOTDIR;
        }
    }
    return rc;
}

/* A file being written under a temporary name in the output folder, renamed into place on success. */
typedef struct mk_file {
    FILE *f;
    char *tmp, *final;
} mk_file;

static int file_open(mk_file *w, const char *dir, const char *name)
{
    w->final = mm_path_join(dir, name);
    char *tmpname = mm_xasprintf(".%s.tmp.%ld", name, (long)getpid());
    w->tmp = mm_path_join(dir, tmpname);
    free(tmpname);
    w->f = fopen(w->tmp, "wb");
    if (!w->f) {
        fprintf(stderr, PROG ": error: cannot create '%s': %s\n", w->tmp, strerror(errno));
        free(w->tmp);
        free(w->final);
        return -1;
    }
    return 0;
}

static int file_write(mk_file *w, const void *p, size_t n)
{
    if (n && fwrite(p, 1, n, w->f) != n) {
        fprintf(stderr, PROG ": error: cannot write '%s': %s\n", w->tmp, strerror(errno));
        return -1;
    }
    return 0;
}

/* Closes and renames into place when ok, else removes the temporary file. */
static int file_close(mk_file *w, int ok)
{
    int rc = 0;
    if (fclose(w->f) != 0 && ok) {
        fprintf(stderr, PROG ": error: cannot write '%s': %s\n", w->tmp, strerror(errno));
        ok = 0;
    }
    if (ok && rename(w->tmp, w->final) != 0) {
        fprintf(stderr, PROG ": error: cannot rename '%s' to '%s': %s\n", w->tmp, w->final, strerror(errno));
        ok = 0;
    }
    if (!ok) {
        unlink(w->tmp);
        rc = -1;
    }
    free(w->tmp);
    free(w->final);
    return rc;
}

static int write_text(const char *dir, const char *name, const char *text)
{
    mk_file w;
    if (file_open(&w, dir, name) != 0)
        return -1;
    int ok = file_write(&w, text, strlen(text)) == 0;
    return file_close(&w, ok);
}

static void remove_if_exists(const char *dir, const char *name)
{
    char *p = mm_path_join(dir, name);
    unlink(p);
    free(p);
}

/* ---- the model --------------------------------------------------------------------------------------- */

static void add_tensor(mk_tensor **ts, size_t *n, size_t *cap, char *name, uint64_t d0, uint64_t d1, int ndim,
                       int norm)
{
    if (*n == *cap) {
        *cap = *cap ? 2 * *cap : 16;
        *ts = mm_xrealloc(*ts, *cap * sizeof **ts);
    }
    (*ts)[(*n)++] = (mk_tensor){.name = name, .ndim = ndim, .shape = {d0, d1}, .norm = norm};
}

static mk_tensor *make_tensors(const mk_opts *o, size_t *count)
{
    mk_tensor *ts = NULL;
    size_t n = 0, cap = 0;
    uint64_t H = (uint64_t)o->hidden, I = (uint64_t)o->intermediate, V = (uint64_t)o->vocab;
    uint64_t KV = (uint64_t)o->kv_heads * (H / (uint64_t)o->heads);
    add_tensor(&ts, &n, &cap, mm_xstrdup("model.embed_tokens.weight"), V, H, 2, 0);
    for (long i = 0; i < o->layers; i++) {
        static const struct {
            const char *suffix;
            int kind; /* 0 norm [H], 1 [H,H], 2 [KV,H], 3 [I,H], 4 [H,I] */
        } parts[] = {
            {"input_layernorm.weight", 0},     {"self_attn.q_proj.weight", 1}, {"self_attn.k_proj.weight", 2},
            {"self_attn.v_proj.weight", 2},    {"self_attn.o_proj.weight", 1}, {"mlp.gate_proj.weight", 3},
            {"mlp.up_proj.weight", 3},         {"mlp.down_proj.weight", 4},    {"post_attention_layernorm.weight", 0},
        };
        for (size_t k = 0; k < MM_COUNT(parts); k++) {
            char *name = mm_xasprintf("model.layers.%ld.%s", i, parts[k].suffix);
            switch (parts[k].kind) {
            case 0: add_tensor(&ts, &n, &cap, name, H, 0, 1, 1); break;
            case 1: add_tensor(&ts, &n, &cap, name, H, H, 2, 0); break;
            case 2: add_tensor(&ts, &n, &cap, name, KV, H, 2, 0); break;
            case 3: add_tensor(&ts, &n, &cap, name, I, H, 2, 0); break;
            default: add_tensor(&ts, &n, &cap, name, H, I, 2, 0); break;
            }
        }
    }
    add_tensor(&ts, &n, &cap, mm_xstrdup("model.norm.weight"), H, 0, 1, 1);
    if (!o->tie)
        add_tensor(&ts, &n, &cap, mm_xstrdup("lm_head.weight"), V, H, 2, 0);
    size_t esize = mm_dtype_size(o->dtype);
    for (size_t i = 0; i < n; i++)
        ts[i].bytes = ts[i].shape[0] * (ts[i].ndim == 2 ? ts[i].shape[1] : 1) * esize;
    *count = n;
    return ts;
}

static int cmp_tensor_name(const void *a, const void *b)
{
    return strcmp(((const mk_tensor *)a)->name, ((const mk_tensor *)b)->name);
}

/* Splits the tensors (sorted by name) into `shards` runs of roughly equal byte size: each tensor goes
 * to the shard its middle byte falls in, clamped so that no shard is left empty. */
static void assign_shards(mk_tensor *ts, size_t n, long shards)
{
    uint64_t total = 0, before = 0;
    for (size_t i = 0; i < n; i++)
        total += ts[i].bytes;
    long prev = 0;
    for (size_t i = 0; i < n; i++) {
        long s = total ? (long)(((long double)before + (long double)ts[i].bytes / 2) * shards / total) : 0;
        if (s > shards - 1)
            s = shards - 1;
        if (s < prev)
            s = prev;
        if (i > 0 && s > prev + 1)
            s = prev + 1;
        long min_here = shards - (long)(n - i); /* the tensors left must still fill the shards left */
        if (s < min_here)
            s = min_here;
        if (i == 0)
            s = 0;
        ts[i].shard = s;
        prev = s;
        before += ts[i].bytes;
    }
}

/* Writes the values of one tensor: normal(0, scale), or 1 + normal(0, scale) for norm gains. */
static int write_tensor_data(mk_file *w, const mk_opts *o, const mk_tensor *t)
{
    enum { CHUNK = 16384 };
    float vals[CHUNK];
    unsigned char out[CHUNK * 4];
    size_t esize = mm_dtype_size(o->dtype);
    uint64_t numel = t->bytes / esize;
    mk_rng r;
    rng_init(&r, o->seed, t->name);
    for (uint64_t done = 0; done < numel;) {
        size_t m = numel - done < CHUNK ? (size_t)(numel - done) : CHUNK;
        for (size_t k = 0; k < m; k++) {
            double v = o->scale * rng_normal(&r);
            vals[k] = (float)(t->norm ? 1.0 + v : v);
        }
        mm_store_f32(o->dtype, vals, out, m);
        if (file_write(w, out, m * esize) != 0)
            return -1;
        done += m;
    }
    return 0;
}

static char *shard_name(long k, long n)
{
    if (n == 1)
        return mm_xstrdup("model.safetensors");
    return mm_xasprintf("model-%05ld-of-%05ld.safetensors", k + 1, n);
}

static int write_shard(const mk_opts *o, mk_tensor *ts, size_t n, long shard)
{
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        m += ts[i].shard == shard;
    mm_st_tensor *st = mm_xcalloc(m ? m : 1, sizeof *st);
    mk_tensor **src = mm_xcalloc(m ? m : 1, sizeof *src);
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        if (ts[i].shard != shard)
            continue;
        st[j].name = ts[i].name;
        st[j].dtype = o->dtype;
        st[j].ndim = ts[i].ndim;
        st[j].shape[0] = ts[i].shape[0];
        st[j].shape[1] = ts[i].shape[1];
        j++;
    }
    char *header = NULL;
    size_t header_size = 0;
    int rc = mm_st_layout(st, m, &header, &header_size);
    if (rc != 0) {
        fprintf(stderr, PROG ": error: cannot lay out shard %ld: %s\n", shard + 1, strerror(-rc));
        free(st);
        free(src);
        return -1;
    }
    /* mm_st_layout reordered st; find each entry's tensor again by name. */
    for (size_t a = 0; a < m; a++)
        for (size_t i = 0; i < n; i++)
            if (ts[i].shard == shard && strcmp(ts[i].name, st[a].name) == 0)
                src[a] = &ts[i];

    char *fname = shard_name(shard, o->shards);
    mk_file w;
    int ok = 0;
    if (file_open(&w, o->outdir, fname) == 0) {
        ok = file_write(&w, header, header_size) == 0;
        uint64_t pos = 0;
        for (size_t a = 0; ok && a < m; a++) {
            if (!src[a] || st[a].begin != pos || st[a].end - st[a].begin != src[a]->bytes) {
                fprintf(stderr, PROG ": error: unexpected layout for '%s'\n", st[a].name);
                ok = 0;
                break;
            }
            ok = write_tensor_data(&w, o, src[a]) == 0;
            pos = st[a].end;
        }
        rc = file_close(&w, ok);
        ok = rc == 0;
    }
    free(fname);
    free(header);
    free(st);
    free(src);
    return ok ? 0 : -1;
}

/* Removes weight files of another layout left by an earlier run into the same folder. */
static void remove_stale_weights(const mk_opts *o)
{
    if (o->shards == 1)
        remove_if_exists(o->outdir, "model.safetensors.index.json");
    else
        remove_if_exists(o->outdir, "model.safetensors");
    DIR *d = opendir(o->outdir);
    if (!d)
        return;
    char keep[64];
    snprintf(keep, sizeof keep, "-of-%05ld.safetensors", o->shards);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        const char *nm = e->d_name;
        size_t len = strlen(nm);
        if (strncmp(nm, "model-", 6) != 0 || len < 12 || strcmp(nm + len - 12, ".safetensors") != 0)
            continue;
        if (o->shards > 1 && len > strlen(keep) && strcmp(nm + len - strlen(keep), keep) == 0)
            continue;
        remove_if_exists(o->outdir, nm);
    }
    closedir(d);
}

static int write_weights(const mk_opts *o)
{
    size_t n;
    mk_tensor *ts = make_tensors(o, &n);
    int rc = 0;
    if ((size_t)o->shards > n) { /* parse_args checked this already */
        fprintf(stderr, PROG ": error: --shards %ld is more than the %zu tensors of the model\n", o->shards, n);
        rc = -1;
    }
    if (rc == 0) {
        qsort(ts, n, sizeof *ts, cmp_tensor_name);
        assign_shards(ts, n, o->shards);
        for (long s = 0; rc == 0 && s < o->shards; s++)
            rc = write_shard(o, ts, n, s);
    }
    if (rc == 0 && o->shards > 1) {
        const char **names = mm_xcalloc(n, sizeof *names);
        const char **files = mm_xcalloc(n, sizeof *files);
        char **fnames = mm_xcalloc((size_t)o->shards, sizeof *fnames);
        uint64_t total = 0;
        for (long s = 0; s < o->shards; s++)
            fnames[s] = shard_name(s, o->shards);
        for (size_t i = 0; i < n; i++) {
            names[i] = ts[i].name;
            files[i] = fnames[ts[i].shard];
            total += ts[i].bytes;
        }
        char *index = mm_st_index_json(names, files, n, total);
        rc = write_text(o->outdir, "model.safetensors.index.json", index);
        free(index);
        for (long s = 0; s < o->shards; s++)
            free(fnames[s]);
        free(fnames);
        free(names);
        free(files);
    }
    if (rc == 0)
        remove_stale_weights(o);
    for (size_t i = 0; i < n; i++)
        free(ts[i].name);
    free(ts);
    return rc;
}

/* ---- JSON side files ------------------------------------------------------------------------------- */

/* config.json the way transformers' save_pretrained writes it: indent 2, keys sorted. */
static int write_config(const mk_opts *o)
{
    char eps[32], theta[32], init[32];
    mm_format_double(1e-05, eps, sizeof eps);
    mm_format_double(10000.0, theta, sizeof theta);
    mm_format_double(0.02, init, sizeof init);
    mm_buf b = {0};
    mm_buf_printf(&b,
                  "{\n"
                  "  \"architectures\": [\n"
                  "    \"LlamaForCausalLM\"\n"
                  "  ],\n"
                  "  \"attention_bias\": false,\n"
                  "  \"attention_dropout\": 0.0,\n"
                  "  \"bos_token_id\": 1,\n"
                  "  \"eos_token_id\": 2,\n"
                  "  \"head_dim\": %ld,\n"
                  "  \"hidden_act\": \"silu\",\n"
                  "  \"hidden_size\": %ld,\n"
                  "  \"initializer_range\": %s,\n"
                  "  \"intermediate_size\": %ld,\n"
                  "  \"max_position_embeddings\": 2048,\n"
                  "  \"mlp_bias\": false,\n"
                  "  \"model_type\": \"llama\",\n"
                  "  \"num_attention_heads\": %ld,\n"
                  "  \"num_hidden_layers\": %ld,\n"
                  "  \"num_key_value_heads\": %ld,\n"
                  "  \"pretraining_tp\": 1,\n"
                  "  \"rms_norm_eps\": %s,\n"
                  "  \"rope_scaling\": null,\n"
                  "  \"rope_theta\": %s,\n"
                  "  \"tie_word_embeddings\": %s,\n"
                  "  \"torch_dtype\": \"%s\",\n"
                  "  \"transformers_version\": \"4.44.0\",\n"
                  "  \"use_cache\": true,\n"
                  "  \"vocab_size\": %ld\n"
                  "}\n",
                  o->hidden / o->heads, o->hidden, init, o->intermediate, o->heads, o->layers, o->kv_heads, eps,
                  theta, o->tie ? "true" : "false", mm_dtype_torch_name(o->dtype), o->vocab);
    int rc = write_text(o->outdir, "config.json", b.data);
    mm_buf_free(&b);
    return rc;
}

/* The vocabulary: <unk> <s> </s>, single letters, then two-letter tokens each made by one BPE merge of
 * two letters, then plain filler tokens if V is larger still. Every merge's parts and result are in the
 * vocabulary, so `tokenizers` loads it. */
static char **make_vocab(long V, long *nmerges)
{
    char **tok = mm_xcalloc((size_t)V, sizeof *tok);
    tok[0] = mm_xstrdup("<unk>");
    tok[1] = mm_xstrdup("<s>");
    tok[2] = mm_xstrdup("</s>");
    long letters = V - 3 < 26 ? V - 3 : 26;
    long i = 3;
    for (long k = 0; k < letters; k++, i++)
        tok[i] = mm_xasprintf("%c", (char)('a' + k));
    *nmerges = 0;
    for (long a = 0; a < letters && i < V; a++)
        for (long c = 0; c < letters && i < V; c++, i++, (*nmerges)++)
            tok[i] = mm_xasprintf("%c%c", (char)('a' + a), (char)('a' + c));
    for (long k = 0; i < V; k++, i++)
        tok[i] = mm_xasprintf("_tok_%ld", i);
    return tok;
}

static void added_token_json(mm_buf *b, long id, const char *content, const char *indent)
{
    mm_buf_printf(b,
                  "%s{\n"
                  "%s  \"id\": %ld,\n"
                  "%s  \"content\": \"%s\",\n"
                  "%s  \"single_word\": false,\n"
                  "%s  \"lstrip\": false,\n"
                  "%s  \"rstrip\": false,\n"
                  "%s  \"normalized\": false,\n"
                  "%s  \"special\": true\n"
                  "%s}",
                  indent, indent, id, indent, content, indent, indent, indent, indent, indent, indent);
}

static int write_tokenizer(const mk_opts *o)
{
    long nmerges;
    long V = o->vocab;
    char **tok = make_vocab(V, &nmerges);
    static const char *const special[3] = {"<unk>", "<s>", "</s>"};

    mm_buf b = {0};
    mm_buf_puts(&b, "{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n  \"added_tokens\": [\n");
    for (long k = 0; k < 3; k++) {
        added_token_json(&b, k, special[k], "    ");
        mm_buf_puts(&b, k < 2 ? ",\n" : "\n");
    }
    mm_buf_puts(&b, "  ],\n  \"normalizer\": null,\n  \"pre_tokenizer\": {\n    \"type\": \"Whitespace\"\n  },\n"
                    "  \"post_processor\": null,\n  \"decoder\": null,\n  \"model\": {\n    \"type\": \"BPE\",\n"
                    "    \"dropout\": null,\n    \"unk_token\": \"<unk>\",\n    \"continuing_subword_prefix\": null,\n"
                    "    \"end_of_word_suffix\": null,\n    \"fuse_unk\": false,\n    \"byte_fallback\": false,\n"
                    "    \"vocab\": {\n");
    for (long i = 0; i < V; i++)
        mm_buf_printf(&b, "      \"%s\": %ld%s\n", tok[i], i, i + 1 < V ? "," : "");
    mm_buf_puts(&b, "    },\n    \"merges\": [");
    for (long k = 0; k < nmerges; k++) {
        const char *t = tok[29 + k]; /* two-letter tokens follow the 3 specials and 26 letters */
        mm_buf_printf(&b, "%s\n      \"%c %c\"", k ? "," : "", t[0], t[1]);
    }
    mm_buf_puts(&b, nmerges ? "\n    ]\n  }\n}\n" : "]\n  }\n}\n");
    int rc = write_text(o->outdir, "tokenizer.json", b.data);
    mm_buf_free(&b);

    if (rc == 0) {
        mm_buf c = {0};
        mm_buf_puts(&c, "{\n  \"add_bos_token\": true,\n  \"add_eos_token\": false,\n  \"added_tokens_decoder\": {\n");
        for (long k = 0; k < 3; k++) {
            mm_buf_printf(&c,
                          "    \"%ld\": {\n      \"content\": \"%s\",\n      \"lstrip\": false,\n"
                          "      \"normalized\": false,\n      \"rstrip\": false,\n      \"single_word\": false,\n"
                          "      \"special\": true\n    }%s\n",
                          k, special[k], k < 2 ? "," : "");
        }
        mm_buf_puts(&c, "  },\n  \"bos_token\": \"<s>\",\n  \"clean_up_tokenization_spaces\": false,\n"
                        "  \"eos_token\": \"</s>\",\n  \"model_max_length\": 2048,\n"
                        "  \"tokenizer_class\": \"PreTrainedTokenizerFast\",\n  \"unk_token\": \"<unk>\"\n}\n");
        rc = write_text(o->outdir, "tokenizer_config.json", c.data);
        mm_buf_free(&c);
    }
    if (rc == 0)
        rc = write_text(o->outdir, "special_tokens_map.json",
                        "{\n  \"bos_token\": \"<s>\",\n  \"eos_token\": \"</s>\",\n  \"unk_token\": \"<unk>\"\n}\n");
    if (rc == 0)
        rc = write_text(o->outdir, "generation_config.json",
                        "{\n  \"_from_model_config\": true,\n  \"bos_token_id\": 1,\n  \"eos_token_id\": 2,\n"
                        "  \"transformers_version\": \"4.44.0\"\n}\n");
    for (long i = 0; i < V; i++)
        free(tok[i]);
    free(tok);
    return rc;
}

int main(int argc, char **argv)
{
    mk_opts o;
    int rc = parse_args(argc, argv, &o);
    if (rc != 0)
        return rc;
    if (mkdir_p(o.outdir) != 0)
        return 1;
    if (write_config(&o) != 0 || write_weights(&o) != 0)
        return 1;
    if (o.tokenizer) {
        if (write_tokenizer(&o) != 0)
            return 1;
    } else {
        static const char *const files[] = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                                            "generation_config.json"};
        for (size_t i = 0; i < MM_COUNT(files); i++)
            remove_if_exists(o.outdir, files[i]);
    }
    return 0;
}
