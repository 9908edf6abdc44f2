/* SPDX-License-Identifier: MIT */
#include "ekrows.h"

#include <ctype.h>
#include <errno.h>
#include <json-c/json.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "basic/macro.h"

static const char *const columns[] = {
    "registrationId", "endorsementKey", "ekCertSerial", "ekCertSha256", "deviceSerial", "time",
};
enum { COL_REGID, COL_EK, COL_CERT_SERIAL, COL_CERT_SHA256, COL_SERIAL, COL_TIME, N_COLUMNS };

const char ekrows_csv_header[] =
    "registrationId,endorsementKey,ekCertSerial,ekCertSha256,deviceSerial,time\n";

const char *ekrows_format_to_string(enum ekrows_format f) {
    switch (f) {
    case EKROWS_FORMAT_CSV: return "CSV";
    case EKROWS_FORMAT_JSON: return "JSON lines";
    case EKROWS_FORMAT_EKLIST: return "EK list";
    default: return "unknown";
    }
}

static char **row_field(struct ekrow *r, int col) {
    switch (col) {
    case COL_REGID: return &r->registration_id;
    case COL_EK: return &r->endorsement_key;
    case COL_CERT_SERIAL: return &r->ek_cert_serial;
    case COL_CERT_SHA256: return &r->ek_cert_sha256;
    case COL_SERIAL: return &r->device_serial;
    default: return &r->time;
    }
}

static int column_index(const char *name, size_t len) {
    for (int i = 0; i < N_COLUMNS; i++)
        if (strlen(columns[i]) == len && memcmp(columns[i], name, len) == 0)
            return i;
    return -1;
}

static int row_fail(struct ekrow *r, const char *fmt, ...) _printf_(2, 3);
static int row_fail(struct ekrow *r, const char *fmt, ...) {
    va_list ap;
    char *msg;
    int n;

    if (r->error) /* the first problem is the one reported */
        return -EBADMSG;
    va_start(ap, fmt);
    n = vasprintf(&msg, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -ENOMEM;
    r->error = msg;
    return -EBADMSG;
}

/* Stores a field; an empty value is the same as an absent one. */
static int set_field(char **slot, const char *value, size_t len) {
    if (len == 0)
        return 0;
    free(*slot);
    *slot = strndup(value, len);
    return *slot ? 0 : -ENOMEM;
}

struct csv_header {
    int col[32]; /* column number -> field index, -1 for a column this program does not use */
    size_t n;
};

/* Edits (insert, delete, change; case ignored) from a[0..na) to b, up to 31 characters each. */
static size_t edit_distance(const char *a, size_t na, const char *b) {
    size_t nb = strlen(b), row[32];

    if (na > 31 || nb > 31)
        return SIZE_MAX;
    for (size_t j = 0; j <= nb; j++)
        row[j] = j;
    for (size_t i = 1; i <= na; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= nb; j++) {
            size_t up = row[j];
            size_t change = diag + (tolower((unsigned char)a[i - 1]) !=
                                    tolower((unsigned char)b[j - 1]));
            size_t best = up + 1 < row[j - 1] + 1 ? up + 1 : row[j - 1] + 1;
            row[j] = change < best ? change : best;
            diag = up;
        }
    }
    return row[nb];
}

/* A column this program would ignore that is one of its own misspelt: the CSV's values in it
 * would be dropped without a word (a registration ID, say). */
static const char *misspelt_column(const char *p, size_t n) {
    static char why[160];

    for (size_t i = 0; i < N_COLUMNS; i++)
        if (edit_distance(p, n, columns[i]) <= 2) {
            snprintf(why, sizeof(why), "the CSV header's column '%.*s' is not one this program "
                     "reads; did you mean '%s'? (Names are case-sensitive.)", (int)n, p,
                     columns[i]);
            return why;
        }
    return NULL;
}

/* Why a CSV header without an endorsementKey column is wrong: the columns it could have. */
static const char *header_hint(void) {
    static char why[256];

    snprintf(why, sizeof(why), "the CSV header has no endorsementKey column (the columns "
             "'tpm-provision ek' writes are %.*s)", (int)strlen(ekrows_csv_header) - 1,
             ekrows_csv_header);
    return why;
}

static int csv_header_parse(const char *line, size_t len, struct csv_header *h,
                            const char **ret_why) {
    bool seen[N_COLUMNS] = {false};
    const char *p = line, *end = line + len;

    h->n = 0;
    for (;;) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *stop = comma ? comma : end;
        int i = column_index(p, (size_t)(stop - p));

        if (h->n == ARRAY_SIZE(h->col)) {
            *ret_why = "the CSV header has more than 32 columns";
            return -EBADMSG;
        }
        if (i >= 0 && seen[i]) {
            *ret_why = "a column appears twice in the CSV header";
            return -EBADMSG;
        }
        if (i < 0 && (*ret_why = misspelt_column(p, (size_t)(stop - p))))
            return -EBADMSG;
        if (i >= 0)
            seen[i] = true;
        h->col[h->n++] = i;
        if (!comma)
            break;
        p = comma + 1;
    }
    if (!seen[COL_EK]) {
        *ret_why = header_hint();
        return -EBADMSG;
    }
    return 0;
}

static int csv_row_parse(const struct csv_header *h, const char *line, size_t len,
                         struct ekrow *r) {
    const char *p = line, *end = line + len;
    size_t n = 0;
    int k;

    if (memchr(line, '"', len))
        return row_fail(r, "quoted CSV fields are not supported (no value needs quotes)");
    for (;;) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *stop = comma ? comma : end;

        if (n < h->n && h->col[n] >= 0 && (k = set_field(row_field(r, h->col[n]), p,
                                                         (size_t)(stop - p))) < 0)
            return k;
        n++;
        if (!comma)
            break;
        p = comma + 1;
    }
    if (n != h->n)
        return row_fail(r, "%zu fields where the header has %zu", n, h->n);
    return 0;
}

static int json_row_parse(const char *line, size_t len, struct ekrow *r) {
    struct json_tokener *tok = json_tokener_new();
    json_object *o;
    int k = 0;

    if (!tok)
        return -ENOMEM;
    o = json_tokener_parse_ex(tok, line, (int)len);
    if (!o || json_tokener_get_error(tok) != json_tokener_success ||
        json_tokener_get_parse_end(tok) != len) {
        json_tokener_free(tok);
        json_object_put(o);
        return row_fail(r, "not one JSON object");
    }
    json_tokener_free(tok);
    if (!json_object_is_type(o, json_type_object)) {
        json_object_put(o);
        return row_fail(r, "not a JSON object");
    }
    for (int i = 0; i < N_COLUMNS && k >= 0; i++) {
        json_object *v;

        if (!json_object_object_get_ex(o, columns[i], &v) || json_object_is_type(v, json_type_null))
            continue;
        if (!json_object_is_type(v, json_type_string)) {
            k = row_fail(r, "%s is not a string", columns[i]);
            break;
        }
        const char *s = json_object_get_string(v);
        size_t slen = (size_t)json_object_get_string_len(v);
        if (memchr(s, '\0', slen))
            k = row_fail(r, "%s holds a NUL character", columns[i]);
        else
            k = set_field(row_field(r, i), s, slen);
    }
    json_object_put(o);
    return k;
}

static int eklist_row_parse(const char *line, size_t len, struct ekrow *r) {
    if (memchr(line, ' ', len) || memchr(line, '\t', len) || memchr(line, ',', len))
        return row_fail(r, "an EK list line holds one base64 EK and nothing else");
    return set_field(&r->endorsement_key, line, len);
}

static bool blank_or_comment(const char *line, size_t len, enum ekrows_format f) {
    size_t i = 0;

    while (i < len && (line[i] == ' ' || line[i] == '\t'))
        i++;
    if (i == len)
        return true;
    return line[i] == '#' && (f == EKROWS_FORMAT_EKLIST || f == EKROWS_FORMAT_UNKNOWN);
}

static enum ekrows_format detect(const char *line, size_t len) {
    const char *comma = memchr(line, ',', len);

    if (line[0] == '{')
        return EKROWS_FORMAT_JSON;
    /* Base64 has no comma: a first line with one is a CSV header, even a misspelt one. */
    if (comma || column_index(line, len) >= 0)
        return EKROWS_FORMAT_CSV;
    return EKROWS_FORMAT_EKLIST;
}

static int push_row(struct ekrows *l, unsigned line, struct ekrow **ret) {
    struct ekrow *rows;

    if (l->n_rows % 64 == 0) {
        rows = reallocarray(l->rows, l->n_rows + 64, sizeof(*rows));
        if (!rows)
            return -ENOMEM;
        l->rows = rows;
    }
    *ret = &l->rows[l->n_rows++];
    **ret = (struct ekrow){.line = line};
    return 0;
}

/* Trims spaces and tabs at both ends and one '\r' (files that went through Windows tools). */
static void trim(const char **line, size_t *len) {
    if (*len > 0 && (*line)[*len - 1] == '\r')
        (*len)--;
    while (*len > 0 && ((*line)[*len - 1] == ' ' || (*line)[*len - 1] == '\t'))
        (*len)--;
    while (*len > 0 && (**line == ' ' || **line == '\t')) {
        (*line)++;
        (*len)--;
    }
}

int ekrows_parse(const char *data, size_t len, struct ekrows *ret, const char **ret_why) {
    struct ekrows l = {0};
    struct csv_header header = {.n = 0};
    const char *why = NULL;
    size_t off = 0;
    unsigned lineno = 0;
    int r = 0;

    if (memchr(data, '\0', len))
        why = "the file holds NUL bytes (not a text list)";

    while (!why && r >= 0 && off < len) {
        const char *line = data + off, *nl = memchr(line, '\n', len - off);
        size_t line_len = nl ? (size_t)(nl - line) : len - off;
        struct ekrow *row;

        lineno++;
        if (!nl) {
            l.torn = true;
            l.torn_line = lineno;
            l.torn_offset = off;
            break;
        }
        off += line_len + 1;
        trim(&line, &line_len);
        if (blank_or_comment(line, line_len, l.format))
            continue;
        if (l.format == EKROWS_FORMAT_UNKNOWN) {
            l.format = detect(line, line_len);
            if (l.format == EKROWS_FORMAT_CSV) {
                r = csv_header_parse(line, line_len, &header, &why);
                continue;
            }
        }

        r = push_row(&l, lineno, &row);
        if (r < 0)
            break;
        if (line_len > EKROWS_LINE_MAX)
            r = row_fail(row, "longer than %d characters", EKROWS_LINE_MAX);
        else if (l.format == EKROWS_FORMAT_CSV)
            r = csv_row_parse(&header, line, line_len, row);
        else if (l.format == EKROWS_FORMAT_JSON)
            r = json_row_parse(line, line_len, row);
        else
            r = eklist_row_parse(line, line_len, row);
        if (r == -EBADMSG)
            r = 0;
    }

    if (why || r < 0) {
        ekrows_done(&l);
        if (why && ret_why)
            *ret_why = why;
        return why ? -EBADMSG : r;
    }
    *ret = l;
    return 0;
}

/*
 * Strict base64 (RFC 4648 section 4, padding required, no whitespace): what DPS and
 * `tpm-provision ek` write. OpenSSL decodes; the text must encode back to itself, which leaves
 * only the canonical form (OpenSSL alone would accept stray whitespace and non-zero pad bits).
 */
static int base64_decode_ek(const char *text, uint8_t *out, size_t size, size_t *ret_len) {
    size_t len = strlen(text), n;
    char again[4 * ((EKPUB_MAX_SIZE + 2) / 3) + 1];

    if (len == 0 || len % 4 != 0 || len / 4 * 3 > size || strspn(text,
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=") != len)
        return -EBADMSG;
    if (EVP_DecodeBlock(out, (const unsigned char *)text, (int)len) < 0)
        return -EBADMSG;
    n = len / 4 * 3 - (text[len - 1] == '=') - (text[len - 2] == '=');
    if ((size_t)EVP_EncodeBlock((unsigned char *)again, out, (int)n) != len ||
        memcmp(again, text, len) != 0)
        return -EBADMSG;
    *ret_len = n;
    return 0;
}

static bool all_of(const char *s, const char *set) {
    return s[strspn(s, set)] == '\0';
}

int ekrows_serial_valid(const char *serial, const char **ret_why) {
    size_t len = strlen(serial);
    const char *why = NULL;

    if (len == 0)
        why = "it is empty";
    else if (len > EKROWS_SERIAL_MAX)
        why = "it is longer than 64 characters";
    else
        for (const unsigned char *p = (const unsigned char *)serial; *p; p++)
            if (*p <= ' ' || *p >= 0x7f || strchr(",\"'\\", *p)) {
                why = "only printable ASCII without spaces, commas, quotes or backslashes";
                break;
            }
    if (why) {
        if (ret_why)
            *ret_why = why;
        return -EINVAL;
    }
    return 0;
}

bool ekrows_serial_is_placeholder(const char *serial) {
    static const char *const placeholders[] = {
        "To Be Filled By O.E.M.", "To be filled by O.E.M.", "Default string", "System Serial Number",
        "Not Specified", "Not Applicable", "None", "N/A", "Default", "Unknown", "0123456789",
        "123456789", "1234567890", "Chassis Serial Number", "OEM", "O.E.M.", "XXXXXXXXXX",
    };
    size_t len = strlen(serial);

    if (len == 0 || strspn(serial, "0") == len || strspn(serial, " .-_") == len)
        return true;
    for (size_t i = 0; i < ARRAY_SIZE(placeholders); i++)
        if (strcasecmp(serial, placeholders[i]) == 0)
            return true;
    return false;
}

int ekrows_time_valid(const char *t) {
    static const char pattern[] = "dddd-dd-ddTdd:dd:ddZ";

    if (strlen(t) != sizeof(pattern) - 1)
        return -EINVAL;
    for (size_t i = 0; pattern[i]; i++)
        if (pattern[i] == 'd' ? (t[i] < '0' || t[i] > '9') : t[i] != pattern[i])
            return -EINVAL;
    return 0;
}

/* A registration ID that has the shape of a derived one: 52 characters of lowercase base32. */
static bool looks_derived(const char *id) {
    return strlen(id) == EKPUB_REGISTRATION_ID_LEN && all_of(id, "abcdefghijklmnopqrstuvwxyz234567");
}

static int check_ek(struct ekrow *r) {
    const char *why;

    if (!r->endorsement_key)
        return row_fail(r, "no endorsementKey");
    if (base64_decode_ek(r->endorsement_key, r->ek, sizeof(r->ek), &r->ek_len) < 0)
        return row_fail(r, "endorsementKey is not strict base64 of at most %zu bytes",
                        (size_t)EKPUB_MAX_SIZE);
    if (ekpub_validate(r->ek, r->ek_len, NULL, &why) < 0) {
        /* B04's signature: a little-endian size and padding, as a C structure dump has. */
        bool le = r->ek_len >= 4 && ((size_t)r->ek[1] << 8 | r->ek[0]) == r->ek_len - 4 &&
                  r->ek[2] == 0 && r->ek[3] == 0;
        return row_fail(r, "endorsementKey is not the marshaled TPM2B_PUBLIC DPS takes: %s%s",
                        why, le ? "; it starts like a little-endian C structure dump (field "
                                  "case B04): export the EK with tpm2_readpublic -o or "
                                  "'tpm-provision ek'" : "");
    }
    ekpub_registration_id(r->ek, r->ek_len, r->derived_id);
    return 0;
}

static int check_registration_id(struct ekrow *r) {
    const char *why;

    r->effective_id = r->derived_id;
    if (!r->registration_id)
        return 0;
    if (ekpub_registration_id_valid(r->registration_id, &why) < 0)
        return row_fail(r, "registration ID '%.130s' is invalid: %s", r->registration_id, why);
    if (strcmp(r->registration_id, r->derived_id) == 0) {
        r->effective_id = r->registration_id;
        return 0;
    }
    if (looks_derived(r->registration_id))
        return row_fail(r, "registration ID %s is not the one derived from this EK (%s): "
                        "derived from other bytes or with another encoding (field case B05)",
                        r->registration_id, r->derived_id);
    r->effective_id = r->registration_id;
    r->custom_id = true;
    return 0;
}

static int check_other_fields(struct ekrow *r) {
    const char *why;

    if (r->ek_cert_sha256 && (strlen(r->ek_cert_sha256) != 64 ||
                              !all_of(r->ek_cert_sha256, "0123456789abcdef")))
        return row_fail(r, "ekCertSha256 is not 64 lowercase hex digits");
    if (r->ek_cert_serial && (strlen(r->ek_cert_serial) > EKROWS_CERT_SERIAL_MAX ||
                              !all_of(r->ek_cert_serial, "0123456789abcdefABCDEF")))
        return row_fail(r, "ekCertSerial is not a hex number of at most %d digits",
                        EKROWS_CERT_SERIAL_MAX);
    if (r->device_serial && ekrows_serial_valid(r->device_serial, &why) < 0)
        return row_fail(r, "deviceSerial '%.70s' is invalid: %s", r->device_serial, why);
    if (r->time && ekrows_time_valid(r->time) < 0)
        return row_fail(r, "time is not YYYY-MM-DDTHH:MM:SSZ");
    return 0;
}

int ekrows_check_row(struct ekrow *row) {
    int r;

    if (row->error)
        return -EBADMSG;
    r = check_ek(row);
    if (r >= 0)
        r = check_registration_id(row);
    if (r >= 0)
        r = check_other_fields(row);
    return r;
}

struct dup_entry {
    const char *key; /* derived ID or effective registration ID */
    char kind;       /* 'e' EK, 'r' registration ID */
    size_t list, order;
    struct ekrow *row;
};

static int dup_compare(const void *a, const void *b) {
    const struct dup_entry *x = a, *y = b;
    int c = x->kind - y->kind;

    if (c == 0)
        c = strcmp(x->key, y->key);
    if (c == 0)
        c = x->order < y->order ? -1 : x->order > y->order;
    return c;
}

int ekrows_mark_duplicates(struct ekrows *const *lists, const char *const *names, size_t n,
                           size_t n_previous) {
    _cleanup_free_ struct dup_entry *e = NULL;
    size_t total = 0, k = 0, order = 0;
    int marked = 0, r;

    for (size_t i = 0; i < n; i++)
        total += lists[i]->n_rows;
    e = calloc(total * 2 + 1, sizeof(*e));
    if (!e)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < lists[i]->n_rows; j++) {
            struct ekrow *row = &lists[i]->rows[j];
            if (row->error || !row->effective_id)
                continue;
            e[k++] = (struct dup_entry){row->derived_id, 'e', i, order, row};
            e[k++] = (struct dup_entry){row->effective_id, 'r', i, order++, row};
        }
    qsort(e, k, sizeof(*e), dup_compare);

    for (size_t a = 0; a < k;) {
        size_t b = a + 1;
        while (b < k && e[b].kind == e[a].kind && strcmp(e[b].key, e[a].key) == 0)
            b++;
        for (size_t c = a + 1; c < b; c++) {
            if (e[c].list < n_previous || e[c].row->error)
                continue;
            r = row_fail(e[c].row, "%s already in %s%s:%u (field case B06: a stale capture or "
                         "a duplicated TPM?)", e[a].kind == 'e' ? "EK" : "registration ID",
                         e[a].list < n_previous ? "the earlier batch " : "", names[e[a].list],
                         e[a].row->line);
            if (r == -ENOMEM)
                return r;
            marked++;
        }
        a = b;
    }
    return marked;
}

const struct ekrow *ekrows_find(const struct ekrows *l, const char *derived_id,
                                const char *registration_id) {
    for (size_t i = 0; i < l->n_rows; i++) {
        const struct ekrow *row = &l->rows[i];
        if (row->error || !row->effective_id)
            continue;
        if ((derived_id && strcmp(row->derived_id, derived_id) == 0) ||
            (registration_id && strcmp(row->effective_id, registration_id) == 0))
            return row;
    }
    return NULL;
}

static const char *or_empty(const char *s) {
    return s ? s : "";
}

static json_object *string_or_null(const char *s) {
    return s ? json_object_new_string(s) : NULL;
}

char *ekrows_format_row(const struct ekrow *row, enum ekrows_format f) {
    const char *id = row->registration_id ? row->registration_id : row->effective_id;
    json_object *o;
    char *out;

    if (f == EKROWS_FORMAT_CSV) {
        if (asprintf(&out, "%s,%s,%s,%s,%s,%s\n", or_empty(id), or_empty(row->endorsement_key),
                     or_empty(row->ek_cert_serial), or_empty(row->ek_cert_sha256),
                     or_empty(row->device_serial), or_empty(row->time)) < 0)
            return NULL;
        return out;
    }
    o = json_object_new_object();
    if (!o)
        return NULL;
    json_object_object_add(o, "registrationId", string_or_null(id));
    json_object_object_add(o, "endorsementKey", string_or_null(row->endorsement_key));
    json_object_object_add(o, "ekCertSerial", string_or_null(row->ek_cert_serial));
    json_object_object_add(o, "ekCertSha256", string_or_null(row->ek_cert_sha256));
    json_object_object_add(o, "deviceSerial", string_or_null(row->device_serial));
    json_object_object_add(o, "time", string_or_null(row->time));
    if (asprintf(&out, "%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
                                                                 JSON_C_TO_STRING_NOSLASHESCAPE)) < 0)
        out = NULL;
    json_object_put(o);
    return out;
}

void ekrows_done(struct ekrows *l) {
    for (size_t i = 0; i < l->n_rows; i++) {
        struct ekrow *r = &l->rows[i];
        for (int c = 0; c < N_COLUMNS; c++)
            free(*row_field(r, c));
        free(r->error);
    }
    free(l->rows);
    *l = (struct ekrows){0};
}
