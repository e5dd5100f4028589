/* The parity tests' program inside a container: a static binary (the images have no shell) that makes the
 * changes a user makes and prints what a user sees.
 *   walk                  one line per entry of / (not /proc, /sys, /dev): path, type and mode, owner,
 *                         size (not for folders), device, mtime, link count, link target, xattr names
 *   t PATH                set PATH's times to 2001-01-01 (a touch at a fixed time)
 *   w PATH TEXT           write TEXT to PATH (parent folders made), then times as t
 *   r PATH                remove PATH and everything under it
 *   c PATH MODE           chmod (octal)
 *   o PATH UID GID        lchown
 *   l TARGET PATH         symlink
 *   h OLD NEW             hard link
 *   f PATH                mkfifo 0644
 *   x PATH NAME HEX       set an extended attribute
 *   s SECONDS             sleep
 * Commands follow one another on the command line; the first failure exits non-zero naming it. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/xattr.h>
#include <unistd.h>

static const struct timespec FIXED[2] = {{978307200, 0}, {978307200, 0}};

static int fail(const char *what, const char *path) {
  fprintf(stderr, "ops: %s %s: %s\n", what, path, strerror(errno));
  exit(3);
}

static int rm_one(const char *p, const struct stat *s, int f, struct FTW *w) {
  (void)s; (void)f; (void)w;
  if (remove(p) != 0) fail("remove", p);
  return 0;
}

static int show(const char *p, const struct stat *s, int f, struct FTW *w) {
  (void)f; (void)w;
  if (!strcmp(p, "/proc") || !strcmp(p, "/sys") || !strcmp(p, "/dev")) return FTW_SKIP_SUBTREE;
  char target[4096] = "";
  if (S_ISLNK(s->st_mode)) {
    ssize_t n = readlink(p, target, sizeof target - 1);
    if (n >= 0) target[n] = 0;
  }
  char names[4096] = "";
  ssize_t n = llistxattr(p, names, sizeof names);
  for (ssize_t i = 0; i < n - 1; i++) if (names[i] == 0) names[i] = ',';
  if (n <= 0) names[0] = 0;
  printf("%s\t%o\t%u:%u\t%lld\t%u:%u\t%lld\t%lu\t%s\t%s\n", p, (unsigned)s->st_mode, s->st_uid, s->st_gid,
         S_ISDIR(s->st_mode) ? -1LL : (long long)s->st_size, major(s->st_rdev), minor(s->st_rdev),
         (long long)s->st_mtim.tv_sec, S_ISDIR(s->st_mode) ? 0UL : (unsigned long)s->st_nlink, target, names);
  return FTW_CONTINUE;
}

static void mkparents(const char *path) {
  char buf[4096];
  snprintf(buf, sizeof buf, "%s", path);
  for (char *s = buf + 1; *s; s++)
    if (*s == '/') {
      *s = 0;
      if (mkdir(buf, 0755) != 0 && errno != EEXIST) fail("mkdir", buf);
      *s = '/';
    }
}

static int hexval(char c) { return c <= '9' ? c - '0' : (c | 32) - 'a' + 10; }

int main(int argc, char **argv) {
  for (int i = 1; i < argc;) {
    const char *op = argv[i];
    if (!strcmp(op, "walk")) {
      if (nftw("/", show, 64, FTW_PHYS | FTW_ACTIONRETVAL) != 0) fail("walk", "/");
      i += 1;
    } else if (!strcmp(op, "t") && i + 1 < argc) {
      if (utimensat(AT_FDCWD, argv[i + 1], FIXED, AT_SYMLINK_NOFOLLOW) != 0) fail("touch", argv[i + 1]);
      i += 2;
    } else if (!strcmp(op, "w") && i + 2 < argc) {
      mkparents(argv[i + 1]);
      int fd = open(argv[i + 1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (fd < 0 || write(fd, argv[i + 2], strlen(argv[i + 2])) < 0 || close(fd) != 0) fail("write", argv[i + 1]);
      if (utimensat(AT_FDCWD, argv[i + 1], FIXED, 0) != 0) fail("touch", argv[i + 1]);
      i += 3;
    } else if (!strcmp(op, "r") && i + 1 < argc) {
      if (nftw(argv[i + 1], rm_one, 64, FTW_DEPTH | FTW_PHYS) != 0) fail("rm", argv[i + 1]);
      i += 2;
    } else if (!strcmp(op, "c") && i + 2 < argc) {
      if (chmod(argv[i + 1], strtoul(argv[i + 2], 0, 8)) != 0) fail("chmod", argv[i + 1]);
      i += 3;
    } else if (!strcmp(op, "o") && i + 3 < argc) {
      if (lchown(argv[i + 1], atoi(argv[i + 2]), atoi(argv[i + 3])) != 0) fail("chown", argv[i + 1]);
      i += 4;
    } else if (!strcmp(op, "l") && i + 2 < argc) {
      if (symlink(argv[i + 1], argv[i + 2]) != 0) fail("symlink", argv[i + 2]);
      i += 3;
    } else if (!strcmp(op, "h") && i + 2 < argc) {
      if (link(argv[i + 1], argv[i + 2]) != 0) fail("link", argv[i + 2]);
      i += 3;
    } else if (!strcmp(op, "f") && i + 1 < argc) {
      if (mkfifo(argv[i + 1], 0644) != 0) fail("mkfifo", argv[i + 1]);
      i += 2;
    } else if (!strcmp(op, "x") && i + 3 < argc) {
      unsigned char v[256];
      size_t n = strlen(argv[i + 3]) / 2;
      for (size_t k = 0; k < n && k < sizeof v; k++) v[k] = hexval(argv[i + 3][2 * k]) * 16 + hexval(argv[i + 3][2 * k + 1]);
      if (lsetxattr(argv[i + 1], argv[i + 2], v, n, 0) != 0) fail("setxattr", argv[i + 1]);
      i += 4;
    } else if (!strcmp(op, "s") && i + 1 < argc) {
      sleep(atoi(argv[i + 1]));
      i += 2;
    } else {
      fprintf(stderr, "ops: bad command at %s\n", op);
      return 2;
    }
  }
  return 0;
}
