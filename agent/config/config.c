/* SPDX-License-Identifier: MIT */
/*
 * Configuration sources and their syntax follow systemd.syntax(7): Key=Value under [Section]
 * headers, '#' and ';' comment lines, backslash continuation, whole-value quoting, and an
 * empty assignment resetting a key. One table below describes every key once; defaults,
 * parsing, error messages, the kernel command line and the environment all come from it.
 */
#include "config.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "basic/log.h"
#include "basic/macro.h"
#include "state/nvstate.h"
#include "state/record.h"
#include "tpm/ekpub.h"
#include "tpm/keys.h"
#include "tpm/tpm.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(FILE *, fclose)
#define _cleanup_fclose_ _cleanup_(fclosep)

DEFINE_TRIVIAL_CLEANUP_FUNC(DIR *, closedir)
#define _cleanup_closedir_ _cleanup_(closedirp)

#define CMDLINE_PREFIX "tpm_provision."
/* Far beyond any sensible value; a bound keeps a corrupted file from eating memory. */
#define LINE_MAX_BYTES (64 * 1024)
#define VALUE_MAX_BYTES 4096

static const char *const dropin_dirs[] = {
    "/usr/lib/tpm-provision/tpm-provision.conf.d",
    "/run/tpm-provision/tpm-provision.conf.d",
    "/etc/tpm-provision/tpm-provision.conf.d",
};

enum value_type {
    VALUE_TEXT,        /* anything without control characters */
    VALUE_ID_SCOPE,    /* 1..24 letters and digits */
    VALUE_ENDPOINT,    /* https://host[:port][/] */
    VALUE_PATH,        /* absolute path */
    VALUE_API_VERSION, /* goes into a URL query: letters, digits, '-', '.' */
    VALUE_PROXY,       /* like text, but never echoed: it may carry user:password */
    VALUE_SECONDS,     /* decimal, optional unit s, min, h */
    VALUE_HANDLE,      /* decimal or 0x hex */
};

struct key {
    const char *section;
    const char *name;    /* in the INI file */
    const char *cmdline; /* after "tpm_provision.", or NULL */
    const char *env;     /* or NULL */
    enum value_type type;
    size_t offset;
    const char *def_text;   /* string keys: default, or NULL */
    uint32_t def, min, max; /* number keys */
};

#define TEXT_KEY(sec, n, cl, ev, t, field, d)                                                      \
    { sec, n, cl, ev, t, offsetof(struct config, field), d, 0, 0, 0 }
#define NUM_KEY(sec, n, cl, t, field, d, lo, hi)                                                   \
    { sec, n, cl, NULL, t, offsetof(struct config, field), NULL, d, lo, hi }

static const char *const sections[] = {"Provisioning", "TPM"};

static const struct key keys[] = {
    TEXT_KEY("Provisioning", "IdScope", "id_scope", "TPM_PROVISION_ID_SCOPE", VALUE_ID_SCOPE,
             id_scope, NULL),
    TEXT_KEY("Provisioning", "GlobalEndpoint", "endpoint", "TPM_PROVISION_ENDPOINT", VALUE_ENDPOINT,
             endpoint, CONFIG_DEFAULT_ENDPOINT),
    TEXT_KEY("Provisioning", "RegistrationId", "registration_id", "TPM_PROVISION_REGISTRATION_ID",
             VALUE_TEXT, registration_id, NULL),
    TEXT_KEY("Provisioning", "PayloadFile", NULL, NULL, VALUE_PATH, payload_file, NULL),
    TEXT_KEY("Provisioning", "ApiVersion", "api_version", NULL, VALUE_API_VERSION, api_version,
             CONFIG_DEFAULT_API_VERSION),
    TEXT_KEY("Provisioning", "CABundle", "ca_bundle", "TPM_PROVISION_CA_BUNDLE", VALUE_PATH,
             ca_bundle, NULL),
    TEXT_KEY("Provisioning", "Proxy", "proxy", NULL, VALUE_PROXY, proxy, NULL),
    TEXT_KEY("Provisioning", "NoProxy", NULL, NULL, VALUE_TEXT, no_proxy, NULL),
    NUM_KEY("Provisioning", "RequestTimeoutSec", NULL, VALUE_SECONDS, request_timeout_sec, 30, 1,
            600),
    NUM_KEY("Provisioning", "TimeoutSec", "timeout", VALUE_SECONDS, deadline_sec, 900, 0, 86400),
    NUM_KEY("Provisioning", "SasTokenLifetimeSec", NULL, VALUE_SECONDS, sas_ttl_sec, 3600, 60,
            86400),

    TEXT_KEY("TPM", "TCTI", "tcti", "TPM_PROVISION_TCTI", VALUE_TEXT, tcti, NULL),
    NUM_KEY("TPM", "EKHandle", NULL, VALUE_HANDLE, ek_handle, EK_DEFAULT_HANDLE,
            CONFIG_OWNER_PERSISTENT_MIN, CONFIG_OWNER_PERSISTENT_MAX),
    NUM_KEY("TPM", "SRKHandle", NULL, VALUE_HANDLE, srk_handle, SRK_DEFAULT_HANDLE,
            CONFIG_OWNER_PERSISTENT_MIN, CONFIG_OWNER_PERSISTENT_MAX),
    NUM_KEY("TPM", "IdentityHandle", NULL, VALUE_HANDLE, identity_handle,
            CONFIG_DEFAULT_IDENTITY_HANDLE, CONFIG_OWNER_PERSISTENT_MIN,
            CONFIG_OWNER_PERSISTENT_MAX),
    NUM_KEY("TPM", "StateIndex", NULL, VALUE_HANDLE, state_index, NVSTATE_DEFAULT_INDEX,
            CONFIG_OWNER_NV_INDEX_MIN, CONFIG_OWNER_NV_INDEX_MAX),
    TEXT_KEY("TPM", "OwnerAuthFile", NULL, NULL, VALUE_PATH, owner_auth_file, NULL),
    TEXT_KEY("TPM", "EndorsementAuthFile", NULL, NULL, VALUE_PATH, endorsement_auth_file, NULL),
    TEXT_KEY("TPM", "LockoutAuthFile", NULL, NULL, VALUE_PATH, lockout_auth_file, NULL),
};

static bool key_is_number(const struct key *k) {
    return k->type == VALUE_SECONDS || k->type == VALUE_HANDLE;
}

static char **key_text(struct config *c, const struct key *k) {
    return (char **)((char *)c + k->offset);
}

static uint32_t *key_number(struct config *c, const struct key *k) {
    return (uint32_t *)((char *)c + k->offset);
}

static int key_reset(struct config *c, const struct key *k) {
    char **s;

    if (key_is_number(k)) {
        *key_number(c, k) = k->def;
        return 0;
    }
    s = key_text(c, k);
    free(*s);
    *s = NULL;
    if (k->def_text) {
        *s = strdup(k->def_text);
        if (!*s)
            return log_error_errno(ENOMEM, "Out of memory.");
    }
    return 0;
}

int config_init(struct config *c) {
    memset(c, 0, sizeof(*c));
    for (size_t i = 0; i < ARRAY_SIZE(keys); i++)
        if (key_reset(c, &keys[i]) < 0) {
            config_done(c);
            return -ENOMEM;
        }
    return 0;
}

void config_done(struct config *c) {
    for (size_t i = 0; i < ARRAY_SIZE(keys); i++)
        if (!key_is_number(&keys[i]))
            free(*key_text(c, &keys[i]));
    memset(c, 0, sizeof(*c));
}

static const char *check_id_scope(const char *v) {
    size_t n = strlen(v);

    if (n > RECORD_ID_SCOPE_MAX)
        return "it is longer than 24 characters";
    for (const char *p = v; *p; p++)
        if (!isascii(*p) || !isalnum(*p))
            return "it may hold only letters and digits";
    return NULL;
}

/* TLS is never optional, and the agent appends the DPS paths itself, so anything after the
 * authority would either be dropped silently or produce a wrong URL. */
const char *config_check_endpoint(const char *v) {
    const char *host = v + strlen("https://");
    size_t n;

    if (strncasecmp(v, "http://", strlen("http://")) == 0)
        return "plain http:// is not accepted, TLS is never optional";
    if (strncasecmp(v, "https://", strlen("https://")) != 0)
        return "it is not an https:// URL";
    n = strlen(host);
    if (n > 0 && host[n - 1] == '/')
        n--;
    if (n == 0)
        return "it has no host name";
    for (size_t i = 0; i < n; i++)
        if (strchr("/?#@\\ ", host[i]))
            return "only a host name and port may follow https://, no path, query or user name";
    return NULL;
}

int config_check_handles(const struct config *c) {
    const struct {
        const char *name;
        uint32_t handle;
    } h[] = {
        {"EKHandle= (--ek-handle)", c->ek_handle},
        {"SRKHandle= (--srk-handle)", c->srk_handle},
        {"IdentityHandle= (--identity-handle)", c->identity_handle},
    };

    for (size_t i = 0; i < ARRAY_SIZE(h); i++)
        for (size_t j = i + 1; j < ARRAY_SIZE(h); j++)
            if (h[i].handle == h[j].handle)
                return log_error_errno(EINVAL, "%s and %s both name 0x%08x: each key needs a "
                                       "handle of its own.", h[i].name, h[j].name, h[i].handle);
    return 0;
}

static const char *check_api_version(const char *v) {
    if (strlen(v) > 32)
        return "it is longer than 32 characters";
    for (const char *p = v; *p; p++)
        if (!isascii(*p) || !(isalnum(*p) || *p == '-' || *p == '.'))
            return "it may hold only letters, digits, '-' and '.'";
    return NULL;
}

/* Digits only: strtoul() would accept a sign, leading blanks and octal. */
static const char *parse_uint(const char *v, unsigned base, uint64_t *ret, const char **ret_end) {
    uint64_t n = 0;
    const char *p = v;

    for (; isascii(*p) && (base == 16 ? isxdigit(*p) : isdigit(*p)); p++) {
        n = n * base + (uint64_t)(isdigit(*p) ? *p - '0' : tolower(*p) - 'a' + 10);
        if (n > UINT32_MAX)
            return "it is too large";
    }
    if (p == v)
        return "it is not a number";
    *ret = n;
    *ret_end = p;
    return NULL;
}

static const char *parse_handle(const char *v, uint64_t *ret) {
    bool hex = v[0] == '0' && (v[1] == 'x' || v[1] == 'X');
    const char *end, *why;

    why = parse_uint(hex ? v + 2 : v, hex ? 16 : 10, ret, &end);
    if (why)
        return why;
    if (*end)
        return "it is not a number";
    return NULL;
}

/* A subset of systemd.time(7): one number with one optional unit. */
static const char *parse_seconds(const char *v, uint64_t *ret) {
    static const struct {
        const char *unit;
        unsigned factor;
    } units[] = {{"", 1}, {"s", 1}, {"sec", 1}, {"min", 60}, {"h", 3600}};
    const char *end, *why;
    uint64_t n;

    why = parse_uint(v, 10, &n, &end);
    if (why)
        return why;
    while (*end == ' ')
        end++;
    for (size_t i = 0; i < ARRAY_SIZE(units); i++)
        if (strcmp(end, units[i].unit) == 0) {
            *ret = n * units[i].factor;
            return *ret > UINT32_MAX ? "it is too large" : NULL;
        }
    return "its unit is not one of s, min, h";
}

static void describe_expected(const struct key *k, char *buf, size_t size) {
    switch (k->type) {
    case VALUE_TEXT: snprintf(buf, size, "text without control characters"); break;
    case VALUE_ID_SCOPE: snprintf(buf, size, "the DPS ID scope, like 0ne00001234"); break;
    case VALUE_ENDPOINT:
        snprintf(buf, size, "https://HOST[:PORT], like %s", CONFIG_DEFAULT_ENDPOINT);
        break;
    case VALUE_PATH: snprintf(buf, size, "an absolute path"); break;
    case VALUE_API_VERSION:
        snprintf(buf, size, "a DPS api-version, like %s", CONFIG_DEFAULT_API_VERSION);
        break;
    case VALUE_PROXY: snprintf(buf, size, "a proxy URL, like http://proxy.example:3128"); break;
    case VALUE_SECONDS:
        snprintf(buf, size, "seconds from %u to %u, optionally followed by s, min or h", k->min,
                 k->max);
        break;
    case VALUE_HANDLE:
        snprintf(buf, size, "a handle from 0x%08x to 0x%08x, decimal or 0x hex", k->min, k->max);
        break;
    }
}

/* Stores v (normalised) in k's field; -EINVAL with the reason in *ret_why when v is not
 * acceptable for k. */
const char *config_check_proxy(const char *url) {
    static const char *const schemes[] = {"http://", "https://", "socks4://", "socks4a://",
                                          "socks5://", "socks5h://"};
    const char *host = NULL, *p, *end;

    /* libcurl would take "http://proxy .example" and fail on every request as though the
     * proxy were down; a URL never holds a space or a control character unencoded. */
    for (p = url; *p; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
            return "it holds a space, a control character or a non-ASCII byte (percent-encode "
                   "one in a password, like %20)";
    for (size_t i = 0; i < ARRAY_SIZE(schemes); i++)
        if (strncmp(url, schemes[i], strlen(schemes[i])) == 0)
            host = url + strlen(schemes[i]);
    if (!host)
        return "it does not start with http://, https://, socks4://, socks4a://, socks5:// or "
               "socks5h://";
    end = host + strcspn(host, "/?#");
    p = memchr(host, '@', (size_t)(end - host));
    if (p)
        host = p + 1; /* user:password@ */
    if (host == end || *host == ':')
        return "it names no host";
    /* An optional :PORT after the host (or after a bracketed IPv6 address). */
    const char *colon = host[0] == '[' ? memchr(host, ']', (size_t)(end - host)) : host;
    colon = colon ? memchr(colon, ':', (size_t)(end - colon)) : NULL;
    if (colon) {
        char *stop;
        unsigned long port = strtoul(colon + 1, &stop, 10);
        if (stop == colon + 1 || stop != end || port == 0 || port > 65535)
            return "its port is not a number from 1 to 65535";
    }
    if (*end && strcmp(end, "/") != 0)
        return "it has a path; a proxy URL is scheme://[user:password@]host[:port]";
    return NULL;
}

static int key_parse(struct config *c, const struct key *k, const char *v, const char **ret_why) {
    const char *why = NULL;
    char *copy, **field;
    uint64_t n;

    if (key_is_number(k)) {
        why = k->type == VALUE_HANDLE ? parse_handle(v, &n) : parse_seconds(v, &n);
        if (!why && (n < k->min || n > k->max))
            why = "it is out of range";
        if (why) {
            *ret_why = why;
            return -EINVAL;
        }
        *key_number(c, k) = (uint32_t)n;
        return 0;
    }

    switch (k->type) {
    case VALUE_ID_SCOPE: why = check_id_scope(v); break;
    case VALUE_ENDPOINT: why = config_check_endpoint(v); break;
    case VALUE_PATH: why = v[0] != '/' ? "it is not an absolute path" : NULL; break;
    case VALUE_API_VERSION: why = check_api_version(v); break;
    case VALUE_PROXY: why = config_check_proxy(v); break;
    default: break;
    }
    if (why) {
        *ret_why = why;
        return -EINVAL;
    }

    copy = strdup(v);
    if (!copy)
        return log_error_errno(ENOMEM, "Out of memory.");
    if (k->type == VALUE_ENDPOINT && copy[strlen(copy) - 1] == '/')
        copy[strlen(copy) - 1] = '\0';
    field = key_text(c, k);
    free(*field);
    *field = copy;
    return 0;
}

/*
 * Sets one key from one source. where names the source ("FILE:LINE", "Kernel command line",
 * "Environment") and name the key as that source spells it. An empty value resets the key,
 * as an empty assignment does in systemd.
 */
static int key_set(struct config *c, const struct key *k, const char *v, const char *where,
                   const char *name) {
    char expected[160];
    const char *why = NULL;
    bool shown;
    int r;

    if (!*v)
        return key_reset(c, k);

    if (strlen(v) > VALUE_MAX_BYTES)
        why = "it is too long";
    for (const char *p = v; !why && *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            why = "it contains a control character";
    shown = !why;
    if (!why) {
        r = key_parse(c, k, v, &why);
        if (r != -EINVAL)
            return r;
    }

    describe_expected(k, expected, sizeof(expected));
    /* A command that reads no [Provisioning] key is not stopped by a bad one: the key keeps the
     * value it had, and register still refuses it. */
    bool unused = c->provisioning_unused && strcmp(k->section, "Provisioning") == 0;
    int level = unused ? LOG_WARNING : LOG_ERR;
    const char *then = unused ? " This command does not use it, so it is ignored here." : "";
    /* Control characters would garble the log line, and a proxy URL may carry a password. */
    if (k->type == VALUE_PROXY || !shown)
        r = log_full_errno(level, EINVAL, "%s: invalid %s= (value not shown%s): %s; expected %s.%s",
                           where, name, shown ? ", it may hold a password" : "", why, expected,
                           then);
    else
        r = log_full_errno(level, EINVAL, "%s: invalid %s=%s: %s; expected %s.%s", where, name, v,
                           why, expected, then);
    return unused ? 0 : r;
}

static const struct key *key_find(const char *section, const char *name, bool ignore_case) {
    for (size_t i = 0; i < ARRAY_SIZE(keys); i++)
        if ((!section || strcmp(keys[i].section, section) == 0) &&
            (ignore_case ? strcasecmp(keys[i].name, name) : strcmp(keys[i].name, name)) == 0)
            return &keys[i];
    return NULL;
}

/* "IdScope=, GlobalEndpoint=, ..." for an error message. */
static void list_keys(const char *section, char *buf, size_t size) {
    size_t used = 0;

    buf[0] = '\0';
    for (size_t i = 0; i < ARRAY_SIZE(keys) && used < size; i++) {
        if (section && strcmp(keys[i].section, section) != 0)
            continue;
        if (!section && !keys[i].cmdline)
            continue;
        used += (size_t)snprintf(buf + used, size - used, "%s%s%s", used ? ", " : "",
                                 section ? keys[i].name : keys[i].cmdline, section ? "=" : "");
    }
}

/* A typo must never silently do nothing: say what was meant, or what is possible. */
static int unknown_key(const char *where, const char *section, const char *name) {
    const struct key *k;
    char valid[512];

    k = key_find(NULL, name, false);
    if (k)
        return log_error_errno(EINVAL, "%s: %s= belongs in section [%s], not [%s].", where, name,
                               k->section, section);
    k = key_find(section, name, true);
    if (k)
        return log_error_errno(
            EINVAL,
            "%s: unknown key %s= in section [%s]; did you mean %s=? Keys are case-sensitive.",
            where, name, section, k->name);
    list_keys(section, valid, sizeof(valid));
    return log_error_errno(EINVAL, "%s: unknown key %s= in section [%s]; valid keys: %s.", where,
                           name, section, valid);
}

static char *strip(char *s) {
    size_t n;

    while (isspace((unsigned char)*s))
        s++;
    n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    return s;
}

/*
 * Removes quotes around a whole value, in place: "..." or '...'. Inside, a backslash escapes
 * the quote character and itself; other backslashes stay. A quote anywhere but the start is
 * an ordinary character. Returns why the value is malformed, or NULL.
 */
static const char *unquote(char *v) {
    char q = v[0], *out = v;

    if (q != '"' && q != '\'')
        return NULL;
    for (const char *p = v + 1; *p; p++) {
        if (*p == '\\' && (p[1] == q || p[1] == '\\')) {
            *out++ = *++p;
            continue;
        }
        if (*p == q) {
            *out = '\0';
            return p[1] ? "text follows the closing quote" : NULL;
        }
        *out++ = *p;
    }
    return "the closing quote is missing";
}

static int parse_section(const char *path, unsigned line, char *l, const char **section) {
    size_t n = strlen(l);

    if (l[n - 1] != ']')
        return log_error_errno(EINVAL, "%s:%u: section header %s lacks the closing ']'.", path,
                               line, l);
    l[n - 1] = '\0';
    for (size_t i = 0; i < ARRAY_SIZE(sections); i++)
        if (strcmp(l + 1, sections[i]) == 0) {
            *section = sections[i];
            return 0;
        }
    return log_error_errno(EINVAL,
                           "%s:%u: unknown section [%s]; valid sections: [Provisioning], [TPM].",
                           path, line, l + 1);
}

/* One logical line: continuation lines are already joined, comments and blank lines gone. */
static int parse_line(struct config *c, const char *path, unsigned line, char *l,
                      const char **section) {
    char where[PATH_MAX + 16], *eq, *name, *value;
    const struct key *k;
    const char *why;

    if (!*l) /* a lone backslash continued into an empty line */
        return 0;
    if (l[0] == '[')
        return parse_section(path, line, l, section);

    eq = strchr(l, '=');
    if (!eq)
        return log_error_errno(EINVAL, "%s:%u: expected Key=Value or a [Section] header.", path,
                               line);
    *eq = '\0';
    name = strip(l);
    value = strip(eq + 1);
    snprintf(where, sizeof(where), "%s:%u", path, line);
    if (!*name)
        return log_error_errno(EINVAL, "%s: the key name before '=' is missing.", where);

    if (!*section) {
        k = key_find(NULL, name, false);
        if (k)
            return log_error_errno(EINVAL,
                                   "%s: %s= comes before any section header; put it under [%s].",
                                   where, name, k->section);
        return log_error_errno(
            EINVAL,
            "%s: %s= comes before any section header, and no section has such a key; valid sections: [Provisioning], [TPM].",
            where, name);
    }
    k = key_find(*section, name, false);
    if (!k)
        return unknown_key(where, *section, name);

    why = unquote(value);
    if (why)
        return log_error_errno(EINVAL, "%s: %s=: %s.", where, name, why);
    return key_set(c, k, value, where, name);
}

/* An odd number of trailing backslashes continues the line; "\\\\" is an escaped backslash. */
static bool ends_in_continuation(const char *l) {
    size_t n = strlen(l), count = 0;

    while (count < n && l[n - 1 - count] == '\\')
        count++;
    return count % 2 == 1;
}

static int append_line(char **joined, const char *l) {
    size_t old = *joined ? strlen(*joined) : 0, n = strlen(l);
    char *p;

    if (old + n + 2 > LINE_MAX_BYTES)
        return -E2BIG;
    p = realloc(*joined, old + n + 2);
    if (!p)
        return -ENOMEM;
    if (old)
        p[old++] = ' ';
    memcpy(p + old, l, n + 1);
    *joined = p;
    return 0;
}

static int parse_stream(struct config *c, const char *path, FILE *f) {
    _cleanup_free_ char *buf = NULL, *joined = NULL;
    const char *section = NULL;
    unsigned line = 0, start = 0;
    size_t size = 0;
    ssize_t n;
    int r;

    while ((n = getline(&buf, &size, f)) >= 0) {
        char *l;

        line++;
        if (memchr(buf, '\0', (size_t)n))
            return log_error_errno(
                EINVAL, "%s:%u: the line contains a NUL byte; is this a text file?", path, line);
        l = strip(buf);
        /* systemd.syntax(7): comment lines inside a continued line are skipped. */
        if (*l == '#' || *l == ';' || (!*l && !joined))
            continue;

        bool more = ends_in_continuation(l);
        if (more) {
            l[strlen(l) - 1] = '\0';
            l = strip(l);
        }
        if (!joined)
            start = line;
        r = append_line(&joined, l);
        if (r == -E2BIG)
            return log_error_errno(EINVAL, "%s:%u: the line is longer than %u bytes.", path, start,
                                   LINE_MAX_BYTES);
        if (r < 0)
            return log_error_errno(r, "Out of memory.");
        if (more)
            continue;

        r = parse_line(c, path, start, joined, &section);
        free(TAKE_PTR(joined));
        if (r < 0)
            return r;
    }
    if (ferror(f))
        return log_error_errno(errno, "Cannot read %s: %m", path);
    /* A backslash on the last line continues into nothing: the line stands as it is. */
    if (joined)
        return parse_line(c, path, start, joined, &section);
    return 0;
}

int config_load_file(struct config *c, const char *path) {
    _cleanup_fclose_ FILE *f = NULL;

    f = fopen(path, "re");
    if (!f && errno == ENOENT)
        return -ENOENT;
    if (!f)
        return log_error_errno(errno, "Cannot open configuration file %s: %m", path);
    log_debug("Reading configuration file %s.", path);
    return parse_stream(c, path, f);
}

struct dropin {
    char *name, *path;
};

static void dropins_free(struct dropin *d, size_t n) {
    for (size_t i = 0; i < n; i++) {
        free(d[i].name);
        free(d[i].path);
    }
    free(d);
}

static int dropin_compare(const void *a, const void *b) {
    return strcmp(((const struct dropin *)a)->name, ((const struct dropin *)b)->name);
}

static bool is_conf_name(const char *name) {
    size_t n = strlen(name);

    return name[0] != '.' && n > strlen(".conf") &&
           strcmp(name + n - strlen(".conf"), ".conf") == 0;
}

/* Adds dir's *.conf to the list; a name already there (from an earlier directory) is masked,
 * that is, replaced by this directory's file. */
static int dropins_add_dir(const char *dir, struct dropin **list, size_t *n) {
    _cleanup_closedir_ DIR *d = NULL;
    struct dirent *de;
    struct dropin *p;

    d = opendir(dir);
    if (!d) {
        if (errno != ENOENT)
            log_warning_errno(errno, "Cannot read drop-in directory %s, skipping it: %m", dir);
        return 0;
    }
    while ((errno = 0, de = readdir(d))) {
        _cleanup_free_ char *path = NULL, *name = NULL;
        size_t i;

        if (!is_conf_name(de->d_name))
            continue;
        if (asprintf(&path, "%s/%s", dir, de->d_name) < 0)
            return log_error_errno(ENOMEM, "Out of memory.");
        for (i = 0; i < *n; i++)
            if (strcmp((*list)[i].name, de->d_name) == 0)
                break;
        if (i < *n) {
            free((*list)[i].path);
            (*list)[i].path = TAKE_PTR(path);
            continue;
        }
        p = reallocarray(*list, *n + 1, sizeof(**list));
        if (!p)
            return log_error_errno(ENOMEM, "Out of memory.");
        *list = p;
        name = strdup(de->d_name);
        if (!name)
            return log_error_errno(ENOMEM, "Out of memory.");
        (*list)[(*n)++] = (struct dropin){TAKE_PTR(name), TAKE_PTR(path)};
    }
    if (errno != 0)
        log_warning_errno(errno, "Cannot list drop-in directory %s completely: %m", dir);
    return 0;
}

static int load_dropin(struct config *c, const char *path) {
    struct stat st;
    int r;

    if (stat(path, &st) < 0) {
        log_warning_errno(errno, "Skipping drop-in %s: %m", path);
        return 0;
    }
    if (S_ISCHR(st.st_mode) && st.st_rdev == makedev(1, 3)) {
        log_debug("Drop-in %s is masked.", path);
        return 0;
    }
    if (!S_ISREG(st.st_mode)) {
        log_warning("Skipping drop-in %s: not a regular file.", path);
        return 0;
    }
    r = config_load_file(c, path);
    if (r == -ENOENT)
        return 0; /* removed since the directory was read */
    return r;
}

int config_load_dropin_dirs(struct config *c, const char *const *dirs, size_t n_dirs) {
    struct dropin *list = NULL;
    size_t n = 0;
    int r = 0;

    for (size_t i = 0; i < n_dirs && r >= 0; i++)
        r = dropins_add_dir(dirs[i], &list, &n);
    if (r >= 0 && n > 0)
        qsort(list, n, sizeof(*list), dropin_compare);
    for (size_t i = 0; i < n && r >= 0; i++)
        r = load_dropin(c, list[i].path);
    dropins_free(list, n);
    return r;
}

static int load_dropins(struct config *c, const char *main_path, bool custom) {
    _cleanup_free_ char *own_dir = NULL;

    if (!custom)
        return config_load_dropin_dirs(c, dropin_dirs, ARRAY_SIZE(dropin_dirs));
    if (asprintf(&own_dir, "%s.d", main_path) < 0)
        return log_error_errno(ENOMEM, "Out of memory.");
    return config_load_dropin_dirs(c, (const char *const[]){own_dir}, 1);
}

/* Kernel command line keys treat '-' and '_' alike, as the kernel and systemd do. */
static bool cmdline_prefix(const char *word, size_t *ret_len) {
    size_t n = strlen(CMDLINE_PREFIX);

    for (size_t i = 0; i < n; i++) {
        char a = word[i] == '-' ? '_' : word[i];
        if (a != CMDLINE_PREFIX[i])
            return false;
    }
    *ret_len = n;
    return true;
}

/* One word, quotes already removed. A typo here only warns: it must not stop the boot. */
static int cmdline_word(struct config *c, char *word) {
    char *eq = strchr(word, '='), *name;
    char valid[512], shown[64];
    const struct key *k = NULL;
    size_t skip;

    if (!cmdline_prefix(word, &skip))
        return 0;
    if (eq)
        *eq = '\0';
    name = word + skip;
    for (char *p = name; *p; p++)
        if (*p == '-')
            *p = '_';
    for (size_t i = 0; i < ARRAY_SIZE(keys) && !k; i++)
        if (keys[i].cmdline && strcmp(keys[i].cmdline, name) == 0)
            k = &keys[i];
    if (!k) {
        list_keys(NULL, valid, sizeof(valid));
        log_warning("Kernel command line: unknown key %s%s ignored; known keys: %s.",
                    CMDLINE_PREFIX, name, valid);
        return 0;
    }
    if (!eq) {
        log_warning("Kernel command line: %s%s has no value, ignored; write %s%s=VALUE.",
                    CMDLINE_PREFIX, name, CMDLINE_PREFIX, name);
        return 0;
    }
    snprintf(shown, sizeof(shown), "%s%s", CMDLINE_PREFIX, k->cmdline);
    return key_set(c, k, eq + 1, "Kernel command line", shown);
}

/* Words split at whitespace; double quotes, anywhere in a word, group and are removed, as the
 * kernel does for its own parameters (Documentation/admin-guide/kernel-parameters.rst). */
int config_load_cmdline(struct config *c, const char *cmdline) {
    _cleanup_free_ char *word = malloc(strlen(cmdline) + 1);
    const char *p = cmdline;
    int r;

    if (!word)
        return log_error_errno(ENOMEM, "Out of memory.");
    for (;;) {
        bool quoted = false;
        size_t n = 0;

        while (isspace((unsigned char)*p))
            p++;
        if (!*p)
            return 0;
        for (; *p && (quoted || !isspace((unsigned char)*p)); p++)
            if (*p == '"')
                quoted = !quoted;
            else
                word[n++] = *p;
        word[n] = '\0';
        r = cmdline_word(c, word);
        if (r < 0)
            return r;
    }
}

static int load_cmdline_file(struct config *c) {
    const char *path = getenv("TPM_PROVISION_CMDLINE");
    _cleanup_fclose_ FILE *f = NULL;
    _cleanup_free_ char *buf = NULL;
    size_t size = 0;
    bool custom = path && *path;

    if (!custom)
        path = "/proc/cmdline";
    f = fopen(path, "re");
    if (!f && errno == ENOENT && !custom) {
        log_debug("No %s (no /proc mounted?): no kernel command line keys.", path);
        return 0;
    }
    if (!f) {
        int error = errno;
        log_error_errno(error, "Cannot open kernel command line %s%s: %m", path,
                        custom ? " (TPM_PROVISION_CMDLINE)" : "");
        return custom ? path_error(error) : -error;
    }
    /* No NUL in /proc/cmdline: reading up to one reads the whole text. */
    if (getdelim(&buf, &size, '\0', f) < 0) {
        if (ferror(f))
            return log_error_errno(errno, "Cannot read kernel command line %s: %m", path);
        return 0;
    }
    return config_load_cmdline(c, buf);
}

static int load_environment(struct config *c) {
    for (size_t i = 0; i < ARRAY_SIZE(keys); i++) {
        const char *v;
        int r;

        if (!keys[i].env)
            continue;
        v = getenv(keys[i].env);
        if (!v || !*v)
            continue;
        r = key_set(c, &keys[i], v, "Environment", keys[i].env);
        if (r < 0)
            return r;
    }
    return 0;
}

int config_load(struct config *c) {
    const char *main_path = getenv("TPM_PROVISION_CONFIG");
    bool custom = main_path && *main_path;
    int r;

    if (!custom)
        main_path = CONFIG_DEFAULT_PATH;
    r = config_load_file(c, main_path);
    if (r == -ENOENT && custom)
        /* Named on purpose: a typo must not pass for the defaults unseen. */
        log_warning("The configuration file %s (TPM_PROVISION_CONFIG) does not exist; using "
                    "the defaults.", main_path);
    else if (r == -ENOENT)
        log_debug("No configuration file %s; using the defaults.", main_path);
    else if (r < 0)
        return r;

    r = load_dropins(c, main_path, custom);
    if (r < 0)
        return r;

    r = load_cmdline_file(c);
    if (r < 0)
        return r;

    return load_environment(c);
}

bool config_dir_has_hashed_certs(const char *dir) {
    DIR *d = opendir(dir);
    struct dirent *e;
    bool found = false;

    if (!d)
        return false;
    /* "5ad8a5d6.0": the subject hash, a dot and a sequence number (openssl-rehash(1)). */
    while (!found && (e = readdir(d))) {
        const char *n = e->d_name;
        size_t i = 0;
        while (i < 8 && isxdigit((unsigned char)n[i]))
            i++;
        found = i == 8 && n[8] == '.' && isdigit((unsigned char)n[9]) &&
                n[9 + strspn(n + 9, "0123456789")] == '\0';
    }
    closedir(d);
    return found;
}

int config_check_ca_bundle(const char *path) {
    struct stat st;
    bool dir;

    /* The value may come from a file, the kernel command line, the environment or an option:
     * the messages name the key and the option both. */
    if (stat(path, &st) < 0)
        return log_error_errno(errno, "Cannot use the CA bundle %s (CABundle=, --ca-bundle=): %m.",
                               path);
    dir = S_ISDIR(st.st_mode);
    if (access(path, dir ? R_OK | X_OK : R_OK) < 0)
        return log_error_errno(errno, "Cannot read the CA %s %s (CABundle=, --ca-bundle=): %m.",
                               dir ? "directory" : "bundle", path);
    /* OpenSSL looks a directory's certificates up by subject hash only: a directory of plain
     * PEM files would refuse every server, and say nothing more useful than "not trusted". */
    if (dir && !config_dir_has_hashed_certs(path))
        return log_error_errno(EINVAL, "The CA directory %s (CABundle=, --ca-bundle=) holds no "
                               "certificate named by its subject hash (like 5ad8a5d6.0): run "
                               "'openssl rehash %s', or name one PEM file instead.", path, path);
    if (!dir && !S_ISREG(st.st_mode))
        return log_error_errno(EINVAL, "The CA bundle %s (CABundle=, --ca-bundle=) is neither a "
                               "regular file nor a directory.", path);
    return 0;
}

int config_check_for_registration(const struct config *c) {
    const char *why;
    int r = 0;

    if (!c->id_scope || !*c->id_scope)
        r = log_error_errno(
            EINVAL,
            "No ID scope configured: set IdScope= in [Provisioning] of %s, give --id-scope=, tpm_provision.id_scope= on the kernel command line or $TPM_PROVISION_ID_SCOPE. It is shown on the DPS instance's overview page.",
            getenv("TPM_PROVISION_CONFIG") && *getenv("TPM_PROVISION_CONFIG")
                ? getenv("TPM_PROVISION_CONFIG")
                : CONFIG_DEFAULT_PATH);
    else if ((why = check_id_scope(c->id_scope)))
        r = log_error_errno(EINVAL, "ID scope '%s' is not valid: %s.", c->id_scope, why);

    if (c->registration_id && ekpub_registration_id_valid(c->registration_id, &why) < 0)
        r = log_error_errno(
            EINVAL,
            "RegistrationId '%s' is not a valid DPS registration ID: %s. DPS registration IDs are lowercase; leave RegistrationId= unset to use the one derived from the EK.",
            c->registration_id, why);

    if (!c->endpoint)
        r = log_error_errno(
            EINVAL, "No global endpoint configured: set GlobalEndpoint=, or leave it out for %s.",
            CONFIG_DEFAULT_ENDPOINT);
    else if ((why = config_check_endpoint(c->endpoint)))
        r = log_error_errno(EINVAL,
                            "Global endpoint '%s' is not valid: %s; expected https://HOST[:PORT].",
                            c->endpoint, why);

    if (!c->proxy) {
        static const char *const vars[] = {"https_proxy", "HTTPS_PROXY", "all_proxy",
                                           "ALL_PROXY"};
        for (size_t i = 0; i < ARRAY_SIZE(vars); i++) {
            const char *v = getenv(vars[i]);
            if (v && *v && (why = config_check_proxy(v))) {
                r = log_error_errno(EINVAL, "$%s is not a valid proxy URL (value not shown, it "
                                    "may hold a password): %s.", vars[i], why);
                break;
            }
        }
    }

    if (!c->api_version || (why = check_api_version(c->api_version)))
        r = log_error_errno(EINVAL, "DPS api-version '%s' is not valid; expected one like %s.",
                            c->api_version ?: "", CONFIG_DEFAULT_API_VERSION);
    return r;
}

int config_set_key(struct config *c, const char *name, const char *value, const char *where,
                   const char *as) {
    for (size_t i = 0; i < ARRAY_SIZE(keys); i++)
        if (strcmp(keys[i].name, name) == 0)
            return key_set(c, &keys[i], value, where, as);
    return -ENOENT;
}
