/* SPDX-License-Identifier: MIT */
/* libFuzzer target: every DPS answer body goes through dps_answer_parse (agent/dps/messages.c).
 * `make fuzz` builds and runs it. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dps/messages.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    struct dps_answer a;

    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    if (dps_answer_parse(text, &a) == 0) {
        /* Whatever was accepted is within the documented limits. */
        if ((a.assigned_hub && strlen(a.assigned_hub) > 128) ||
            (a.device_id && strlen(a.device_id) > 128) ||
            (a.authentication_key && strlen(a.authentication_key) > 4096))
            abort();
        dps_answer_done(&a);
    }
    free(text);
    return 0;
}
