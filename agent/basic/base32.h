/* SPDX-License-Identifier: MIT */
#pragma once

#include <stddef.h>
#include <stdint.h>

/*
 * RFC 4648 base32 with the lowercase alphabet and no '=' padding, as DPS registration IDs use
 * (protocol document section 4). Writes a NUL-terminated string into out, which must hold
 * base32_encoded_len(n) + 1 bytes. Returns the string length.
 */
size_t base32_encoded_len(size_t n);
size_t base32_encode_lower(const uint8_t *data, size_t n, char *out);
