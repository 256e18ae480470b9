/* The lipar command-line tool: dispatches to subcommands. */
#include <stdio.h>
#include <string.h>

#include "check.h"

int lp_info_main(int argc, char **argv); /* tools/info.c */
int lp_edit_main(int argc, char **argv); /* tools/edit.c */
int lp_encode_prompt_main(int argc, char **argv); /* tools/encode_prompt.c */

int lp_tokenize_check_main(int argc, char **argv); /* tools/tokenize_check.c */
int lp_tokenize_main(int argc, char **argv);       /* tools/tokenize_check.c */

static void usage(FILE *out) {
    fprintf(out,
            "usage: lipar <command> [options]\n"
            "commands:\n"
            "  edit INPUT -p PROMPT -o OUTPUT   edit a video (lipar edit --help)\n"
            "  encode-prompt --text-encoder F --tokenizer F PROMPT -o OUT   cache a prompt's embedding\n"
            "  check FILE       run a golden file's component and compare its outputs\n"
            "  info FILE... [--tensors]   describe weight/data files (format, dtypes, component, config)\n"
            "  tokenize-check MODEL.model CASES.json   compare tokenizer ids/pieces with a golden file\n"
            "  tokenize MODEL.model TEXT               print the ids and pieces of TEXT\n"
            "run 'lipar <command> --help' for a command's options\n");
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "edit")) return lp_edit_main(argc - 2, argv + 2);
    if (!strcmp(argv[1], "encode-prompt")) return lp_encode_prompt_main(argc - 2, argv + 2);
    if (!strcmp(argv[1], "check")) return lp_check_main(argc - 2, argv + 2);
    if (!strcmp(argv[1], "info")) return lp_info_main(argc - 2, argv + 2);
    if (!strcmp(argv[1], "tokenize-check")) return lp_tokenize_check_main(argc - 2, argv + 2);
    if (!strcmp(argv[1], "tokenize")) return lp_tokenize_main(argc - 2, argv + 2);
    fprintf(stderr, "lipar: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
