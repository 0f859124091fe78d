// SPDX-License-Identifier: GPL-2.0
/*
 * guest-run: one boot of the guests leg (tests/vm/init). Runs QEMU (the
 * command after "--") with its serial console on a pipe, under a timeout,
 * and prints one TAP result line for the boot.
 *
 *   guest-run -n NUM -t NAME [-T SECONDS] [-m MARKER] [-e LINE]... [-d TODO]
 *             [-q] -- qemu-system-x86_64 ARGS...
 *
 * Every console line is echoed as "=== guest-console NAME | LINE" (the host
 * writes them to build/guests/NAME.log; -q echoes them only when the boot
 * fails, for the slow Bochs console). The boot passes when MARKER (default
 * RKVM-GUEST-USERSPACE-OK) appears, every -e LINE appears as the start of a
 * console line, and QEMU exits 0 by itself. Otherwise the result is "not ok"
 * with the console's last lines as TAP diagnostics ("# tail | ..."); -d TODO
 * marks it "# TODO TODO" (an expected failure). On a timeout, before
 * killing QEMU, what the guest was doing goes into the console log: the
 * vCPUs' registers and local APICs (QEMU's monitor, on a UNIX socket this
 * program adds to the command line) and QEMU's threads (dump_state); the
 * same once when the console has been quiet for QUIET_S seconds. The result line gives the seconds from QEMU's start to the marker.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TAIL 25
/* A console quiet this long (seconds) gets its guest's state logged. */
#define QUIET_S 8
#define QUIET_STR "8"
#define MAX_EXPECT 8

static const char *name;
static int quiet;
static char *lines[TAIL];	/* the console's last lines, a ring */
static unsigned long nlines;
static char **held;		/* -q: every line, echoed on failure */
static size_t nheld, capheld;

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void console_line(const char *line)
{
	free(lines[nlines % TAIL]);
	lines[nlines++ % TAIL] = strdup(line);
	if (!quiet) {
		printf("=== guest-console %s | %s\n", name, line);
		return;
	}
	if (nheld == capheld) {
		capheld = capheld ? 2 * capheld : 256;
		held = realloc(held, capheld * sizeof(*held));
		if (!held)
			exit(2);
	}
	held[nheld++] = strdup(line);
}

/* Splits BUF (LEN bytes more in it) into lines; keeps a partial last line. */
/* Not inlined: GCC then sees sizes it cannot bound and warns. */
static __attribute__((noinline)) size_t feed(char *buf, size_t len, int flush, void (*fn)(const char *))
{
	size_t start = 0, i;

	for (i = 0; i < len; i++) {
		if (buf[i] == '\n' || buf[i] == '\r') {
			buf[i] = 0;
			if (i > start)
				fn(buf + start);
			start = i + 1;
		}
	}
	if (flush && start < len) {
		buf[len] = 0;
		fn(buf + start);
		start = len;
	}
	memmove(buf, buf + start, len - start);
	return len - start;
}

/*
 * Where a kernel message ("[    6.601433] ...") starts inside @l after other
 * text, or NULL.
 */
static const char *kmsg_inside(const char *l)
{
	const char *p;

	for (p = strchr(l + 1, '['); p && *l; p = strchr(p + 1, '[')) {
		const char *q = p + 1;

		while (*q == ' ')
			q++;
		if (!isdigit((unsigned char)*q))
			continue;
		while (isdigit((unsigned char)*q))
			q++;
		if (*q++ != '.' || !isdigit((unsigned char)*q))
			continue;
		while (isdigit((unsigned char)*q))
			q++;
		if (*q == ']')
			return p;
	}
	return NULL;
}

/* Sends one command to QEMU's monitor; its answer goes into the log. */
static void monitor_command(const char *sock_path, const char *cmd)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	static char buf[65536];
	char line[128];
	size_t have = 0, len;
	double until;
	int fd;

	snprintf(line, sizeof(line), "guest-run: timeout: %s (QEMU monitor):", cmd);
	console_line(line);
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock_path);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		console_line("guest-run: the monitor did not answer");
		if (fd >= 0)
			close(fd);
		return;
	}
	snprintf(line, sizeof(line), "%s\n", cmd);
	len = strlen(line);
	if (write(fd, line, len) != (ssize_t)len)
		console_line("guest-run: could not write to the monitor");
	/* The monitor answers at once; stop reading after 3 s or 1 s of quiet. */
	until = now() + 3;
	while (now() < until) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t r;

		if (poll(&p, 1, 1000) <= 0)
			break;
		r = read(fd, buf + have, sizeof(buf) - 1 - have);
		if (r <= 0)
			break;
		have = feed(buf, have + r, 0, console_line);
		if (have == sizeof(buf) - 1)
			have = feed(buf, have, 1, console_line);
	}
	feed(buf, have, 1, console_line);
	close(fd);
}

/* Copies one small /proc file into the log, each line behind PREFIX. */
static void log_proc_file(const char *path, const char *prefix)
{
	char buf[4096], line[4400];
	size_t have = 0;
	ssize_t r;
	int fd = open(path, O_RDONLY);

	if (fd < 0)
		return;
	while (have < sizeof(buf) - 1 && (r = read(fd, buf + have, sizeof(buf) - 1 - have)) > 0)
		have += r;
	close(fd);
	buf[have] = 0;
	for (char *l = strtok(buf, "\n"); l; l = strtok(NULL, "\n")) {
		snprintf(line, sizeof(line), "%s%s", prefix, l);
		console_line(line);
	}
}

/*
 * What a hung guest was doing: QEMU's run state, every vCPU's registers
 * twice, two seconds apart (a spinning vCPU moves, a stuck one does not),
 * QEMU's view of each local APIC (KVM_GET_LAPIC) and each QEMU thread's
 * state and kernel stack (a vCPU thread asleep in KVM_RUN shows where).
 */
static void dump_state(const char *sock_path, pid_t qemu, int cpus)
{
	char path[320], prefix[300], cmd[32];
	struct dirent *d;
	DIR *dir;

	/* "paused (shutdown)" under -action shutdown=pause: a triple fault. */
	monitor_command(sock_path, "info status");
	monitor_command(sock_path, "info registers -a");
	for (int i = 0; i < cpus; i++) {
		snprintf(cmd, sizeof(cmd), "info lapic %d", i);
		monitor_command(sock_path, cmd);
	}
	snprintf(path, sizeof(path), "/proc/%d/task", (int)qemu);
	dir = opendir(path);
	while (dir && (d = readdir(dir))) {
		if (d->d_name[0] == '.')
			continue;
		snprintf(prefix, sizeof(prefix), "guest-run: thread %s: ", d->d_name);
		snprintf(path, sizeof(path), "/proc/%d/task/%s/comm", (int)qemu, d->d_name);
		log_proc_file(path, prefix);
		snprintf(path, sizeof(path), "/proc/%d/task/%s/stat", (int)qemu, d->d_name);
		log_proc_file(path, prefix);
		snprintf(path, sizeof(path), "/proc/%d/task/%s/stack", (int)qemu, d->d_name);
		log_proc_file(path, prefix);
	}
	if (dir)
		closedir(dir);
	sleep(2);
	monitor_command(sock_path, "info registers -a");
}

int main(int argc, char **argv)
{
	const char *marker = "RKVM-GUEST-USERSPACE-OK", *todo = NULL, *expect[MAX_EXPECT];
	int seen[MAX_EXPECT] = { 0 }, nexpect = 0, num = 1, timeout_s = 120, opt, status = 0;
	int pipefd[2], timed_out = 0, exited = 0, ok, i, cpus = 1;
	double start, marker_at = -1, last_output;
	int quiet_dumped = 0, read_err = 0;
	double closed_at = -1, exited_at = -1;
	char sock_path[108], buf[8192], joined[16384], carry[8192] = "", **qargv;
	size_t have = 0;
	pid_t pid;

	while ((opt = getopt(argc, argv, "n:t:T:m:e:d:q")) != -1) {
		switch (opt) {
		case 'n': num = atoi(optarg); break;
		case 't': name = optarg; break;
		case 'T': timeout_s = atoi(optarg); break;
		case 'm': marker = optarg; break;
		case 'e':
			if (nexpect == MAX_EXPECT)
				return 2;
			expect[nexpect++] = optarg;
			break;
		case 'd': todo = optarg; break;
		case 'q': quiet = 1; break;
		default: return 2;
		}
	}
	if (!name || optind >= argc) {
		fprintf(stderr, "usage: guest-run -n NUM -t NAME [-T S] [-m MARKER] [-e LINE]... [-d TODO] [-q] -- qemu ARGS...\n");
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);

	/* QEMU's arguments plus the monitor socket. */
	snprintf(sock_path, sizeof(sock_path), "/tmp/guest-run-%d.mon", getpid());
	qargv = calloc(argc - optind + 3, sizeof(*qargv));
	if (!qargv)
		return 2;
	for (i = optind; i < argc; i++) {
		qargv[i - optind] = argv[i];
		if (!strcmp(argv[i], "-smp") && i + 1 < argc)
			cpus = atoi(argv[i + 1]);
	}
	qargv[i - optind] = "-monitor";
	if (asprintf(&qargv[i - optind + 1], "unix:%s,server=on,wait=off", sock_path) < 0)
		return 2;

	if (pipe(pipefd))
		return 2;
	start = now();
	last_output = start;
	pid = fork();
	if (pid == 0) {
		dup2(pipefd[1], 1);
		dup2(pipefd[1], 2);
		close(pipefd[0]);
		close(pipefd[1]);
		setpgid(0, 0);
		execvp(qargv[0], qargv);
		fprintf(stderr, "guest-run: exec %s: %s\n", qargv[0], strerror(errno));
		_exit(127);
	}
	close(pipefd[1]);

	for (;;) {
		double left = start + timeout_s - now();
		struct pollfd p = { .fd = pipefd[0], .events = POLLIN };
		ssize_t r;

		if (left <= 0) {
			timed_out = 1;
			break;
		}
		/* A console quiet for QUIET_S: what the guest does, once. */
		if (!quiet_dumped && now() - last_output > QUIET_S) {
			console_line("guest-run: the console has been quiet for " QUIET_STR " s");
			dump_state(sock_path, pid, cpus);
			quiet_dumped = 1;
		}
		if (!quiet_dumped && left > last_output + QUIET_S - now())
			left = last_output + QUIET_S - now() + 0.01;
		if (poll(&p, 1, (int)(left * 1000) + 1) <= 0)
			continue;
		last_output = now();
		r = read(pipefd[0], buf + have, sizeof(buf) - 1 - have);
		if (r <= 0) {
			/* QEMU closed its output: normally, it exited. */
			closed_at = now() - start;
			read_err = r < 0 ? errno : 0;
			break;
		}
		have += r;
		/* Each complete line: the marker, the expected lines, the log. */
		{
			size_t s = 0, j;

			for (j = 0; j < have; j++) {
				if (buf[j] != '\n' && buf[j] != '\r')
					continue;
				buf[j] = 0;
				if (j > s) {
					const char *line = buf + s;
					const char *kmsg;
					int k;

					/*
					 * The kernel's console can cut into a
					 * line /init is writing: the part before
					 * the kernel's "[ seconds]" is carried to
					 * the next line, which continues it.
					 */
					snprintf(joined, sizeof(joined), "%s%s", carry, line);
					carry[0] = 0;
					kmsg = kmsg_inside(joined);
					if (kmsg)
						snprintf(carry, sizeof(carry), "%.*s",
							 (int)(kmsg - joined), joined);
					if (marker_at < 0 && strstr(joined, marker))
						marker_at = now() - start;
					/*
					 * A prefix match holds whatever the kernel
					 * wrote after it; the carried part may also
					 * have been a whole line whose end the
					 * kernel's line took: try the line alone too.
					 */
					for (k = 0; k < nexpect; k++)
						if (!strncmp(joined, expect[k], strlen(expect[k])) ||
						    !strncmp(line, expect[k], strlen(expect[k])))
							seen[k] = 1;
					console_line(line);
				}
				s = j + 1;
			}
			if (have - s == sizeof(buf) - 1) {	/* a line longer than buf */
				buf[have] = 0;
				console_line(buf);
				s = have;
			}
			memmove(buf, buf + s, have - s);
			have -= s;
		}
	}
	if (have) {
		buf[have] = 0;
		console_line(buf);
	}
	if (timed_out)
		dump_state(sock_path, pid, cpus);
	if (timed_out)
		kill(-pid, SIGKILL);	/* its process group: QEMU and its threads */
	if (waitpid(pid, &status, 0) == pid)
		exited = WIFEXITED(status);
	exited_at = now() - start;
	unlink(sock_path);

	ok = !timed_out && marker_at >= 0 && exited && WEXITSTATUS(status) == 0;
	for (i = 0; i < nexpect; i++)
		ok = ok && seen[i];

	if (!ok && quiet) {
		size_t j;

		quiet = 0;
		for (j = 0; j < nheld; j++)
			printf("=== guest-console %s | %s\n", name, held[j]);
	}
	printf("%sok %d %s", ok ? "" : "not ", num, name);
	if (!ok && todo)
		printf(" # TODO %s", todo);
	if (marker_at >= 0)
		printf(" # marker after %.2f s", marker_at);
	printf(" (%.2f s in all)\n", now() - start);
	if (!ok) {
		unsigned long j = nlines > TAIL ? nlines - TAIL : 0;

		if (timed_out)
			printf("# %s: no poweroff within %d s\n", name, timeout_s);
		else if (!exited)
			printf("# %s: QEMU was killed by signal %d\n", name, WTERMSIG(status));
		else
			printf("# %s: QEMU exited %d\n", name, WEXITSTATUS(status));
		/* Output that ends long before QEMU does was lost on the way. */
		if (closed_at >= 0)
			printf("# %s: QEMU's output ended after %.2f s (%s), QEMU after %.2f s\n",
			       name, closed_at, read_err ? strerror(read_err) : "end of file",
			       exited_at);
		if (marker_at < 0)
			printf("# %s: no userspace marker (%s)\n", name, marker);
		for (i = 0; i < nexpect; i++)
			if (!seen[i])
				printf("# %s: missing console line \"%s\"\n", name, expect[i]);
		printf("# %s: the console's last lines (all of it: build/guests/%s.log on the host):\n",
		       name, name);
		for (; j < nlines; j++)
			printf("# tail | %s\n", lines[j % TAIL]);
	}
	return ok ? 0 : 1;
}
