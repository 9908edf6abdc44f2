/* SPDX-License-Identifier: MIT */
/* libFuzzer target: the NV state record is read back from the TPM, where anyone with owner
 * authorization (or a torn write) may have left anything. `make fuzz` builds and runs it. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "state/record.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t image[RECORD_INDEX_SIZE] = {0}, again[RECORD_SLOT_SIZE];
    struct record r, r2;
    unsigned slot;

    memcpy(image, data, size < sizeof(image) ? size : sizeof(image));
    if (record_pick(image, &r, &slot) == 0) {
        /* A record that decodes must encode back to a slot that decodes to the same record. */
        if (record_encode(&r, again) != 0 || record_decode(again, &r2) != 0 ||
            memcmp(&r, &r2, sizeof(r)) != 0)
            abort();
    }
    return 0;
}
