/* SPDX-License-Identifier: MIT */
/* libFuzzer target: configuration files and the kernel command line. Each input is tried as
 * the command line and as the content of a configuration file. `make fuzz` builds and runs it. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "basic/log.h"
#include "config/config.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char path[] = "/tmp/fuzz-config-XXXXXX";

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    log_set_max_level(-1); /* errors for bad input are expected: keep the output readable */
    int fd = mkstemp(path);
    if (fd >= 0)
        close(fd);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    struct config c;
    char *text = malloc(size + 1);
    FILE *f;

    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';

    config_init(&c);
    (void)config_load_cmdline(&c, text);
    config_done(&c);

    f = fopen(path, "w");
    if (f) {
        fwrite(data, 1, size, f);
        fclose(f);
        config_init(&c);
        (void)config_load_file(&c, path);
        config_done(&c);
    }
    free(text);
    return 0;
}
