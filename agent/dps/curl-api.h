/* SPDX-License-Identifier: MIT */
/*
 * libcurl, loaded with dlopen() when the first HTTP handle is made rather than linked: of the
 * agent's runs only register and enroll talk to a server, and on Debian libcurl brings 27
 * libraries of its own, whose loading is about a third of the boot fast path's time and most
 * of its memory (bench/RESULTS.md, footprint). The TLS library is the one libcurl uses, so the
 * one OpenSSL call the agent makes on libcurl's SSL_CTX is looked up through it as well.
 */
#pragma once

#include <curl/curl.h>
#include <openssl/ssl.h>

/* The SONAME of a libcurl built with OpenSSL (Debian's libcurl4, Yocto's libcurl). */
#ifndef CURL_API_SONAME
#define CURL_API_SONAME "libcurl.so.4"
#endif

struct curl_api {
    CURL *(*easy_init)(void);
    void (*easy_cleanup)(CURL *curl);
    void (*easy_reset)(CURL *curl);
    CURLcode (*easy_setopt)(CURL *curl, CURLoption option, ...);
    CURLcode (*easy_perform)(CURL *curl);
    CURLcode (*easy_getinfo)(CURL *curl, CURLINFO info, ...);
    const char *(*easy_strerror)(CURLcode code);
    struct curl_slist *(*slist_append)(struct curl_slist *list, const char *string);
    void (*slist_free_all)(struct curl_slist *list);
    X509_VERIFY_PARAM *(*ssl_ctx_get0_param)(SSL_CTX *ctx);
};

/* Loads libcurl (CURL_API_SONAME) once per process; later calls return the same table. Logs
 * and returns -ENOPKG when it is missing or not built with OpenSSL. */
int curl_api_load(const struct curl_api **ret);

/* One load of soname into *ret, no caching (curl_api_load's work; tests give other names). */
int curl_api_load_from(const char *soname, struct curl_api *ret);
