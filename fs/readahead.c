#include "readahead.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* mountinfo escapes space, tab, newline and backslash as \ooo. */
static void unescape(char *s)
{
    char *o = s;
    for (char *p = s; *p; p++) {
        if (p[0] == '\\' && p[1] >= '0' && p[1] <= '7' && p[2] >= '0' && p[2] <= '7' && p[3] >= '0' && p[3] <= '7') {
            *o++ = (char)((p[1] - '0') * 64 + (p[2] - '0') * 8 + (p[3] - '0'));
            p += 3;
        } else {
            *o++ = *p;
        }
    }
    *o = 0;
}

/* The device of the newest mount at `mountpoint` whose type is a FUSE type. */
static int find_device(const char *mountpoint, char *dev, size_t devlen)
{
    FILE *f = fopen("/proc/self/mountinfo", "re");
    if (!f)
        return -errno;
    char *line = NULL;
    size_t cap = 0;
    int found = -ENOENT;
    while (getline(&line, &cap, f) > 0) {
        /* id parent major:minor root mountpoint options ... - fstype source superopts */
        char majmin[64], mp[4096];
        if (sscanf(line, "%*s %*s %63s %*s %4095s", majmin, mp) != 2)
            continue;
        unescape(mp);
        const char *sep = strstr(line, " - ");
        if (strcmp(mp, mountpoint) != 0 || !sep || strncmp(sep + 3, "fuse", 4) != 0)
            continue;
        snprintf(dev, devlen, "%s", majmin);
        found = 0;
    }
    free(line);
    fclose(f);
    return found;
}

int mm_fs_set_readahead(const char *mountpoint, unsigned kb, mm_err *err)
{
    char dev[64];
    int rc = find_device(mountpoint, dev, sizeof dev);
    if (rc < 0)
        return mm_err_set(err, rc, "cannot find the FUSE mount %s in /proc/self/mountinfo", mountpoint);
    char path[128];
    snprintf(path, sizeof path, "/sys/class/bdi/%s/read_ahead_kb", dev);
    FILE *f = fopen(path, "we");
    if (!f)
        return mm_err_set(err, -errno, "cannot set the readahead of %s: %s: %s (it needs root)", mountpoint, path,
                          strerror(errno));
    int ok = fprintf(f, "%u\n", kb) > 0;
    ok &= fclose(f) == 0;
    if (!ok)
        return mm_err_set(err, -EIO, "cannot set the readahead of %s: writing %s failed", mountpoint, path);
    return 0;
}
