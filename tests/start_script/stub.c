/* Test stand-in for a container app: records how it was started, then exits or lingers.
 *
 * Built statically by tests/start_script/harness.py and placed in a throwaway root where the
 * image's argv expects its program. Each run writes /hookd-test/rec/<pid>/ (made under a
 * temporary name, then renamed, so a reader never sees half a record):
 *   argv    the arguments, each followed by NUL (exact bytes)
 *   env     the environment, each entry followed by NUL
 *   cwd     the working directory
 *   ids     "ruid euid suid rgid egid sgid pid ppid pgid sid umask"
 *   groups  supplementary groups, space-separated
 *   sigign  signals whose disposition is SIG_IGN, space-separated
 *   sigblk  blocked signals, space-separated
 *   stdin   "devnull" when fd 0 is /dev/null, else a description
 *   fds     open file descriptors, space-separated
 *   fd1     where fd 1 points (/proc/self/fd/1)
 *   exe     the program file that runs (/proc/self/exe)
 * When /hookd-test/linger exists it then waits for a signal, writes its number to
 * /hookd-test/rec/<pid>.signal and exits 0. Otherwise it exits with the number in
 * /hookd-test/exitcode, or 0.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <unistd.h>

extern char **environ;

static char dir[128];
static char signal_path[128];

static void die(const char *what) {
    perror(what);
    _exit(111);
}

static void write_file(const char *name, const char *data, size_t len) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) die(path);
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0) {
            if (errno == EINTR) continue;
            die(path);
        }
        data += n;
        len -= (size_t)n;
    }
    close(fd);
}

static void write_strings(const char *name, char **list) {
    size_t total = 0;
    for (char **p = list; *p; p++) total += strlen(*p) + 1;
    char *buf = malloc(total + 1);
    if (!buf) die("malloc");
    size_t off = 0;
    for (char **p = list; *p; p++) {
        size_t n = strlen(*p) + 1; /* keep the NUL */
        memcpy(buf + off, *p, n);
        off += n;
    }
    write_file(name, buf, off);
    free(buf);
}

static void on_signal(int sig) {
    char text[16];
    int n = snprintf(text, sizeof text, "%d\n", sig);
    int fd = open(signal_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
        ssize_t ignored = write(fd, text, (size_t)n);
        (void)ignored;
        close(fd);
    }
    _exit(0);
}

int main(int argc, char **argv) {
    (void)argc;
    char text[8192];
    int len;
    pid_t pid = getpid();

    snprintf(dir, sizeof dir, "/hookd-test/rec/.tmp-%d", (int)pid);
    if (mkdir(dir, 0755) < 0) die(dir);

    write_strings("argv", argv);
    write_strings("env", environ);

    static char cwd[PATH_MAX * 2];
    if (!getcwd(cwd, sizeof cwd)) die("getcwd");
    write_file("cwd", cwd, strlen(cwd));

    uid_t ruid, euid, suid;
    gid_t rgid, egid, sgid;
    getresuid(&ruid, &euid, &suid);
    getresgid(&rgid, &egid, &sgid);
    mode_t mask = umask(022);
    umask(mask);
    len = snprintf(text, sizeof text, "%u %u %u %u %u %u %d %d %d %d %o\n", ruid, euid, suid,
                   rgid, egid, sgid, (int)pid, (int)getppid(), (int)getpgid(0), (int)getsid(0),
                   (unsigned)mask);
    write_file("ids", text, (size_t)len);

    gid_t groups[NGROUPS_MAX];
    int n = getgroups(NGROUPS_MAX, groups);
    if (n < 0) die("getgroups");
    len = 0;
    for (int i = 0; i < n; i++)
        len += snprintf(text + len, sizeof text - (size_t)len, "%s%u", i ? " " : "", groups[i]);
    write_file("groups", text, (size_t)len);

    len = 0;
    for (int sig = 1; sig < 65; sig++) {
        struct sigaction sa;
        if (sigaction(sig, NULL, &sa) == 0 && sa.sa_handler == SIG_IGN)
            len += snprintf(text + len, sizeof text - (size_t)len, "%s%d", len ? " " : "", sig);
    }
    write_file("sigign", text, (size_t)len);

    sigset_t blocked;
    sigprocmask(SIG_BLOCK, NULL, &blocked);
    len = 0;
    for (int sig = 1; sig < 65; sig++)
        if (sigismember(&blocked, sig) == 1)
            len += snprintf(text + len, sizeof text - (size_t)len, "%s%d", len ? " " : "", sig);
    write_file("sigblk", text, (size_t)len);

    struct stat st;
    if (fstat(0, &st) < 0)
        len = snprintf(text, sizeof text, "closed");
    else if (S_ISCHR(st.st_mode) && major(st.st_rdev) == 1 && minor(st.st_rdev) == 3)
        len = snprintf(text, sizeof text, "devnull");
    else
        len = snprintf(text, sizeof text, "mode %o rdev %u:%u", (unsigned)st.st_mode,
                       major(st.st_rdev), minor(st.st_rdev));
    write_file("stdin", text, (size_t)len);

    DIR *fds = opendir("/proc/self/fd");
    len = 0;
    if (fds) {
        struct dirent *entry;
        while ((entry = readdir(fds)) != NULL) {
            if (entry->d_name[0] == '.' || atoi(entry->d_name) == dirfd(fds)) continue;
            len += snprintf(text + len, sizeof text - (size_t)len, "%s%s", len ? " " : "",
                            entry->d_name);
        }
        closedir(fds);
    }
    write_file("fds", text, (size_t)len);

    ssize_t link = readlink("/proc/self/fd/1", text, sizeof text - 1);
    write_file("fd1", text, link > 0 ? (size_t)link : 0);
    link = readlink("/proc/self/exe", text, sizeof text - 1);
    write_file("exe", text, link > 0 ? (size_t)link : 0);

    char final[128];
    snprintf(final, sizeof final, "/hookd-test/rec/%d", (int)pid);
    if (rename(dir, final) < 0) die("rename");

    if (access("/hookd-test/linger", F_OK) == 0) {
        snprintf(signal_path, sizeof signal_path, "/hookd-test/rec/%d.signal", (int)pid);
        for (int sig = 1; sig < 65; sig++)
            if (sig != SIGKILL && sig != SIGSTOP && sig != 32 && sig != 33) signal(sig, on_signal);
        for (;;) pause();
    }
    FILE *code = fopen("/hookd-test/exitcode", "r");
    int status = 0;
    if (code) {
        if (fscanf(code, "%d", &status) != 1) status = 0;
        fclose(code);
    }
    return status;
}
