/* SPDX-License-Identifier: MIT */
/* libFuzzer target: Retry-After and Date header values come from the network (or a proxy).
 * `make fuzz` builds and runs it. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dps/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    time_t t;

    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    int64_t s = dps_retry_after_parse(text, 1796300000, 1, 600);
    if (s != -22 && (s < 1 || s > 600)) /* -EINVAL or within the bounds */
        abort();
    (void)dps_http_date_parse(text, &t);
    free(text);
    return 0;
}
