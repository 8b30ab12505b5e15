/* The differential probe (docs/vfs.md, "The completeness test"), in C.
 *
 * Usage: probe CASES M FILEID EXT HEX MISSING OUTSIDE
 * Runs every case of CASES (one raw system call each, so that glibc's choice of call
 * numbers hides none) on every target under M, each in a child of its own, and prints
 * one line per case: the result, errno, and what can be compared between a FUSE mount,
 * trace mode's view and a read-only bind mount (size, permission bits, file type, a
 * hash of the bytes read, xattr values, link targets, the working directory). Device,
 * inode, block and link counts and times are never printed. probe.py prints the same.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAXTOK 16
#define BUFSZ 4096

static const char *m_root;

struct target {
    const char *name;
    char path[BUFSZ];   /* the path the calls get */
    char chdir_to[BUFSZ];   /* a working directory to enter first, or "" */
    char dir_of[BUFSZ];   /* a directory to open as the dirfd, or "" */
    int privileged_ok;   /* the "!" cases may run on it */
};

static void put_escaped(const char *label, const char *s, size_t n)
{
    size_t mlen = strlen(m_root);
    printf(" %s=", label);
    for (size_t i = 0; i < n; i++) {
        if (i + mlen <= n && memcmp(s + i, m_root, mlen) == 0) {
            fputs("M", stdout);
            i += mlen - 1;
        } else if (s[i] > 32 && s[i] < 127 && s[i] != '\\') {
            putchar(s[i]);
        } else {
            printf("\\x%02x", (unsigned char)s[i]);
        }
    }
}

static const char *kind(unsigned mode)
{
    switch (mode & S_IFMT) {
    case S_IFREG: return "reg";
    case S_IFDIR: return "dir";
    case S_IFLNK: return "lnk";
    default: return "other";
    }
}

static void put_mode(unsigned mode, unsigned long long size)
{
    if (S_ISREG(mode))
        printf(" size=%llu", size);
    printf(" mode=%04o type=%s", mode & 07777, kind(mode));
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void put_names(const char *list, long n)
{
    const char *names[256];
    int count = 0;
    for (long i = 0; i < n && count < 256; i += (long)strlen(list + i) + 1)
        names[count++] = list + i;
    qsort(names, count, sizeof names[0], cmp_str);
    printf(" names=");
    for (int i = 0; i < count; i++)
        printf("%s%s", i ? "," : "", names[i]);
}

static void put_read(int fd)
{
    char buf[BUFSZ];
    uint64_t hash = 1469598103934665603ULL;   /* FNV-1a */
    unsigned long long total = 0;
    ssize_t got;
    while ((got = read(fd, buf, sizeof buf)) > 0) {
        for (ssize_t i = 0; i < got; i++)
            hash = (hash ^ (unsigned char)buf[i]) * 1099511628211ULL;
        total += (unsigned long long)got;
    }
    if (got < 0)
        printf(" read=%s", strerrorname_np(errno));
    else
        printf(" read=%llu hash=%016llx", total, (unsigned long long)hash);
    struct stat st;
    if (fstat(fd, &st) == 0)
        put_mode(st.st_mode, (unsigned long long)st.st_size);
}

static void run_case(char **tok, int ntok, const struct target *t)
{
    static char sbuf[MAXTOK][BUFSZ];
    static char xvalue[BUFSZ], sibling[BUFSZ], outside[BUFSZ];
    long args[6] = {0};
    int nargs = 0, want_fd = 0, want_desc = 0, want_cwd = 0;
    int dirfd = AT_FDCWD;
    char *argv[2] = {(char *)t->path, NULL}, *envp[1] = {NULL};
    uint64_t how[3] = {0}, xargs[2] = {0};
    char fattr[32] = {0}, fsx[32] = {0}, handle[8 + 128] = {0};
    int mount_id = 0, zero = 0;
    struct stat st;
    struct statx stx;
    char sfs[120];
    char *decode = NULL, *decode_kind = "";

    if (t->chdir_to[0] && chdir(t->chdir_to) != 0) {
        printf(" setup=%s\n", strerrorname_np(errno));
        return;
    }
    if (t->dir_of[0] && (dirfd = open(t->dir_of, O_RDONLY | O_DIRECTORY)) < 0) {
        printf(" setup=%s\n", strerrorname_np(errno));
        return;
    }
    snprintf(sibling, sizeof sibling, "%s.new", t->path);
    snprintf(outside, sizeof outside, "%s.new", getenv("PROBE_OUTSIDE"));
    long nr = strtol(tok[1], NULL, 0);
    for (int i = 2; i < ntok; i++) {
        char *a = tok[i];
        long v = 0;
        if (!strcmp(a, "R")) { want_fd = 1; continue; }
        if (!strcmp(a, "W")) { want_desc = 1; continue; }
        if (!strcmp(a, "cwd")) { want_cwd = 1; continue; }
        if (!strcmp(a, "D")) v = dirfd;
        else if (!strcmp(a, "P")) v = (long)t->path;
        else if (!strcmp(a, "P+")) v = (long)sibling;
        else if (!strcmp(a, "O")) v = (long)outside;
        else if (!strcmp(a, "F")) v = syscall(SYS_openat, dirfd, t->path, O_RDONLY);
        else if (!strncmp(a, "i:", 2)) v = strtol(a + 2, NULL, 0);
        else if (!strncmp(a, "s:", 2)) { strcpy(sbuf[i], a + 2); v = (long)sbuf[i]; }
        else if (!strcmp(a, "0")) v = 0;
        else if (!strncmp(a, "how:", 4)) { how[0] = strtoull(a + 4, NULL, 0); v = (long)how; }
        else if (!strcmp(a, "st")) { v = (long)&st; decode = (char *)&st; decode_kind = a; }
        else if (!strcmp(a, "stx")) { v = (long)&stx; decode = (char *)&stx; decode_kind = a; }
        else if (!strcmp(a, "sfs")) { v = (long)sfs; decode = sfs; decode_kind = a; }
        else if (!strcmp(a, "lk") || !strcmp(a, "xv") || !strcmp(a, "xl") || !strcmp(a, "b")) {
            memset(sbuf[i], 0, BUFSZ); v = (long)sbuf[i]; decode = sbuf[i]; decode_kind = a;
        }
        else if (!strcmp(a, "xargs")) {
            xargs[0] = (uint64_t)(uintptr_t)xvalue; xargs[1] = BUFSZ;
            v = (long)xargs; decode = xvalue; decode_kind = "xv";
        }
        else if (!strcmp(a, "xset")) {
            strcpy(xvalue, "1"); xargs[0] = (uint64_t)(uintptr_t)xvalue; xargs[1] = 1; v = (long)xargs;
        }
        else if (!strcmp(a, "fa")) v = (long)fattr;
        else if (!strcmp(a, "fsx")) v = (long)fsx;
        else if (!strcmp(a, "flags")) v = (long)&zero;
        else if (!strcmp(a, "fh")) { *(unsigned *)handle = 128; v = (long)handle; }
        else if (!strcmp(a, "mid")) v = (long)&mount_id;
        else if (!strcmp(a, "ino")) v = syscall(SYS_inotify_init1, 0);
        else if (!strcmp(a, "fan")) v = syscall(SYS_fanotify_init, 0, O_RDONLY);
        else if (!strcmp(a, "fsfd")) v = syscall(SYS_fsopen, "tmpfs", 0);
        else if (!strcmp(a, "argv")) v = (long)argv;
        else if (!strcmp(a, "envp")) v = (long)envp;
        else { printf(" bad-token=%s\n", a); return; }
        args[nargs++] = v;
    }
    errno = 0;
    long ret = syscall(nr, args[0], args[1], args[2], args[3], args[4], args[5]);
    int err = errno;
    if (ret < 0)
        printf(" ret=-1 errno=%s", strerrorname_np(err));
    else if (want_fd || want_desc)
        printf(" ret=ok");
    else
        printf(" ret=%ld", ret);
    if (ret >= 0) {
        if (want_fd)
            put_read((int)ret);
        if (!strcmp(decode_kind, "st"))
            put_mode(st.st_mode, (unsigned long long)st.st_size);
        else if (!strcmp(decode_kind, "stx"))
            put_mode(stx.stx_mode, (unsigned long long)stx.stx_size);
        else if (!strcmp(decode_kind, "sfs"))
            printf(" ro=%d", (int)(*(uint64_t *)(sfs + 80) & 1));
        else if (!strcmp(decode_kind, "lk") || !strcmp(decode_kind, "xv"))
            put_escaped(decode_kind, decode, (size_t)ret);
        else if (!strcmp(decode_kind, "xl"))
            put_names(decode, ret);
        if (want_cwd) {
            char cwd[BUFSZ];
            if (getcwd(cwd, sizeof cwd))
                put_escaped("cwd", cwd, strlen(cwd));
            else
                printf(" cwd=%s", strerrorname_np(errno));
        }
    }
    putchar('\n');
}

int main(int argc, char **argv)
{
    if (argc != 8) {
        fprintf(stderr, "usage: probe CASES M FILEID EXT HEX MISSING OUTSIDE\n");
        return 2;
    }
    const char *cases = argv[1], *fileid = argv[3], *ext = argv[4], *hex = argv[5];
    const char *missing = argv[6], *outside = argv[7];
    m_root = argv[2];
    setenv("PROBE_OUTSIDE", outside, 1);
    const char *base = strrchr(outside, '/') ? strrchr(outside, '/') + 1 : outside;
    struct target targets[10];
    int n = 0;
#define ABS(label, ok, ...) do { \
        memset(&targets[n], 0, sizeof targets[n]); targets[n].name = label; \
        targets[n].privileged_ok = ok; \
        snprintf(targets[n].path, BUFSZ, __VA_ARGS__); n++; } while (0)
    ABS("obj", 1, "%s/fileid/%s", m_root, fileid);
    ABS("ext", 1, "%s/fileid/%s.%s", m_root, fileid, ext);
    ABS("sha", 1, "%s/sha256/%s", m_root, hex);
    ABS("table", 1, "%s/table/images/%s.%s", m_root, fileid, ext);
    ABS("missing", 1, "%s/fileid/%s", m_root, missing);
    ABS("dir", 1, "%s/fileid", m_root);
    ABS("top", 0, "%s", m_root);
    ABS("up", 0, "%s/fileid/../../%s", m_root, base);
    ABS("rel", 1, "%s", fileid);
    snprintf(targets[n - 1].chdir_to, BUFSZ, "%s/fileid", m_root);
    ABS("dirfd", 1, "%s", fileid);
    snprintf(targets[n - 1].dir_of, BUFSZ, "%s/fileid", m_root);

    FILE *f = fopen(cases, "r");
    if (!f) {
        perror(cases);
        return 2;
    }
    char line[1024];
    while (fgets(line, sizeof line, f)) {
        char *tok[MAXTOK];
        int ntok = 0;
        for (char *p = strtok(line, " \t\n"); p && ntok < MAXTOK; p = strtok(NULL, " \t\n"))
            tok[ntok++] = p;
        if (ntok < 2 || tok[0][0] == '#')
            continue;
        int has_dirfd = 0;
        for (int i = 2; i < ntok; i++)
            has_dirfd |= !strcmp(tok[i], "D") || !strcmp(tok[i], "F");
        for (int i = 0; i < n; i++) {
            if (tok[0][0] == '!' && !targets[i].privileged_ok)
                continue;
            if (targets[i].dir_of[0] && !has_dirfd)
                continue;
            printf("%s %s", targets[i].name, tok[0]);
            fflush(stdout);
            pid_t pid = fork();
            if (pid == 0) {
                run_case(tok, ntok, &targets[i]);
                fflush(stdout);
                _exit(0);
            }
            int status;
            waitpid(pid, &status, 0);
            if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
                printf(" died=%d\n", status);
        }
    }
    fclose(f);
    return 0;
}
