/* SPDX-License-Identifier: MIT */
/*
 * DPS request bodies and answers as JSON (protocol document 1.4, 1.5, 1.7-1.9, 1.11). Pure:
 * unit-tested and fuzzed without a network. Every field taken from an answer is checked for
 * type and length before it is used.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

/* The register PUT body: registrationId, tpm {endorsementKey, storageRootKey}, payload.
 * payload_json is the custom allocation payload as JSON text, or NULL. malloc'ed, NULL on a
 * payload that is not JSON (-EINVAL in *ret_error). */
char *dps_register_body(const char *registration_id, const char *ek_base64,
                        const char *srk_base64, const char *payload_json, int *ret_error);

/* authenticationKey's text: no more than a whole answer (64 KiB, dps/http.h); the blob's own
 * parser (dps/wire.h) bounds each field, field 6 up to 65535 bytes. */
#define DPS_KEY_TEXT_MAX (64 * 1024)

enum dps_status {
    DPS_STATUS_UNKNOWN = 0,
    DPS_STATUS_UNASSIGNED,
    DPS_STATUS_ASSIGNING,
    DPS_STATUS_ASSIGNED,
    DPS_STATUS_FAILED,
    DPS_STATUS_DISABLED,
};

struct dps_answer {
    enum dps_status status;
    char *operation_id;
    char *authentication_key;  /* 401 challenge, or registrationState.tpm on assignment */
    char *key_name;            /* 401 challenge */
    char *assigned_hub;
    char *device_id;
    char *substatus;
    int64_t error_code;        /* errorCode at the top or in registrationState, 0 if none */
    char *error_message;
};

/*
 * Parses any DPS answer body. Unknown fields are ignored; a field of the wrong type, a string
 * over its limit (hub 128, device ID 128, operation ID 256, key DPS_KEY_TEXT_MAX, message 1024) or a body
 * that is not a JSON object gives -EBADMSG. Never fails for a missing field: callers check
 * what they need.
 */
int dps_answer_parse(const char *body, struct dps_answer *ret);
void dps_answer_done(struct dps_answer *a);

const char *dps_status_to_string(enum dps_status s);

/* What an assignment may name, checked before either goes into the state record, a SAS
 * resource or the hand-off file. A hub is a DNS host name (letters, digits, '-' inside
 * labels, dots between them, at most 128 bytes); a device ID is what IoT Hub accepts: 1-128
 * ASCII letters, digits and - : . + % _ # * ? ! ( ) , = @ ; $ ' */
bool dps_hub_name_valid(const char *hub);
bool dps_device_id_valid(const char *device_id);
