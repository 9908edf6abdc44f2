/* SPDX-License-Identifier: MIT */
#include "curl-api.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>

#include "basic/log.h"
#include "basic/macro.h"

int curl_api_load_from(const char *soname, struct curl_api *ret) {
    static const struct {
        const char *name;
        size_t offset;
    } symbols[] = {
        {"curl_easy_init", offsetof(struct curl_api, easy_init)},
        {"curl_easy_cleanup", offsetof(struct curl_api, easy_cleanup)},
        {"curl_easy_reset", offsetof(struct curl_api, easy_reset)},
        {"curl_easy_setopt", offsetof(struct curl_api, easy_setopt)},
        {"curl_easy_perform", offsetof(struct curl_api, easy_perform)},
        {"curl_easy_getinfo", offsetof(struct curl_api, easy_getinfo)},
        {"curl_easy_strerror", offsetof(struct curl_api, easy_strerror)},
        {"curl_slist_append", offsetof(struct curl_api, slist_append)},
        {"curl_slist_free_all", offsetof(struct curl_api, slist_free_all)},
        /* Found through libcurl's own dependencies: the OpenSSL it was built with. */
        {"SSL_CTX_get0_param", offsetof(struct curl_api, ssl_ctx_get0_param)},
    };
    struct curl_api api = {0};
    void *lib;

    /* Never closed once it serves: libcurl's handles live until the process ends. */
    lib = dlopen(soname, RTLD_NOW | RTLD_LOCAL);
    if (!lib)
        return log_error_errno(ENOPKG, "Cannot load %s, which talking to DPS needs: %s. "
                               "Install libcurl (Debian: libcurl4).", soname, dlerror());
    for (size_t i = 0; i < ARRAY_SIZE(symbols); i++) {
        void *sym = dlsym(lib, symbols[i].name);
        if (!sym) {
            dlclose(lib);
            return log_error_errno(ENOPKG, "%s has no %s: the agent needs a libcurl built "
                                   "with OpenSSL (Debian: libcurl4, not libcurl3-gnutls).",
                                   soname, symbols[i].name);
        }
        /* POSIX guarantees a function pointer survives the round trip through void *. */
        *(void **)((char *)&api + symbols[i].offset) = sym;
    }
    *ret = api;
    return 0;
}

int curl_api_load(const struct curl_api **ret) {
    static struct curl_api api;
    static bool loaded;
    int r;

    if (!loaded) {
        r = curl_api_load_from(CURL_API_SONAME, &api);
        if (r < 0)
            return r;
        loaded = true;
    }
    *ret = &api;
    return 0;
}
