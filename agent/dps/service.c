/* SPDX-License-Identifier: MIT */
#include "service.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "basic/macro.h"
#include "dps/wire.h"

#define SAS_TTL_SEC 3600

static void wiped_strfreep(char **p) {
    if (*p)
        secure_zero(*p, strlen(*p));
    free(*p);
}

static bool host_name_valid(const char *h, size_t len) {
    if (len == 0 || len > 253 || h[0] == '.' || h[0] == '-' || h[len - 1] == '.')
        return false;
    for (size_t i = 0; i < len; i++)
        if (!isalnum((unsigned char)h[i]) && h[i] != '-' && h[i] != '.')
            return false;
    return true;
}

/* Strict base64 of the policy key; out is wiped by the caller on every path. */
static int key_decode(const char *text, size_t len, uint8_t *out, size_t *ret_len) {
    uint8_t buf[DPS_SERVICE_KEY_MAX + 3];
    char again[sizeof(buf) / 3 * 4 + 8];
    size_t n;
    int r = -EINVAL;

    if (len == 0 || len % 4 != 0 || len / 4 * 3 > sizeof(buf) ||
        strspn(text, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=") < len)
        return -EINVAL;
    if (EVP_DecodeBlock(buf, (const unsigned char *)text, (int)len) < 0)
        goto out;
    n = len / 4 * 3 - (text[len - 1] == '=') - (text[len - 2] == '=');
    if (n == 0 || n > DPS_SERVICE_KEY_MAX)
        goto out;
    if ((size_t)EVP_EncodeBlock((unsigned char *)again, buf, (int)n) != len ||
        CRYPTO_memcmp(again, text, len) != 0)
        goto out;
    memcpy(out, buf, n);
    *ret_len = n;
    r = 0;
out:
    OPENSSL_cleanse(buf, sizeof(buf));
    OPENSSL_cleanse(again, sizeof(again));
    return r;
}

static int take_field(char **slot, const char *value, size_t len) {
    if (*slot)
        return -EEXIST;
    *slot = strndup(value, len);
    return *slot ? 0 : -ENOMEM;
}

int dps_connection_string_parse(const char *text, struct dps_connection_string *ret,
                                const char **ret_why) {
    struct dps_connection_string c = {0};
    _cleanup_(wiped_strfreep) char *key_text = NULL;
    const char *p = text, *why = NULL;
    int r = 0;

    while (*p && !why && r >= 0) {
        const char *end = strchrnul(p, ';'), *eq = memchr(p, '=', (size_t)(end - p));
        const char *name = p, *value;
        size_t name_len, value_len;

        while (name < end && isspace((unsigned char)*name))
            name++;
        if (name == end) { /* an empty field, or the trailing ';' */
            p = *end ? end + 1 : end;
            continue;
        }
        if (!eq) {
            why = "a field without '=' (expected Name=value fields separated by ';')";
            break;
        }
        name_len = (size_t)(eq - name);
        while (name_len > 0 && isspace((unsigned char)name[name_len - 1]))
            name_len--;
        value = eq + 1;
        while (value < end && isspace((unsigned char)*value))
            value++;
        value_len = (size_t)(end - value);
        while (value_len > 0 && isspace((unsigned char)value[value_len - 1]))
            value_len--;

        if (name_len == 8 && strncasecmp(name, "HostName", 8) == 0)
            r = take_field(&c.host_name, value, value_len);
        else if (name_len == 19 && strncasecmp(name, "SharedAccessKeyName", 19) == 0)
            r = take_field(&c.key_name, value, value_len);
        else if (name_len == 15 && strncasecmp(name, "SharedAccessKey", 15) == 0)
            r = take_field(&key_text, value, value_len);
        if (r == -EEXIST)
            why = "a field appears twice";
        p = *end ? end + 1 : end;
    }

    if (!why && r >= 0) {
        if (!c.host_name || !c.key_name || !key_text)
            why = "HostName, SharedAccessKeyName and SharedAccessKey are all needed";
        else if (!host_name_valid(c.host_name, strlen(c.host_name)))
            why = "HostName is not a DNS name";
        else if (c.key_name[0] == '\0' || strpbrk(c.key_name, "&=/ \t"))
            why = "SharedAccessKeyName is empty or holds '&', '=', '/' or spaces";
        else if (key_decode(key_text, strlen(key_text), c.key, &c.key_len) < 0)
            why = "SharedAccessKey is not base64 of 1 to 64 bytes";
    }
    if (why || r < 0) {
        dps_connection_string_done(&c);
        if (why && ret_why)
            *ret_why = why;
        return why ? -EINVAL : r;
    }
    for (char *h = c.host_name; *h; h++)
        *h = (char)tolower((unsigned char)*h);
    *ret = c;
    return 0;
}

void dps_connection_string_done(struct dps_connection_string *c) {
    OPENSSL_cleanse(c->key, sizeof(c->key));
    free(c->host_name);
    free(c->key_name);
    *c = (struct dps_connection_string){0};
}

char *dps_service_sas(const struct dps_connection_string *c, uint64_t expiry) {
    _cleanup_free_ char *sr = dps_url_encode(c->host_name);
    _cleanup_free_ char *to_sign = NULL;
    uint8_t mac[EVP_MAX_MD_SIZE];
    unsigned mac_len = 0;
    char *token;

    if (!sr)
        return NULL;
    to_sign = dps_sas_string_to_sign(sr, expiry);
    if (!to_sign)
        return NULL;
    if (!HMAC(EVP_sha256(), c->key, (int)c->key_len, (const unsigned char *)to_sign,
              strlen(to_sign), mac, &mac_len))
        return NULL;
    token = dps_sas_token(sr, mac, mac_len, expiry, c->key_name);
    OPENSSL_cleanse(mac, sizeof(mac));
    return token;
}

static json_object *enrollment_json(const struct dps_enrollment *e, int *ret_error) {
    json_object *o = json_object_new_object(), *att, *tpm;

    json_object_object_add(o, "registrationId", json_object_new_string(e->registration_id));
    att = json_object_new_object();
    json_object_object_add(att, "type", json_object_new_string("tpm"));
    tpm = json_object_new_object();
    json_object_object_add(tpm, "endorsementKey", json_object_new_string(e->endorsement_key));
    json_object_object_add(att, "tpm", tpm);
    json_object_object_add(o, "attestation", att);
    if (e->device_id)
        json_object_object_add(o, "deviceId", json_object_new_string(e->device_id));
    if (e->provisioning_status)
        json_object_object_add(o, "provisioningStatus",
                               json_object_new_string(e->provisioning_status));
    if (e->allocation_policy)
        json_object_object_add(o, "allocationPolicy", json_object_new_string(e->allocation_policy));
    if (e->n_iot_hubs > 0) {
        json_object *hubs = json_object_new_array();
        for (size_t i = 0; i < e->n_iot_hubs; i++)
            json_object_array_add(hubs, json_object_new_string(e->iot_hubs[i]));
        json_object_object_add(o, "iotHubs", hubs);
    }
    if (e->initial_twin_json) {
        json_object *twin = json_tokener_parse(e->initial_twin_json);
        if (!twin || !json_object_is_type(twin, json_type_object)) {
            json_object_put(twin);
            json_object_put(o);
            *ret_error = -EINVAL;
            return NULL;
        }
        json_object_object_add(o, "initialTwin", twin);
    }
    return o;
}

char *dps_bulk_body(const char *mode, const struct dps_enrollment *rows, size_t n,
                    int *ret_error) {
    json_object *body, *list;
    char *text;

    *ret_error = 0;
    if (n == 0 || n > DPS_BULK_MAX) {
        *ret_error = -EINVAL;
        return NULL;
    }
    body = json_object_new_object();
    json_object_object_add(body, "mode", json_object_new_string(mode));
    list = json_object_new_array();
    json_object_object_add(body, "enrollments", list);
    for (size_t i = 0; i < n; i++) {
        json_object *e = enrollment_json(&rows[i], ret_error);
        if (!e) {
            json_object_put(body);
            return NULL;
        }
        json_object_array_add(list, e);
    }
    text = strdup(json_object_to_json_string_ext(body, JSON_C_TO_STRING_PLAIN |
                                                           JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(body);
    if (!text)
        *ret_error = -ENOMEM;
    return text;
}

static char *string_member(json_object *o, const char *key) {
    json_object *v;

    if (!o || !json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
        return NULL;
    return strdup(json_object_get_string(v));
}

int dps_bulk_result_parse(const char *body, struct dps_bulk_result *ret) {
    json_object *o = json_tokener_parse(body), *ok, *errors;
    struct dps_bulk_result res = {0};
    size_t n;

    if (!o || !json_object_is_type(o, json_type_object) ||
        !json_object_object_get_ex(o, "isSuccessful", &ok) ||
        !json_object_is_type(ok, json_type_boolean))
        goto bad;
    res.successful = json_object_get_boolean(ok);
    if (!json_object_object_get_ex(o, "errors", &errors) ||
        json_object_is_type(errors, json_type_null)) {
        json_object_put(o);
        *ret = res;
        return 0;
    }
    if (!json_object_is_type(errors, json_type_array))
        goto bad;
    n = json_object_array_length(errors);
    res.errors = calloc(n + 1, sizeof(*res.errors));
    if (!res.errors)
        goto bad;
    for (size_t i = 0; i < n; i++) {
        json_object *e = json_object_array_get_idx(errors, i), *code;
        struct dps_bulk_error *d = &res.errors[res.n_errors++];

        d->registration_id = string_member(e, "registrationId");
        d->status = string_member(e, "errorStatus");
        if (!d->registration_id || !json_object_object_get_ex(e, "errorCode", &code) ||
            !json_object_is_type(code, json_type_int))
            goto bad;
        d->code = json_object_get_int64(code);
    }
    json_object_put(o);
    *ret = res;
    return 0;
bad:
    json_object_put(o);
    dps_bulk_result_done(&res);
    return -EBADMSG;
}

void dps_bulk_result_done(struct dps_bulk_result *r) {
    for (size_t i = 0; i < r->n_errors; i++) {
        free(r->errors[i].registration_id);
        free(r->errors[i].status);
    }
    free(r->errors);
    *r = (struct dps_bulk_result){0};
}

void dps_service_error_parse(const char *body, int64_t *ret_code, char **ret_message) {
    json_object *o = body ? json_tokener_parse(body) : NULL, *code;

    *ret_code = 0;
    *ret_message = NULL;
    if (!o || !json_object_is_type(o, json_type_object)) {
        json_object_put(o);
        return;
    }
    if (json_object_object_get_ex(o, "errorCode", &code) && json_object_is_type(code, json_type_int))
        *ret_code = json_object_get_int64(code);
    *ret_message = string_member(o, "message");
    json_object_put(o);
}

char *dps_enrollment_ek(const char *body) {
    json_object *o = json_tokener_parse(body), *att, *tpm;
    char *ek = NULL;

    if (o && json_object_object_get_ex(o, "attestation", &att) &&
        json_object_object_get_ex(att, "tpm", &tpm))
        ek = string_member(tpm, "endorsementKey");
    json_object_put(o);
    return ek;
}

struct dps_service {
    struct dps_connection_string cs;
    char *endpoint;
    struct http *http;
};

int dps_service_new(struct dps_connection_string *cs, const char *endpoint,
                    const struct http_options *ho, struct dps_service **ret) {
    struct dps_service *s = calloc(1, sizeof(*s));
    int r;

    if (!s)
        return -ENOMEM;
    if (endpoint)
        s->endpoint = strdup(endpoint);
    else if (asprintf(&s->endpoint, "https://%s", cs->host_name) < 0)
        s->endpoint = NULL;
    if (!s->endpoint) {
        free(s);
        return -ENOMEM;
    }
    /* A trailing slash would double in every URL. */
    for (size_t n = strlen(s->endpoint); n > 0 && s->endpoint[n - 1] == '/';)
        s->endpoint[--n] = '\0';
    r = http_new(ho, &s->http);
    if (r < 0) {
        free(s->endpoint);
        free(s);
        return r;
    }
    s->cs = *cs;
    *cs = (struct dps_connection_string){0};
    *ret = s;
    return 0;
}

void dps_service_free(struct dps_service *s) {
    if (!s)
        return;
    dps_connection_string_done(&s->cs);
    http_free(s->http);
    free(s->endpoint);
    free(s);
}

const char *dps_service_host(const struct dps_service *s) {
    return s->cs.host_name;
}

const char *dps_service_endpoint(const struct dps_service *s) {
    return s->endpoint;
}

const char *dps_service_key_name(const struct dps_service *s) {
    return s->cs.key_name;
}

int dps_service_request(struct dps_service *s, const char *method, const char *path,
                        const char *body, struct http_response *ret) {
    _cleanup_(wiped_strfreep) char *token = NULL;
    _cleanup_free_ char *url = NULL;

    token = dps_service_sas(&s->cs, (uint64_t)time(NULL) + SAS_TTL_SEC);
    if (!token)
        return -ENOMEM;
    if (asprintf(&url, "%s%s?api-version=%s", s->endpoint, path, DPS_SERVICE_API_VERSION) < 0)
        return -ENOMEM;
    return http_request(s->http, method, url, token, body, ret);
}
