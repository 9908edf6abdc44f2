/* SPDX-License-Identifier: MIT */
#include "messages.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>

char *dps_register_body(const char *registration_id, const char *ek_base64,
                        const char *srk_base64, const char *payload_json, int *ret_error) {
    json_object *body, *tpm, *payload = NULL;
    char *text;

    *ret_error = 0;
    if (payload_json) {
        enum json_tokener_error jerr;
        payload = json_tokener_parse_verbose(payload_json, &jerr);
        /* "null" parses to NULL without an error: accept it as no payload. */
        if (!payload && jerr != json_tokener_success) {
            *ret_error = -EINVAL;
            return NULL;
        }
    }

    body = json_object_new_object();
    json_object_object_add(body, "registrationId", json_object_new_string(registration_id));
    tpm = json_object_new_object();
    json_object_object_add(tpm, "endorsementKey", json_object_new_string(ek_base64));
    json_object_object_add(tpm, "storageRootKey", json_object_new_string(srk_base64));
    json_object_object_add(body, "tpm", tpm);
    /* The payload goes in as a JSON value, not as a string (protocol document 1.4). */
    if (payload)
        json_object_object_add(body, "payload", payload);

    text = strdup(json_object_to_json_string_ext(body, JSON_C_TO_STRING_PLAIN |
                                                           JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(body);
    if (!text)
        *ret_error = -ENOMEM;
    return text;
}

static const struct { const char *name; enum dps_status status; } statuses[] = {
    {"unassigned", DPS_STATUS_UNASSIGNED}, {"assigning", DPS_STATUS_ASSIGNING},
    {"assigned", DPS_STATUS_ASSIGNED},     {"failed", DPS_STATUS_FAILED},
    {"disabled", DPS_STATUS_DISABLED},
    {"blacklisted", DPS_STATUS_DISABLED}, /* the old name, still mapped by the C SDK */
};

const char *dps_status_to_string(enum dps_status s) {
    for (size_t i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++)
        if (statuses[i].status == s)
            return statuses[i].name;
    return "unknown";
}

/* Copies a string member; -EBADMSG for a non-string or an over-long one; absent is fine. */
static int take_string(json_object *o, const char *key, size_t max, char **ret) {
    json_object *v;

    if (!o || !json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null))
        return 0;
    if (!json_object_is_type(v, json_type_string))
        return -EBADMSG;
    size_t len = (size_t)json_object_get_string_len(v);
    const char *s = json_object_get_string(v);
    if (len > max || memchr(s, '\0', len))
        return -EBADMSG;
    free(*ret);
    *ret = strndup(s, len);
    return *ret ? 0 : -ENOMEM;
}

static int take_int(json_object *o, const char *key, int64_t *ret) {
    json_object *v;

    if (!o || !json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null))
        return 0;
    if (!json_object_is_type(v, json_type_int))
        return -EBADMSG;
    *ret = json_object_get_int64(v);
    return 0;
}

static json_object *member_object(json_object *o, const char *key, int *error) {
    json_object *v;

    if (!o || !json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null))
        return NULL;
    if (!json_object_is_type(v, json_type_object)) {
        *error = -EBADMSG;
        return NULL;
    }
    return v;
}

int dps_answer_parse(const char *body, struct dps_answer *ret) {
    struct dps_answer a = {0};
    _Bool top_key = 0;
    json_object *root, *state, *tpm, *state_tpm;
    char *status = NULL, *state_status = NULL;
    int e = 0;

    root = json_tokener_parse(body);
    if (!root || !json_object_is_type(root, json_type_object)) {
        json_object_put(root);
        return -EBADMSG;
    }

    state = member_object(root, "registrationState", &e);
    tpm = member_object(root, "tpm", &e);
    state_tpm = member_object(state, "tpm", &e);

    e = e ? e : take_string(root, "status", 32, &status);
    e = e ? e : take_string(root, "operationId", 256, &a.operation_id);
    e = e ? e : take_string(root, "authenticationKey", DPS_KEY_TEXT_MAX, &a.authentication_key);
    top_key = a.authentication_key != NULL;
    e = e ? e : take_string(root, "keyName", 64, &a.key_name);
    e = e ? e : take_int(root, "errorCode", &a.error_code);
    e = e ? e : take_string(root, "message", 1024, &a.error_message);
    e = e ? e : take_string(state, "status", 32, &state_status);
    e = e ? e : take_string(state, "assignedHub", 128, &a.assigned_hub);
    e = e ? e : take_string(state, "deviceId", 128, &a.device_id);
    e = e ? e : take_string(state, "substatus", 64, &a.substatus);
    e = e ? e : take_int(state, "errorCode", &a.error_code);
    e = e ? e : take_string(state, "errorMessage", 1024, &a.error_message);
    /* The challenge carries the key at the top; the assignment inside registrationState. */
    if (!e && !top_key)
        e = take_string(state_tpm ? state_tpm : tpm, "authenticationKey", DPS_KEY_TEXT_MAX,
                        &a.authentication_key);
    json_object_put(root);

    if (!e) {
        const char *s = status ? status : state_status;
        for (size_t i = 0; s && i < sizeof(statuses) / sizeof(statuses[0]); i++)
            if (strcmp(s, statuses[i].name) == 0)
                a.status = statuses[i].status;
    }
    free(status);
    free(state_status);
    if (e) {
        dps_answer_done(&a);
        return e;
    }
    *ret = a;
    return 0;
}

void dps_answer_done(struct dps_answer *a) {
    free(a->operation_id);
    free(a->authentication_key);
    free(a->key_name);
    free(a->assigned_hub);
    free(a->device_id);
    free(a->substatus);
    free(a->error_message);
    *a = (struct dps_answer){0};
}

bool dps_hub_name_valid(const char *hub) {
    size_t label = 0, n = 0;

    for (const char *p = hub; *p; p++, n++) {
        char c = *p;
        if (c == '.') {
            if (label == 0 || p[-1] == '-')
                return false;
            label = 0;
        } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                   (c == '-' && label > 0)) {
            if (++label > 63)
                return false;
        } else
            return false;
    }
    return n > 0 && n <= 128 && label > 0 && hub[n - 1] != '-';
}

bool dps_device_id_valid(const char *device_id) {
    size_t n = strlen(device_id);

    if (n == 0 || n > 128)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = device_id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              strchr("-:.+%_#*?!(),=@;$'", c)))
            return false;
    }
    return true;
}
