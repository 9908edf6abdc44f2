/* SPDX-License-Identifier: MIT */
/*
 * The DPS wire helpers: the authenticationKey blob (protocol document 2.1), SAS strings (1.6),
 * Retry-After (1.8, 1.11; field case B23) and backoff. Expected values come from the protocol
 * document, from Python (hmac, base64, calendar) or are built here with tpm2-tss's marshalers,
 * never from the code under test.
 */
/* cmocka.h needs these first. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <errno.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <tss2/tss2_mu.h>

#include "basic/macro.h"
#include "dps/wire.h"

/* ---- blob ---------------------------------------------------------------------------------- */

/*
 * A fixed test vector from the DPS emulator's own code (tests/emulator/dps_tpm2.py, written from
 * the protocol document without sharing code with the agent), produced once with:
 *
 *   cd tests/emulator && python3 -c 'import base64, dps_tpm2 as t
 *   ek = t.parse_rsa_public(t.software_rsa_public("ek"))
 *   srk = t.parse_rsa_public(t.software_rsa_public("srk"))
 *   print(base64.b64encode(t.build_authentication_key(ek, srk, bytes(range(32)), 150)).decode())'
 *
 * 948 bytes: fields of 54, 258, 144, 258, 82 and 2 + 150. The SHA-256 of each marshaled field
 * below came from t.split_authentication_key on the same bytes. Also in tests/fuzz/corpus/blob/.
 */
static const char emulator_vector[] =
    "ADQAIBZ69ZsgdKKcC7GYT/GVOVplnM0JB1n4/+lrp7Ytglpq+ssvZm3ciXYeUORicrY7arwrAQBTvjqM+IxhiKcB6eCF"
    "P00uTJEWU2TFa4IeBsVtD2K3IxKP3HISEw1ESXEz3KHiwaySTiE+RuboWyiHNd9I/uJW9R3T/JALnJ1VMFcSiXhdkp1b"
    "eDdohar4D6WVS4jnKWgBsv7fOMFg/AIO0EDS8TUi4KJAagnAJjovarJ0e4uclU43sCe1FQ1TqloT5A7ulk1tHUM5deIq"
    "7myw4ShKECZEC2xCiCGHeSI6LByuDdfbbAgN3wgaWeu7gqT9OmgEOHbcpsCDPp0CI//kJ7A3JZwsRtNqqUtW7EPgNYI0"
    "4Ua5Tee9WRWr4CEYVJv9JcLrlRtxV8k+d5U/lAWcsS8rOLiUAI4AIBVEQ+pZSzcmQDKHddYTOlisvgMnto4AgKexs2yf"
    "exQG5+z1ThlWSfPrXO/nH2Ow+P/ANMpVgkosld0fm0yjmk2/opDU1O2JyVVBylLyIcvIFxA1Co6EV2X2Wu4k6Vf1ZVCp"
    "9nGLmiJvgtAoLv1lvQhHGcWG7kop0oSPWj0cmz2Zs//4vAvXHVC0MVhvAQACuu8prb5mIoMzsWKfc5yEN5v4HpgqFTwt"
    "AjXgEjPJjv+iDFrslWzwOoxU4hwKnIAGl6KymESgP4IWniWf7DLIgN51AQiCChDgXohQxfy0Ubrg2FkvmeEqOGptZdTT"
    "/WJ6QhsY/M9LqdD/eYVchWziksRWFjRXKMddKhsDutuAmbymZs/VEkuFTz8LduwkzfXptyhRaLbnwO43MHApOEuXc9jd"
    "ETlWJLCgjkmCqNmeUzJsRbtyJ/tv76GSoPQl9EV8k0jYA9lje4MRCB9Q1ZKZ49r1fCM5snQuBfiKtsg7WCFMsig2/Eb4"
    "BngMnfEv9+WlEfPoSSdTT3nAQ1+B9JehAFAACAALAAQEQAAgvvVrjBzIThHt1xdSjSzZk1a9K7+PAVIJw/hK7quo6KIA"
    "BQALACDWa994sQ6VnD7pBOB9uruEisAy+3s7Y41Aopj7fh5wrACWvX0NDE20bdioNTSL2z40VSuyY2KcN337jBwgsYmp"
    "cKYS8HLuw0a5LgbnQvf+LvH0fsFZhEp/pF1gR2WgahOJoEStnINtYXhir9UxZp6l8XNCVNgo88pct/iEQNTd1n5UvjF5"
    "lgw2C70CaWdE9kVe56xN2OlvqBnjJdlx+JiFrT6+6xjRExQLmdWCG8KrLXlhpVmrWDNH";

static const char *const emulator_field_sha256[5] = {
    "817f686661247f1e50ba54cc0db3e52c406d516e2b19355c03c7eb8707d57de0",
    "56a1d00df3d4fd2d3c7d1b800af7d6b5625fcfa34d900ec32fbb9f12af23802d",
    "47ed9b400d8a0bdd0bf2b72a9c62d696d8004c7441329dd2f3035267ab282bf8",
    "df177c6cb39957161a6b792f1d78710d531479881c3205ca3e3d4315508fe28d",
    "ffce53d96cbd1fcd9205d8f40c4c509c684f0f4586d1810a829c5f3e76045508",
};
/* Field 5 of the vector, from the same Python run: the section 3.4 HMAC key public area. */
static const char emulator_field5_hex[] =
    "00500008000b000404400020bef56b8c1cc84e11edd717528d2cd99356bd2bbf8f015209c3f84aeeaba8e8a2"
    "0005000b0020d66bdf78b10e959c3ee904e07dbabb848ac032fb7b3b638d40a298fb7e1e70ac";

/* Large enough for any blob built here (field 6 up to 65535 bytes). */
#define BLOB_BUF 70000

static size_t unhex(const char *hex, uint8_t *out) {
    size_t n = strlen(hex) / 2;

    for (size_t i = 0; i < n; i++) {
        unsigned v;
        assert_int_equal(sscanf(hex + 2 * i, "%2x", &v), 1);
        out[i] = (uint8_t)v;
    }
    return n;
}

static void sha256_hex(const uint8_t *data, size_t len, char out[65]) {
    uint8_t digest[SHA256_DIGEST_LENGTH];

    SHA256(data, len, digest);
    for (size_t i = 0; i < sizeof(digest); i++)
        sprintf(out + 2 * i, "%02x", digest[i]);
}

static char *b64(const uint8_t *data, size_t len) {
    char *out = malloc((len + 2) / 3 * 4 + 1);

    assert_non_null(out);
    assert_int_equal(EVP_EncodeBlock((unsigned char *)out, data, (int)len), (len + 2) / 3 * 4);
    return out;
}

/* The section 3.4 public area of the HMAC key DPS sends: 80 bytes marshaled. */
static TPM2B_PUBLIC hmac_key_public(void) {
    TPM2B_PUBLIC pub = {0};
    TPMT_PUBLIC *p = &pub.publicArea;

    p->type = TPM2_ALG_KEYEDHASH;
    p->nameAlg = TPM2_ALG_SHA256;
    p->objectAttributes = 0x00040440;
    p->authPolicy.size = 32;
    memset(p->authPolicy.buffer, 0xbe, 32);
    p->parameters.keyedHashDetail.scheme.scheme = TPM2_ALG_HMAC;
    p->parameters.keyedHashDetail.scheme.details.hmac.hashAlg = TPM2_ALG_SHA256;
    p->unique.keyedHash.size = 32;
    memset(p->unique.keyedHash.buffer, 0x55, 32);
    return pub;
}

/* Known contents of the five fields, each byte pattern distinct so a shifted field shows. */
static struct dps_blob known_fields(void) {
    struct dps_blob b = {0};

    b.credential.size = 52; /* u16 32 ‖ integrityHMAC(32) ‖ encIdentity(18) */
    b.credential.credential[1] = 32;
    memset(b.credential.credential + 2, 0x11, 50);
    b.secret.size = 256;
    memset(b.secret.secret, 0x22, 256);
    b.duplicate.size = 142; /* u16 32 ‖ outerHMAC(32) ‖ dupSensitive(108) */
    b.duplicate.buffer[1] = 32;
    memset(b.duplicate.buffer + 2, 0x33, 140);
    b.seed.size = 256;
    memset(b.seed.secret, 0x44, 256);
    b.public = hmac_key_public();
    return b;
}

/* Marshals the fields of *b and a field 6 of field6_len bytes, as section 2.1 lays them out. */
static size_t build_blob(const struct dps_blob *b, uint16_t field6_len, uint8_t *out) {
    size_t off = 0;

    assert_int_equal(Tss2_MU_TPM2B_ID_OBJECT_Marshal(&b->credential, out, BLOB_BUF, &off), 0);
    assert_int_equal(off, 54);
    assert_int_equal(Tss2_MU_TPM2B_ENCRYPTED_SECRET_Marshal(&b->secret, out, BLOB_BUF, &off), 0);
    assert_int_equal(off, 54 + 258);
    assert_int_equal(Tss2_MU_TPM2B_PRIVATE_Marshal(&b->duplicate, out, BLOB_BUF, &off), 0);
    assert_int_equal(off, 54 + 258 + 144);
    assert_int_equal(Tss2_MU_TPM2B_ENCRYPTED_SECRET_Marshal(&b->seed, out, BLOB_BUF, &off), 0);
    assert_int_equal(off, 54 + 258 + 144 + 258);
    assert_int_equal(Tss2_MU_TPM2B_PUBLIC_Marshal(&b->public, out, BLOB_BUF, &off), 0);
    assert_int_equal(off, 54 + 258 + 144 + 258 + 82);
    assert_int_equal(Tss2_MU_UINT16_Marshal(field6_len, out, BLOB_BUF, &off), 0);
    memset(out + off, 0x66, field6_len);
    off += field6_len;
    assert_int_equal(off, 798 + (size_t)field6_len); /* section 2.1: total 798 + N */
    return off;
}

/* Offsets of the size prefixes in a built blob (section 2.1 typical sizes). */
enum {
    OFF_F1 = 0,
    OFF_F2 = 54,
    OFF_F3 = 54 + 258,
    OFF_F4 = 54 + 258 + 144,
    OFF_F5 = 54 + 258 + 144 + 258,
    OFF_F6 = 54 + 258 + 144 + 258 + 82,
};

static void put_u16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

/* Parses raw bytes after base64-encoding them; checks a failure leaves *ret untouched. */
static int parse_bytes(const uint8_t *data, size_t len, struct dps_blob *ret, const char **why) {
    _cleanup_free_ char *text = b64(data, len);
    return dps_blob_parse(text, ret, why);
}

static void assert_refused_bytes(const uint8_t *data, size_t len) {
    struct dps_blob out, untouched;
    const char *why = NULL;

    memset(&out, 0xa5, sizeof(out));
    memcpy(&untouched, &out, sizeof(out));
    assert_int_equal(parse_bytes(data, len, &out, &why), -EBADMSG);
    assert_non_null(why);
    assert_memory_equal(&out, &untouched, sizeof(out));
}

static void assert_refused_text(const char *text, const char *why_contains) {
    struct dps_blob out, untouched;
    const char *why = NULL;

    memset(&out, 0xa5, sizeof(out));
    memcpy(&untouched, &out, sizeof(out));
    assert_int_equal(dps_blob_parse(text, &out, &why), -EBADMSG);
    assert_non_null(why);
    if (why_contains && !strstr(why, why_contains))
        fail_msg("reason \"%s\" does not mention \"%s\"", why, why_contains);
    assert_memory_equal(&out, &untouched, sizeof(out));
    /* ret_why is optional. */
    assert_int_equal(dps_blob_parse(text, &out, NULL), -EBADMSG);
}

static void assert_fields_equal(const struct dps_blob *a, const struct dps_blob *b) {
    assert_int_equal(a->credential.size, b->credential.size);
    assert_memory_equal(a->credential.credential, b->credential.credential, a->credential.size);
    assert_int_equal(a->secret.size, b->secret.size);
    assert_memory_equal(a->secret.secret, b->secret.secret, a->secret.size);
    assert_int_equal(a->duplicate.size, b->duplicate.size);
    assert_memory_equal(a->duplicate.buffer, b->duplicate.buffer, a->duplicate.size);
    assert_int_equal(a->seed.size, b->seed.size);
    assert_memory_equal(a->seed.secret, b->seed.secret, a->seed.size);
    assert_int_equal(a->public.size, 80);
    assert_memory_equal(&a->public.publicArea, &b->public.publicArea, sizeof(TPMT_PUBLIC));
}

static void test_blob_valid_with_empty_and_150_byte_field6(void **state) {
    static uint8_t buf[BLOB_BUF];
    const uint16_t sizes[] = {0, 150, 1, UINT16_MAX};
    struct dps_blob in = known_fields(), out;
    (void)state;

    for (size_t i = 0; i < ARRAY_SIZE(sizes); i++) {
        size_t len = build_blob(&in, sizes[i], buf);
        const char *why = "unset";

        memset(&out, 0xa5, sizeof(out));
        assert_int_equal(parse_bytes(buf, len, &out, &why), 0);
        assert_fields_equal(&out, &in);
        assert_int_equal(out.field6_size, sizes[i]);
        assert_int_equal(out.public.publicArea.type, TPM2_ALG_KEYEDHASH);
        assert_int_equal(out.public.publicArea.objectAttributes, 0x00040440);
    }
}

static void test_blob_emulator_vector(void **state) {
    uint8_t buf[1024], field5[82];
    struct dps_blob out;
    char hex[65];
    (void)state;

    assert_int_equal(strlen(emulator_vector), 1264);
    assert_int_equal(dps_blob_parse(emulator_vector, &out, NULL), 0);
    assert_int_equal(out.credential.size, 52);
    assert_int_equal(out.secret.size, 256);
    assert_int_equal(out.duplicate.size, 142);
    assert_int_equal(out.seed.size, 256);
    assert_int_equal(out.public.size, 80);
    assert_int_equal(out.field6_size, 150);

    /* Each field marshaled back by tpm2-tss hashes to what Python's splitter saw. */
    for (int f = 0; f < 5; f++) {
        size_t off = 0;
        TSS2_RC rc;
        switch (f) {
        case 0:
            rc = Tss2_MU_TPM2B_ID_OBJECT_Marshal(&out.credential, buf, sizeof(buf), &off);
            break;
        case 1:
            rc = Tss2_MU_TPM2B_ENCRYPTED_SECRET_Marshal(&out.secret, buf, sizeof(buf), &off);
            break;
        case 2: rc = Tss2_MU_TPM2B_PRIVATE_Marshal(&out.duplicate, buf, sizeof(buf), &off); break;
        case 3:
            rc = Tss2_MU_TPM2B_ENCRYPTED_SECRET_Marshal(&out.seed, buf, sizeof(buf), &off);
            break;
        default: rc = Tss2_MU_TPM2B_PUBLIC_Marshal(&out.public, buf, sizeof(buf), &off); break;
        }
        assert_int_equal(rc, 0);
        sha256_hex(buf, off, hex);
        assert_string_equal(hex, emulator_field_sha256[f]);
    }

    /* The public area, field by field, against the section 3.4 template. */
    assert_int_equal(unhex(emulator_field5_hex, field5), 82);
    const TPMT_PUBLIC *p = &out.public.publicArea;
    assert_int_equal(p->type, TPM2_ALG_KEYEDHASH);
    assert_int_equal(p->nameAlg, TPM2_ALG_SHA256);
    assert_int_equal(p->objectAttributes, 0x00040440);
    assert_int_equal(p->authPolicy.size, 32);
    assert_memory_equal(p->authPolicy.buffer, field5 + 12, 32);
    assert_int_equal(p->parameters.keyedHashDetail.scheme.scheme, TPM2_ALG_HMAC);
    assert_int_equal(p->parameters.keyedHashDetail.scheme.details.hmac.hashAlg, TPM2_ALG_SHA256);
    assert_int_equal(p->unique.keyedHash.size, 32);
    assert_memory_equal(p->unique.keyedHash.buffer, field5 + 50, 32);
}

static void test_blob_truncated_at_every_byte(void **state) {
    static uint8_t buf[BLOB_BUF];
    struct dps_blob in = known_fields();
    (void)state;

    for (int n6 = 0; n6 <= 150; n6 += 150) {
        size_t len = build_blob(&in, (uint16_t)n6, buf);
        for (size_t cut = 0; cut < len; cut++)
            assert_refused_bytes(buf, cut);
    }
}

static void test_blob_trailing_byte(void **state) {
    static uint8_t buf[BLOB_BUF];
    struct dps_blob in = known_fields();
    (void)state;

    for (int n6 = 0; n6 <= 150; n6 += 150) {
        size_t len = build_blob(&in, (uint16_t)n6, buf);
        buf[len] = 0x00;
        assert_refused_bytes(buf, len + 1);
    }
}

static void test_blob_field6_longer_than_rest(void **state) {
    static uint8_t buf[BLOB_BUF];
    struct dps_blob in = known_fields(), out;
    const char *why = NULL;
    (void)state;

    size_t len = build_blob(&in, 150, buf);
    put_u16(buf + OFF_F6, 151);
    assert_int_equal(parse_bytes(buf, len, &out, &why), -EBADMSG);
    assert_non_null(strstr(why, "field 6"));
    put_u16(buf + OFF_F6, 149); /* one byte left over */
    assert_refused_bytes(buf, len);
    put_u16(buf + OFF_F6, UINT16_MAX);
    assert_refused_bytes(buf, len);
}

/* A size prefix changed in place: more than the input holds, more than the type holds, or not
 * the size of what follows. */
static void test_blob_size_prefix_overruns(void **state) {
    static uint8_t good[BLOB_BUF], buf[BLOB_BUF];
    struct dps_blob in = known_fields();
    const struct {
        size_t at;
        uint16_t size;
    } cases[] = {
        {OFF_F1, UINT16_MAX}, /* beyond the input */
        {OFF_F1, 53},         /* swallows a byte of field 2 */
        {OFF_F1, 0},          /* empty */
        {OFF_F1 + 2, 51},     /* integrityHMAC longer than field 1 */
        {OFF_F1 + 2, 50},     /* integrityHMAC leaving no encIdentity */
        {OFF_F2, 257},        {OFF_F2, 0},
        {OFF_F3, 143},        {OFF_F3 + 2, 141}, /* outerHMAC longer than field 3 */
        {OFF_F4, 255},        {OFF_F4, 0},
        {OFF_F5, 81}, /* TPMT_PUBLIC of 80 bytes under a prefix of 81 */
        {OFF_F5, 79}, /* and of 79: the public area would run into field 6 */
        {OFF_F5, 0},          {OFF_F5, UINT16_MAX},
    };
    (void)state;

    size_t len = build_blob(&in, 150, good);
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        memcpy(buf, good, len);
        put_u16(buf + cases[i].at, cases[i].size);
        assert_refused_bytes(buf, len);
    }

    /* Larger than TPM2B_ENCRYPTED_SECRET can hold, with enough bytes after it: the type's own
     * limit, not the input's length, refuses it. */
    size_t grown = 0;
    memcpy(buf, good, OFF_F2);
    grown = OFF_F2;
    put_u16(buf + grown, sizeof(TPMU_ENCRYPTED_SECRET) + 1);
    grown += 2;
    memset(buf + grown, 0x22, sizeof(TPMU_ENCRYPTED_SECRET) + 1);
    grown += sizeof(TPMU_ENCRYPTED_SECRET) + 1;
    memcpy(buf + grown, good + OFF_F3, len - OFF_F3);
    assert_refused_bytes(buf, grown + len - OFF_F3);
}

/*
 * A field emptied to its u16 0 with everything after it intact. An empty field 5 matters most:
 * tpm2-tss 3.2.1 reports success for a TPM2B_PUBLIC of size 0 (see wire.c).
 */
static void test_blob_empty_fields(void **state) {
    static uint8_t good[BLOB_BUF], buf[BLOB_BUF];
    struct dps_blob in = known_fields();
    const size_t at[] = {OFF_F1, OFF_F2, OFF_F3, OFF_F4, OFF_F5, OFF_F6};
    (void)state;

    size_t len = build_blob(&in, 150, good);
    for (size_t i = 0; i + 1 < ARRAY_SIZE(at); i++) {
        memcpy(buf, good, at[i]);
        put_u16(buf + at[i], 0);
        memcpy(buf + at[i] + 2, good + at[i + 1], len - at[i + 1]);
        assert_refused_bytes(buf, at[i] + 2 + len - at[i + 1]);
    }
}

/* The public area itself is garbage, with a correct size prefix. */
static void test_blob_bad_public_area(void **state) {
    static uint8_t good[BLOB_BUF], buf[BLOB_BUF];
    struct dps_blob in = known_fields();
    (void)state;

    size_t len = build_blob(&in, 150, good);
    memcpy(buf, good, len);
    put_u16(buf + OFF_F5 + 2, 0x7777); /* type: no such algorithm */
    assert_refused_bytes(buf, len);
    memcpy(buf, good, len);
    put_u16(buf + OFF_F5 + 2 + 2 + 2 + 4, 33); /* authPolicy longer than its place */
    assert_refused_bytes(buf, len);
}

static void test_blob_invalid_base64(void **state) {
    static uint8_t raw[BLOB_BUF];
    struct dps_blob in = known_fields();
    (void)state;

    size_t len = build_blob(&in, 0, raw); /* 798 bytes: no padding */
    _cleanup_free_ char *text = b64(raw, len);
    _cleanup_free_ char *padded1 = b64(raw, len - 1); /* 797 bytes: one "=" */
    char *bad;

    assert_refused_text("", "empty");
    assert_refused_text("QQ==", NULL); /* valid base64, one byte: not a blob */
    assert_refused_text("QR==", "padding bits");
    assert_refused_text("QUI=", NULL); /* valid base64, two bytes */
    assert_refused_text("QUJ=", "padding bits");
    assert_refused_text("Q===", NULL);
    assert_refused_text("QQ=", NULL);
    assert_refused_text("QQ", NULL);
    assert_refused_text("====", NULL);
    assert_refused_text("QQ==QQ==", "alphabet");
    assert_int_equal(padded1[strlen(padded1) - 1], '=');

    bad = strdup(text);
    assert_non_null(bad);
    bad[10] = '*';
    assert_refused_text(bad, "alphabet");
    bad[10] = '-'; /* URL-safe alphabet */
    assert_refused_text(bad, "alphabet");
    free(bad);

    /* Embedded line break and spaces, as a wrapped value would carry them: four extra
     * characters keep the length a multiple of 4, so the alphabet check must refuse it. */
    assert_true(asprintf(&bad, "%.76s\n   %s", text, text + 76) > 0);
    assert_refused_text(bad, "alphabet");
    free(bad);
    assert_true(asprintf(&bad, "%.76s\r\n  %s", text, text + 76) > 0);
    assert_refused_text(bad, "alphabet");
    free(bad);

    /* Surrounding whitespace, which OpenSSL alone would skip. */
    assert_true(asprintf(&bad, "    %s", text) > 0);
    assert_refused_text(bad, "alphabet");
    free(bad);
    assert_true(asprintf(&bad, "%s\n\n\n\n", text) > 0);
    assert_refused_text(bad, "alphabet");
    free(bad);

    /* A single newline at the end: the length is then no multiple of 4. */
    assert_true(asprintf(&bad, "%s\n", text) > 0);
    assert_refused_text(bad, "multiple of 4");
    free(bad);

    /* Padding removed from a blob whose length needs it. */
    struct dps_blob out;
    padded1[strlen(padded1) - 1] = '\0';
    assert_int_equal(dps_blob_parse(padded1, &out, NULL), -EBADMSG);

    /* And the unmodified text does parse, so the refusals above are about the changes. */
    assert_int_equal(dps_blob_parse(text, &out, NULL), 0);
}

static void test_blob_huge_input_refused(void **state) {
    size_t n = 4 * 1024 * 1024;
    _cleanup_free_ char *big = malloc(n + 1);
    (void)state;

    memset(big, 'A', n);
    big[n] = '\0';
    assert_refused_text(big, "longer");
    assert_int_equal(dps_blob_parse(NULL, &(struct dps_blob){0}, NULL), -EBADMSG);
}

/* ---- SAS ----------------------------------------------------------------------------------- */

/* The C SDK's kept set (protocol document 1.6), written out: 26 + 26 + 10 + 7 characters. */
static const char url_kept[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.!()*";

static void test_url_encode_every_byte(void **state) {
    char all[256], expected[256 * 3 + 1] = "", one[2] = {0}, esc[4];
    int kept = 0;
    (void)state;

    assert_int_equal(strlen(url_kept), 69);
    for (int c = 1; c < 256; c++) {
        all[c - 1] = (char)c;
        one[0] = (char)c;
        if (memchr(url_kept, c, sizeof(url_kept) - 1)) {
            snprintf(esc, sizeof(esc), "%c", c);
            kept++;
        } else
            snprintf(esc, sizeof(esc), "%%%02x", c); /* lowercase hex */
        _cleanup_free_ char *enc = dps_url_encode(one);
        assert_non_null(enc);
        assert_string_equal(enc, esc);
        strcat(expected, esc);
    }
    all[255] = '\0';
    assert_int_equal(kept, 69);

    _cleanup_free_ char *enc = dps_url_encode(all);
    assert_string_equal(enc, expected);
    assert_int_equal(strlen(enc), 69 + (255 - 69) * 3);

    _cleanup_free_ char *empty = dps_url_encode("");
    assert_string_equal(empty, "");
    assert_null(dps_url_encode(NULL));

    _cleanup_free_ char *slash = dps_url_encode("a/b+c=d~e f%");
    assert_string_equal(slash, "a%2fb%2bc%3dd%7ee%20f%25");
}

static void test_sas_resource(void **state) {
    _cleanup_free_ char *sr =
        dps_sas_resource("0ne00000001", "6rek5qncnygnkzflohxz4u6zlfly6ktm4klsc7xrbgvesqyllnfa");
    (void)state;

    assert_string_equal(
        sr, "0ne00000001%2fregistrations%2f6rek5qncnygnkzflohxz4u6zlfly6ktm4klsc7xrbgvesqyllnfa");

    /* Case is kept (protocol document 1.6: R is not lowercased). */
    _cleanup_free_ char *upper = dps_sas_resource("0NE00ABC", "Device-1");
    assert_string_equal(upper, "0NE00ABC%2fregistrations%2fDevice-1");

    assert_null(dps_sas_resource(NULL, "x"));
    assert_null(dps_sas_resource("x", NULL));
}

static void test_sas_string_to_sign(void **state) {
    (void)state;

    _cleanup_free_ char *s = dps_sas_string_to_sign("0ne00000001%2fregistrations%2fx", 1700000000);
    assert_string_equal(s, "0ne00000001%2fregistrations%2fx\n1700000000");

    _cleanup_free_ char *big = dps_sas_string_to_sign("r", UINT64_MAX);
    assert_string_equal(big, "r\n18446744073709551615");

    _cleanup_free_ char *zero = dps_sas_string_to_sign("", 0);
    assert_string_equal(zero, "\n0");
    assert_null(dps_sas_string_to_sign(NULL, 1));
}

/*
 * A MAC whose base64 is easy to write by hand: fb ef be → 111110 111110 111110 111110 = "++++",
 * ff ff ff = "////", 24 zero bytes = 32 'A', and the last two bytes fb f0 → 111110 111111
 * 0000(00) = "+/A" plus one '='.
 */
static const uint8_t hand_mac[32] = {0xfb, 0xef, 0xbe, 0xff, 0xff, 0xff, [30] = 0xfb, 0xf0};
#define HAND_SIG                                                                                   \
    "%2b%2b%2b%2b%2f%2f%2f%2f"                                                                     \
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"                                                             \
    "%2b%2fA%3d"
#define SR "0ne00000001%2fregistrations%2f6rek5qncnygnkzflohxz4u6zlfly6ktm4klsc7xrbgvesqyllnfa"

static void test_sas_token_hand_mac(void **state) {
    (void)state;

    _cleanup_free_ char *t =
        dps_sas_token(SR, hand_mac, sizeof(hand_mac), 1700000000, "registration");
    assert_string_equal(t, "SharedAccessSignature sr=" SR "&sig=" HAND_SIG
                           "&se=1700000000&skn=registration");

    /* IoT Hub device tokens carry no skn. */
    _cleanup_free_ char *hub = dps_sas_token(SR, hand_mac, sizeof(hand_mac), 1700000000, NULL);
    assert_string_equal(hub, "SharedAccessSignature sr=" SR "&sig=" HAND_SIG "&se=1700000000");

    assert_null(dps_sas_token(NULL, hand_mac, 32, 1, NULL));
    assert_null(dps_sas_token(SR, NULL, 32, 1, NULL));
    assert_null(dps_sas_token(SR, hand_mac, 0, 1, NULL));
    assert_null(dps_sas_token(SR, hand_mac, sizeof(TPMU_HA) + 1, 1, NULL));
}

/*
 * End to end with a software HMAC, against Python:
 *   key = bytes(range(32)); sr = SR; se = 1700000000
 *   mac = hmac.new(key, (sr + "\n" + str(se)).encode(), hashlib.sha256).digest()
 *   -> 5979473041f932d418f088db2685c1f0342833dfff3e04f30a397b7f0b8f9ea7
 *   sig = base64.b64encode(mac) with + / = replaced by %2b %2f %3d
 */
static void test_sas_token_hmac_sha256_vector(void **state) {
    uint8_t key[32], mac[EVP_MAX_MD_SIZE];
    unsigned mac_len = 0;
    (void)state;

    for (int i = 0; i < 32; i++)
        key[i] = (uint8_t)i;
    _cleanup_free_ char *sr =
        dps_sas_resource("0ne00000001", "6rek5qncnygnkzflohxz4u6zlfly6ktm4klsc7xrbgvesqyllnfa");
    _cleanup_free_ char *sts = dps_sas_string_to_sign(sr, 1700000000);
    assert_non_null(
        HMAC(EVP_sha256(), key, sizeof(key), (const uint8_t *)sts, strlen(sts), mac, &mac_len));
    assert_int_equal(mac_len, 32);

    _cleanup_free_ char *t = dps_sas_token(sr, mac, mac_len, 1700000000, "registration");
    assert_string_equal(t, "SharedAccessSignature sr=" SR
                           "&sig=WXlHMEH5MtQY8IjbJoXB8DQoM9%2f%2fPgTzCjl7fwuPnqc%3d"
                           "&se=1700000000&skn=registration");
}

/* ---- Retry-After (field case B23) ---------------------------------------------------------- */

/* Sun, 06 Nov 1994 08:49:37 GMT (Python: calendar.timegm((1994, 11, 6, 8, 49, 37))). */
#define T1994 ((time_t)784111777)

static void test_retry_after_delta_seconds(void **state) {
    (void)state;

    assert_int_equal(dps_retry_after_parse("3", T1994, 1, 300), 3);
    assert_int_equal(dps_retry_after_parse("0", T1994, 1, 300), 1); /* below min */
    assert_int_equal(dps_retry_after_parse("120", T1994, 1, 60), 60);
    assert_int_equal(dps_retry_after_parse("60", T1994, 1, 60), 60);
    assert_int_equal(dps_retry_after_parse("007", T1994, 1, 60), 7);
    /* Surrounding OWS is tolerated (RFC 9110 section 5.5), and a left-over CR LF. */
    assert_int_equal(dps_retry_after_parse(" 5", T1994, 1, 60), 5);
    assert_int_equal(dps_retry_after_parse("5 \t", T1994, 1, 60), 5);
    assert_int_equal(dps_retry_after_parse("\t5\r\n", T1994, 1, 60), 5);
    /* Too large to represent: the largest value (RFC 9111 section 1.2.2), then max. */
    assert_int_equal(dps_retry_after_parse("99999999999999999999", T1994, 1, 300), 300);
    assert_int_equal(dps_retry_after_parse("9223372036854775807", T1994, 1, 300), 300);
    assert_int_equal(dps_retry_after_parse("9223372036854775808", T1994, 1, 300), 300);
    assert_int_equal(dps_retry_after_parse("9223372036854775806", T1994, 0, INT64_MAX),
                     INT64_MAX - 1);
    assert_int_equal(dps_retry_after_parse("99999999999999999999", T1994, 0, INT64_MAX), INT64_MAX);
}

static void test_retry_after_invalid(void **state) {
    const char *bad[] = {"",    " ",   "-1",  "+5",  "abc",          "5 5", "5s", "0x10",
                         "1e3", "3.5", "5,6", "\v5", "\xef\xbc\x95", "1 0", "\n"};
    (void)state;

    for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
        if (dps_retry_after_parse(bad[i], T1994, 1, 300) != -EINVAL)
            fail_msg("\"%s\" was accepted", bad[i]);
    assert_int_equal(dps_retry_after_parse(NULL, T1994, 1, 300), -EINVAL);
}

static void test_retry_after_http_dates(void **state) {
    (void)state;

    /* 10 s after now, in all three forms. */
    assert_int_equal(dps_retry_after_parse("Sun, 06 Nov 1994 08:49:47 GMT", T1994, 1, 300), 10);
    assert_int_equal(dps_retry_after_parse("Sunday, 06-Nov-94 08:49:47 GMT", T1994, 1, 300), 10);
    assert_int_equal(dps_retry_after_parse("Sun Nov  6 08:49:47 1994", T1994, 1, 300), 10);
    assert_int_equal(dps_retry_after_parse(" Sun, 06 Nov 1994 08:49:47 GMT ", T1994, 1, 300), 10);
    /* Now, and in the past: min. */
    assert_int_equal(dps_retry_after_parse("Sun, 06 Nov 1994 08:49:37 GMT", T1994, 1, 300), 1);
    assert_int_equal(dps_retry_after_parse("Sun, 06 Nov 1994 08:49:36 GMT", T1994, 2, 300), 2);
    assert_int_equal(dps_retry_after_parse("Thu, 01 Jan 1970 00:00:00 GMT", T1994, 1, 300), 1);
    /* Far ahead: max. */
    assert_int_equal(dps_retry_after_parse("Fri, 31 Dec 9999 23:59:59 GMT", T1994, 1, 300), 300);
    /* An hour ahead, unclamped. */
    assert_int_equal(dps_retry_after_parse("Sun, 06 Nov 1994 09:49:37 GMT", T1994, 0, 86400), 3600);

    /* RFC 850 two-digit years, relative to now = 1994 (RFC 9110 section 5.6.7): 30 is 2030
     * (Python: calendar.timegm((2030, 1, 1, 0, 0, 0)) = 1893456000); 50 would be more than 50
     * years ahead, so it is 1950, in the past. */
    assert_int_equal(dps_retry_after_parse("Tuesday, 01-Jan-30 00:00:00 GMT", T1994, 0, INT64_MAX),
                     1893456000 - 784111777);
    assert_int_equal(dps_retry_after_parse("Sunday, 01-Jan-50 00:00:00 GMT", T1994, 7, INT64_MAX),
                     7);
    assert_int_equal(dps_retry_after_parse("Friday, 01-Jan-44 00:00:00 GMT", T1994, 0, INT64_MAX),
                     (int64_t)2335219200 - 784111777); /* 2044: exactly 50 years is not "more" */
}

static void test_http_date_forms(void **state) {
    time_t t;
    (void)state;

    assert_int_equal(dps_http_date_parse("Sun, 06 Nov 1994 08:49:37 GMT", &t), 0);
    assert_int_equal(t, T1994);
    assert_int_equal(dps_http_date_parse("Sunday, 06-Nov-94 08:49:37 GMT", &t), 0);
    assert_int_equal(t, T1994);
    assert_int_equal(dps_http_date_parse("Sun Nov  6 08:49:37 1994", &t), 0);
    assert_int_equal(t, T1994);
    assert_int_equal(dps_http_date_parse("Sun Nov 06 08:49:37 1994", &t), 0); /* 2DIGIT day */
    assert_int_equal(t, T1994);
    /* The weekday is not checked against the date. */
    assert_int_equal(dps_http_date_parse("Mon, 06 Nov 1994 08:49:37 GMT", &t), 0);
    assert_int_equal(t, T1994);
    /* Leap day, and a leap second folded into the next minute (Python: 825552000 is
     * 1996-02-29, 1483228800 is 2017-01-01). */
    assert_int_equal(dps_http_date_parse("Thu, 29 Feb 1996 00:00:00 GMT", &t), 0);
    assert_int_equal(t, 825552000);
    assert_int_equal(dps_http_date_parse("Sat, 31 Dec 2016 23:59:60 GMT", &t), 0);
    assert_int_equal(t, 1483228800);
    assert_int_equal(dps_http_date_parse("Tue, 29 Feb 2000 00:00:00 GMT", &t), 0);
}

static void test_http_date_invalid(void **state) {
    const char *bad[] = {
        "",
        "Sun, 06 Nov 1994 08:49:37",      /* no GMT */
        "Sun, 06 Nov 1994 08:49:37 UTC",  /* only GMT */
        "Sun, 06 Nov 1994 08:49:37 GMTx", /* trailing bytes */
        "sun, 06 nov 1994 08:49:37 GMT",  /* names are case-sensitive */
        "Sun, 6 Nov 1994 08:49:37 GMT",   /* IMF-fixdate needs 2DIGIT */
        "Sun,  06 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 94 08:49:37 GMT",
        "Sun, 06 Nov 1994 8:49:37 GMT",
        "Sun, 31 Feb 1994 08:49:37 GMT",
        "Sun, 00 Nov 1994 08:49:37 GMT",
        "Sun, 31 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 24:00:00 GMT",
        "Sun, 06 Nov 1994 08:60:00 GMT",
        "Sun, 06 Nov 1994 08:49:61 GMT",
        "Mon, 29 Feb 1900 00:00:00 GMT", /* 1900 is no leap year */
        "Thu, 29 Feb 1996",
        "Xyz, 06 Nov 1994 08:49:37 GMT",
        "Sun, 06 Foo 1994 08:49:37 GMT",
        "Sun, 06-Nov-94 08:49:37 GMT",      /* RFC 850 needs the long day name */
        "Sunday, 06 Nov 1994 08:49:37 GMT", /* and IMF-fixdate the short one */
        "Sunday, 06-Nov-1994 08:49:37 GMT",
        "Sun Nov 6 08:49:37 1994", /* asctime: SP DIGIT or 2DIGIT */
        "Sun Nov  6 08:49:37 94",
        "Sun Nov  6 08:49:37 1994 GMT",
        "1994-11-06T08:49:37Z",
        "784111777x",
    };
    time_t t = 12345;
    (void)state;

    for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
        if (dps_http_date_parse(bad[i], &t) != -EINVAL)
            fail_msg("\"%s\" was accepted", bad[i]);
    assert_int_equal(t, 12345);
    assert_int_equal(dps_http_date_parse(NULL, &t), -EINVAL);
    assert_int_equal(dps_retry_after_parse("Sun, 31 Feb 1994 08:49:37 GMT", T1994, 1, 300),
                     -EINVAL);
}

/* ---- backoff ------------------------------------------------------------------------------- */

/* min(cap, base * 2^n), by repeated saturating doubling rather than a shift. */
static uint64_t expected_ceiling(unsigned n, uint64_t base, uint64_t cap) {
    uint64_t c = base > cap ? cap : base;

    for (unsigned i = 0; i < n && c < cap; i++)
        c = c > cap / 2 ? cap : c * 2;
    return c;
}

static uint64_t lcg(uint64_t *s) {
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return *s;
}

static void test_retry_after_delay_floor_and_window(void **state) {
    const uint64_t cap = 5 * 60 * 1000;
    const uint64_t windows[] = {2000, 4000, 8000, 8000, 8000, 8000};
    uint64_t seed = 7;
    (void)state;

    /* Retry-After 1 s: never earlier than the server asked, the window above it 2, 4, then
     * 8 times the value, both ends reachable. */
    for (unsigned n = 0; n < ARRAY_SIZE(windows); n++) {
        assert_int_equal(dps_retry_after_delay_ms(1000, n, cap, 0), 1000);
        assert_int_equal(dps_retry_after_delay_ms(1000, n, cap, windows[n]), 1000 + windows[n]);
        assert_int_equal(dps_retry_after_delay_ms(1000, n, cap, windows[n] + 1), 1000);
        uint64_t lo = UINT64_MAX, hi = 0;
        for (int i = 0; i < 2000; i++) {
            uint64_t d = dps_retry_after_delay_ms(1000, n, cap, lcg(&seed));
            assert_true(d >= 1000 && d <= 1000 + windows[n]);
            lo = d < lo ? d : lo;
            hi = d > hi ? d : hi;
        }
        /* Spread over the window, not stuck at one value (what makes a fleet fall apart). */
        assert_true(lo < 1000 + windows[n] / 10 && hi > 1000 + windows[n] * 9 / 10);
    }
    /* The window scales with the server's value, and the cap bounds it. */
    assert_int_equal(dps_retry_after_delay_ms(10000, 0, cap, 20000), 30000);
    assert_int_equal(dps_retry_after_delay_ms(10000, 5, cap, 80000), 90000);
    assert_int_equal(dps_retry_after_delay_ms(600000, 5, cap, cap), 600000 + cap);
    assert_int_equal(dps_retry_after_delay_ms(600000, 5, cap, cap + 1), 600000);
    assert_int_equal(dps_retry_after_delay_ms(1000, UINT32_MAX, cap, 8000), 9000);
}

static void test_backoff_bounds_and_growth(void **state) {
    const uint64_t base = 500, cap = 60000;
    uint64_t seed = 42, previous = 0;
    bool reached_cap = false;
    (void)state;

    for (unsigned n = 0; n <= 20; n++) {
        uint64_t ceiling = expected_ceiling(n, base, cap);

        /* The range is [0, ceiling], both ends reachable. */
        assert_int_equal(dps_backoff_ms(n, base, cap, ceiling), ceiling);
        assert_int_equal(dps_backoff_ms(n, base, cap, ceiling + 1), 0);
        assert_int_equal(dps_backoff_ms(n, base, cap, 0), 0);
        for (int i = 0; i < 1000; i++) {
            uint64_t d = dps_backoff_ms(n, base, cap, lcg(&seed));
            assert_true(d <= cap);
            assert_true(d <= base << n);
        }
        /* The ceiling doubles until it reaches the cap, then stays there. */
        if (n > 0 && !reached_cap)
            assert_true(ceiling == previous * 2 || ceiling == cap);
        if (reached_cap)
            assert_int_equal(ceiling, cap);
        reached_cap = ceiling == cap;
        previous = ceiling;
    }
    assert_true(reached_cap);
    assert_int_equal(expected_ceiling(6, base, cap), 32000);
    assert_int_equal(expected_ceiling(7, base, cap), 60000);
}

static void test_backoff_no_overflow(void **state) {
    const unsigned attempts[] = {62, 63, 64, 65, 127, 1000, UINT32_MAX};
    (void)state;

    for (size_t i = 0; i < ARRAY_SIZE(attempts); i++) {
        assert_int_equal(dps_backoff_ms(attempts[i], 500, 60000, 60000), 60000);
        assert_int_equal(dps_backoff_ms(attempts[i], 500, 60000, UINT64_MAX), UINT64_MAX % 60001);
        assert_int_equal(dps_backoff_ms(attempts[i], 0, 60000, 12345), 0);
    }
    /* No cap to speak of: 2^63 is still representable, 2^64 is not and saturates. */
    assert_true(dps_backoff_ms(63, 1, UINT64_MAX, UINT64_MAX) == (UINT64_MAX % ((1ULL << 63) + 1)));
    assert_true(dps_backoff_ms(63, 1, UINT64_MAX, 1ULL << 63) == 1ULL << 63);
    assert_true(dps_backoff_ms(64, 1, UINT64_MAX, UINT64_MAX) == UINT64_MAX);
    assert_true(dps_backoff_ms(1, UINT64_MAX, UINT64_MAX, 77) == 77);
    assert_true(dps_backoff_ms(0, UINT64_MAX, UINT64_MAX, UINT64_MAX) == UINT64_MAX);
    /* A cap below base. */
    assert_int_equal(dps_backoff_ms(0, 1000, 10, 10), 10);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_blob_valid_with_empty_and_150_byte_field6),
        cmocka_unit_test(test_blob_emulator_vector),
        cmocka_unit_test(test_blob_truncated_at_every_byte),
        cmocka_unit_test(test_blob_trailing_byte),
        cmocka_unit_test(test_blob_field6_longer_than_rest),
        cmocka_unit_test(test_blob_size_prefix_overruns),
        cmocka_unit_test(test_blob_empty_fields),
        cmocka_unit_test(test_blob_bad_public_area),
        cmocka_unit_test(test_blob_invalid_base64),
        cmocka_unit_test(test_blob_huge_input_refused),
        cmocka_unit_test(test_url_encode_every_byte),
        cmocka_unit_test(test_sas_resource),
        cmocka_unit_test(test_sas_string_to_sign),
        cmocka_unit_test(test_sas_token_hand_mac),
        cmocka_unit_test(test_sas_token_hmac_sha256_vector),
        cmocka_unit_test(test_retry_after_delta_seconds),
        cmocka_unit_test(test_retry_after_invalid),
        cmocka_unit_test(test_retry_after_http_dates),
        cmocka_unit_test(test_http_date_forms),
        cmocka_unit_test(test_http_date_invalid),
        cmocka_unit_test(test_retry_after_delay_floor_and_window),
        cmocka_unit_test(test_backoff_bounds_and_growth),
        cmocka_unit_test(test_backoff_no_overflow),
    };

    /* The tss marshalers warn on stderr about every truncated input fed to them here. */
    setenv("TSS2_LOG", "all+NONE", 1);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
