/* SPDX-License-Identifier: MIT */
/*
 * HTTPS for the DPS exchange, through libcurl. One handle per run, so every request of a
 * registration reuses one TLS connection. Peer and host name verification are always on and
 * cannot be configured off; only https:// is spoken and redirects are not followed.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct http_options {
    const char *ca_bundle;  /* NULL: the system's trust store */
    const char *proxy;      /* NULL: libcurl's https_proxy/HTTPS_PROXY/ALL_PROXY variables */
    const char *no_proxy;
    uint32_t timeout_sec;   /* per request */
    time_t clock_floor;     /* certificates are checked at max(now, clock_floor) */
};

/* What went wrong below HTTP, as the caller must treat it. */
enum http_failure {
    HTTP_FAIL_NONE = 0,
    HTTP_FAIL_NETWORK, /* resolve, connect, reset, timeout: try again later */
    HTTP_FAIL_TRUST,   /* the server's certificate is not trusted: configuration */
    HTTP_FAIL_CLOCK,   /* certificate not yet valid or expired: likely the clock */
    HTTP_FAIL_PROXY,   /* the proxy refused or is not a proxy */
    HTTP_FAIL_ANSWER,  /* the answer was too large or not HTTP */
    HTTP_FAIL_OTHER,
};

struct http_response {
    long status;
    char *body; /* NUL-terminated */
    size_t body_size;
    char *retry_after;  /* header values, NULL when absent */
    char *date;
    char *content_type;
    enum http_failure failure;
    char error[256];    /* libcurl's text for a failure, for the one log line */
};

struct http;

int http_new(const struct http_options *o, struct http **ret);
void http_free(struct http *h);

/* The trust store in use, for messages: a directory, a file, or libcurl's default. */
const char *http_trust_store(const struct http *h);

/*
 * Sends one request. Returns 0 when an HTTP answer arrived (any status), else a negative errno
 * with ret->failure and ret->error saying what happened. authorization may be NULL; body NULL
 * sends no body. The answer body is capped at 64 KiB (DPS answers are a few KiB).
 */
int http_request(struct http *h, const char *method, const char *url, const char *authorization,
                 const char *body, struct http_response *ret);

void http_response_done(struct http_response *r);

/* Caps the next requests' time at sec (the time left before an overall deadline); 0 lifts it. */
void http_set_time_left(struct http *h, uint32_t sec);

/* TLS connections opened so far: 1 for a whole registration on a healthy network. */
unsigned http_connections(const struct http *h);
/* Requests sent so far. */
unsigned http_requests(const struct http *h);

/* Replaces the user:password part of every URL in a text, in place, with three stars: libcurl
 * quotes URLs in its error messages (field case B31). */
void http_redact_userinfo(char *text);
