/* Where the cache lives, and creating that directory. */
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cache_internal.h"

char *mm_cache_default_dir(const char *dir)
{
    if (dir && dir[0])
        return mm_path_absolute(dir);
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

int mm_cache_dir_create(const char *dir, mm_err *err)
{
    int rc = mm_mkdir_p(dir, 0755);
    if (rc)
        return mm_err_set(err, rc, "cannot create the cache directory %s: %s", dir, strerror(-rc));
    return 0;
}
