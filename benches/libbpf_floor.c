// SPDX-License-Identifier: Apache-2.0
/*
 * The start-up floor of `cargo bench --bench bpf`: Debian's libbpf loads and attaches the same
 * objects, the same programs, as netsleuth's loader did in the same run. Bench only: the
 * product never links libbpf. benches/bpf.rs compiles this with `cc ... -lbpf` when
 * libbpf-dev is installed and runs it as
 *
 *     libbpf_floor OBJECT ATTACH LOAD [OBJECT ATTACH LOAD ...]
 *
 * ATTACH: comma-separated programs to load and attach (libbpf's attach by section name);
 * LOAD: programs to load only (netsleuth loaded them but could not attach them here); "-" for
 * none. Every other program of the object is not loaded (its autoload is turned off), like
 * the fallbacks netsleuth's plans did not pick. Prints one line: "libbpf: N objects, A
 * attached, L loaded only, X.X ms", the time from before the first open to after the last
 * attach (vmlinux BTF parsing, which libbpf does per object, included).
 */
#include <bpf/libbpf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int listed(const char *list, const char *name)
{
	size_t n = strlen(name);
	const char *p = list;
	if (strcmp(list, "-") == 0)
		return 0;
	while (*p) {
		const char *e = strchr(p, ',');
		size_t len = e ? (size_t)(e - p) : strlen(p);
		if (len == n && strncmp(p, name, n) == 0)
			return 1;
		if (!e)
			break;
		p = e + 1;
	}
	return 0;
}

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int quiet(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	if (level != LIBBPF_WARN)
		return 0;
	return vfprintf(stderr, fmt, ap);
}

int main(int argc, char **argv)
{
	int objects = 0, attached = 0, loaded = 0;
	if (argc < 4 || (argc - 1) % 3 != 0) {
		fprintf(stderr, "usage: %s OBJECT ATTACH LOAD [...]\n", argv[0]);
		return 2;
	}
	libbpf_set_print(quiet);
	double t0 = now_ms();
	for (int i = 1; i + 2 < argc; i += 3) {
		struct bpf_object *obj = bpf_object__open_file(argv[i], NULL);
		struct bpf_program *prog;
		if (!obj) {
			fprintf(stderr, "libbpf_floor: open %s failed\n", argv[i]);
			return 1;
		}
		bpf_object__for_each_program(prog, obj)
		{
			const char *n = bpf_program__name(prog);
			bpf_program__set_autoload(prog, listed(argv[i + 1], n) || listed(argv[i + 2], n));
		}
		if (bpf_object__load(obj)) {
			fprintf(stderr, "libbpf_floor: load %s failed\n", argv[i]);
			return 1;
		}
		bpf_object__for_each_program(prog, obj)
		{
			const char *n = bpf_program__name(prog);
			if (listed(argv[i + 1], n)) {
				if (!bpf_program__attach(prog)) {
					fprintf(stderr, "libbpf_floor: attach %s in %s failed\n", n, argv[i]);
					return 1;
				}
				attached++;
			} else if (listed(argv[i + 2], n)) {
				loaded++;
			}
		}
		objects++; /* objects and links stay open until exit, like netsleuth's */
	}
	printf("libbpf: %d objects, %d attached, %d loaded only, %.1f ms\n", objects, attached,
	       loaded, now_ms() - t0);
	return 0;
}
