/* Foreign system-call ABIs, for the completeness test (docs/vfs.md, "Trace mode").
 *
 * Usage: abi [FILTER]. With FILTER (a packed sock_filter array), installs it first, as
 * trace mode's child does. Then makes an i386 getpid and an i386 open through int 0x80
 * and an x32 getpid, and prints "getpid32=PID|-ERRNO open32=0|-ERRNO x32=0|-ERRNO".
 * Built without PIE so that the path lies below 4 GiB, where int 0x80 can reach it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

static char path[] = "/etc/hostname";

static long int80(long nr, long a, long b)
{
    long ret;
    __asm__ volatile("int $0x80" : "=a"(ret) : "a"(nr), "b"(a), "c"(b) : "memory");
    return ret;
}

int main(int argc, char **argv)
{
    static struct sock_filter insns[4096];
    if (argc == 2) {
        int fd = open(argv[1], O_RDONLY);
        ssize_t n = fd < 0 ? -1 : read(fd, insns, sizeof insns);
        if (n <= 0) {
            perror(argv[1]);
            return 2;
        }
        struct sock_fprog prog = {(unsigned short)(n / sizeof insns[0]), insns};
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog)) {
            perror("seccomp");
            return 2;
        }
    }
    long getpid32 = int80(20, 0, 0);
    long open32 = int80(5, (long)path, O_RDONLY);
    long x32 = syscall(0x40000000 | SYS_getpid);
    if (x32 < 0)
        x32 = -errno;
    char line[128];
    int len = snprintf(line, sizeof line, "getpid32=%ld open32=%ld x32=%ld\n",
                       getpid32, open32 < 0 ? open32 : 0, x32 < 0 ? x32 : 0);
    return write(1, line, (size_t)len) == len ? 0 : 1;
}
