/* merge/engine/vfs: the id of what a vfs serves (mm_vfs_id), which names a mount's state directory. It
 * must be the same for every plan of the same config over the same files, and differ when anything
 * that makes the served bytes differs. */
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "config/config.h"
#include "merge/engine/vfs.h"
#include "merge/plan/plan.h"
#include "model_fixture.h"

static char root[] = "/tmp/mm-vfs-XXXXXX";
static char *model_a, *model_b;

/* The id of the vfs of a linear merge of a and b with b's weight `wb`, sharded at shard_size (0: one
 * file); empty on failure. */
static void id_of(double wb, uint64_t shard_size, char id[65])
{
    id[0] = 0;
    char *path = mm_xasprintf("%s/merge.yml", root);
    char *yaml = mm_xasprintf("models:\n  - model: %s\n    parameters:\n      weight: 0.5\n"
                              "  - model: %s\n    parameters:\n      weight: %g\n"
                              "merge_method: linear\ndtype: float32\n",
                              model_a, model_b, wb);
    check_write_file(path, yaml, strlen(yaml));
    mm_config *cfg = NULL;
    mm_plan *plan = NULL;
    mm_vfs *vfs = NULL;
    mm_err err = {{0}};
    mm_plan_options o;
    mm_plan_options_default(&o);
    o.out_shard_size = shard_size;
    int rc = mm_config_load(path, &cfg, &err);
    if (rc == 0)
        rc = mm_plan_build(cfg, &o, &plan, &err);
    if (rc == 0)
        rc = mm_vfs_from_plan(plan, &vfs, &err);
    if (rc < 0)
        fprintf(stderr, "%s\n", err.msg);
    CHECK(rc == 0);
    if (rc == 0)
        mm_vfs_id(vfs, id);
    mm_vfs_free(vfs);
    mm_plan_free(plan);
    mm_config_free(cfg);
    free(yaml);
    free(path);
}

static int is_hex64(const char *s)
{
    if (strlen(s) != 64)
        return 0;
    for (; *s; s++)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
            return 0;
    return 1;
}

static void test_id_is_stable(void)
{
    char a[65], b[65];
    id_of(0.5, 0, a);
    id_of(0.5, 0, b);
    CHECK(is_hex64(a));
    CHECK(strcmp(a, b) == 0);
}

static void test_id_follows_the_recipe(void)
{
    char base[65], other_weight[65], sharded[65], sharded2[65];
    id_of(0.5, 0, base);
    id_of(0.25, 0, other_weight);
    id_of(0.5, 100, sharded);
    id_of(0.5, 100, sharded2);
    CHECK(strcmp(base, other_weight) != 0);
    CHECK(strcmp(base, sharded) != 0);
    CHECK(strcmp(sharded, sharded2) == 0);
}

/* One byte of b's weights rewritten in place (same size): another id. The mtime is moved on by a second
 * as well, so the test does not depend on the filesystem's timestamp granularity (a write within the
 * tick of the last change may leave mtime and ctime as they were on older kernels; srcfile.h). */
static void test_id_changes_with_a_weight(void)
{
    char before[65], after[65];
    id_of(0.5, 0, before);
    char *path = mm_path_join(model_b, "model.safetensors");
    int fd = open(path, O_RDWR);
    CHECK(fd >= 0);
    struct stat st;
    CHECK(fstat(fd, &st) == 0);
    unsigned char byte;
    CHECK(pread(fd, &byte, 1, st.st_size - 1) == 1);
    byte ^= 1;
    CHECK(pwrite(fd, &byte, 1, st.st_size - 1) == 1);
    struct timespec times[2] = {st.st_atim, st.st_mtim};
    times[1].tv_sec += 1;
    CHECK(futimens(fd, times) == 0);
    close(fd);
    id_of(0.5, 0, after);
    CHECK(is_hex64(after));
    CHECK(strcmp(before, after) != 0);
    free(path);
}

/* A vfs built by hand: a static file's name and bytes are part of the id. */
static void test_id_of_static_files(void)
{
    char x[65], y[65], z[65], w[65];
    mm_vfs *v = mm_vfs_new();
    mm_vfs_add_static(v, "config.json", "{}", 2);
    mm_vfs_id(v, x);
    mm_vfs_free(v);
    v = mm_vfs_new();
    mm_vfs_add_static(v, "config.json", "{}", 2);
    mm_vfs_id(v, y);
    mm_vfs_free(v);
    v = mm_vfs_new();
    mm_vfs_add_static(v, "config.json", "[]", 2);
    mm_vfs_id(v, z);
    mm_vfs_free(v);
    v = mm_vfs_new();
    mm_vfs_add_static(v, "other.json", "{}", 2);
    mm_vfs_id(v, w);
    mm_vfs_free(v);
    CHECK(strcmp(x, y) == 0);
    CHECK(strcmp(x, z) != 0);
    CHECK(strcmp(x, w) != 0);
}

int main(void)
{
    CHECK(mkdtemp(root) != NULL);
    model_a = check_make_model(root, "a", 2, 4, 10, 1, 0);
    model_b = check_make_model(root, "b", 2, 4, 10, 1, 0);
    test_id_is_stable();
    test_id_follows_the_recipe();
    test_id_changes_with_a_weight();
    test_id_of_static_files();
    free(model_a);
    free(model_b);
    char *cmd = mm_xasprintf("rm -rf %s", root);
    CHECK(system(cmd) == 0);
    free(cmd);
    return mm_check_report();
}
