/* SPDX-License-Identifier: MIT */
#include "base32.h"

static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz234567";

size_t base32_encoded_len(size_t n) {
    return (n * 8 + 4) / 5;
}

size_t base32_encode_lower(const uint8_t *data, size_t n, char *out) {
    size_t len = 0;
    unsigned buffer = 0;
    int bits = 0;

    for (size_t i = 0; i < n; i++) {
        buffer = (buffer << 8) | data[i];
        bits += 8;
        while (bits >= 5) {
            out[len++] = alphabet[(buffer >> (bits - 5)) & 0x1f];
            bits -= 5;
        }
    }
    if (bits > 0)
        out[len++] = alphabet[(buffer << (5 - bits)) & 0x1f];
    out[len] = '\0';
    return len;
}
