/* The `mergemount` command: picks the subcommand (tools/commands.h) from the first argument, or
 * recognises mount(8)'s form. No merge logic here. */
#include <malloc.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "base/util.h"
#include "tools/commands.h"

static const char usage_main[] =
    "usage: mergemount <command> [options]\n"
    "\n"
    "Mounts a mergekit merge recipe as a Hugging Face checkpoint folder whose shards are\n"
    "computed on read.\n"
    "\n"
    "commands:\n"
    "  mount CONFIG MOUNTPOINT   mount the merged model (unmount with: fusermount3 -u MOUNTPOINT)\n"
    "  build CONFIG OUTDIR       write the same files to OUTDIR without FUSE\n"
    "  plan CONFIG               print output files and tensors with their sources; computes nothing\n"
    "  stats MOUNTPOINT          read counters of a mount (blocks computed, cache hits, ...)\n"
    "  cache stats|clear|prune   inspect or manage the block cache without a mount\n"
    "  version                   print the version (also --version)\n"
    "\n"
    "`mergemount CONFIG MOUNTPOINT [-o OPTIONS]` is `mergemount mount`: the form mount(8) runs for\n"
    "fuse.mergemount in fstab (a CONFIG named like a command is given with its folder: ./mount).\n"
    "\n"
    "Run `mergemount <command> --help` for the options of a command.\n";

/* The commands, which a first argument names before it could name a config file. To add one, add a
 * row to both (version and help are answered here). */
static const char *const k_commands[] = {"mount", "build", "plan", "stats", "cache", "version", "help"};
static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
} k_runners[] = {
    {"mount", mm_cmd_mount}, {"build", mm_cmd_build}, {"plan", mm_cmd_plan},
    {"stats", mm_cmd_stats}, {"cache", mm_cmd_cache},
};

/* `mergemount CONFIG MOUNTPOINT -o OPTIONS` is how mount.fuse3 runs us for `mount -t fuse.mergemount`
 * and fstab. A first argument that names a command is the command: mount(8) passes an existing source
 * as an absolute path, so a config named like a command is only mistaken for one when given without a
 * folder and not found, and then the command refuses mount.fuse3's arguments (version and help take
 * none), so nothing is mounted by mistake. A first argument that is not an existing path and is a typo
 * of a command is reported as an unknown command rather than mounted. */
static int is_mount_form(int argc, char **argv)
{
    const char *first = argv[1];
    if (argc < 3 || first[0] == '-' || !first[0])
        return 0;
    return access(first, F_OK) == 0 || !mm_suggest(first, k_commands, MM_COUNT(k_commands));
}

/* version and help ignore options (`version --help`), but refuse the MOUNTPOINT of mount.fuse3's form. */
static int no_arguments(int argc, char **argv)
{
    int i = 2;
    while (i < argc && argv[i][0] == '-')
        i++;
    if (i == argc)
        return 0;
    if (argv[1][0] == '-')
        fprintf(stderr, "mergemount: error: %s takes no arguments\n", argv[1]);
    else
        fprintf(stderr, "mergemount: error: %s takes no arguments (to mount a config file named '%s', give "
                "its folder: ./%s)\n", argv[1], argv[1], argv[1]);
    return 2;
}

int main(int argc, char **argv)
{
    /* Threads allocate block-sized buffers. With glibc's default of up to 8 arenas per core, each
     * thread's arena keeps its freed buffers, and the daemon's memory grows with the number of threads
     * that ever served a read; two arenas bound that (the allocations are few and large, so arena
     * contention does not matter). */
    mallopt(M_ARENA_MAX, 2);
    /* LMDB allocates and frees a value's overflow pages (1 MiB) at every put. glibc would map each one
     * afresh or hand freed memory back to the kernel at once, and faulting the pages in again cost the
     * cache writer about a tenth of a first read's CPU (issue 15): keep such blocks in the arenas, and
     * give memory back only when a lot is free. */
    mallopt(M_MMAP_THRESHOLD, 4 << 20);
    mallopt(M_TRIM_THRESHOLD, 64 << 20);
    if (argc < 2) {
        fprintf(stderr, "%s", usage_main);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--version") || !strcmp(cmd, "version")) {
        if (no_arguments(argc, argv))
            return 2;
        printf("mergemount %s\n", MM_VERSION);
        return 0;
    }
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        if (no_arguments(argc, argv))
            return 2;
        printf("%s", usage_main);
        return 0;
    }
    for (size_t i = 0; i < MM_COUNT(k_runners); i++)
        if (!strcmp(cmd, k_runners[i].name))
            return k_runners[i].run(argc - 1, argv + 1);
    if (is_mount_form(argc, argv))
        return mm_cmd_mount(argc, argv); /* argv[0] stands where the command name would be */
    const char *near = cmd[0] == '-' ? NULL : mm_suggest(cmd, k_commands, MM_COUNT(k_commands));
    if (near)
        fprintf(stderr, "mergemount: error: unknown command '%s' (did you mean '%s'?)\n%s", cmd, near, usage_main);
    else
        fprintf(stderr, "mergemount: error: unknown command '%s'\n%s", cmd, usage_main);
    return 2;
}
