#include "tools/cli.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "config/config.h"
#include "merge/gguf/gguf_plan.h"

/* Help of the shared options, in the groups a command takes (see mm_cli_parse). */
static const char k_merge_help[] =
    "merge options (as mergekit-yaml):\n"
    "  --out-shard-size N        bytes per output shard, decimal K/M/B suffixes (default 5B)\n"
    "  --copy-tokenizer / --no-copy-tokenizer\n"
    "                            serve the tokenizer files: the donor's, or with tokenizer_source /\n"
    "                            tokenizer: those of the merged vocabulary (default on)\n"
    "  --write-model-card / --no-write-model-card\n"
    "                            serve README.md and mergekit_config.yml (default on)\n"
    "  --allow-crimes            accepted for compatibility (architectures are inferred, never compared)\n"
    "  --random-seed N           seed of the random methods and MoE routers (default 0)\n"
    "  --moe-layout L            mergekit-moe outputs: per-expert (one tensor per expert, default) or\n"
    "                            packed (transformers 5's experts.gate_up_proj / down_proj)\n"
    "  --i-understand-this-is-not-useful-without-training\n"
    "                            mergekit-moe: allow every expert to be the same model\n"
    "  --gguf TYPE               add a GGUF file of the merge for llama.cpp, ollama, LM Studio: TYPE is\n"
    "                            auto, bf16, f16, f32 or q8_0 (llama.cpp's converter's types)\n"
    "  --gguf-only               with --gguf: serve the GGUF file alone\n"
    "  -v, --verbose             more log output\n";
static const char k_cache_help[] =
    "cache options:\n"
    "  --cache-dir DIR           block cache location (default $XDG_CACHE_HOME/mergemount, else\n"
    "                            ~/.cache/mergemount)\n"
    "  --cache-size N            cache size limit in bytes, K/M/G/T suffixes (default 20G)\n";
static const char k_no_cache_help[] = "  --no-cache                compute every read; store nothing\n";

int mm_cli_parse_u64(const char *s, uint64_t *out)
{
    if (!s || !isdigit((unsigned char)*s))
        return -EINVAL;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end)
        return -EINVAL;
    *out = v;
    return 0;
}

int mm_cli_parse_size(const char *s, uint64_t *out)
{
    if (!s || !(isdigit((unsigned char)*s) || *s == '.'))
        return -EINVAL;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s)
        return -EINVAL;
    double mult = 1;
    /* mergekit's B (billion) and the usual G both mean 1e9. */
    switch (toupper((unsigned char)*end)) {
    case 'K': mult = 1e3; end++; break;
    case 'M': mult = 1e6; end++; break;
    case 'B':
    case 'G': mult = 1e9; end++; break;
    case 'T': mult = 1e12; end++; break;
    case 0: break;
    default: return -EINVAL;
    }
    if (*end || v < 0 || v * mult > 1.8e19)
        return -EINVAL;
    *out = (uint64_t)(v * mult);
    return 0;
}

int mm_cli_common_option(int opt, const char *arg, mm_plan_options *po, mm_cli_cache *cache)
{
    switch (opt) {
    case MM_OPT_CACHE_DIR: cache->dir = arg; return 0;
    case MM_OPT_NO_CACHE: cache->disabled = 1; return 0;
    case MM_OPT_CACHE_SIZE:
        if (mm_cli_parse_size(arg, &cache->size) < 0 || cache->size < 1000000) {
            fprintf(stderr, "mergemount: error: --cache-size: '%s' is not a size of at least 1M (e.g. 20G, 500M)\n",
                    arg);
            return -EINVAL;
        }
        return 0;
    case MM_OPT_SHARD_SIZE:
        if (mm_cli_parse_size(arg, &po->out_shard_size) < 0) {
            fprintf(stderr, "mergemount: error: --out-shard-size: '%s' is not a size (bytes, e.g. 5B, 500M, 1000000)\n",
                    arg);
            return -EINVAL;
        }
        return 0;
    case MM_OPT_COPY_TOK: po->copy_tokenizer = 1; return 0;
    case MM_OPT_NO_COPY_TOK: po->copy_tokenizer = 0; return 0;
    case MM_OPT_CARD: po->write_model_card = 1; return 0;
    case MM_OPT_NO_CARD: po->write_model_card = 0; return 0;
    case MM_OPT_CRIMES: po->allow_crimes = 1; return 0;
    case MM_OPT_SEED:
        if (mm_cli_parse_u64(arg, &po->random_seed) < 0) {
            fprintf(stderr, "mergemount: error: --random-seed: '%s' is not a non-negative integer\n", arg);
            return -EINVAL;
        }
        return 0;
    case MM_OPT_MOE_LAYOUT:
        if (strcmp(arg, "packed") && strcmp(arg, "per-expert")) {
            fprintf(stderr, "mergemount: error: --moe-layout: '%s' is neither per-expert nor packed\n", arg);
            return -EINVAL;
        }
        po->moe_packed = strcmp(arg, "packed") == 0;
        return 0;
    case MM_OPT_MOE_SAME: po->moe_allow_same = 1; return 0;
    case MM_OPT_GGUF: {
        mm_gguf_outtype t;
        if (mm_gguf_outtype_parse(arg, &t) < 0) {
            fprintf(stderr, "mergemount: error: --gguf: '%s' is not a GGUF type (one of %s)\n", arg,
                    mm_gguf_outtype_names);
            return -EINVAL;
        }
        po->gguf = (int)t;
        return 0;
    }
    case MM_OPT_GGUF_ONLY: po->gguf_only = 1; return 0;
    case 'v': mm_log_verbose++; return 0;
    default: return -EINVAL;
    }
}

int mm_cli_apply(int opt, const char *arg, mm_cli_extra_fn extra, void *ctx, mm_plan_options *po,
                 mm_cli_cache *cache)
{
    if ((opt >= MM_OPT_BASE && opt < MM_OPT_COMMON_END) || opt == 'v')
        return mm_cli_common_option(opt, arg, po, cache);
    return extra ? extra(opt, arg, ctx) : 1;
}

int mm_cli_parse(int argc, char **argv, const char *shortopts, const struct option *longopts, const char *usage,
                 mm_cli_extra_fn extra, void *ctx, mm_plan_options *po, mm_cli_cache *cache, char **pos, int npos)
{
    mm_plan_options po_unused;
    mm_cli_cache cache_unused = {0};
    if (!po) {
        mm_plan_options_default(&po_unused);
        po = &po_unused;
    }
    if (!cache)
        cache = &cache_unused;
    optind = 1;
    int opt;
    while ((opt = getopt_long(argc, argv, shortopts, longopts, NULL)) != -1) {
        if (opt == 'h') {
            /* Only the groups this command takes: `cache --help` must not offer --out-shard-size. */
            int merges = po != &po_unused, caches = cache != &cache_unused;
            /* --no-cache belongs to the commands that merge with a cache (mount, build), not to `cache`. */
            printf("%s\n%s%s%s  -h, --help                this help\n", usage, merges ? k_merge_help : "",
                   caches ? k_cache_help : "", merges && caches ? k_no_cache_help : "");
            exit(0);
        }
        if (opt == '?') {
            fprintf(stderr, "%s", usage);
            return 2;
        }
        int rc = mm_cli_apply(opt, optarg, extra, ctx, po, cache);
        if (rc < 0)
            return 2;
        if (rc > 0) {
            fprintf(stderr, "%s", usage);
            return 2;
        }
    }
    if (argc - optind != npos) {
        fprintf(stderr, "mergemount: error: expected %d argument%s, got %d\n%s", npos, npos == 1 ? "" : "s",
                argc - optind, usage);
        return 2;
    }
    for (int i = 0; i < npos; i++)
        pos[i] = argv[optind + i];
    return 0;
}

int mm_cli_load(const char *path, const mm_plan_options *po, mm_config **cfg, mm_plan **plan, mm_vfs **vfs)
{
    mm_err err = {{0}};
    *cfg = NULL;
    *plan = NULL;
    int rc = 0;
    if (po->gguf_only && !po->gguf)
        rc = mm_err_set(&err, -EINVAL, "--gguf-only serves the GGUF file alone: add --gguf TYPE (one of %s)",
                        mm_gguf_outtype_names);
    if (rc == 0)
        rc = mm_config_load(path, cfg, &err);
    if (rc == 0)
        rc = mm_plan_build(*cfg, po, plan, &err);
    if (rc == 0 && vfs)
        rc = mm_vfs_from_plan(*plan, vfs, &err);
    if (rc < 0) {
        fprintf(stderr, "mergemount: error: %s\n", err.msg);
        mm_plan_free(*plan);
        mm_config_free(*cfg);
        *plan = NULL;
        *cfg = NULL;
        return 1;
    }
    return 0;
}

void mm_cli_unload(mm_config *cfg, mm_plan *plan, mm_vfs *vfs)
{
    mm_vfs_free(vfs);
    mm_plan_free(plan);
    mm_config_free(cfg);
}

mm_cache *mm_cli_attach_cache(mm_vfs *vfs, const mm_cli_cache *co, const char *dir)
{
    if (co->disabled)
        return NULL;
    mm_cache_options o = {.dir = dir, .size_limit = co->size};
    mm_cache *c = NULL;
    mm_err err = {{0}};
    if (mm_cache_open(&o, &c, &err) < 0) {
        mm_log_warn("%s; running without the block cache", err.msg);
        return NULL;
    }
    mm_vfs_set_cache(vfs, c, dir);
    return c;
}

int mm_cli_json_extra(int opt, const char *arg, void *ctx)
{
    (void)arg;
    if (opt != MM_OPT_JSON)
        return 1;
    *(int *)ctx = 1;
    return 0;
}
