/* Fuzzes the YAML config reader (config/yaml.c, config/config.c, config/modelref.c) and, for configs it
 * accepts, the planner's validation (merge/plan*.c: methods, parameters, layer ranges, shapes, dtypes,
 * the output folder), as `mergemount plan` runs them; then computes every byte of an accepted plan's
 * output (merge/engine/vfs.c, blocks.c, engine.c and the methods, no cache), so the methods also run on
 * whatever parameter values a config can give. The input is the config file's text.
 *
 * So that validation goes past "model not found", the first run makes a small Hugging Face cache of
 * tiny models with mm-mkmodel and points HF_HUB_CACHE at it; seed configs name them:
 *   org/a org/b org/base       three 2-layer bf16 models of one architecture (org/a also at @v1)
 *   org/sharded                the same architecture in 3 shards with an index
 *   org/tied                   tied embeddings (no lm_head.weight)
 *   org/f16 org/f32            other dtypes
 *   org/deep                   4 layers (frankenmerges, layer ranges)
 *   org/wide                   a larger vocabulary (embedding crops)
 *   org/notok                  no tokenizer files
 *
 * Properties: a refused config's message starts with the config's path (every config message carries
 * the place); a refused plan has a message; an accepted plan prints as text and JSON, and each of its
 * files reads to its exact size (or fails with EIO, which data-dependent method failures may give). */
#include <errno.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>

#include "merge/moe/forward.h"
#include "config/config.h"
#include "fuzz.h"
#include "merge/plan/plan.h"
#include "merge/engine/vfs.h"

static FILE *devnull;

/* models--org--NAME/snapshots/<commit>/ made by mm-mkmodel with `args`, and refs/main naming it. */
static void hub_model(const char *mkmodel, const char *hub, const char *name, const char *args)
{
    static const char commit[] = "0123456789abcdef0123456789abcdef01234567";
    fuzz_sh("'%s' '%s/models--org--%s/snapshots/%s' --hidden 8 --intermediate 12 --vocab 16 --heads 2 --kv-heads 1 %s "
        ">/dev/null && mkdir -p '%s/models--org--%s/refs' && printf %s '%s' > '%s/models--org--%s/refs/main'",
        mkmodel, hub, name, commit, args, hub, name, "%s", commit, hub, name);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    const char *mkmodel = fuzz_mkmodel();
    char dir[4096];
    fuzz_tempdir("config", dir, sizeof dir);
    char hub[sizeof dir + 8];
    snprintf(hub, sizeof hub, "%s/hub", dir);
    hub_model(mkmodel, hub, "a", "--seed 1");
    hub_model(mkmodel, hub, "b", "--seed 2");
    hub_model(mkmodel, hub, "base", "--seed 3");
    hub_model(mkmodel, hub, "sharded", "--seed 4 --shards 3");
    hub_model(mkmodel, hub, "tied", "--seed 5 --tie-embeddings");
    hub_model(mkmodel, hub, "f16", "--seed 6 --dtype f16");
    hub_model(mkmodel, hub, "f32", "--seed 7 --dtype f32");
    hub_model(mkmodel, hub, "deep", "--seed 8 --layers 4");
    hub_model(mkmodel, hub, "wide", "--seed 9 --vocab 20");
    hub_model(mkmodel, hub, "notok", "--seed 10 --no-tokenizer");
    fuzz_sh("cp '%s/models--org--a/refs/main' '%s/models--org--a/refs/v1'", hub, hub);
    setenv("HF_HUB_CACHE", hub, 1);
    devnull = fopen("/dev/null", "w");
    if (!devnull)
        exit(1);
    return 0;
}

/* Reads every file of the plan's output front to back. */
static void read_all(const mm_plan *plan)
{
    mm_vfs *vfs;
    mm_err err;
    FUZZ_CHECK(mm_vfs_from_plan(plan, &vfs, &err) == 0);
    enum { CHUNK = 1 << 16 };
    char *buf = malloc(CHUNK);
    for (size_t i = 0; i < mm_vfs_count(vfs); i++) {
        uint64_t size = mm_vfs_size(vfs, i), off = 0;
        while (off < size) {
            ssize_t n = mm_vfs_read(vfs, i, off, CHUNK, buf);
            FUZZ_CHECK(n > 0 || n == -EIO);
            if (n < 0)
                break;
            off += (uint64_t)n;
        }
        FUZZ_CHECK(off <= size && mm_vfs_read(vfs, i, size, CHUNK, buf) == 0);
    }
    free(buf);
    mm_vfs_free(vfs);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_as_file(data, size);
    mm_config *cfg;
    mm_err err;
    err.msg[0] = 0;
    if (mm_config_load(path, &cfg, &err) < 0) {
        FUZZ_CHECK(strncmp(err.msg, path, strlen(path)) == 0);
        return 0;
    }
    mm_plan_options opt;
    mm_plan_options_default(&opt);
    mm_forward_plug(&opt); /* the hidden gate modes of mergekit-moe configs */
    /* Some configs get small output shards, so the sharded layout and its index are planned too. */
    static const uint64_t shard_sizes[] = {5000000000ull, 0, 700, 3000};
    opt.out_shard_size = shard_sizes[size % 4];
    mm_plan *plan;
    if (mm_plan_build(cfg, &opt, &plan, &err) == 0) {
        FUZZ_CHECK(plan->nfiles > 0);
        mm_plan_print(plan, devnull, 0);
        mm_plan_print(plan, devnull, 1);
        read_all(plan);
        mm_plan_free(plan);
    } else {
        FUZZ_CHECK(err.msg[0] != 0);
    }
    mm_config_free(cfg);
    return 0;
}
