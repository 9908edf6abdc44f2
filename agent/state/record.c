/* SPDX-License-Identifier: MIT */
#include "record.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <string.h>

/* Slot layout (all integers big-endian):
 *   0  u32 magic "TPPS"       4  u8 version   5  u8 reserved (0)
 *   6  u16 payload length L   8  u32 sequence
 *  12  payload (L bytes)      12+L  SHA-256 over bytes 0 .. 12+L-1
 * The rest of the slot is zero. Payload, version 1:
 *   u8 state, u8 flags, u32 identity handle, u64 changed_at, i32 dps_error,
 *   str8 id_scope, str8 registration_id, str8 hub, str8 device_id, str8 identity_name
 * where str8 is a u8 length followed by that many bytes. */
#define HEADER_SIZE 12
#define DIGEST_SIZE SHA256_DIGEST_LENGTH

_Static_assert(HEADER_SIZE + 1 + 1 + 4 + 8 + 4 + (1 + RECORD_ID_SCOPE_MAX) +
                       (1 + RECORD_REGISTRATION_ID_MAX) + (1 + RECORD_HUB_MAX) +
                       (1 + RECORD_DEVICE_ID_MAX) + (1 + RECORD_NAME_MAX) + DIGEST_SIZE <=
                   RECORD_SLOT_SIZE,
               "the largest record must fit one slot");

const char *record_state_to_string(uint8_t state) {
    switch (state) {
    case RECORD_OWNED: return "owned";
    case RECORD_ASSIGNED: return "assigned";
    case RECORD_DISABLED: return "disabled";
    case RECORD_FAILED: return "failed";
    default: return "unknown";
    }
}

struct writer {
    uint8_t *buf;
    size_t pos, size;
    bool overflow;
};

static void put(struct writer *w, const void *p, size_t n) {
    if (w->overflow || w->pos + n > w->size) {
        w->overflow = true;
        return;
    }
    memcpy(w->buf + w->pos, p, n);
    w->pos += n;
}

static void put_be(struct writer *w, uint64_t v, size_t n) {
    uint8_t b[8];

    for (size_t i = 0; i < n; i++)
        b[i] = (uint8_t)(v >> (8 * (n - 1 - i)));
    put(w, b, n);
}

static int put_str8(struct writer *w, const void *s, size_t len, size_t max) {
    if (len > max)
        return -E2BIG;
    put_be(w, len, 1);
    put(w, s, len);
    return 0;
}

int record_encode(const struct record *r, uint8_t slot[RECORD_SLOT_SIZE]) {
    struct writer w = {.buf = slot, .size = RECORD_SLOT_SIZE - DIGEST_SIZE};
    int e = 0;

    memset(slot, 0, RECORD_SLOT_SIZE);
    put_be(&w, RECORD_MAGIC, 4);
    put_be(&w, RECORD_VERSION, 1);
    put_be(&w, 0, 1);
    put_be(&w, 0, 2); /* payload length, filled in below */
    put_be(&w, r->sequence, 4);

    put_be(&w, r->state, 1);
    put_be(&w, r->flags, 1);
    put_be(&w, r->identity_handle, 4);
    put_be(&w, r->changed_at, 8);
    put_be(&w, (uint32_t)r->dps_error, 4);
    e |= put_str8(&w, r->id_scope, strlen(r->id_scope), RECORD_ID_SCOPE_MAX);
    e |= put_str8(&w, r->registration_id, strlen(r->registration_id), RECORD_REGISTRATION_ID_MAX);
    e |= put_str8(&w, r->hub, strlen(r->hub), RECORD_HUB_MAX);
    e |= put_str8(&w, r->device_id, strlen(r->device_id), RECORD_DEVICE_ID_MAX);
    e |= put_str8(&w, r->identity_name, r->identity_name_size, RECORD_NAME_MAX);
    if (e || w.overflow)
        return -E2BIG;

    size_t payload = w.pos - HEADER_SIZE;
    slot[6] = (uint8_t)(payload >> 8);
    slot[7] = (uint8_t)payload;
    SHA256(slot, w.pos, slot + w.pos);
    return 0;
}

struct reader {
    const uint8_t *buf;
    size_t pos, size;
    bool bad;
};

static uint64_t get_be(struct reader *rd, size_t n) {
    uint64_t v = 0;

    if (rd->bad || rd->pos + n > rd->size) {
        rd->bad = true;
        return 0;
    }
    for (size_t i = 0; i < n; i++)
        v = (v << 8) | rd->buf[rd->pos + i];
    rd->pos += n;
    return v;
}

/* Copies a str8 into dst (max bytes plus a NUL when text). Text may not contain NUL. */
static void get_str8(struct reader *rd, void *dst, size_t max, bool text, uint8_t *ret_len) {
    size_t len = (size_t)get_be(rd, 1);

    if (rd->bad || len > max || rd->pos + len > rd->size) {
        rd->bad = true;
        return;
    }
    if (text && memchr(rd->buf + rd->pos, 0, len)) {
        rd->bad = true;
        return;
    }
    memcpy(dst, rd->buf + rd->pos, len);
    if (text)
        ((char *)dst)[len] = '\0';
    if (ret_len)
        *ret_len = (uint8_t)len;
    rd->pos += len;
}

static bool all_equal(const uint8_t *p, size_t n, uint8_t v) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != v)
            return false;
    return true;
}

int record_decode(const uint8_t slot[RECORD_SLOT_SIZE], struct record *ret) {
    struct reader rd = {.buf = slot, .size = RECORD_SLOT_SIZE};
    uint8_t digest[DIGEST_SIZE];
    struct record r = {0};

    /* A slot never written reads as zeros or 0xff depending on the TPM. */
    if (all_equal(slot, RECORD_SLOT_SIZE, 0) || all_equal(slot, RECORD_SLOT_SIZE, 0xff))
        return -ENODATA;
    if (get_be(&rd, 4) != RECORD_MAGIC)
        return -EBADMSG;
    unsigned version = (unsigned)get_be(&rd, 1);
    (void)get_be(&rd, 1);
    size_t payload = (size_t)get_be(&rd, 2);
    if (HEADER_SIZE + payload + DIGEST_SIZE > RECORD_SLOT_SIZE)
        return -EBADMSG;

    /* The checksum comes first: a torn write may leave any byte in any state. */
    SHA256(slot, HEADER_SIZE + payload, digest);
    if (CRYPTO_memcmp(digest, slot + HEADER_SIZE + payload, DIGEST_SIZE) != 0)
        return -EBADMSG;
    if (version > RECORD_VERSION)
        return -EPROTONOSUPPORT;
    if (version < 1)
        return -EBADMSG;

    r.sequence = (uint32_t)get_be(&rd, 4);
    rd.size = HEADER_SIZE + payload;
    r.state = (uint8_t)get_be(&rd, 1);
    r.flags = (uint8_t)get_be(&rd, 1);
    r.identity_handle = (uint32_t)get_be(&rd, 4);
    r.changed_at = get_be(&rd, 8);
    r.dps_error = (int32_t)(uint32_t)get_be(&rd, 4);
    get_str8(&rd, r.id_scope, RECORD_ID_SCOPE_MAX, true, NULL);
    get_str8(&rd, r.registration_id, RECORD_REGISTRATION_ID_MAX, true, NULL);
    get_str8(&rd, r.hub, RECORD_HUB_MAX, true, NULL);
    get_str8(&rd, r.device_id, RECORD_DEVICE_ID_MAX, true, NULL);
    get_str8(&rd, r.identity_name, RECORD_NAME_MAX, false, &r.identity_name_size);
    /* A record of this version has exactly these fields; trailing bytes mean damage. */
    if (rd.bad || rd.pos != rd.size)
        return -EBADMSG;
    if (r.state < RECORD_OWNED || r.state > RECORD_FAILED)
        return -EBADMSG;

    *ret = r;
    return 0;
}

/* Serial-number arithmetic (RFC 1982), so the sequence may wrap after 2^32 writes. */
static bool sequence_newer(uint32_t a, uint32_t b) {
    return (int32_t)(a - b) > 0;
}

int record_pick(const uint8_t image[RECORD_INDEX_SIZE], struct record *ret, unsigned *ret_slot) {
    struct record best = {0}, r;
    int best_slot = -1, worst = -ENODATA;

    for (unsigned i = 0; i < RECORD_SLOTS; i++) {
        int k = record_decode(image + i * RECORD_SLOT_SIZE, &r);
        if (k == -EPROTONOSUPPORT)
            return k;
        if (k < 0) {
            if (k == -EBADMSG)
                worst = k;
            continue;
        }
        if (best_slot < 0 || sequence_newer(r.sequence, best.sequence)) {
            best = r;
            best_slot = (int)i;
        }
    }
    if (best_slot < 0)
        return worst;

    *ret = best;
    if (ret_slot)
        *ret_slot = (unsigned)best_slot;
    return 0;
}

unsigned record_next_slot(int current_slot) {
    return current_slot < 0 ? 0 : (unsigned)(current_slot + 1) % RECORD_SLOTS;
}
