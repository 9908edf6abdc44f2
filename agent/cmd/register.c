/* SPDX-License-Identifier: MIT */
/*
 * tpm-provision register: the network phase. One DPS registration by TPM attestation over one
 * HTTPS connection (protocol document 1.12):
 *
 *   1. PUT register, unauthenticated, with the EK and SRK publics -> 401 with the challenge
 *   2. ActivateCredential + Import of the challenge key K1 (kept transient)
 *   3. PUT register with a SAS token signed by K1 inside the TPM -> 202 with an operation
 *   4. GET the operation, as retry-after says, until assigned, failed or disabled
 *   5. on assigned: import the hub key K2, persist it at the identity handle, record the
 *      assignment in NV, write the hand-off file
 *
 * Each request is retried on its own when the answer says "later" (429, 5xx, a network
 * failure), honouring retry-after and otherwise backing off with full jitter, within one
 * overall deadline. An assigned device takes the fast path: no request, no TPM write.
 */
#include <errno.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <systemd/sd-daemon.h>
#include <time.h>

#include "basic/log.h"
#include "cmd/common.h"
#include "dps/http.h"
#include "dps/messages.h"
#include "dps/wire.h"
#include "tpm/ekpub.h"
#include "tpm/identity.h"
#include "tpm/keys.h"
#include "tpm/tpm-rc.h"

#define LOCK_TIMEOUT_SEC 300
#define BACKOFF_BASE_MS 2000
#define BACKOFF_CAP_MS (5 * 60 * 1000)
#define RETRY_AFTER_MAX_SEC (10 * 60)
#define POLL_DEFAULT_SEC 2
#define PAYLOAD_MAX (64 * 1024)

struct registration {
    const struct options *o;
    const struct config *cfg;
    struct tpm *t;
    struct hierarchy_auths auths;
    struct http *http;
    struct nvstate state;

    char registration_id[RECORD_REGISTRATION_ID_MAX + 1];
    char *ek_base64, *srk_base64, *body, *register_url, *sr;
    char key_name[65];

    /* The server's clock, from the Date header of its last answer (field case B26). */
    bool have_server_time;
    time_t server_time;
    uint64_t server_time_at_ms;

    uint64_t deadline_ms; /* monotonic; 0 = none */
    unsigned attempt;     /* consecutive "later" answers, for the backoff */

    uint64_t first_poll_ms; /* retry-after of the 202 that started the operation */

    ESYS_TR challenge_key, hub_key;
    char *token;
    uint64_t token_expiry;
    char *operation_id;
};

static uint64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void sleep_ms(uint64_t ms) {
    struct timespec ts = {.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* What time it is for DPS: the server's Date plus the time since, else the local clock. */
static time_t server_now(const struct registration *g) {
    if (g->have_server_time)
        return g->server_time + (time_t)((now_ms() - g->server_time_at_ms) / 1000);
    return time(NULL);
}

static void note_server_time(struct registration *g, const struct http_response *resp) {
    time_t t;

    if (resp->date && dps_http_date_parse(resp->date, &t) == 0) {
        time_t local = time(NULL);
        if (!g->have_server_time && (local > t + 300 || local < t - 300))
            log_warning("The system clock is %+lld s off DPS's; using DPS's time for tokens.",
                        (long long)(local - t));
        g->have_server_time = true;
        g->server_time = t;
        g->server_time_at_ms = now_ms();
    }
}

/* Waits before the next attempt: at least the server's retry-after, with a jittered share
 * above it that grows with consecutive refusals (dps_retry_after_delay_ms), else exponential
 * backoff with full jitter. -ETIMEDOUT when even the server's wait would pass the deadline;
 * the last attempt before it goes at the server's wait. */
static int wait_before_retry(struct registration *g, const struct http_response *resp,
                             int level, const char *why) {
    uint64_t delay_ms, floor_ms = 0, rnd = 0;
    int64_t after = -1;

    if (resp && resp->retry_after)
        after = dps_retry_after_parse(resp->retry_after, server_now(g), 1, RETRY_AFTER_MAX_SEC);
    RAND_bytes((unsigned char *)&rnd, sizeof(rnd));
    if (after >= 0) {
        floor_ms = (uint64_t)after * 1000;
        delay_ms = dps_retry_after_delay_ms(floor_ms, g->attempt, BACKOFF_CAP_MS, rnd);
    } else
        delay_ms = dps_backoff_ms(g->attempt, BACKOFF_BASE_MS, BACKOFF_CAP_MS, rnd);
    g->attempt++;

    uint64_t now = now_ms();
    if (g->deadline_ms && now + delay_ms > g->deadline_ms) {
        if (floor_ms == 0 || now + floor_ms > g->deadline_ms)
            return log_error_errno(ETIMEDOUT, "%s; the registration deadline (TimeoutSec=%u) "
                                   "would pass before the next attempt. Giving up for now.", why,
                                   g->cfg->deadline_sec);
        delay_ms = floor_ms;
    }
    /* One line says both what went wrong and when the next attempt is. */
    log_full_errno(level, 0, "%s; trying again in %llu s.", why,
                   (unsigned long long)((delay_ms + 999) / 1000));
    sd_notifyf(0, "STATUS=%s; next attempt in %llu s", why,
               (unsigned long long)((delay_ms + 999) / 1000));
    sleep_ms(delay_ms);
    return 0;
}

enum outcome { DONE, RETRY };

/*
 * Sends one request and sorts out what the transport said. DONE with *resp filled when an HTTP
 * answer arrived that is not a "later"; RETRY after waiting when it was; a negative errno when
 * the run must stop. Transport failures are logged as what they are, never as a DPS answer.
 */
static int exchange(struct registration *g, const char *what, const char *method, const char *url,
                    const char *auth, const char *body, struct http_response *resp) {
    char why[640];
    int r;

    if (g->deadline_ms) {
        uint64_t now = now_ms();
        if (now >= g->deadline_ms)
            return log_error_errno(ETIMEDOUT, "%s: the registration deadline (TimeoutSec=%u) "
                                   "has passed. Giving up for now.", what, g->cfg->deadline_sec);
        http_set_time_left(g->http, (uint32_t)((g->deadline_ms - now + 999) / 1000));
    }
    r = http_request(g->http, method, url, auth, body, resp);
    if (r < 0) {
        switch (resp->failure) {
        case HTTP_FAIL_TRUST:
            /* Naming the bundle in use tells a pinned or outdated one (field case B27). */
            r = log_error_errno(ENOKEY, "TLS: the DPS server's certificate is not "
                                   "trusted (%s). Check CABundle= (the trust store now: %s): "
                                   "it must hold the root DPS chains to and, behind a "
                                   "TLS-inspecting proxy, the proxy's CA. Not retrying.",
                                   resp->error, http_trust_store(g->http));
            http_response_done(resp);
            return r;
        case HTTP_FAIL_CLOCK:
            snprintf(why, sizeof(why), "%s: TLS certificate not valid at the current time (%s); "
                     "the system clock may be wrong", what, resp->error);
            break;
        case HTTP_FAIL_PROXY:
            snprintf(why, sizeof(why), "%s: proxy error (%s)", what, resp->error);
            break;
        default:
            snprintf(why, sizeof(why), "%s: %s", what, resp->error);
        }
        r = wait_before_retry(g, NULL, LOG_WARNING, why);
        http_response_done(resp);
        return r < 0 ? r : RETRY;
    }

    note_server_time(g, resp);
    log_debug("%s: HTTP %ld (%zu bytes).", what, resp->status, resp->body_size);
    if (resp->status == 429 || resp->status >= 500) {
        snprintf(why, sizeof(why), "%s: DPS answered HTTP %ld%s", what, resp->status,
                 resp->status == 429 ? " (throttled)" : "");
        r = wait_before_retry(g, resp, LOG_INFO, why);
        http_response_done(resp);
        return r < 0 ? r : RETRY;
    }
    return DONE;
}

/* A DPS error answer, logged once with its code and message. */
static int dps_error(const struct http_response *resp, const char *what, int error) {
    struct dps_answer a = {0};

    dps_answer_parse(resp->body, &a);
    log_error_errno(error, "%s: DPS answered HTTP %ld, errorCode %lld: %s", what, resp->status,
                    (long long)a.error_code, a.error_message ? a.error_message : "(no message)");
    dps_answer_done(&a);
    return -abs(error);
}

/* Answers that end the run with a configuration or enrollment problem (B25 and friends). */
static int classify_refusal(const struct registration *g, const struct http_response *resp,
                            const char *what) {
    struct dps_answer a = {0};
    int r;

    dps_answer_parse(resp->body, &a);
    bool api_version = a.error_code == 400004 && a.error_message &&
                       strcasestr(a.error_message, "api") && strcasestr(a.error_message, "version");
    dps_answer_done(&a);

    if (api_version) {
        r = dps_error(resp, what, EINVAL);
        log_error("This DPS does not take api-version %s: set ApiVersion= to one it supports.",
                  g->cfg->api_version);
        return r;
    }
    if (resp->status == 404)
        return dps_error(resp, what, EINVAL); /* unknown ID scope: configuration */
    return dps_error(resp, what, ECONNREFUSED);
}

static int import_key(struct registration *g, const char *base64, const char *what,
                      ESYS_TR *ret_key, TPM2B_NAME *ret_name) {
    struct dps_blob blob;
    const char *why = NULL;
    int r;

    r = dps_blob_parse(base64, &blob, &why);
    if (r < 0)
        return log_error_errno(EREMOTEIO, "The %s from DPS is malformed (%s); nothing was "
                               "changed in the TPM.", what, why ? why : "unparsable");
    r = identity_import(g->t, &g->auths, g->cfg->ek_handle, g->cfg->srk_handle, &blob, ret_key,
                        ret_name);
    secure_zero(&blob, sizeof(blob));
    return r;
}

/*
 * DPS wraps its keys with an empty authorization value (protocol document 3.4), and every
 * client signs with an empty password. A key the TPM refuses that for was not made by DPS:
 * whoever answered is not DPS (an impostor whose CA the device trusts, such as a
 * TLS-inspecting proxy, field case B31). Such a key need not have noDA, so each further try
 * could count towards dictionary-attack lockout: one try, then a refusal that the unit does
 * not restart (exit 6).
 */
static int key_refused(const struct registration *g, const char *what) {
    return log_error_errno(ECONNREFUSED, "The TPM refused the empty authorization for the %s "
                           "from %s (%s). DPS never makes such a key: whoever answered is not "
                           "DPS, or something between changed the answer (a TLS-inspecting "
                           "proxy?). The key is not used again; not retrying.", what,
                           g->cfg->endpoint, tpm_last_error(g->t));
}

/* Signs a SAS token for the registration with the challenge key, expiring ttl after DPS's now. */
static int sign_token(struct registration *g) {
    _cleanup_free_ char *to_sign = NULL;
    uint8_t mac[32];
    int r;

    g->token_expiry = (uint64_t)server_now(g) + g->cfg->sas_ttl_sec;
    to_sign = dps_sas_string_to_sign(g->sr, g->token_expiry);
    if (!to_sign)
        return -ENOMEM;
    r = identity_hmac(g->t, g->challenge_key, to_sign, strlen(to_sign), mac);
    if (r == -EACCES) {
        identity_flush(g->t, &g->challenge_key);
        return key_refused(g, "challenge key");
    }
    if (r < 0)
        return log_error_errno(r, "Cannot sign the DPS token in the TPM: %s",
                               tpm_last_error(g->t));
    free(g->token);
    g->token = dps_sas_token(g->sr, mac, sizeof(mac), g->token_expiry, g->key_name);
    secure_zero(mac, sizeof(mac));
    return g->token ? 0 : -ENOMEM;
}

/* Step 1 and 2: the unauthenticated PUT and the challenge key. */
static int challenge(struct registration *g) {
    struct http_response resp;
    struct dps_answer a = {0};
    TPM2B_NAME name;
    int r;

    sd_notify(0, "STATUS=Registering with DPS");
    for (;;) {
        r = exchange(g, "PUT register", "PUT", g->register_url, NULL, g->body, &resp);
        if (r < 0)
            return r;
        if (r == RETRY)
            continue;
        if (resp.status != 401) {
            r = resp.status >= 400 ? classify_refusal(g, &resp, "Registration")
                                   : log_error_errno(EREMOTEIO, "DPS answered the first PUT "
                                                     "with HTTP %ld instead of a challenge.",
                                                     resp.status);
            http_response_done(&resp);
            return r;
        }
        r = dps_answer_parse(resp.body, &a);
        if (r >= 0)
            break;
        /* A 401 whose body is not JSON at all was garbled on the way (a proxy, a cut
         * connection): no verdict on the enrollment, so ask again. */
        http_response_done(&resp);
        r = wait_before_retry(g, NULL, LOG_WARNING,
                              "DPS's challenge is not the JSON it should be (malformed, or a "
                              "field of the wrong type or over its limit)");
        if (r < 0)
            return r;
    }
    if (!a.authentication_key) {
        /* A 401 without authenticationKey is a refusal, not a challenge (section 1.5). */
        r = dps_error(&resp, "Registration refused: DPS does not know this device's EK under "
                      "this registration ID; check the enrollment", ECONNREFUSED);
        http_response_done(&resp);
        dps_answer_done(&a);
        return r;
    }
    http_response_done(&resp);

    /* skn is the keyName DPS gives; every client uses "registration" (section 1.6). */
    snprintf(g->key_name, sizeof(g->key_name), "%s", a.key_name ? a.key_name : "registration");
    identity_flush(g->t, &g->challenge_key);
    r = import_key(g, a.authentication_key, "challenge key", &g->challenge_key, &name);
    dps_answer_done(&a);
    if (r < 0)
        return r;
    log_info("DPS challenge accepted by the TPM.");
    g->attempt = 0;
    return sign_token(g);
}

/* How long to wait before asking about the operation: the answer's retry-after (protocol
 * document 1.8), else POLL_DEFAULT_SEC. */
static uint64_t poll_delay_ms(const struct registration *g, const struct http_response *resp) {
    int64_t after = resp->retry_after ? dps_retry_after_parse(resp->retry_after, server_now(g), 1,
                                                              RETRY_AFTER_MAX_SEC)
                                      : -1;
    return (uint64_t)(after >= 0 ? after : POLL_DEFAULT_SEC) * 1000;
}

/* Sleeps before the next poll, unless that would pass the deadline. */
static int wait_for_poll(struct registration *g, uint64_t ms) {
    if (g->deadline_ms && now_ms() + ms > g->deadline_ms)
        return log_error_errno(ETIMEDOUT, "DPS is still assigning and the registration deadline "
                               "(TimeoutSec=%u) is near; giving up for now.",
                               g->cfg->deadline_sec);
    log_debug("DPS is assigning; asking again in %llu ms.", (unsigned long long)ms);
    sleep_ms(ms);
    return 0;
}

/* Answers to a signed request after which the registration starts over with a new
 * challenge, once. */
enum start_over {
    KEEP_GOING,
    START_OVER_UNAUTHORIZED,   /* 401: a token the server judged by another clock (B26) */
    START_OVER_OPERATION_LOST, /* 404 to a poll: DPS no longer knows the operation */
};

/*
 * Sends a request signed with the challenge key, re-signing when the token is about to expire,
 * until an answer arrives that is not a "later". *ret_start_over when the answer calls for a
 * new challenge; a negative errno for any other answer but 200 and 202, logged as `what`.
 */
static int signed_request(struct registration *g, const char *what, const char *method,
                          const char *url, const char *body, struct http_response *resp,
                          enum start_over *ret_start_over) {
    int r;

    *ret_start_over = KEEP_GOING;
    for (;;) {
        if (g->token_expiry < (uint64_t)server_now(g) + 60) {
            r = sign_token(g);
            if (r < 0)
                return r;
        }
        r = exchange(g, what, method, url, g->token, body, resp);
        if (r < 0)
            return r;
        if (r == DONE)
            break;
    }
    /* A 404 to the PUT is an unknown ID scope (configuration); to a poll, an operation DPS
     * has lost or expired, which a new registration replaces. */
    if (resp->status == 401 || (resp->status == 404 && strcmp(method, "GET") == 0)) {
        *ret_start_over = resp->status == 401 ? START_OVER_UNAUTHORIZED
                                              : START_OVER_OPERATION_LOST;
        http_response_done(resp);
        return 0;
    }
    if (resp->status != 200 && resp->status != 202) {
        r = classify_refusal(g, resp, what);
        http_response_done(resp);
        return r;
    }
    return 0;
}

/* Step 3: the authenticated PUT. Returns the operation in *ret (or the final answer). */
static int authenticated_put(struct registration *g, struct dps_answer *ret,
                             enum start_over *ret_start_over) {
    struct http_response resp;
    int r;

    for (;;) {
        r = signed_request(g, "PUT register (signed)", "PUT", g->register_url, g->body, &resp,
                           ret_start_over);
        if (r < 0 || *ret_start_over != KEEP_GOING)
            return r;
        g->first_poll_ms = poll_delay_ms(g, &resp);
        r = dps_answer_parse(resp.body, ret);
        http_response_done(&resp);
        if (r >= 0 && (ret->operation_id || ret->status == DPS_STATUS_ASSIGNED))
            break;
        /* A body cut short or garbled on the way: the PUT is safe to repeat (DPS answers
         * it with the registration's operation again). */
        dps_answer_done(ret);
        r = wait_before_retry(g, NULL, LOG_WARNING,
                              "DPS's answer to the signed registration is not the JSON it "
                              "should be");
        if (r < 0)
            return r;
    }
    g->attempt = 0;
    return 0;
}

/* Step 4: polls the operation until it ends. */
static int poll_operation(struct registration *g, struct dps_answer *op,
                          enum start_over *ret_start_over) {
    _cleanup_free_ char *url = NULL, *op_id = NULL;
    int r;

    *ret_start_over = KEEP_GOING;
    while (op->status == DPS_STATUS_ASSIGNING || op->status == DPS_STATUS_UNASSIGNED ||
           op->status == DPS_STATUS_UNKNOWN) {
        struct http_response resp;
        struct dps_answer next = {0};
        _cleanup_free_ char *enc = NULL;

        if (!op->operation_id)
            return log_error_errno(EREMOTEIO, "DPS gave no operationId to poll.");
        if (!url) {
            /* The 202 that started the operation said when to ask first. */
            r = wait_for_poll(g, g->first_poll_ms);
            if (r < 0)
                return r;
            op_id = strdup(op->operation_id);
            enc = dps_url_encode(op_id);
            if (!enc || asprintf(&url, "%s/%s/registrations/%s/operations/%s?api-version=%s",
                                 g->cfg->endpoint, g->cfg->id_scope, g->registration_id, enc,
                                 g->cfg->api_version) < 0)
                return -ENOMEM;
        }

        sd_notify(0, "STATUS=Waiting for DPS to assign a hub");
        r = signed_request(g, "GET operation", "GET", url, NULL, &resp, ret_start_over);
        if (r < 0 || *ret_start_over != KEEP_GOING)
            return r;
        r = dps_answer_parse(resp.body, &next);
        if (r < 0) {
            http_response_done(&resp);
            r = wait_before_retry(g, NULL, LOG_WARNING,
                                  "DPS's operation status is not the JSON it should be "
                                  "(malformed, or a field of the wrong type or over its limit)");
            if (r < 0)
                return r;
            continue;
        }
        if (!next.operation_id)
            next.operation_id = strdup(op_id);
        dps_answer_done(op);
        *op = next;

        /* An answer without a status this agent knows tells nothing: asking again at once
         * would be a request storm, so it waits as after any bad answer. */
        if (op->status == DPS_STATUS_UNKNOWN) {
            http_response_done(&resp);
            r = wait_before_retry(g, NULL, LOG_WARNING,
                                  "DPS's operation status has no status this agent knows");
            if (r < 0)
                return r;
            continue;
        }

        if (op->status == DPS_STATUS_ASSIGNING || op->status == DPS_STATUS_UNASSIGNED) {
            uint64_t ms = poll_delay_ms(g, &resp);
            http_response_done(&resp);
            r = wait_for_poll(g, ms);
            if (r < 0)
                return r;
            continue;
        }
        http_response_done(&resp);
    }
    return 0;
}

/*
 * What sits at the identity handle, for a registration. After a damaged record was replaced
 * (RECORD_FLAG_REBUILT) the Name of the agent's own key is lost; a key there with the shape of
 * a DPS identity key is then taken for the agent's own. The state index is the agent's (its
 * Name says so), and a registration with this TPM's EK makes DPS replace whatever key it gave
 * before, so such a key stops working either way once this device registers.
 */
static int identity_slot(struct registration *g, const struct record *rec,
                         enum identity_slot *ret) {
    bool dps_key = false;
    int r;

    r = identity_slot_check(g->t, g->cfg->identity_handle, rec->identity_name,
                            rec->identity_name_size, ret);
    if (r < 0 || *ret != IDENTITY_SLOT_FOREIGN || !(rec->flags & RECORD_FLAG_REBUILT))
        return r;
    r = identity_is_dps_key(g->t, g->cfg->identity_handle, &dps_key);
    if (r < 0)
        return r;
    if (dps_key) {
        log_notice("The state record was rebuilt after damage; the DPS identity key at 0x%08x "
                   "is taken for this agent's own and replaced.", g->cfg->identity_handle);
        *ret = IDENTITY_SLOT_OURS;
    }
    return 0;
}

/* Untrusted text for a log line: printable ASCII, anything else as '?', cut to size. The log
 * turns control characters into '?' for every message already; this also keeps a hostile
 * answer's other bytes (UTF-8 look-alikes of a hub name, say) out of the line. */
static void printable(const char *in, char *out, size_t size) {
    size_t i = 0;

    for (; in[i] && i + 1 < size; i++)
        out[i] = in[i] >= 0x20 && in[i] < 0x7f ? in[i] : '?';
    out[i] = '\0';
}

/* Step 5: the hub key goes to the identity handle, in the order docs/state-record.md gives,
 * so that a power cut between any two commands leaves a state the next run converges from. */
static int install_identity(struct registration *g, const struct dps_answer *a) {
    struct record rec = g->state.record;
    enum identity_slot slot;
    TPM2B_NAME name;
    int r;

    if (!a->assigned_hub || !a->device_id || !a->authentication_key)
        return log_error_errno(EREMOTEIO, "DPS said 'assigned' but left out the hub, the device "
                               "ID or the key; nothing was changed.");
    /* Both go into the record, the hub's SAS resource and the hand-off file, where a '/' or
     * '&' would change what they say. */
    bool hub_ok = dps_hub_name_valid(a->assigned_hub);
    if (!hub_ok || !dps_device_id_valid(a->device_id)) {
        char shown[65];
        printable(hub_ok ? a->device_id : a->assigned_hub, shown, sizeof(shown));
        return log_error_errno(EREMOTEIO, "DPS assigned %s \"%s\", which IoT Hub never "
                               "gives; nothing was changed.", hub_ok ? "the device ID" : "the hub",
                               shown);
    }

    r = import_key(g, a->authentication_key, "hub key", &g->hub_key, &name);
    if (r < 0)
        return r;

    /* One HMAC with the hub key before it is kept: a key the TPM refuses would fail every
     * token signed after it, and each failure could count towards lockout. */
    {
        static const char probe[] = "tpm-provision: hub key check";
        uint8_t mac[32];

        r = identity_hmac(g->t, g->hub_key, probe, sizeof(probe) - 1, mac);
        secure_zero(mac, sizeof(mac));
        if (r == -EACCES)
            return key_refused(g, "hub key");
        if (r < 0)
            return log_error_errno(r, "Cannot sign with the hub key in the TPM: %s",
                                   tpm_last_error(g->t));
    }

    r = identity_slot(g, &rec, &slot);
    if (r < 0)
        return log_error_errno(r, "Cannot read the identity handle 0x%08x: %s",
                               g->cfg->identity_handle, tpm_last_error(g->t));
    if (slot == IDENTITY_SLOT_FOREIGN)
        return log_error_errno(EEXIST, "0x%08x holds a key tpm-provision did not create; it is "
                               "left alone. Set IdentityHandle= to a free handle.",
                               g->cfg->identity_handle);
    if (slot == IDENTITY_SLOT_OURS) {
        r = identity_evict(g->t, g->cfg->identity_handle);
        if (r < 0)
            return hierarchy_log_failure(g->t, &g->auths, HIERARCHY_OWNER, r,
                                         "remove the previous identity key");
        log_notice("Removed the previous identity key at 0x%08x.", g->cfg->identity_handle);
    }
    /* IdentityHandle= changed: the key the record names at the old handle goes too, now,
     * while the record still names it; afterwards nothing would tell it is ours. */
    if (rec.identity_handle != 0 && rec.identity_handle != g->cfg->identity_handle) {
        enum identity_slot old;

        r = identity_slot_check(g->t, rec.identity_handle, rec.identity_name,
                                rec.identity_name_size, &old);
        if (r < 0)
            return log_error_errno(r, "Cannot read the previous identity handle 0x%08x: %s",
                                   rec.identity_handle, tpm_last_error(g->t));
        if (old == IDENTITY_SLOT_OURS) {
            r = identity_evict(g->t, rec.identity_handle);
            if (r < 0)
                return hierarchy_log_failure(g->t, &g->auths, HIERARCHY_OWNER, r,
                                             "remove the previous identity key");
            log_notice("Removed the previous identity key at 0x%08x (IdentityHandle= is now "
                       "0x%08x).", rec.identity_handle, g->cfg->identity_handle);
        }
    }

    /* The new key's Name, and no longer "assigned": the hub and device ID still in the record
     * belong to the old key. A cut after the key is persisted must send the next boot to DPS
     * again, not down the fast path with a key the old hub does not know. */
    memcpy(rec.identity_name, name.name, name.size);
    rec.identity_name_size = (uint8_t)name.size;
    rec.flags &= (uint8_t)~RECORD_FLAG_REBUILT;
    rec.identity_handle = g->cfg->identity_handle;
    if (rec.state == RECORD_ASSIGNED)
        rec.state = RECORD_OWNED;
    r = nvstate_save(g->t, &g->state, &rec);
    if (r < 0)
        return hierarchy_log_failure(g->t, &g->auths, HIERARCHY_OWNER, r,
                                     "record the new identity key");

    r = tpm_persist_and_flush(g->t, g->hub_key, g->cfg->identity_handle);
    g->hub_key = ESYS_TR_NONE;
    if (r < 0)
        return hierarchy_log_failure(g->t, &g->auths, HIERARCHY_OWNER, r,
                                     "persist the identity key");

    rec.state = RECORD_ASSIGNED;
    rec.flags &= (uint8_t)~RECORD_FLAG_REGISTERING;
    rec.changed_at = (uint64_t)server_now(g); /* the device's clock may be years off */
    rec.dps_error = 0;
    snprintf(rec.id_scope, sizeof(rec.id_scope), "%s", g->cfg->id_scope);
    snprintf(rec.registration_id, sizeof(rec.registration_id), "%s", g->registration_id);
    snprintf(rec.hub, sizeof(rec.hub), "%s", a->assigned_hub);
    snprintf(rec.device_id, sizeof(rec.device_id), "%s", a->device_id);
    r = nvstate_save(g->t, &g->state, &rec);
    if (r < 0)
        return hierarchy_log_failure(g->t, &g->auths, HIERARCHY_OWNER, r,
                                     "record the assignment");

    log_notice("Provisioned: hub %s, device %s (%s); identity key at 0x%08x.", rec.hub,
               rec.device_id, a->substatus ? a->substatus : "assigned", rec.identity_handle);
    {
        char hub[160], device[160], regid[160], message[512];
        snprintf(hub, sizeof(hub), "TPM_PROVISION_HUB=%s", rec.hub);
        snprintf(device, sizeof(device), "TPM_PROVISION_DEVICE_ID=%s", rec.device_id);
        snprintf(regid, sizeof(regid), "TPM_PROVISION_REGISTRATION_ID=%s", rec.registration_id);
        snprintf(message, sizeof(message), "Provisioned: hub %s, device %s.", rec.hub,
                 rec.device_id);
        log_event(LOG_EVENT_PROVISIONED, LOG_NOTICE, message,
                  (const char *const[]){hub, device, regid, NULL});
    }
    return cmd_write_handoff(&rec);
}

/* RECORD_FLAG_REGISTERING goes into the record before DPS sees the signed request. */
static int mark_registering(struct registration *g) {
    struct record rec = g->state.record;
    int r;

    if (rec.flags & RECORD_FLAG_REGISTERING)
        return 0;
    rec.flags |= RECORD_FLAG_REGISTERING;
    r = nvstate_save(g->t, &g->state, &rec);
    if (r < 0)
        return hierarchy_log_failure(g->t, &g->auths, HIERARCHY_OWNER, r,
                                     "record that a registration began");
    return 0;
}

/* failed and disabled are kept in the record, so status shows them and the next run asks DPS
 * again; disabled, and failed on a first registration, replace a cached assignment (field case
 * B29), whose hand-off file goes, so the device's IoT client stops using it. A failed
 * re-registration keeps the assignment that works. The identity key stays, named in the record,
 * so that a later assignment replaces it. */
static int record_refusal(struct registration *g, const struct dps_answer *a) {
    struct record rec = g->state.record;
    const char *what = a->status == DPS_STATUS_DISABLED ? "disabled" : "failed";
    char message[1200], code[64];

    snprintf(message, sizeof(message), "DPS %s the registration: errorCode %lld, %s. Not "
             "retrying soon.", a->status == DPS_STATUS_DISABLED
             ? "reports the enrollment as disabled for" : "failed",
             (long long)a->error_code, a->error_message ? a->error_message : "(no message)");
    log_error("%s", message);
    snprintf(code, sizeof(code), "TPM_PROVISION_DPS_ERROR=%lld", (long long)a->error_code);
    log_event(LOG_EVENT_DPS_REFUSED, LOG_ERR, message, (const char *const[]){code, NULL});

    rec.dps_error = (int32_t)a->error_code;
    if (a->status == DPS_STATUS_FAILED && rec.state == RECORD_ASSIGNED) {
        /* A failed re-registration takes nothing away: the hub still knows the device and its
         * key. The flag stays, so the next boot asks DPS again; sas goes on signing. */
        log_notice("The previous assignment (hub %s, device %s) stays in use.", rec.hub,
                   rec.device_id);
        if (nvstate_save(g->t, &g->state, &rec) < 0)
            log_warning("Could not record the %s state: %s", what, tpm_last_error(g->t));
        return -ECONNREFUSED;
    }
    rec.state = a->status == DPS_STATUS_DISABLED ? RECORD_DISABLED : RECORD_FAILED;
    rec.flags &= (uint8_t)~RECORD_FLAG_REGISTERING;
    rec.changed_at = (uint64_t)server_now(g);
    snprintf(rec.id_scope, sizeof(rec.id_scope), "%s", g->cfg->id_scope);
    snprintf(rec.registration_id, sizeof(rec.registration_id), "%s", g->registration_id);
    rec.hub[0] = rec.device_id[0] = '\0';
    if (nvstate_save(g->t, &g->state, &rec) < 0)
        log_warning("Could not record the %s state: %s", what, tpm_last_error(g->t));
    (void)cmd_remove_handoff();
    return -ECONNREFUSED;
}

static int registration_run(struct registration *g) {
    struct dps_answer op = {0};
    enum start_over start_over = KEEP_GOING;
    int r;

    /* One more full exchange after an answer that calls for a new challenge; a second one is
     * the end of this run, not a loop (field case B26). */
    for (int round = 0; round < 2; round++) {
        r = challenge(g);
        if (r < 0)
            goto out;
        r = mark_registering(g);
        if (r < 0)
            goto out;
        dps_answer_done(&op);
        r = authenticated_put(g, &op, &start_over);
        if (r < 0)
            goto out;
        if (start_over == KEEP_GOING) {
            r = poll_operation(g, &op, &start_over);
            if (r < 0)
                goto out;
        }
        if (start_over == KEEP_GOING)
            break;
        if (start_over == START_OVER_UNAUTHORIZED)
            log_warning("DPS refused the token signed in the TPM (HTTP 401); starting over with "
                        "a new challenge once.");
        else
            log_warning("DPS no longer knows the registration operation (HTTP 404 to a poll); "
                        "starting over with a new challenge once.");
    }
    if (start_over == START_OVER_UNAUTHORIZED) {
        r = log_error_errno(ECONNREFUSED, "DPS refused the token signed in the TPM twice; "
                            "giving up. Check the system clock and the enrollment.");
        goto out;
    }
    if (start_over == START_OVER_OPERATION_LOST) {
        r = log_error_errno(EREMOTEIO, "DPS lost the registration operation twice; giving up "
                            "for now.");
        goto out;
    }

    /* Only signed requests need the challenge key: out of the TPM before the hub key comes
     * in, since a TPM without a resource manager may have room for few objects. */
    identity_flush(g->t, &g->challenge_key);

    switch (op.status) {
    case DPS_STATUS_ASSIGNED:
        r = install_identity(g, &op);
        break;
    case DPS_STATUS_DISABLED:
    case DPS_STATUS_FAILED:
        r = record_refusal(g, &op);
        break;
    default:
        r = log_error_errno(EREMOTEIO, "DPS ended the operation with status '%s'.",
                            dps_status_to_string(op.status));
    }
out:
    dps_answer_done(&op);
    return r;
}

static int read_payload(const char *path, char **ret) {
    _cleanup_free_ char *buf = NULL;
    size_t n;
    FILE *f;

    if (!path)
        return 0;
    f = fopen(path, "re");
    if (!f)
        return log_error_errno(EINVAL, "Cannot read the payload file %s: %s", path,
                               strerror(errno));
    buf = malloc(PAYLOAD_MAX + 1);
    n = buf ? fread(buf, 1, PAYLOAD_MAX + 1, f) : 0;
    fclose(f);
    if (!buf)
        return -ENOMEM;
    if (n > PAYLOAD_MAX)
        return log_error_errno(EINVAL, "The payload file %s is larger than %d bytes.", path,
                               PAYLOAD_MAX);
    buf[n] = '\0';
    *ret = TAKE_PTR(buf);
    return 0;
}

static int base64_public(const TPM2B_PUBLIC *pub, char **ret, uint8_t *ret_bytes,
                         size_t *ret_len) {
    uint8_t bytes[EKPUB_MAX_SIZE];
    size_t len;
    char *out;

    if (ekpub_marshal(pub, bytes, sizeof(bytes), &len) < 0)
        return -EINVAL;
    out = malloc(4 * ((len + 2) / 3) + 1);
    if (!out)
        return -ENOMEM;
    EVP_EncodeBlock((unsigned char *)out, bytes, (int)len);
    if (ret_bytes) {
        memcpy(ret_bytes, bytes, len);
        *ret_len = len;
    }
    *ret = out;
    return 0;
}

/* Everything a registration needs before the first request: keys, IDs, URLs, checks that
 * would otherwise fail only after DPS has done its part. */
static int prepare(struct registration *g) {
    _cleanup_free_ char *payload = NULL, *enc_id = NULL;
    uint8_t ek_bytes[EKPUB_MAX_SIZE];
    size_t ek_len = 0;
    TPM2B_PUBLIC ek, srk;
    bool created;
    enum identity_slot slot;
    int r;

    r = read_payload(g->cfg->payload_file, &payload);
    if (r < 0)
        return r;

    r = ek_ensure(g->t, &g->auths, g->cfg->ek_handle, &ek, &created);
    if (r < 0)
        return r;
    r = srk_ensure(g->t, &g->auths, g->cfg->srk_handle, &srk, &created);
    if (r < 0)
        return r;
    r = base64_public(&ek, &g->ek_base64, ek_bytes, &ek_len);
    if (r < 0)
        return r;
    r = base64_public(&srk, &g->srk_base64, NULL, NULL);
    if (r < 0)
        return r;

    if (g->cfg->registration_id)
        snprintf(g->registration_id, sizeof(g->registration_id), "%s", g->cfg->registration_id);
    else
        ekpub_registration_id(ek_bytes, ek_len, g->registration_id);

    /* The TPM must be able to finish what DPS starts: say now, not after DPS assigned us. */
    r = hierarchy_require(g->t, &g->auths, HIERARCHY_ENDORSEMENT, "use the EK for DPS");
    if (r < 0)
        return r;
    r = hierarchy_require(g->t, &g->auths, HIERARCHY_OWNER, "persist the DPS identity key");
    if (r < 0)
        return r;
    r = identity_slot(g, &g->state.record, &slot);
    if (r < 0)
        return log_error_errno(r, "Cannot read the identity handle 0x%08x: %s",
                               g->cfg->identity_handle, tpm_last_error(g->t));
    if (slot == IDENTITY_SLOT_FOREIGN)
        return log_error_errno(EEXIST, "0x%08x holds a key tpm-provision did not create%s; it is "
                               "left alone. Set IdentityHandle= to a free handle.",
                               g->cfg->identity_handle,
                               g->cfg->identity_handle == IDENTITY_DEFAULT_HANDLE
                                   ? " (Azure's own SDK uses that handle too)" : "");

    g->body = dps_register_body(g->registration_id, g->ek_base64, g->srk_base64, payload, &r);
    if (!g->body)
        return r == -EINVAL ? log_error_errno(EINVAL, "The payload file %s is not JSON.",
                                              g->cfg->payload_file)
                            : r;
    enc_id = dps_url_encode(g->registration_id);
    g->sr = dps_sas_resource(g->cfg->id_scope, g->registration_id);
    if (!enc_id || !g->sr ||
        asprintf(&g->register_url, "%s/%s/registrations/%s/register?api-version=%s",
                 g->cfg->endpoint, g->cfg->id_scope, enc_id, g->cfg->api_version) < 0)
        return -ENOMEM;

    struct http_options ho = {
        .ca_bundle = g->cfg->ca_bundle,
        .proxy = g->cfg->proxy,
        .no_proxy = g->cfg->no_proxy,
        .timeout_sec = g->cfg->request_timeout_sec,
        .clock_floor = g->o->clock_floor,
    };
    r = http_new(&ho, &g->http);
    if (r < 0)
        return r;
    if (g->cfg->deadline_sec)
        g->deadline_ms = now_ms() + (uint64_t)g->cfg->deadline_sec * 1000;
    log_info("Registering %s with DPS scope %s at %s.", g->registration_id, g->cfg->id_scope,
             g->cfg->endpoint);
    return 0;
}

/* The boot fast path: assigned, same scope, our key in place: nothing to do. 1 when so, 0 when
 * the device must register, a negative errno when the TPM could not say which. */
static int already_provisioned(struct registration *g) {
    const struct record *rec = &g->state.record;
    enum identity_slot slot;
    int r;

    if (g->o->force || g->state.status != 0 || rec->state != RECORD_ASSIGNED)
        return false;
    if (rec->flags & RECORD_FLAG_REGISTERING) {
        log_notice("A registration with DPS did not finish (power cut or restart); registering "
                   "again.");
        return false;
    }
    if (strcasecmp(rec->id_scope, g->cfg->id_scope) != 0) {
        log_notice("The ID scope changed from %s to %s; registering again.", rec->id_scope,
                   g->cfg->id_scope);
        return false;
    }
    if (g->cfg->registration_id && strcmp(rec->registration_id, g->cfg->registration_id) != 0) {
        log_notice("The registration ID changed; registering again.");
        return false;
    }
    if (rec->identity_handle != g->cfg->identity_handle) {
        log_notice("IdentityHandle= changed from 0x%08x to 0x%08x; registering again.",
                   rec->identity_handle, g->cfg->identity_handle);
        return false;
    }
    /* Only a key that is not there, or not ours, sends the device to DPS again: a TPM that
     * failed to answer says nothing about the key, and a new registration over a read error
     * would replace an identity that works. */
    r = identity_slot_check(g->t, rec->identity_handle, rec->identity_name,
                            rec->identity_name_size, &slot);
    if (r < 0)
        return log_error_errno(r, "Cannot read the identity key at 0x%08x: %s. The device "
                               "stays provisioned; not registering again.",
                               rec->identity_handle, tpm_last_error(g->t));
    if (slot != IDENTITY_SLOT_OURS) {
        log_warning("The identity key at 0x%08x is %s; registering again.", rec->identity_handle,
                    slot == IDENTITY_SLOT_EMPTY ? "missing" : "not the one recorded");
        return false;
    }
    return true;
}

static void registration_done(struct registration *g) {
    if (g->t) {
        identity_flush(g->t, &g->challenge_key);
        identity_flush(g->t, &g->hub_key);
        nvstate_done(g->t, &g->state);
    }
    if (g->http)
        log_debug("%u requests over %u TLS connection(s).", http_requests(g->http),
                  http_connections(g->http));
    http_free(g->http);
    hierarchy_auths_wipe(&g->auths);
    if (g->token)
        secure_zero(g->token, strlen(g->token));
    free(g->token);
    free(g->ek_base64);
    free(g->srk_base64);
    free(g->body);
    free(g->register_url);
    free(g->sr);
    free(g->operation_id);
    tpm_close(g->t);
}

int cmd_register(const struct options *o) {
    _cleanup_close_ int lock = -1;
    struct registration g = {
        .o = o, .cfg = &o->cfg, .challenge_key = ESYS_TR_NONE, .hub_key = ESYS_TR_NONE,
        .state = {.tr = ESYS_TR_NONE},
    };
    int r;

    r = config_check_for_registration(&o->cfg);
    if (r < 0)
        return r;
    r = cmd_open_tpm(o, &g.t, &g.auths);
    if (r < 0)
        goto out;
    lock = cmd_lock(LOCK_TIMEOUT_SEC);
    if (lock < 0) {
        r = lock;
        goto out;
    }

    /* No readable record is not an error here: cmd_ensure_state below sorts that out. */
    r = nvstate_load(g.t, o->cfg.state_index, false, &g.state) == 0 ? already_provisioned(&g) : 0;
    if (r < 0)
        goto out;
    if (r > 0) {
        log_info("Already provisioned: hub %s, device %s. No request sent.", g.state.record.hub,
                 g.state.record.device_id);
        r = cmd_write_handoff(&g.state.record);
        /* A Type=notify unit counts an exit 0 without READY=1 as a protocol failure. */
        if (r == 0)
            sd_notify(0, "READY=1\nSTATUS=Already provisioned");
        goto out;
    }
    nvstate_done(g.t, &g.state);
    /* Here, not with the other keys: the fast path above sends nothing and needs no CA. */
    if (o->cfg.ca_bundle && config_check_ca_bundle(o->cfg.ca_bundle) < 0) {
        r = -EINVAL;
        goto out;
    }
    r = cmd_ensure_state(g.t, &g.auths, o->cfg.state_index, &g.state);
    if (r < 0)
        goto out;

    r = prepare(&g);
    if (r < 0)
        goto out;
    r = registration_run(&g);
    if (r == 0)
        sd_notify(0, "READY=1\nSTATUS=Provisioned");
out:
    registration_done(&g);
    return r;
}
