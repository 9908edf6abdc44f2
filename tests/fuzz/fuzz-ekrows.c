/* SPDX-License-Identifier: MIT */
/* libFuzzer target: the manufacturing lists enroll reads come from line stations and TPM
 * makers. Every input must parse or be refused without a crash, and a row that checks must
 * write out to a line that reads back as the same row. `make fuzz` builds and runs it. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mfg/ekrows.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int same(const char *a, const char *b) {
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static void roundtrip(const struct ekrow *row) {
    for (int f = EKROWS_FORMAT_CSV; f <= EKROWS_FORMAT_JSON; f++) {
        char *line = ekrows_format_row(row, (enum ekrows_format)f), *text;
        struct ekrows back;
        size_t len;

        if (!line)
            abort();
        len = strlen(line) + (f == EKROWS_FORMAT_CSV ? strlen(ekrows_csv_header) : 0);
        text = malloc(len + 1);
        strcpy(text, f == EKROWS_FORMAT_CSV ? ekrows_csv_header : "");
        strcat(text, line);
        if (ekrows_parse(text, len, &back, NULL) != 0 || back.n_rows != 1 ||
            ekrows_check_row(&back.rows[0]) != 0 ||
            strcmp(back.rows[0].effective_id, row->effective_id) != 0 ||
            !same(back.rows[0].device_serial, row->device_serial) ||
            !same(back.rows[0].endorsement_key, row->endorsement_key))
            abort();
        ekrows_done(&back);
        free(text);
        free(line);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    struct ekrows l, *lists[1] = {&l};
    const char *names[1] = {"fuzz"};

    if (ekrows_parse((const char *)data, size, &l, NULL) != 0)
        return 0;
    for (size_t i = 0; i < l.n_rows; i++)
        if (ekrows_check_row(&l.rows[i]) == 0)
            roundtrip(&l.rows[i]);
    ekrows_mark_duplicates(lists, names, 1, 0);
    ekrows_done(&l);
    return 0;
}
