/* Where the cache lives, and creating that directory. */
#include <errno.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache_internal.h"

static char *absolute(const char *dir)
{
    if (dir[0] == '/')
        return mm_xstrdup(dir);
    char *cwd = getcwd(NULL, 0);
    if (!cwd)
        return mm_xstrdup(dir); /* cannot do better; mkdir/open will report it */
    char *p = mm_path_join(cwd, dir);
    free(cwd);
    return p;
}

char *mm_cache_default_dir(const char *dir)
{
    if (dir && dir[0])
        return absolute(dir);
    /* The XDG spec says to ignore relative values. */
    const char *xdg = getenv("XDG_CACHE_HOME");
    if (xdg && xdg[0] == '/')
        return mm_path_join(xdg, "mergemount");
    const char *home = getenv("HOME");
    if (home && home[0] == '/')
        return mm_path_join(home, ".cache/mergemount");
    struct passwd pw, *res = NULL;
    char buf[4096];
    if (getpwuid_r(getuid(), &pw, buf, sizeof buf, &res) == 0 && res && res->pw_dir && res->pw_dir[0] == '/')
        return mm_path_join(res->pw_dir, ".cache/mergemount");
    return mm_xasprintf("/tmp/mergemount-%u", (unsigned)getuid());
}

static int make_one(const char *path)
{
    if (mkdir(path, 0755) == 0)
        return 0;
    int e = errno;
    struct stat st;
    if (e == EEXIST && stat(path, &st) == 0)
        return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
    return -e;
}

int mm_cache_dir_create(const char *dir, mm_err *err)
{
    char *p = mm_xstrdup(dir);
    int rc = 0;
    for (char *s = strchr(p + 1, '/'); s && !rc; s = strchr(s + 1, '/')) {
        *s = 0;
        rc = make_one(p);
        *s = '/';
    }
    if (!rc)
        rc = make_one(p);
    free(p);
    if (rc)
        return mm_err_set(err, rc, "cannot create the cache directory %s: %s", dir, strerror(-rc));
    return 0;
}
