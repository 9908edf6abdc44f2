/* SPDX-License-Identifier: MIT */
#include "http.h"

#include <errno.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "basic/log.h"
#include "basic/macro.h"
#include "dps/curl-api.h"

#define HTTP_BODY_MAX (64 * 1024)
#define HTTP_USER_AGENT "tpm-provision/" VERSION

struct http {
    const struct curl_api *api;
    CURL *curl;
    struct http_options options;
    /* The trust store: a file parsed whole, or a directory OpenSSL reads one certificate at a
     * time from; both NULL: libcurl's built-in default. */
    const char *ca_file, *ca_dir;
    uint32_t time_left;
    unsigned connections, requests;
    char errbuf[CURL_ERROR_SIZE];
};

struct collect {
    struct http_response *response;
    bool overflow;
};

static size_t on_body(char *data, size_t size, size_t n, void *userdata) {
    struct collect *c = userdata;
    struct http_response *r = c->response;
    size_t len = size * n;

    if (r->body_size + len > HTTP_BODY_MAX) {
        c->overflow = true;
        return 0; /* makes libcurl stop with CURLE_WRITE_ERROR */
    }
    char *p = realloc(r->body, r->body_size + len + 1);
    if (!p)
        return 0;
    memcpy(p + r->body_size, data, len);
    r->body = p;
    r->body_size += len;
    r->body[r->body_size] = '\0';
    return len;
}

static void keep_header(char **slot, const char *value, size_t len) {
    while (len > 0 && (value[len - 1] == '\r' || value[len - 1] == '\n' || value[len - 1] == ' '))
        len--;
    while (len > 0 && (*value == ' ' || *value == '\t')) {
        value++;
        len--;
    }
    free(*slot);
    *slot = strndup(value, len);
}

static size_t on_header(char *data, size_t size, size_t n, void *userdata) {
    struct collect *c = userdata;
    size_t len = size * n;
    static const struct { const char *name; size_t offset; } wanted[] = {
        {"retry-after:", offsetof(struct http_response, retry_after)},
        {"date:", offsetof(struct http_response, date)},
        {"content-type:", offsetof(struct http_response, content_type)},
    };

    /* A new status line (after a proxy's CONNECT answer, or a 100) starts a new header set. */
    if (len >= 5 && strncmp(data, "HTTP/", 5) == 0)
        for (size_t i = 0; i < ARRAY_SIZE(wanted); i++) {
            char **slot = (char **)((char *)c->response + wanted[i].offset);
            free(*slot);
            *slot = NULL;
        }
    for (size_t i = 0; i < ARRAY_SIZE(wanted); i++) {
        size_t k = strlen(wanted[i].name);
        if (len > k && strncasecmp(data, wanted[i].name, k) == 0)
            keep_header((char **)((char *)c->response + wanted[i].offset), data + k, len - k);
    }
    return len;
}

/* A device that slept in a warehouse may boot with its clock years behind (field case B26):
 * every certificate would look "not yet valid". Below the clock floor (the build time), the
 * chain is checked at the floor instead, so expiry is still enforced. */
static CURLcode on_ssl_ctx(CURL *curl, void *ssl_ctx, void *userdata) {
    const struct http *h = userdata;
    time_t now = time(NULL);
    (void)curl;

    if (h->options.clock_floor > 0 && now < h->options.clock_floor) {
        X509_VERIFY_PARAM *param = h->api->ssl_ctx_get0_param(ssl_ctx);
        X509_VERIFY_PARAM_set_time(param, h->options.clock_floor);
        log_warning("The system clock is before this build's date; checking the server "
                    "certificate at the build date instead.");
    }
    return CURLE_OK;
}

/*
 * CABundle= is the whole trust store, a PEM file or a hashed directory, never added to
 * libcurl's built-in one (Debian's adds /etc/ssl/certs to any file given): a device that pins
 * its DPS roots (field case B27) trusts those alone. Without it, libcurl's defaults stand: the
 * system's bundle file and directory both, so a CA appended to ca-certificates.crt by hand is
 * still trusted.
 */
static void choose_trust(struct http *h) {
    const char *b = h->options.ca_bundle;
    struct stat st;

    if (!b)
        return;
    if (stat(b, &st) == 0 && S_ISDIR(st.st_mode))
        h->ca_dir = b;
    else
        h->ca_file = b;
}

const char *http_trust_store(const struct http *h) {
    return h->ca_dir ? h->ca_dir : h->ca_file ? h->ca_file : "the system's, libcurl's default";
}

int http_new(const struct http_options *o, struct http **ret) {
    const struct curl_api *api;
    struct http *h;
    int r;

    r = curl_api_load(&api);
    if (r < 0)
        return r;
    h = calloc(1, sizeof(*h));
    if (!h)
        return -ENOMEM;
    h->api = api;
    h->options = *o;
    choose_trust(h);
    h->curl = h->api->easy_init();
    if (!h->curl) {
        free(h);
        return -ENOMEM;
    }
    *ret = h;
    return 0;
}

void http_free(struct http *h) {
    if (!h)
        return;
    h->api->easy_cleanup(h->curl);
    free(h);
}

static enum http_failure classify(CURLcode code, long verify_result, long connect_code) {
    switch (code) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_SSL_CONNECT_ERROR:
        return connect_code >= 300 ? HTTP_FAIL_PROXY : HTTP_FAIL_NETWORK;
    case CURLE_COULDNT_RESOLVE_PROXY:
        return HTTP_FAIL_PROXY;
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
        if (verify_result == X509_V_ERR_CERT_NOT_YET_VALID ||
            verify_result == X509_V_ERR_CERT_HAS_EXPIRED)
            return HTTP_FAIL_CLOCK;
        return HTTP_FAIL_TRUST;
    case CURLE_WRITE_ERROR:
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_UNSUPPORTED_PROTOCOL:
        return HTTP_FAIL_ANSWER;
    default:
        return HTTP_FAIL_OTHER;
    }
}

static int failure_errno(enum http_failure f) {
    switch (f) {
    case HTTP_FAIL_NETWORK: return -EHOSTUNREACH;
    case HTTP_FAIL_TRUST: return -ENOKEY;
    case HTTP_FAIL_CLOCK: return -ETIME;
    case HTTP_FAIL_PROXY: return -ENETUNREACH;
    case HTTP_FAIL_ANSWER: return -EBADMSG;
    default: return -EIO;
    }
}

int http_request(struct http *h, const char *method, const char *url, const char *authorization,
                 const char *body, struct http_response *ret) {
    struct curl_slist *headers = NULL;
    struct collect collect = {.response = ret};
    _cleanup_free_ char *auth = NULL;
    long verify_result = 0, connect_code = 0, connects = 0;
    CURL *c = h->curl;
    CURLcode code;

    *ret = (struct http_response){0};
    headers = h->api->slist_append(headers, "Accept: application/json");
    if (body)
        headers = h->api->slist_append(headers, "Content-Type: application/json; charset=utf-8");
    if (authorization) {
        if (asprintf(&auth, "Authorization: %s", authorization) < 0) {
            h->api->slist_free_all(headers);
            return -ENOMEM;
        }
        headers = h->api->slist_append(headers, auth);
    }

    h->api->easy_reset(c); /* keeps the connection cache: the TLS session stays open */
    h->api->easy_setopt(c, CURLOPT_URL, url);
    h->api->easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    h->api->easy_setopt(c, CURLOPT_HTTPHEADER, headers);
    h->api->easy_setopt(c, CURLOPT_USERAGENT, HTTP_USER_AGENT);
    if (body)
        h->api->easy_setopt(c, CURLOPT_POSTFIELDS, body);
    else if (strcmp(method, "GET") == 0)
        h->api->easy_setopt(c, CURLOPT_HTTPGET, 1L);
    h->api->easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https");
    h->api->easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    h->api->easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
    h->api->easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
    h->api->easy_setopt(c, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
    h->api->easy_setopt(c, CURLOPT_SSL_CTX_FUNCTION, on_ssl_ctx);
    h->api->easy_setopt(c, CURLOPT_SSL_CTX_DATA, h);
    if (h->ca_file || h->ca_dir) {
        h->api->easy_setopt(c, CURLOPT_CAINFO, h->ca_file);
        h->api->easy_setopt(c, CURLOPT_CAPATH, h->ca_dir);
    }
    if (h->options.proxy)
        h->api->easy_setopt(c, CURLOPT_PROXY, h->options.proxy);
    if (h->options.no_proxy)
        h->api->easy_setopt(c, CURLOPT_NOPROXY, h->options.no_proxy);
    uint32_t timeout = h->options.timeout_sec;
    if (h->time_left && h->time_left < timeout)
        timeout = h->time_left;
    h->api->easy_setopt(c, CURLOPT_TIMEOUT, (long)timeout);
    h->api->easy_setopt(c, CURLOPT_CONNECTTIMEOUT, (long)(timeout < 15 ? timeout : 15));
    h->api->easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    h->api->easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
    h->api->easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    h->api->easy_setopt(c, CURLOPT_WRITEDATA, &collect);
    h->api->easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    h->api->easy_setopt(c, CURLOPT_HEADERDATA, &collect);
    h->errbuf[0] = '\0';
    h->api->easy_setopt(c, CURLOPT_ERRORBUFFER, h->errbuf);

    code = h->api->easy_perform(c);
    h->api->slist_free_all(headers);
    if (auth)
        secure_zero(auth, strlen(auth));
    h->requests++;
    if (h->api->easy_getinfo(c, CURLINFO_NUM_CONNECTS, &connects) == CURLE_OK && connects > 0)
        h->connections += (unsigned)connects;

    if (code == CURLE_OK && !collect.overflow) {
        h->api->easy_getinfo(c, CURLINFO_RESPONSE_CODE, &ret->status);
        if (!ret->body) {
            ret->body = strdup("");
            if (!ret->body)
                return -ENOMEM;
        }
        return 0;
    }

    h->api->easy_getinfo(c, CURLINFO_SSL_VERIFYRESULT, &verify_result);
    h->api->easy_getinfo(c, CURLINFO_HTTP_CONNECTCODE, &connect_code);
    ret->failure = collect.overflow ? HTTP_FAIL_ANSWER : classify(code, verify_result, connect_code);
    if (collect.overflow)
        snprintf(ret->error, sizeof(ret->error), "answer larger than %d bytes", HTTP_BODY_MAX);
    else if (ret->failure == HTTP_FAIL_PROXY && connect_code >= 300)
        snprintf(ret->error, sizeof(ret->error), "the proxy answered CONNECT with HTTP %ld",
                 connect_code);
    else
        snprintf(ret->error, sizeof(ret->error), "%s", h->errbuf[0] ? h->errbuf
                                                                    : h->api->easy_strerror(code));
    /* libcurl quotes URLs in its messages, a proxy's password included (field case B31). */
    http_redact_userinfo(ret->error);
    return failure_errno(ret->failure);
}

void http_response_done(struct http_response *r) {
    free(r->body);
    free(r->retry_after);
    free(r->date);
    free(r->content_type);
    *r = (struct http_response){0};
}

void http_set_time_left(struct http *h, uint32_t sec) {
    h->time_left = sec;
}

unsigned http_connections(const struct http *h) {
    return h->connections;
}

unsigned http_requests(const struct http *h) {
    return h->requests;
}

void http_redact_userinfo(char *text) {
    for (char *p = strstr(text, "://"); p; p = strstr(p, "://")) {
        char *start = p + 3;
        size_t span = strcspn(start, "/@ '\"\t");
        if (start[span] == '@' && span > 0) {
            memmove(start + 3, start + span, strlen(start + span) + 1);
            memcpy(start, "***", 3);
        }
        p = start;
    }
}
