/* Model references (docs/merge-contract.md D14): a local folder, or a repository already in the local
 * Hugging Face cache. Nothing is ever downloaded: the messages tell people how to do it. */
#include "config.h"

#include <errno.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char *current_dir(void)
{
    size_t cap = 256;
    for (;;) {
        char *buf = mm_xmalloc(cap);
        if (getcwd(buf, cap))
            return buf;
        free(buf);
        if (errno != ERANGE)
            return mm_xstrdup("/"); /* a deleted working directory: nothing relative can resolve anyway */
        cap *= 2;
    }
}

/* Lexical clean-up only ("//", "/./", trailing "/"): ".." and symlinks are left alone, because
 * resolving them lexically can name a different folder than the kernel would. */
static void tidy_path(char *p)
{
    char *out = p;
    for (const char *in = p; *in;) {
        if (in[0] == '/' && (in[1] == '/' || (in[1] == '.' && (in[2] == '/' || in[2] == 0)))) {
            in += in[1] == '/' ? 1 : 2;
            continue;
        }
        *out++ = *in++;
    }
    *out = 0;
    while (out > p + 1 && out[-1] == '/')
        *--out = 0;
    if (out == p) /* "/." */
        strcpy(p, "/");
}

/* Python's os.path.exists() resolves relative paths against the working directory; so do we. */
static char *absolute_path(const char *p)
{
    char *abs;
    if (p[0] == '/') {
        abs = mm_xstrdup(p);
    } else {
        char *cwd = current_dir();
        abs = mm_path_join(cwd, p);
        free(cwd);
    }
    tidy_path(abs);
    return abs;
}

static int is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* 1 and *path when `p` is an existing folder, 0 when nothing is there, <0 when something else is. */
static int try_local(const char *p, const char *ref, char **path, mm_err *err)
{
    struct stat st;
    if (stat(p, &st) != 0)
        return 0;
    char *abs = absolute_path(p);
    if (!S_ISDIR(st.st_mode)) {
        int rc = mm_err_set(err, -ENOTDIR, "model '%s' is a file, not a folder (%s) (give the folder that holds "
                            "config.json and the safetensors files)", ref, abs);
        free(abs);
        return rc;
    }
    *path = abs;
    return 1;
}

static char *home_dir(void)
{
    const char *h = getenv("HOME");
    if (h && *h)
        return mm_xstrdup(h);
    const struct passwd *pw = getpwuid(getuid());
    return mm_xstrdup(pw && pw->pw_dir ? pw->pw_dir : "/");
}

/* huggingface_hub's own lookup order, including its legacy variable and XDG_CACHE_HOME. */
static char *hub_cache_dir(void)
{
    const char *e;
    char *dir;
    if ((e = getenv("HF_HUB_CACHE")) && *e) {
        dir = mm_xstrdup(e);
    } else if ((e = getenv("HUGGINGFACE_HUB_CACHE")) && *e) {
        dir = mm_xstrdup(e);
    } else if ((e = getenv("HF_HOME")) && *e) {
        dir = mm_path_join(e, "hub");
    } else if ((e = getenv("XDG_CACHE_HOME")) && *e) {
        dir = mm_path_join(e, "huggingface/hub");
    } else {
        char *home = home_dir();
        dir = mm_path_join(home, ".cache/huggingface/hub");
        free(home);
    }
    char *abs = absolute_path(dir);
    free(dir);
    return abs;
}

/* `name` or `org/name` with no empty, "." or ".." part: the shapes of a Hub repository id. */
static int is_hub_id(const char *name)
{
    const char *slash = strchr(name, '/');
    if (slash && strchr(slash + 1, '/'))
        return 0;
    size_t first = slash ? (size_t)(slash - name) : strlen(name);
    const char *second = slash ? slash + 1 : NULL;
    if (first == 0 || (second && !*second))
        return 0;
    if (name[0] == '.' || name[0] == '~' || (second && second[0] == '.'))
        return 0;
    return 1;
}

static char *read_ref(const char *repo, const char *rev)
{
    char *refs = mm_path_join(repo, "refs");
    char *file = mm_path_join(refs, rev);
    char *data = NULL;
    size_t len = 0;
    int rc = mm_file_read_all(file, 4096, &data, &len, NULL);
    free(refs);
    free(file);
    if (rc < 0)
        return NULL;
    while (len > 0 && strchr(" \t\r\n", data[len - 1]))
        data[--len] = 0;
    if (len == 0 || strchr(data, '/')) {
        free(data);
        return NULL;
    }
    return data;
}

static char *snapshot_dir(const char *repo, const char *id)
{
    char *snaps = mm_path_join(repo, "snapshots");
    char *dir = mm_path_join(snaps, id);
    free(snaps);
    if (is_dir(dir))
        return dir;
    free(dir);
    return NULL;
}

/* refs/<rev> names the snapshot of a branch or tag; a commit hash is a snapshot folder itself. */
static char *find_snapshot(const char *repo, const char *rev)
{
    char *hash = read_ref(repo, rev);
    char *dir = hash ? snapshot_dir(repo, hash) : NULL;
    free(hash);
    return dir ? dir : snapshot_dir(repo, rev);
}

static int hub_lookup(const char *ref, const char *name, const char *rev, char **path, mm_err *err)
{
    char *cache = hub_cache_dir();
    mm_buf repo_name = {0}; /* "org/name" is cached as "models--org--name" */
    mm_buf_puts(&repo_name, "models--");
    for (const char *s = name; *s; s++)
        mm_buf_append(&repo_name, *s == '/' ? "--" : s, *s == '/' ? 2 : 1);
    char *repo = mm_path_join(cache, repo_name.data);
    char *rev_opt = rev ? mm_xasprintf(" --revision %s", rev) : mm_xstrdup("");
    const char *r = rev ? rev : "main";
    int rc = 0;
    if (!is_dir(repo)) {
        char *local = absolute_path(name);
        rc = mm_err_set(err, -ENOENT, "model '%s' not found: not a local folder (%s) and not in the Hugging Face "
                        "cache (%s); download it with `hf download %s%s` or give a local path",
                        ref, local, cache, name, rev_opt);
        free(local);
    } else if (!(*path = find_snapshot(repo, r))) {
        rc = mm_err_set(err, -ENOENT, "model '%s' not found: revision '%s' is not in the Hugging Face cache (%s "
                        "has neither refs/%s nor snapshots/%s); download it with `hf download %s%s` or give a "
                        "local path",
                        ref, r, repo, r, r, name, rev_opt);
    }
    free(rev_opt);
    free(repo);
    mm_buf_free(&repo_name);
    free(cache);
    return rc;
}

/* One side of a reference: a folder, or org/name[@revision] in the cache. */
static int resolve_one(const char *ref, char **path, mm_err *err)
{
    if (!*ref)
        return mm_err_set(err, -EINVAL, "empty model reference (give a model folder or org/name)");
    int rc = try_local(ref, ref, path, err);
    if (rc != 0)
        return rc < 0 ? rc : 0;
    const char *at = strchr(ref, '@');
    if (at && strchr(at + 1, '@'))
        return mm_err_set(err, -EINVAL, "model '%s' has more than one '@' (write path@revision with a single '@')",
                          ref);
    if (at && (at == ref || !at[1]))
        return mm_err_set(err, -EINVAL, "model '%s' has an empty %s '@' (write org/name@revision)", ref,
                          at == ref ? "name before" : "revision after");
    char *name = at ? mm_xstrndup(ref, (size_t)(at - ref)) : mm_xstrdup(ref);
    const char *rev = at ? at + 1 : NULL;
    /* mergekit checks the part before '@' on disk and ignores the revision of a local folder. */
    rc = at ? try_local(name, ref, path, err) : 0;
    if (rc == 0 && strstr(rev ? rev : "", ".."))
        rc = mm_err_set(err, -EINVAL, "model '%s': revision '%s' contains '..' (give a branch, tag or commit hash)",
                        ref, rev);
    if (rc == 0 && !is_hub_id(name)) {
        char *abs = absolute_path(name);
        rc = mm_err_set(err, -ENOENT, "model '%s' not found: no folder %s (check the path; relative paths start "
                        "from the current folder)", ref, abs);
        free(abs);
    }
    if (rc == 0)
        rc = hub_lookup(ref, name, rev, path, err);
    free(name);
    return rc < 0 ? rc : 0;
}

int mm_modelref_resolve(const char *ref, char **path, char **lora_path, mm_err *err)
{
    *path = *lora_path = NULL;
    if (!ref || !*ref)
        return mm_err_set(err, -EINVAL, "empty model reference (give a model folder or org/name)");
    /* A folder whose name holds a '+' is that folder, as mergekit checks the disk first. */
    int rc = try_local(ref, ref, path, err);
    const char *plus = strchr(ref, '+');
    if (rc != 0 || !plus)
        return rc != 0 ? (rc < 0 ? rc : 0) : resolve_one(ref, path, err);
    if (strchr(plus + 1, '+'))
        return mm_err_set(err, -EINVAL, "model '%s' has more than one '+' (write base+adapter with a single '+')",
                          ref);
    char *base = mm_xstrndup(ref, (size_t)(plus - ref));
    rc = resolve_one(base, path, err);
    if (rc == 0 && (rc = resolve_one(plus + 1, lora_path, err)) < 0)
        mm_err_prefix(err, "the adapter of '%s'", ref);
    free(base);
    if (rc < 0) {
        free(*path);
        *path = NULL;
    }
    return rc;
}

int mm_modelref_same(const mm_modelref *a, const mm_modelref *b)
{
    if (strcmp(a->path, b->path) != 0 || !a->lora_path != !b->lora_path)
        return 0;
    return !a->lora_path || strcmp(a->lora_path, b->lora_path) == 0;
}
