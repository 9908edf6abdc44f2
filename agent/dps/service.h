/* SPDX-License-Identifier: MIT */
/*
 * The DPS service API, manufacturing side (protocol document section 6): a shared access
 * policy's connection string, the service SAS token it signs, individual enrollments with TPM
 * attestation and bulk operations. The policy key is a plain secret in memory: it is wiped
 * when the connection string is done with, and never logged.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dps/http.h"

#define DPS_SERVICE_API_VERSION "2021-10-01"
#define DPS_SERVICE_KEY_MAX 64
#define DPS_BULK_MAX 10 /* enrollments per bulk operation (section 6.2) */

struct dps_connection_string {
    char *host_name; /* lowercased */
    char *key_name;
    uint8_t key[DPS_SERVICE_KEY_MAX]; /* base64-decoded SharedAccessKey */
    size_t key_len;
};

/*
 * Parses "HostName=H;SharedAccessKeyName=N;SharedAccessKey=K" (keys in any order and any
 * case, spaces around fields, an empty field or a trailing ';' allowed; other keys ignored).
 * HostName must be a DNS name, K strict base64 of 1-64 bytes. -EINVAL with a reason in
 * *ret_why that never quotes the key. On failure nothing is left in *ret.
 */
int dps_connection_string_parse(const char *text, struct dps_connection_string *ret,
                                const char **ret_why);

/* Wipes the key and frees the strings. Safe on a zeroed struct and twice. */
void dps_connection_string_done(struct dps_connection_string *c);

/*
 * "SharedAccessSignature sr={host}&sig={urlenc(b64(HMAC-SHA256(key, sr + "\n" + se)))}
 * &se={expiry}&skn={policy}", sr being the lowercase URL-encoded host name (section 6).
 * malloc'ed; NULL on ENOMEM.
 */
char *dps_service_sas(const struct dps_connection_string *c, uint64_t expiry);

/* One IndividualEnrollment with TPM attestation (section 6.1); NULL fields are left out. */
struct dps_enrollment {
    const char *registration_id;
    const char *endorsement_key; /* base64 TPM2B_PUBLIC */
    const char *device_id;
    const char *provisioning_status; /* "enabled" or "disabled" */
    const char *allocation_policy;   /* "hashed", "geoLatency", "static" */
    const char *const *iot_hubs;
    size_t n_iot_hubs;
    const char *initial_twin_json; /* a JSON object's text */
};

/*
 * {"mode": mode, "enrollments": [...]} for 1..DPS_BULK_MAX rows. malloc'ed; NULL with *ret_error
 * set (-EINVAL for a bad count or initial twin, -ENOMEM).
 */
char *dps_bulk_body(const char *mode, const struct dps_enrollment *rows, size_t n,
                    int *ret_error);

/* A bulk operation's result (section 6.2): the rows that failed. */
struct dps_bulk_error {
    char *registration_id;
    int64_t code;
    char *status;
};
struct dps_bulk_result {
    bool successful;
    struct dps_bulk_error *errors;
    size_t n_errors;
};

/* Parses a 200 answer to a bulk operation. -EBADMSG for anything else. */
int dps_bulk_result_parse(const char *body, struct dps_bulk_result *ret);
void dps_bulk_result_done(struct dps_bulk_result *r);

/* The errorCode and message of an error answer (either may be absent: 0 / NULL). */
void dps_service_error_parse(const char *body, int64_t *ret_code, char **ret_message);

/* attestation.tpm.endorsementKey of an IndividualEnrollment answer, malloc'ed, or NULL. */
char *dps_enrollment_ek(const char *body);

/* A client: one HTTPS connection to endpoint (NULL: https://{HostName}). */
struct dps_service;

/* Takes over *cs (left zeroed). */
int dps_service_new(struct dps_connection_string *cs, const char *endpoint,
                    const struct http_options *ho, struct dps_service **ret);
void dps_service_free(struct dps_service *s);
const char *dps_service_host(const struct dps_service *s);
const char *dps_service_endpoint(const struct dps_service *s);
const char *dps_service_key_name(const struct dps_service *s);

/*
 * Sends method endpoint+path?api-version=... with a fresh token (valid for an hour). Returns
 * what http_request() returns; on 0, *ret holds the answer of any status.
 */
int dps_service_request(struct dps_service *s, const char *method, const char *path,
                        const char *body, struct http_response *ret);

static inline void dps_service_freep(struct dps_service **s) {
    dps_service_free(*s);
}
