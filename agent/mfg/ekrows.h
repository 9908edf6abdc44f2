/* SPDX-License-Identifier: MIT */
/*
 * The manufacturing line's EK lists (docs/manufacturing.md): one row per device, written by
 * `tpm-provision ek --append` and read by `tpm-provision enroll`. Three formats:
 *
 *   CSV         a header line naming the columns, then one row per line; fields are never
 *               quoted (no value may hold a comma, a quote or a line break)
 *   JSON lines  one JSON object per line
 *   EK list     a TPM maker's list: one base64 TPM2B_PUBLIC per line, '#' starts a comment
 *
 * Columns and keys: registrationId, endorsementKey, ekCertSerial, ekCertSha256, deviceSerial,
 * time. Only endorsementKey is required; a missing registrationId is the one derived from the
 * EK (protocol document 4).
 *
 * Every writer ends each row with a newline in one write(), so a last line without one is the
 * trace of a crash: the parser leaves it out and says so (ekrows.torn), and the caller decides
 * (`ek --append` cuts it off, `enroll` refuses to run).
 *
 * Pure code: no TPM, no network, no file access; unit-tested and fuzzed.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tpm/ekpub.h"

#define EKROWS_LINE_MAX 4096
#define EKROWS_SERIAL_MAX 64
#define EKROWS_CERT_SERIAL_MAX 64 /* hex digits: RFC 5280 allows 20 octets, some CAs use more */

enum ekrows_format {
    EKROWS_FORMAT_UNKNOWN,
    EKROWS_FORMAT_CSV,
    EKROWS_FORMAT_JSON,
    EKROWS_FORMAT_EKLIST,
};

struct ekrow {
    unsigned line; /* 1-based, in its file */

    /* As written; NULL when absent or empty. */
    char *registration_id;
    char *endorsement_key; /* base64 */
    char *ek_cert_serial, *ek_cert_sha256, *device_serial, *time;

    /* Filled by ekrows_check_row() when the row is good. */
    uint8_t ek[EKPUB_MAX_SIZE];
    size_t ek_len;
    char derived_id[EKPUB_REGISTRATION_ID_LEN + 1]; /* the EK's identity, whatever the row says */
    const char *effective_id; /* registration_id, or derived_id when the row has none */
    bool custom_id;           /* registration_id is set and is not the derived one */

    char *error; /* why the row is refused; NULL while it is good */
};

struct ekrows {
    enum ekrows_format format;
    struct ekrow *rows;
    size_t n_rows;

    /* The data ended in a line without a newline: that line is not among the rows. */
    bool torn;
    unsigned torn_line;
    size_t torn_offset; /* where the half line starts: cut the file here to repair it */
};

const char *ekrows_format_to_string(enum ekrows_format f);

/*
 * Parses a whole list. The format is taken from the first line that is not blank or a
 * comment: '{' starts JSON lines, a known column name before the first comma a CSV header,
 * anything else an EK list. Rows that cannot be read (a wrong number of fields, bad JSON, a
 * line longer than EKROWS_LINE_MAX) are kept with ->error set, so every problem is reported
 * with its line. Returns 0, -ENOMEM, or -EBADMSG with a reason in *ret_why for a list that
 * cannot be read at all (a CSV header without endorsementKey, a repeated column, NUL bytes).
 * Empty data is an empty list of unknown format.
 */
int ekrows_parse(const char *data, size_t len, struct ekrows *ret, const char **ret_why);

/*
 * Checks one row as `enroll` needs it, setting ->error on the first problem:
 *   - endorsementKey is strict base64 of a marshaled TPM2B_PUBLIC (ekpub_validate; field case
 *     B04: a little-endian structure dump is refused, with the reason);
 *   - registrationId follows DPS's rules, and when it looks like a derived ID (52 characters
 *     of the base32 alphabet) it is the one derived from this EK (B05: hashed the wrong bytes
 *     or encoded differently); any other valid ID is a deliberate override (->custom_id);
 *   - ekCertSha256 is 64 lowercase hex digits, ekCertSerial hex, deviceSerial
 *     ekrows_serial_valid(), time ekrows_time_valid(), when present.
 * Returns 0 for a good row, -EBADMSG for a refused one, -ENOMEM.
 */
int ekrows_check_row(struct ekrow *row);

/* A device serial the list can carry: 1-64 printable ASCII characters without space, comma,
 * quote, backslash or control characters. */
int ekrows_serial_valid(const char *serial, const char **ret_why);

/* True for serials that firmware ships as placeholders ("To Be Filled By O.E.M.", "Default
 * string", "0", ...): many devices would share them (field case B06). */
bool ekrows_serial_is_placeholder(const char *serial);

/* "YYYY-MM-DDTHH:MM:SSZ", the form the writer uses. */
int ekrows_time_valid(const char *t);

/*
 * Marks duplicates (field case B06) among checked rows: a row whose EK or effective
 * registration ID appeared earlier in lists[0..n) gets ->error naming the earlier place
 * ("<name>:<line>"). lists[0..n_previous) are earlier batches: their rows are only compared
 * against, never marked. Rows that already have an error take no part. Returns the number of
 * rows marked, or -ENOMEM.
 */
int ekrows_mark_duplicates(struct ekrows *const *lists, const char *const *names, size_t n,
                           size_t n_previous);

/* The first checked row of l with this EK (derived ID) or this registration ID, or NULL. */
const struct ekrow *ekrows_find(const struct ekrows *l, const char *derived_id,
                                const char *registration_id);

/* The CSV header line, with its newline. */
extern const char ekrows_csv_header[];

/* One row in CSV or JSON lines form, ending in a newline. malloc'ed; NULL on ENOMEM. */
char *ekrows_format_row(const struct ekrow *row, enum ekrows_format f);

void ekrows_done(struct ekrows *l);
