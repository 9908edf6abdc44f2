/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for dps_blob_parse: the authenticationKey blob comes from the network
 * (protocol document 2.1). Each input is tried twice: as the base64 text itself, and as raw
 * blob bytes that are base64-encoded first, so that mutations also reach the unmarshaling
 * behind the strict base64 check. The seed corpus holds the emulator's vector in both forms.
 *
 * Build and run from the top of the tree (Debian 12: clang-14, libclang-rt-14-dev):
 *
 *   mkdir -p build/fuzz/blob
 *   clang -g -O1 -std=gnu11 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined -Iagent \
 *       $(pkg-config --cflags tss2-mu libcrypto) tests/fuzz/fuzz-blob.c agent/dps/wire.c \
 *       $(pkg-config --libs tss2-mu libcrypto) -o build/fuzz-blob
 *   build/fuzz-blob -max_total_time=30 build/fuzz/blob tests/fuzz/corpus/blob
 *
 * The first directory collects new inputs; the checked-in seeds stay as they are.
 */
#include <openssl/evp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dps/wire.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    /* tpm2-tss logs a warning for every truncated structure; the fuzzer makes many. */
    setenv("TSS2_LOG", "all+NONE", 1);
    return 0;
}

/* A blob the parser accepted must account for every input byte (section 2.1: six TPM2Bs). */
static void check_accepted(const struct dps_blob *b, size_t len) {
    size_t sum = 2 + (size_t)b->credential.size + 2 + (size_t)b->secret.size + 2 +
                 (size_t)b->duplicate.size + 2 + (size_t)b->seed.size + 2 + (size_t)b->public.size +
                 2 + (size_t)b->field6_size;

    if (sum != len)
        abort();
}

/* What an accepted text decodes to: three bytes per four characters, less one per '='. */
static size_t decoded_len(const char *text) {
    size_t len = strlen(text), pad = 0;

    while (pad < len && text[len - 1 - pad] == '=')
        pad++;
    return len / 4 * 3 - pad;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    struct dps_blob blob;
    const char *why;
    char *text;

    if (size > 256 * 1024)
        return 0;

    /* The input as text, up to its first NUL like any C string from a JSON parser. */
    text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    if (dps_blob_parse(text, &blob, &why) == 0)
        check_accepted(&blob, decoded_len(text));
    free(text);

    /* The input as the decoded blob. */
    text = malloc((size + 2) / 3 * 4 + 1);
    if (!text)
        return 0;
    EVP_EncodeBlock((unsigned char *)text, data, (int)size);
    if (dps_blob_parse(text, &blob, &why) == 0)
        check_accepted(&blob, size);
    free(text);
    return 0;
}
