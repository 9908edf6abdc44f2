/* SPDX-License-Identifier: MIT */
/*
 * The byte-level pieces of the DPS protocol that need no network and no TPM, so they are
 * unit-tested and fuzzed on their own: the authenticationKey blob, SAS token strings,
 * retry-after values and the backoff between attempts. Protocol document sections 1.6, 1.8,
 * 2.1.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <tss2/tss2_tpm2_types.h>

/* The activation blob of section 2.1: fields 1-5 unmarshaled with tpm2-tss, field 6 skipped. */
struct dps_blob {
    TPM2B_ID_OBJECT credential;        /* field 1 */
    TPM2B_ENCRYPTED_SECRET secret;     /* field 2 */
    TPM2B_PRIVATE duplicate;           /* field 3 */
    TPM2B_ENCRYPTED_SECRET seed;       /* field 4 */
    TPM2B_PUBLIC public;               /* field 5: the HMAC key's public area */
    uint16_t field6_size;              /* field 6, length only */
};

/*
 * Parses the base64 text of an authenticationKey (standard alphabet, padding required, no
 * whitespace) into *ret. Every field must unmarshal, the sizes must be consistent, and the
 * input must end exactly after field 6. -EBADMSG otherwise, with a short reason in *ret_why
 * (a static string) when ret_why is not NULL. Never reads past the input.
 */
int dps_blob_parse(const char *base64, struct dps_blob *ret, const char **ret_why);

/*
 * URL-encodes s the way the Azure IoT C SDK does (section 1.6): A-Z a-z 0-9 - _ . ! ( ) * are
 * kept, every other byte becomes %xx with lowercase hex. Returns a malloc'ed string or NULL.
 */
char *dps_url_encode(const char *s);

/* "{idScope}/registrations/{registrationId}", URL-encoded as above: the SAS `sr` value. */
char *dps_sas_resource(const char *id_scope, const char *registration_id);

/* The string the TPM signs: sr + "\n" + decimal expiry. malloc'ed. */
char *dps_sas_string_to_sign(const char *sr, uint64_t expiry);

/*
 * "SharedAccessSignature sr={sr}&sig={urlenc(base64(mac))}&se={expiry}[&skn={key_name}]";
 * key_name NULL leaves skn out (IoT Hub device tokens). malloc'ed.
 */
char *dps_sas_token(const char *sr, const uint8_t *mac, size_t mac_len, uint64_t expiry,
                    const char *key_name);

/*
 * Parses a Retry-After header value: delta-seconds, or an HTTP-date (RFC 9110 IMF-fixdate, and
 * the obsolete RFC 850 and asctime forms) taken relative to `now` (the server's Date header
 * when it had one, else the local clock). Returns seconds to wait, clamped to [min, max];
 * -EINVAL when the value is neither form (the caller then uses its backoff).
 */
int64_t dps_retry_after_parse(const char *value, time_t now, int64_t min, int64_t max);

/* Parses an HTTP-date (the three forms above) into *ret. -EINVAL when it is none of them. */
int dps_http_date_parse(const char *value, time_t *ret);

/*
 * Exponential backoff with full jitter: a uniformly random delay in [0, min(cap, base * 2^n)]
 * milliseconds, n = attempt (0-based). `random` is a value from a uniform source, so tests
 * can pass a fixed one.
 */
uint64_t dps_backoff_ms(unsigned attempt, uint64_t base_ms, uint64_t cap_ms, uint64_t random);

/*
 * The wait after a "later" answer that carried a Retry-After of retry_after_ms: that value as
 * the floor, plus full jitter over a window of 2, 4, then 8 times it for the 1st, 2nd and
 * further consecutive refusals (attempt 0, 1, 2...), and never over cap_ms. Honoured exactly,
 * a Retry-After brings a throttled fleet back in lock step, each device asking once per
 * Retry-After until its turn comes (bench/RESULTS.md, the fleet).
 */
uint64_t dps_retry_after_delay_ms(uint64_t retry_after_ms, unsigned attempt, uint64_t cap_ms,
                                  uint64_t random);
