/* SPDX-License-Identifier: MIT */
#include "wire.h"

#include <errno.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <tss2/tss2_mu.h>

#include "basic/macro.h"

/*
 * The largest blob that can unmarshal: every field at its type's maximum (the C structures are
 * at least as large as their marshaled forms) and a field 6 of 65535 bytes. Longer text is
 * refused before it is decoded.
 */
#define BLOB_MAX                                                                                   \
    (sizeof(TPM2B_ID_OBJECT) + 2 * sizeof(TPM2B_ENCRYPTED_SECRET) + sizeof(TPM2B_PRIVATE) +        \
     sizeof(TPM2B_PUBLIC) + sizeof(uint16_t) + UINT16_MAX)
#define BLOB_BASE64_MAX ((BLOB_MAX + 2) / 3 * 4)

static const char base64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int blob_refuse(const char **ret_why, const char *why) {
    if (ret_why)
        *ret_why = why;
    return -EBADMSG;
}

/*
 * Strict RFC 4648 section 4 decoding: padding required, no whitespace, zero pad bits. OpenSSL
 * does the decoding; it would skip surrounding whitespace, read '=' as zero bits wherever it
 * stands and count pad characters as decoded bytes, so the alphabet is checked first and the
 * result must encode back to exactly the input (which leaves only the canonical form).
 */
static int base64_decode_strict(const char *text, size_t len, uint8_t **ret, size_t *ret_len,
                                const char **ret_why) {
    _cleanup_free_ uint8_t *buf = NULL;
    _cleanup_free_ char *again = NULL;
    size_t pad = 0;
    int n;

    if (len == 0)
        return blob_refuse(ret_why, "empty");
    if (len % 4 != 0)
        return blob_refuse(ret_why, "base64 length is not a multiple of 4 (padding missing?)");
    while (pad < 2 && text[len - 1 - pad] == '=')
        pad++;
    if (strspn(text, base64_alphabet) != len - pad)
        return blob_refuse(ret_why, "character outside the base64 alphabet (whitespace, line "
                                    "break, URL-safe alphabet or misplaced '=')");

    buf = malloc(len / 4 * 3);
    again = malloc(len + 1);
    if (!buf || !again)
        return -ENOMEM;
    n = EVP_DecodeBlock(buf, (const unsigned char *)text, (int)len);
    if (n < 0 || (size_t)n != len / 4 * 3)
        return blob_refuse(ret_why, "not valid base64");
    n -= (int)pad;
    if (EVP_EncodeBlock((unsigned char *)again, buf, n) != (int)len || memcmp(again, text, len))
        return blob_refuse(ret_why, "base64 padding bits are not zero");

    *ret = TAKE_PTR(buf);
    *ret_len = (size_t)n;
    return 0;
}

/*
 * The u16 of a TPM2B_DIGEST must open the field's content and leave bytes after it: field 1
 * is integrityHMAC ‖ encIdentity, field 3 outerHMAC ‖ dupSensitive (section 2.1). The TPM
 * unmarshals the same digest in ActivateCredential and Import and refuses a blob where it does
 * not fit; refusing it here names the field instead of a TPM error code.
 */
static bool leading_digest_fits(const uint8_t *content, size_t size) {
    TPM2B_DIGEST digest;
    size_t off = 0;

    return Tss2_MU_TPM2B_DIGEST_Unmarshal(content, size, &off, &digest) == TSS2_RC_SUCCESS &&
           off < size;
}

/*
 * Field 5. tpm2-tss 3.2.1 unmarshals the TPMT_PUBLIC inside a TPM2B_PUBLIC without bounding it
 * by the size prefix and ignores its result (src/tss2-mu/tpm2b-types.c,
 * TPM2B_UNMARSHAL_SUBTYPE; tpm2-tss PR #3122 bounds it). So the buffer handed to it ends where
 * the size prefix says, and the public area must have consumed exactly that much: a failed
 * inner unmarshal stops short and is caught. The bound stays correct after that fix.
 */
static bool public_unmarshal(const uint8_t *buf, size_t len, size_t *off, TPM2B_PUBLIC *ret) {
    size_t peek = *off, end;
    uint16_t size;

    if (Tss2_MU_UINT16_Unmarshal(buf, len, &peek, &size) != TSS2_RC_SUCCESS || size == 0 ||
        size > len - peek)
        return false;
    end = peek + size;
    memset(ret, 0, sizeof(*ret)); /* the unmarshaler refuses a destination with size != 0 */
    return Tss2_MU_TPM2B_PUBLIC_Unmarshal(buf, end, off, ret) == TSS2_RC_SUCCESS && *off == end;
}

/* Fields in the order and with the types of section 2.1; the C SDK's parser is the model,
 * except that every result is checked (section 8, item 5). */
static int blob_unmarshal(const uint8_t *buf, size_t len, struct dps_blob *ret,
                          const char **ret_why) {
    size_t off = 0;

    if (Tss2_MU_TPM2B_ID_OBJECT_Unmarshal(buf, len, &off, &ret->credential) ||
        ret->credential.size == 0)
        return blob_refuse(ret_why, "field 1 (credentialBlob) is truncated, empty or too long");
    if (!leading_digest_fits(ret->credential.credential, ret->credential.size))
        return blob_refuse(ret_why, "field 1 (credentialBlob): integrityHMAC size overruns it");
    if (Tss2_MU_TPM2B_ENCRYPTED_SECRET_Unmarshal(buf, len, &off, &ret->secret) ||
        ret->secret.size == 0)
        return blob_refuse(ret_why, "field 2 (secret) is truncated, empty or too long");
    if (Tss2_MU_TPM2B_PRIVATE_Unmarshal(buf, len, &off, &ret->duplicate) ||
        ret->duplicate.size == 0)
        return blob_refuse(ret_why, "field 3 (duplicate) is truncated, empty or too long");
    if (!leading_digest_fits(ret->duplicate.buffer, ret->duplicate.size))
        return blob_refuse(ret_why, "field 3 (duplicate): outerHMAC size overruns it");
    if (Tss2_MU_TPM2B_ENCRYPTED_SECRET_Unmarshal(buf, len, &off, &ret->seed) || ret->seed.size == 0)
        return blob_refuse(ret_why, "field 4 (inSymSeed) is truncated, empty or too long");
    if (!public_unmarshal(buf, len, &off, &ret->public))
        return blob_refuse(ret_why, "field 5 (objectPublic) is truncated, empty or is not a "
                                    "TPMT_PUBLIC of exactly its size");
    if (Tss2_MU_UINT16_Unmarshal(buf, len, &off, &ret->field6_size))
        return blob_refuse(ret_why, "field 6 size is missing");
    if (ret->field6_size > len - off)
        return blob_refuse(ret_why, "field 6 is longer than the rest of the blob");
    if (ret->field6_size < len - off)
        return blob_refuse(ret_why, "bytes after field 6");
    return 0;
}

int dps_blob_parse(const char *base64, struct dps_blob *ret, const char **ret_why) {
    _cleanup_free_ uint8_t *buf = NULL;
    struct dps_blob blob = {0};
    size_t text_len, len;
    int r;

    if (!base64)
        return blob_refuse(ret_why, "empty");
    text_len = strnlen(base64, BLOB_BASE64_MAX + 1);
    if (text_len > BLOB_BASE64_MAX)
        return blob_refuse(ret_why, "longer than any blob of section 2.1");

    r = base64_decode_strict(base64, text_len, &buf, &len, ret_why);
    if (r < 0)
        return r;

    r = blob_unmarshal(buf, len, &blob, ret_why);
    if (r < 0)
        return r;

    *ret = blob;
    return 0;
}

/*
 * The azure-c-shared-utility kept set (src/urlencode.c, IS_PRINTABLE). That library turns a
 * byte >= 0x80 into two escapes, as if the input were Latin-1; here every byte is escaped once,
 * so UTF-8 stays UTF-8. Scopes and registration IDs are ASCII (section 4), where both agree.
 */
static bool url_kept(unsigned char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           (c != '\0' && strchr("-_.!()*", c));
}

char *dps_url_encode(const char *s) {
    static const char hex[] = "0123456789abcdef";
    size_t len;
    char *out, *p;

    if (!s)
        return NULL;
    len = strlen(s);
    if (len > (SIZE_MAX - 1) / 3)
        return NULL;
    out = malloc(len * 3 + 1);
    if (!out)
        return NULL;

    p = out;
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (url_kept(*c)) {
            *p++ = (char)*c;
            continue;
        }
        *p++ = '%';
        *p++ = hex[*c >> 4];
        *p++ = hex[*c & 0x0f];
    }
    *p = '\0';
    return out;
}

char *dps_sas_resource(const char *id_scope, const char *registration_id) {
    _cleanup_free_ char *resource = NULL;

    if (!id_scope || !registration_id)
        return NULL;
    if (asprintf(&resource, "%s/registrations/%s", id_scope, registration_id) < 0)
        return NULL;
    return dps_url_encode(resource);
}

char *dps_sas_string_to_sign(const char *sr, uint64_t expiry) {
    char *s;

    if (!sr || asprintf(&s, "%s\n%" PRIu64, sr, expiry) < 0)
        return NULL;
    return s;
}

/* Frees a string that holds a signature, wiping it first (STYLE.md 3). */
static void wiped_strfreep(char **p) {
    if (*p)
        OPENSSL_clear_free(*p, strlen(*p));
}

char *dps_sas_token(const char *sr, const uint8_t *mac, size_t mac_len, uint64_t expiry,
                    const char *key_name) {
    /* Base64 of the largest digest a TPM returns (TPMU_HA), with its NUL. */
    char sig_b64[(sizeof(TPMU_HA) + 2) / 3 * 4 + 1];
    _cleanup_(wiped_strfreep) char *sig = NULL;
    char *token;
    int r;

    if (!sr || !mac || mac_len == 0 || mac_len > sizeof(TPMU_HA))
        return NULL;

    EVP_EncodeBlock((unsigned char *)sig_b64, mac, (int)mac_len);
    sig = dps_url_encode(sig_b64);
    OPENSSL_cleanse(sig_b64, sizeof(sig_b64));
    if (!sig)
        return NULL;

    /* Section 1.6 step 4: the order sr, sig, se, skn of every client. */
    if (key_name)
        r = asprintf(&token, "SharedAccessSignature sr=%s&sig=%s&se=%" PRIu64 "&skn=%s", sr, sig,
                     expiry, key_name);
    else
        r = asprintf(&token, "SharedAccessSignature sr=%s&sig=%s&se=%" PRIu64, sr, sig, expiry);
    return r < 0 ? NULL : token;
}

/* A span of the header value without its surrounding whitespace. */
struct span {
    const char *p, *end;
};

/*
 * RFC 9110 section 5.5: a field value carries no leading or trailing whitespace, so surrounding
 * OWS (SP, HTAB) is dropped; so is a CR LF left over from the header line.
 */
static struct span span_trim(const char *s) {
    struct span sp = {s, s + strlen(s)};

    while (sp.p < sp.end && (*sp.p == ' ' || *sp.p == '\t'))
        sp.p++;
    while (sp.end > sp.p && strchr(" \t\r\n", sp.end[-1]))
        sp.end--;
    return sp;
}

static bool take_char(struct span *sp, char c) {
    if (sp->p == sp->end || *sp->p != c)
        return false;
    sp->p++;
    return true;
}

/* Exactly n ASCII digits. */
static bool take_digits(struct span *sp, unsigned n, int *ret) {
    int v = 0;

    if ((size_t)(sp->end - sp->p) < n)
        return false;
    for (unsigned i = 0; i < n; i++) {
        if (sp->p[i] < '0' || sp->p[i] > '9')
            return false;
        v = v * 10 + (sp->p[i] - '0');
    }
    sp->p += n;
    *ret = v;
    return true;
}

/* One of names, matched case-sensitively as the RFC 9110 grammar has them. */
static bool take_name(struct span *sp, const char *const *names, int count, int *ret) {
    for (int i = 0; i < count; i++) {
        size_t n = strlen(names[i]);

        if ((size_t)(sp->end - sp->p) >= n && memcmp(sp->p, names[i], n) == 0) {
            sp->p += n;
            *ret = i;
            return true;
        }
    }
    return false;
}

static const char *const day_names[] = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};
static const char *const day_names_long[] = {"Monday", "Tuesday",  "Wednesday", "Thursday",
                                             "Friday", "Saturday", "Sunday"};
static const char *const month_names[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                          "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

static bool take_day_name(struct span *sp, bool long_form) {
    int unused;

    /* The weekday is not checked against the date: it adds nothing to the instant. */
    return long_form ? take_name(sp, day_names_long, 7, &unused)
                     : take_name(sp, day_names, 7, &unused);
}

static bool take_month(struct span *sp, struct tm *tm) {
    return take_name(sp, month_names, 12, &tm->tm_mon);
}

/* time-of-day = hour ":" minute ":" second (RFC 9110 section 5.6.7). */
static bool take_time_of_day(struct span *sp, struct tm *tm) {
    return take_digits(sp, 2, &tm->tm_hour) && take_char(sp, ':') &&
           take_digits(sp, 2, &tm->tm_min) && take_char(sp, ':') && take_digits(sp, 2, &tm->tm_sec);
}

static bool take_literal(struct span *sp, const char *s) {
    size_t n = strlen(s);

    if ((size_t)(sp->end - sp->p) < n || memcmp(sp->p, s, n) != 0)
        return false;
    sp->p += n;
    return true;
}

/* IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT". */
static bool parse_imf_fixdate(struct span sp, struct tm *tm) {
    int year;

    if (!(take_day_name(&sp, false) && take_literal(&sp, ", ") &&
          take_digits(&sp, 2, &tm->tm_mday) && take_char(&sp, ' ') && take_month(&sp, tm) &&
          take_char(&sp, ' ') && take_digits(&sp, 4, &year) && take_char(&sp, ' ') &&
          take_time_of_day(&sp, tm) && take_literal(&sp, " GMT")))
        return false;
    tm->tm_year = year - 1900;
    return sp.p == sp.end;
}

/*
 * Obsolete RFC 850 form: "Sunday, 06-Nov-94 08:49:37 GMT". RFC 9110 section 5.6.7: a two-digit
 * year more than 50 years in the future means the most recent past year with those digits; so
 * the year is the latest one with those digits that is at most 50 years ahead.
 */
static bool parse_rfc850(struct span sp, int now_year, struct tm *tm) {
    int yy, year;

    if (!(take_day_name(&sp, true) && take_literal(&sp, ", ") &&
          take_digits(&sp, 2, &tm->tm_mday) && take_char(&sp, '-') && take_month(&sp, tm) &&
          take_char(&sp, '-') && take_digits(&sp, 2, &yy) && take_char(&sp, ' ') &&
          take_time_of_day(&sp, tm) && take_literal(&sp, " GMT")))
        return false;
    year = now_year - now_year % 100 + yy;
    if (year > now_year + 50)
        year -= 100;
    else if (year + 100 <= now_year + 50)
        year += 100;
    tm->tm_year = year - 1900;
    return sp.p == sp.end;
}

/* Obsolete asctime form: "Sun Nov  6 08:49:37 1994"; the day is 2DIGIT or SP DIGIT. */
static bool parse_asctime(struct span sp, struct tm *tm) {
    int year;

    if (!(take_day_name(&sp, false) && take_char(&sp, ' ') && take_month(&sp, tm) &&
          take_char(&sp, ' ')))
        return false;
    if (take_char(&sp, ' ')) {
        if (!take_digits(&sp, 1, &tm->tm_mday))
            return false;
    } else if (!take_digits(&sp, 2, &tm->tm_mday))
        return false;
    if (!(take_char(&sp, ' ') && take_time_of_day(&sp, tm) && take_char(&sp, ' ') &&
          take_digits(&sp, 4, &year)))
        return false;
    tm->tm_year = year - 1900;
    return sp.p == sp.end;
}

static bool tm_valid(const struct tm *tm) {
    static const int days[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int year = tm->tm_year + 1900;
    bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;

    /* second 60 is a leap second (RFC 9110 section 5.6.7); timegm folds it into the next
     * minute. */
    if (tm->tm_mday < 1 || tm->tm_mday > days[tm->tm_mon] || tm->tm_hour > 23 || tm->tm_min > 59 ||
        tm->tm_sec > 60)
        return false;
    return !(tm->tm_mon == 1 && tm->tm_mday == 29 && !leap);
}

static int http_date_parse_span(struct span sp, time_t now, time_t *ret) {
    struct tm now_tm, tm = {0};

    if (!gmtime_r(&now, &now_tm))
        return -EINVAL;
    if (!parse_imf_fixdate(sp, &tm) && !parse_rfc850(sp, now_tm.tm_year + 1900, &tm) &&
        !parse_asctime(sp, &tm))
        return -EINVAL;
    if (!tm_valid(&tm))
        return -EINVAL;
    *ret = timegm(&tm);
    return 0;
}

int dps_http_date_parse(const char *value, time_t *ret) {
    if (!value)
        return -EINVAL;
    return http_date_parse_span(span_trim(value), time(NULL), ret);
}

/*
 * delta-seconds = 1*DIGIT. A value too large to represent is taken as the largest one, as RFC
 * 9111 section 1.2.2 asks of caches; the clamp to max follows anyway.
 */
static bool delta_seconds_parse(struct span sp, int64_t *ret) {
    int64_t v = 0;

    if (sp.p == sp.end)
        return false;
    for (const char *c = sp.p; c < sp.end; c++) {
        if (*c < '0' || *c > '9')
            return false;
        if (v > (INT64_MAX - (*c - '0')) / 10)
            v = INT64_MAX;
        else
            v = v * 10 + (*c - '0');
    }
    *ret = v;
    return true;
}

static int64_t clamp(int64_t v, int64_t min, int64_t max) {
    if (v < min)
        v = min;
    return v > max ? max : v;
}

int64_t dps_retry_after_parse(const char *value, time_t now, int64_t min, int64_t max) {
    struct span sp;
    int64_t delta;
    time_t when;

    if (!value)
        return -EINVAL;
    sp = span_trim(value);

    if (delta_seconds_parse(sp, &delta))
        return clamp(delta, min, max);

    if (http_date_parse_span(sp, now, &when) < 0)
        return -EINVAL;
    if (__builtin_sub_overflow((int64_t)when, (int64_t)now, &delta))
        delta = when > now ? INT64_MAX : INT64_MIN;
    return clamp(delta, min, max); /* a date in the past gives min */
}

uint64_t dps_backoff_ms(unsigned attempt, uint64_t base_ms, uint64_t cap_ms, uint64_t random) {
    uint64_t ceiling;

    /* base * 2^attempt without overflow: it exceeds cap exactly when base > cap / 2^attempt. */
    if (base_ms == 0)
        ceiling = 0;
    else if (attempt >= 64 || base_ms > cap_ms >> attempt)
        ceiling = cap_ms;
    else
        ceiling = base_ms << attempt;

    /* Full jitter over [0, ceiling]. The modulo bias is below 2^-40 for any ceiling under
     * 2^24 ms, far below what a retry schedule can notice. */
    if (ceiling == UINT64_MAX)
        return random;
    return random % (ceiling + 1);
}

uint64_t dps_retry_after_delay_ms(uint64_t retry_after_ms, unsigned attempt, uint64_t cap_ms,
                                  uint64_t random) {
    unsigned shift = attempt >= 2 ? 3 : attempt + 1;
    uint64_t window = retry_after_ms > cap_ms >> shift ? cap_ms : retry_after_ms << shift;

    return retry_after_ms + random % (window + 1);
}
