/* The lipar command-line tool: dispatches to subcommands. */
#include <stdio.h>
#include <string.h>

#include "check.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: lipar <command> [options]\n"
            "commands:\n"
            "  check FILE       run a golden file's component and compare its outputs\n"
            "run 'lipar <command> --help' for a command's options\n");
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "check")) return lp_check_main(argc - 2, argv + 2);
    fprintf(stderr, "lipar: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
