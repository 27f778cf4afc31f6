/* `mergemount stats` (a mount's counters, from the user.mergemount.stats extended attribute of its root)
 * and `mergemount cache` (the block cache without a mount). */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>

#include "cache/cache.h"
#include "cli.h"
#include "commands.h"

static const char usage_stats[] = "usage: mergemount stats MOUNTPOINT [--json]\n"
                                  "\n"
                                  "Prints the read counters of a mount: blocks computed, cache hits and misses,\n"
                                  "single-flight waits, bytes served, evictions.\n"
                                  "  --json                    the raw JSON object\n";

static const char usage_cache[] =
    "usage: mergemount cache stats|clear|prune [--cache-dir DIR] [--cache-size N]\n"
    "\n"
    "  stats                     what the cache holds\n"
    "  clear                     remove every entry\n"
    "  prune                     evict least recently used blocks down to --cache-size\n";


static void human_bytes(uint64_t n, char *buf, size_t len)
{
    static const char *const units[] = {"B", "kB", "MB", "GB", "TB"};
    double v = (double)n;
    int u = 0;
    while (v >= 1000 && u < 4) {
        v /= 1000;
        u++;
    }
    snprintf(buf, len, u ? "%.2f %s" : "%.0f %s", v, units[u]);
}

/* Labels for the counters, in the order they are printed. */
static const struct {
    const char *key, *label;
    int bytes;
} k_counters[] = {
    {"blocks_computed", "blocks computed", 0},  {"cache_hits", "cache hits", 0},
    {"cache_misses", "cache misses", 0},        {"singleflight_waits", "single-flight waits", 0},
    {"bytes_served", "bytes served", 1},        {"bytes_computed", "bytes computed", 1},
    {"evictions", "evictions", 0},              {"prepasses_run", "pre-passes run", 0},
    {"cache_puts_stored", "blocks stored", 0},  {"cache_puts_dropped", "stores dropped", 0},
    {"cache_corrupt", "corrupt entries dropped", 0}, {"cache_resets", "cache resets", 0},
};

int mm_cmd_stats(int argc, char **argv)
{
    static const struct option lo[] = {{"json", no_argument, 0, MM_OPT_JSON}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int json = 0;
    char *pos[1];
    int rc = mm_cli_parse(argc, argv, "h", lo, usage_stats, mm_cli_json_extra, &json, NULL, NULL, pos, 1);
    if (rc)
        return rc;
    char buf[8192];
    ssize_t n = getxattr(pos[0], "user.mergemount.stats", buf, sizeof buf - 1);
    if (n < 0) {
        if (errno == ENODATA || errno == ENOTSUP)
            fprintf(stderr, "mergemount: error: %s is not a mergemount mount (no user.mergemount.stats attribute)\n",
                    pos[0]);
        else
            fprintf(stderr, "mergemount: error: %s: %s\n", pos[0], strerror(errno));
        return 1;
    }
    buf[n] = 0;
    if (json) {
        printf("%s\n", buf);
        return 0;
    }
    cJSON *root = cJSON_Parse(buf);
    if (!root) {
        fprintf(stderr, "mergemount: error: %s: unreadable statistics\n", pos[0]);
        return 1;
    }
    const cJSON *dir = cJSON_GetObjectItemCaseSensitive(root, "cache_dir");
    printf("%-26s %s\n", "cache", cJSON_IsString(dir) ? dir->valuestring : "disabled");
    for (size_t i = 0; i < MM_COUNT(k_counters); i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, k_counters[i].key);
        if (!cJSON_IsNumber(v))
            continue;
        char num[64];
        if (k_counters[i].bytes)
            human_bytes((uint64_t)v->valuedouble, num, sizeof num);
        else
            snprintf(num, sizeof num, "%.0f", v->valuedouble);
        printf("%-26s %s\n", k_counters[i].label, num);
    }
    cJSON_Delete(root);
    return 0;
}

int mm_cmd_cache(int argc, char **argv)
{
    static const struct option lo[] = {{"cache-dir", required_argument, 0, MM_OPT_CACHE_DIR},
                                       {"cache-size", required_argument, 0, MM_OPT_CACHE_SIZE},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
    mm_cli_cache co = {0};
    char *pos[1];
    int rc = mm_cli_parse(argc, argv, "h", lo, usage_cache, NULL, NULL, NULL, &co, pos, 1);
    if (rc)
        return rc;
    mm_cache_options o = {.dir = co.dir, .size_limit = co.size};
    mm_err err = {{0}};
    uint64_t removed = 0;
    if (!strcmp(pos[0], "stats")) {
        mm_cache_info info;
        rc = mm_cache_info_get(&o, &info, &err);
        if (rc == 0) {
            char stored[32], limit[32], file[32];
            human_bytes(info.stored_bytes, stored, sizeof stored);
            human_bytes(info.size_limit, limit, sizeof limit);
            human_bytes(info.file_bytes, file, sizeof file);
            printf("%-18s %s\n%-18s %llu\n%-18s %llu\n%-18s %s\n%-18s %s\n%-18s %s\n", "directory", info.dir, "blocks",
                   (unsigned long long)info.blocks, "statistics", (unsigned long long)info.stats_entries, "stored", stored,
                   "size limit", limit, "data.mdb on disk", file);
            mm_cache_info_free(&info);
        }
    } else if (!strcmp(pos[0], "clear")) {
        rc = mm_cache_clear(&o, &removed, &err);
        if (rc == 0)
            printf("removed %llu blocks\n", (unsigned long long)removed);
    } else if (!strcmp(pos[0], "prune")) {
        rc = mm_cache_prune(&o, &removed, &err);
        if (rc == 0)
            printf("evicted %llu blocks\n", (unsigned long long)removed);
    } else {
        fprintf(stderr, "mergemount: error: unknown cache command '%s'\n%s", pos[0], usage_cache);
        return 2;
    }
    if (rc < 0) {
        fprintf(stderr, "mergemount: error: %s\n", err.msg);
        return 1;
    }
    return 0;
}
