/* Model references (D14): local folders, the local Hugging Face cache, and the refused forms. */
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "config/config.h"

static char tmp[PATH_MAX];

static char *at(const char *rel)
{
    return mm_path_join(tmp, rel);
}

static void make_dir(const char *rel)
{
    char *p = at(rel);
    /* parents first, like mkdir -p */
    for (char *s = strchr(p + 1, '/'); s; s = strchr(s + 1, '/')) {
        *s = 0;
        mkdir(p, 0755);
        *s = '/';
    }
    CHECK(mkdir(p, 0755) == 0 || errno == EEXIST);
    free(p);
}

static void write_file(const char *rel, const char *text)
{
    char *p = at(rel);
    check_write_file(p, text, strlen(text));
    free(p);
}

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(p);
}

/* Resolves `ref` and checks the result is <tmp>/<want_rel>. */
static void check_resolves(const char *ref, const char *want_rel)
{
    char *path = NULL, *want = at(want_rel);
    char *lora = NULL;
    mm_err err = {{0}};
    int rc = mm_modelref_resolve(ref, &path, &lora, &err);
    CHECK(rc == 0 && lora == NULL);
    free(lora);
    if (rc != 0)
        fprintf(stderr, "  resolving %s: %s\n", ref, err.msg);
    CHECK(path && strcmp(path, want) == 0);
    if (path && strcmp(path, want) != 0)
        fprintf(stderr, "  %s resolved to %s, expected %s\n", ref, path, want);
    free(path);
    free(want);
}

static int resolve_fails(const char *ref, mm_err *err)
{
    char *path = NULL, *lora = NULL;
    int rc = mm_modelref_resolve(ref, &path, &lora, err);
    CHECK(path == NULL && lora == NULL);
    free(path);
    free(lora);
    return rc;
}

/* base+adapter (D19): both sides resolved like any reference; a folder named with a '+' is a folder. */
static void test_lora(void)
{
    make_dir("models/base");
    make_dir("models/ad");
    make_dir("models/x+y");
    char *path = NULL, *lora = NULL, *want = at("models/base"), *want_l = at("models/ad");
    mm_err err = {{0}};
    CHECK(mm_modelref_resolve("models/base+models/ad", &path, &lora, &err) == 0);
    CHECK(path && lora && strcmp(path, want) == 0 && strcmp(lora, want_l) == 0);
    free(path);
    free(lora);
    free(want);
    free(want_l);
    check_resolves("models/x+y", "models/x+y");
    CHECK(resolve_fails("models/base+models/ad+models/ad", &err) == -EINVAL);
    CHECK_STR_CONTAINS(err.msg, "more than one '+'");
    CHECK(resolve_fails("models/base+models/none", &err) == -ENOENT);
    CHECK_STR_CONTAINS(err.msg, "the adapter of 'models/base+models/none': model 'models/none' not found");
    CHECK(resolve_fails("models/none+models/ad", &err) == -ENOENT);
    CHECK_STR_CONTAINS(err.msg, "model 'models/none' not found");
}

static void test_local(void)
{
    make_dir("models/a");
    write_file("models/file", "x");
    check_resolves("models/a", "models/a"); /* relative to the working directory (tmp) */
    check_resolves("./models//a/", "models/a");
    char *abs = at("models/a");
    check_resolves(abs, "models/a");
    free(abs);
    check_resolves("models/a@v2", "models/a"); /* a local folder ignores the revision, as in mergekit */

    mm_err err;
    CHECK(resolve_fails("models/file", &err) == -ENOTDIR);
    CHECK_STR_CONTAINS(err.msg, "model 'models/file' is a file, not a folder");
    CHECK(resolve_fails("./models/missing", &err) == -ENOENT);
    CHECK_STR_CONTAINS(err.msg, "model './models/missing' not found: no folder ");
    CHECK_STR_CONTAINS(err.msg, "/models/missing (check the path");
    CHECK(resolve_fails("", &err) == -EINVAL);
    CHECK_STR_CONTAINS(err.msg, "empty model reference");
}

static void make_fake_cache(const char *hub)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s/models--org--name/refs", hub);
    make_dir(dir);
    snprintf(dir, sizeof dir, "%s/models--org--name/refs/main", hub);
    write_file(dir, "abc123\n");
    snprintf(dir, sizeof dir, "%s/models--org--name/refs/v1", hub);
    write_file(dir, "def456");
    const char *snaps[] = {"abc123", "def456", "0fedcba"};
    for (int i = 0; i < 3; i++) {
        snprintf(dir, sizeof dir, "%s/models--org--name/snapshots/%s", hub, snaps[i]);
        make_dir(dir);
    }
    snprintf(dir, sizeof dir, "%s/models--gpt2/snapshots/111", hub);
    make_dir(dir);
    snprintf(dir, sizeof dir, "%s/models--gpt2/refs", hub);
    make_dir(dir);
    snprintf(dir, sizeof dir, "%s/models--gpt2/refs/main", hub);
    write_file(dir, "111");
}

static void test_hub(void)
{
    make_fake_cache("hub");
    char *hub = at("hub");
    setenv("HF_HUB_CACHE", hub, 1);
    check_resolves("org/name", "hub/models--org--name/snapshots/abc123");
    check_resolves("org/name@main", "hub/models--org--name/snapshots/abc123");
    check_resolves("org/name@v1", "hub/models--org--name/snapshots/def456");  /* branch or tag */
    check_resolves("org/name@0fedcba", "hub/models--org--name/snapshots/0fedcba"); /* commit hash */
    check_resolves("gpt2", "hub/models--gpt2/snapshots/111"); /* legacy id without an org */

    mm_err err;
    CHECK(resolve_fails("org/missing", &err) == -ENOENT);
    char *cwd_missing = at("org/missing"), want[2048];
    snprintf(want, sizeof want,
             "model 'org/missing' not found: not a local folder (%s) and not in the Hugging Face cache (%s); "
             "download it with `hf download org/missing` or give a local path",
             cwd_missing, hub);
    CHECK(strcmp(err.msg, want) == 0);
    if (strcmp(err.msg, want) != 0)
        fprintf(stderr, "  got:  %s\n  want: %s\n", err.msg, want);
    free(cwd_missing);

    CHECK(resolve_fails("org/name@nope", &err) == -ENOENT);
    CHECK_STR_CONTAINS(err.msg, "model 'org/name@nope' not found: revision 'nope' is not in the Hugging Face cache");
    CHECK_STR_CONTAINS(err.msg, "`hf download org/name --revision nope`");
    CHECK(resolve_fails("org/name@../../x", &err) == -EINVAL);

    /* HF_HOME/hub, then XDG_CACHE_HOME/huggingface/hub, then ~/.cache/huggingface/hub */
    unsetenv("HF_HUB_CACHE");
    unsetenv("HUGGINGFACE_HUB_CACHE");
    make_fake_cache("hfhome/hub");
    char *hfhome = at("hfhome");
    setenv("HF_HOME", hfhome, 1);
    check_resolves("org/name@v1", "hfhome/hub/models--org--name/snapshots/def456");
    unsetenv("HF_HOME");
    unsetenv("XDG_CACHE_HOME");
    make_fake_cache("home/.cache/huggingface/hub");
    char *home = at("home");
    setenv("HOME", home, 1);
    check_resolves("org/name", "home/.cache/huggingface/hub/models--org--name/snapshots/abc123");
    free(home);
    free(hfhome);
    free(hub);
}

static void test_refused(void)
{
    mm_err err;
    CHECK(resolve_fails("org/name@@v1", &err) == -EINVAL);
    CHECK_STR_CONTAINS(err.msg, "more than one '@'");
    CHECK(resolve_fails("a@b@c", &err) == -EINVAL);
    CHECK(resolve_fails("org/name@", &err) == -EINVAL);
    CHECK_STR_CONTAINS(err.msg, "empty revision");
    CHECK(resolve_fails("a/b/c", &err) == -ENOENT); /* not a hub id: only the local folder is named */
    CHECK_STR_CONTAINS(err.msg, "model 'a/b/c' not found: no folder ");
}

int main(void)
{
    char *old_cwd;
    if (check_enter_tmpdir(tmp, "mm-modelref", &old_cwd) < 0)
        return 1;
    test_local();
    test_hub();
    test_refused();
    test_lora();
    if (chdir(old_cwd) != 0)
        perror("chdir");
    free(old_cwd);
    nftw(tmp, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return mm_check_report();
}
