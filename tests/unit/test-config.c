/* SPDX-License-Identifier: MIT */
/* Configuration: INI syntax, values and ranges, drop-ins, kernel command line, environment,
 * the checks before registration (field case B05), and that the man page lists every key. */
#include <errno.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* cmocka.h needs the headers above first: a block of its own keeps clang-format's sorting off. */
#include <cmocka.h>

#include "config/config.h"

static const char *const env_vars[] = {
    "TPM_PROVISION_ID_SCOPE",  "TPM_PROVISION_ENDPOINT",        "TPM_PROVISION_TCTI",
    "TPM_PROVISION_CA_BUNDLE", "TPM_PROVISION_REGISTRATION_ID", "TPM_PROVISION_CONFIG",
    "TPM_PROVISION_CMDLINE",
};

static char tmpdir[64];
static char captured[16384];
static int saved_stderr = -1;
static FILE *capture_file;

/* Everything logged between capture_start() and capture_end() lands in `captured`. */
static void capture_start(void) {
    fflush(stderr);
    capture_file = tmpfile();
    assert_non_null(capture_file);
    saved_stderr = dup(STDERR_FILENO);
    assert_true(saved_stderr >= 0);
    assert_true(dup2(fileno(capture_file), STDERR_FILENO) >= 0);
}

static const char *capture_end(void) {
    size_t n;

    fflush(stderr);
    dup2(saved_stderr, STDERR_FILENO);
    close(saved_stderr);
    rewind(capture_file);
    n = fread(captured, 1, sizeof(captured) - 1, capture_file);
    captured[n] = '\0';
    fclose(capture_file);
    /* Shown when a test fails, so the message can be read. */
    fprintf(stderr, "%s", captured);
    return captured;
}

static void assert_contains(const char *haystack, const char *needle) {
    assert_non_null(haystack);
    if (!strstr(haystack, needle))
        fail_msg("expected \"%s\" in:\n%s", needle ?: "(null)", haystack ?: "(null)");
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "we");

    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

static const char *in_tmp(const char *name) {
    static char path[4][256];
    static unsigned next;
    char *p = path[next++ % 4];

    snprintf(p, sizeof(path[0]), "%s/%s", tmpdir, name);
    return p;
}

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static int setup(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof(env_vars) / sizeof(env_vars[0]); i++)
        unsetenv(env_vars[i]);
    strcpy(tmpdir, "/tmp/test-config.XXXXXX");
    assert_non_null(mkdtemp(tmpdir));
    /* config_load() must never see this machine's /proc/cmdline or /etc. */
    write_file(in_tmp("cmdline"), "");
    setenv("TPM_PROVISION_CMDLINE", in_tmp("cmdline"), 1);
    setenv("TPM_PROVISION_CONFIG", in_tmp("tpm-provision.conf"), 1);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    nftw(tmpdir, remove_one, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

/* Parses text as one file; returns config_load_file()'s result. */
static int load_text(struct config *c, const char *text) {
    write_file(in_tmp("t.conf"), text);
    return config_load_file(c, in_tmp("t.conf"));
}

/* Parses text that must fail and returns what was logged. */
static const char *load_error(const char *text) {
    struct config c;
    int r;

    assert_int_equal(config_init(&c), 0);
    capture_start();
    r = load_text(&c, text);
    capture_end();
    config_done(&c);
    assert_int_equal(r, -EINVAL);
    return captured;
}

static void test_defaults(void **state) {
    struct config c;
    (void)state;

    assert_int_equal(config_init(&c), 0);
    assert_null(c.id_scope);
    assert_string_equal(c.endpoint, "https://global.azure-devices-provisioning.net");
    assert_null(c.registration_id);
    assert_null(c.payload_file);
    assert_string_equal(c.api_version, "2021-06-01");
    assert_null(c.ca_bundle);
    assert_null(c.proxy);
    assert_null(c.no_proxy);
    assert_int_equal(c.request_timeout_sec, 30);
    assert_int_equal(c.deadline_sec, 900);
    assert_int_equal(c.sas_ttl_sec, 3600);
    assert_null(c.tcti); /* the default device, found by tpm_open */
    assert_int_equal(c.ek_handle, 0x81010001);
    assert_int_equal(c.srk_handle, 0x81000001);
    assert_int_equal(c.identity_handle, 0x81000100);
    assert_int_equal(c.state_index, 0x01000100);
    assert_null(c.owner_auth_file);
    assert_null(c.endorsement_auth_file);
    assert_null(c.lockout_auth_file);
    config_done(&c);
}

static void test_every_key_parsed(void **state) {
    struct config c;
    (void)state;

    assert_int_equal(config_init(&c), 0);
    assert_int_equal(load_text(&c, "[Provisioning]\n"
                                   "IdScope=0ne0012ABCD\n"
                                   "GlobalEndpoint=https://dps.example:8443/\n"
                                   "RegistrationId=device-01\n"
                                   "PayloadFile=/etc/tpm-provision/payload.json\n"
                                   "ApiVersion=2021-11-01-preview\n"
                                   "CABundle=/etc/ssl/dps-roots.pem\n"
                                   "Proxy=http://proxy.example:3128\n"
                                   "NoProxy=localhost,.internal\n"
                                   "RequestTimeoutSec=45\n"
                                   "TimeoutSec=15min\n"
                                   "SasTokenLifetimeSec=2h\n"
                                   "[TPM]\n"
                                   "TCTI=swtpm:path=/run/swtpm.sock\n"
                                   "EKHandle=0x81010002\n"
                                   "SRKHandle=2164260866\n"
                                   "IdentityHandle=0X81000101\n"
                                   "StateIndex=0x01bfffff\n"
                                   "OwnerAuthFile=/run/credentials/owner\n"
                                   "EndorsementAuthFile=/run/credentials/endorsement\n"
                                   "LockoutAuthFile=/run/credentials/lockout\n"),
                     0);
    assert_string_equal(c.id_scope, "0ne0012ABCD");
    assert_string_equal(c.endpoint, "https://dps.example:8443"); /* trailing slash stripped */
    assert_string_equal(c.registration_id, "device-01");
    assert_string_equal(c.payload_file, "/etc/tpm-provision/payload.json");
    assert_string_equal(c.api_version, "2021-11-01-preview");
    assert_string_equal(c.ca_bundle, "/etc/ssl/dps-roots.pem");
    assert_string_equal(c.proxy, "http://proxy.example:3128");
    assert_string_equal(c.no_proxy, "localhost,.internal");
    assert_int_equal(c.request_timeout_sec, 45);
    assert_int_equal(c.deadline_sec, 900);
    assert_int_equal(c.sas_ttl_sec, 7200);
    assert_string_equal(c.tcti, "swtpm:path=/run/swtpm.sock");
    assert_int_equal(c.ek_handle, 0x81010002);
    assert_int_equal(c.srk_handle, 0x81000002);
    assert_int_equal(c.identity_handle, 0x81000101);
    assert_int_equal(c.state_index, 0x01bfffff);
    assert_string_equal(c.owner_auth_file, "/run/credentials/owner");
    assert_string_equal(c.endorsement_auth_file, "/run/credentials/endorsement");
    assert_string_equal(c.lockout_auth_file, "/run/credentials/lockout");
    config_done(&c);
}

static void test_comments_continuation_quotes(void **state) {
    struct config c;
    (void)state;

    assert_int_equal(config_init(&c), 0);
    assert_int_equal(load_text(&c, "# a comment\n"
                                   "; another\n"
                                   "   # indented comment\n"
                                   "\n"
                                   "[Provisioning]\r\n"
                                   "  IdScope   =   0ne00000001   \r\n"
                                   "NoProxy=a.example,\\\n"
                                   "   # a comment inside a continued line is skipped\n"
                                   "    b.example,\\\n"
                                   "c.example\n"
                                   "Proxy=\"http://proxy.example:3128\"\n"
                                   "PayloadFile='/etc/tpm provision/payload.json'\n"
                                   "RegistrationId=\"quoted \\\"inner\\\" \\\\ x\"\n"
                                   "ApiVersion=2019-03-31\\\n"),
                     0);
    assert_string_equal(c.id_scope, "0ne00000001");
    assert_string_equal(c.no_proxy, "a.example, b.example, c.example");
    assert_string_equal(c.proxy, "http://proxy.example:3128");
    assert_string_equal(c.payload_file, "/etc/tpm provision/payload.json");
    assert_string_equal(c.registration_id, "quoted \"inner\" \\ x");
    /* A backslash on the last line continues into nothing. */
    assert_string_equal(c.api_version, "2019-03-31");
    /* A lone backslash continued into an empty line is an empty line. */
    assert_int_equal(load_text(&c, "[TPM]\n\\\n\nTCTI=mssim\n"), 0);
    assert_string_equal(c.tcti, "mssim");
    /* A '#' after a value is not a comment (systemd.syntax(7)), so this is a bad ID scope
     * rather than a silently different one. */
    assert_contains(load_error("[Provisioning]\nIdScope=0ne00000001 # production\n"),
                    "IdScope=0ne00000001 # production");
    config_done(&c);
}

static void test_empty_value_resets(void **state) {
    struct config c;
    (void)state;

    assert_int_equal(config_init(&c), 0);
    assert_int_equal(load_text(&c, "[Provisioning]\n"
                                   "GlobalEndpoint=https://dps.example\n"
                                   "IdScope=0ne00000001\n"
                                   "CABundle=/etc/ssl/x.pem\n"
                                   "TimeoutSec=10\n"
                                   "GlobalEndpoint=\n"
                                   "IdScope=\n"
                                   "CABundle=\"\"\n"
                                   "TimeoutSec=  \n"
                                   "[TPM]\n"
                                   "TCTI=mssim\n"
                                   "EKHandle=0x81010005\n"
                                   "TCTI=''\n"
                                   "EKHandle=\n"),
                     0);
    assert_string_equal(c.endpoint, "https://global.azure-devices-provisioning.net");
    assert_null(c.id_scope);
    assert_null(c.ca_bundle);
    assert_int_equal(c.deadline_sec, 900);
    assert_null(c.tcti); /* the default device, found by tpm_open */
    assert_int_equal(c.ek_handle, 0x81010001);
    config_done(&c);
}

static void test_unknown_key_names_file_and_line(void **state) {
    char where[300];
    const char *log;
    (void)state;

    log = load_error("[Provisioning]\nIdScope=0ne00000001\n\nIdScop=0ne00000002\n");
    snprintf(where, sizeof(where), "%s:4:", in_tmp("t.conf"));
    assert_contains(log, where);
    assert_contains(log, "IdScop=");
    assert_contains(log, "[Provisioning]");
    assert_contains(log, "valid keys: IdScope=, GlobalEndpoint=");
    assert_contains(log, "<3>"); /* an error, not a warning */

    log = load_error("[TPM]\nekhandle=0x81010001\n");
    assert_contains(log, ":2: unknown key ekhandle=");
    assert_contains(log, "did you mean EKHandle=?");

    log = load_error("[TPM]\nIdScope=0ne00000001\n");
    assert_contains(log, ":2: IdScope= belongs in section [Provisioning], not [TPM]");
}

static void test_syntax_errors(void **state) {
    char where[300];
    const char *log;
    (void)state;

    log = load_error("# header\n[Provisioning]\n[Provisoning]\nIdScope=0ne00000001\n");
    snprintf(where, sizeof(where), "%s:3:", in_tmp("t.conf"));
    assert_contains(log, where);
    assert_contains(log, "unknown section [Provisoning]; valid sections: [Provisioning], [TPM]");

    assert_contains(load_error("IdScope=0ne00000001\n[Provisioning]\n"),
                    ":1: IdScope= comes before any section header; put it under [Provisioning]");
    assert_contains(load_error("Foo=1\n"), ":1: Foo= comes before any section header");
    assert_contains(load_error("[TPM\n"), ":1: section header [TPM lacks the closing ']'");
    assert_contains(load_error("[TPM]\nTCTI\n"), ":2: expected Key=Value");
    assert_contains(load_error("[TPM]\n=mssim\n"), ":2: the key name before '=' is missing");
    assert_contains(load_error("[TPM]\nTCTI=\"mssim\n"), ":2: TCTI=: the closing quote is missing");
    assert_contains(load_error("[TPM]\nTCTI=\"a\" \"b\"\n"), "text follows the closing quote");
    /* The error names the first line of a continued line. */
    assert_contains(load_error("[TPM]\nEKHandle=\\\n  0x1\n"), ":2: invalid EKHandle=0x1");
}

static void test_nul_byte_refused(void **state) {
    struct config c;
    FILE *f;
    (void)state;

    f = fopen(in_tmp("nul.conf"), "we");
    assert_non_null(f);
    fwrite("[TPM]\nTCTI=a\0b\n", 1, 16, f);
    fclose(f);
    assert_int_equal(config_init(&c), 0);
    capture_start();
    assert_int_equal(config_load_file(&c, in_tmp("nul.conf")), -EINVAL);
    assert_contains(capture_end(), ":2: the line contains a NUL byte");
    config_done(&c);
}

static void test_bad_numbers_and_ranges(void **state) {
    static const struct {
        const char *line, *range;
    } bad[] = {
        {"[TPM]\nEKHandle=0x80ffffff", "0x81000000 to 0x817fffff"},
        {"[TPM]\nEKHandle=0x82000000", "0x81000000 to 0x817fffff"},
        {"[TPM]\nSRKHandle=abc", "0x81000000 to 0x817fffff"},
        {"[TPM]\nSRKHandle=-1", "0x81000000 to 0x817fffff"},
        {"[TPM]\nIdentityHandle=0x1ffffffff", "0x81000000 to 0x817fffff"},
        {"[TPM]\nIdentityHandle=0x", "0x81000000 to 0x817fffff"},
        /* The platform's persistent range: the owner cannot persist there. */
        {"[TPM]\nIdentityHandle=0x81800001", "0x81000000 to 0x817fffff"},
        {"[TPM]\nEKHandle=0x81010001x", "0x81000000 to 0x817fffff"},
        {"[TPM]\nStateIndex=0x01c00002", "0x01000000 to 0x01bfffff"},
        {"[TPM]\nStateIndex=0x00ffffff", "0x01000000 to 0x01bfffff"},
        {"[Provisioning]\nRequestTimeoutSec=0", "from 1 to 600"},
        {"[Provisioning]\nRequestTimeoutSec=601", "from 1 to 600"},
        {"[Provisioning]\nRequestTimeoutSec=5 0", "from 1 to 600"},
        {"[Provisioning]\nRequestTimeoutSec=+5", "from 1 to 600"},
        {"[Provisioning]\nTimeoutSec=86401", "from 0 to 86400"},
        {"[Provisioning]\nTimeoutSec=25h", "from 0 to 86400"},
        {"[Provisioning]\nTimeoutSec=2days", "from 0 to 86400"},
        {"[Provisioning]\nTimeoutSec=99999999999", "from 0 to 86400"},
        {"[Provisioning]\nSasTokenLifetimeSec=59", "from 60 to 86400"},
        {"[Provisioning]\nSasTokenLifetimeSec=0x100", "from 60 to 86400"},
    };
    (void)state;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char text[128], where[300];
        const char *log, *key = strchr(bad[i].line, '\n') + 1;

        snprintf(text, sizeof(text), "%s\n", bad[i].line);
        log = load_error(text);
        snprintf(where, sizeof(where), "%s:2: invalid %s", in_tmp("t.conf"), key);
        assert_contains(log, where);
        assert_contains(log, bad[i].range);
    }
}

static void test_number_bounds_accepted(void **state) {
    struct config c;
    (void)state;

    assert_int_equal(config_init(&c), 0);
    assert_int_equal(load_text(&c, "[TPM]\nEKHandle=0x81000000\nSRKHandle=0x817fffff\n"
                                   "StateIndex=0x01000000\n"
                                   "[Provisioning]\nRequestTimeoutSec=600s\nTimeoutSec=0\n"
                                   "SasTokenLifetimeSec=60 sec\n"),
                     0);
    assert_int_equal(c.ek_handle, 0x81000000);
    assert_int_equal(c.srk_handle, 0x817fffff);
    assert_int_equal(c.state_index, 0x01000000);
    assert_int_equal(c.request_timeout_sec, 600);
    assert_int_equal(c.deadline_sec, 0);
    assert_int_equal(c.sas_ttl_sec, 60);
    config_done(&c);
}

static void test_bad_strings(void **state) {
    static const struct {
        const char *text, *why;
    } bad[] = {
        {"[Provisioning]\nGlobalEndpoint=http://dps.example\n", "TLS is never optional"},
        {"[Provisioning]\nGlobalEndpoint=dps.example\n", "not an https:// URL"},
        {"[Provisioning]\nGlobalEndpoint=https://\n", "no host name"},
        {"[Provisioning]\nGlobalEndpoint=https:///\n", "no host name"},
        {"[Provisioning]\nGlobalEndpoint=https://dps.example/api\n", "no path"},
        {"[Provisioning]\nGlobalEndpoint=https://dps.example?x=1\n", "no path, query"},
        {"[Provisioning]\nGlobalEndpoint=https://u@dps.example\n", "user name"},
        {"[Provisioning]\nIdScope=0ne0000000100000000000000\n", "longer than 24"},
        {"[Provisioning]\nIdScope=0ne-0001\n", "only letters and digits"},
        {"[Provisioning]\nCABundle=certs/ca.pem\n", "absolute path"},
        {"[Provisioning]\nPayloadFile=payload.json\n", "absolute path"},
        {"[TPM]\nOwnerAuthFile=owner\n", "absolute path"},
        {"[Provisioning]\nApiVersion=2021-06-01&x=y\n", "only letters, digits"},
        {"[TPM]\nTCTI=device:/dev/tpm\trm0\n", "control character"},
        {"[Provisioning]\nProxy=http://proxy .example:3128\n", "a space"},
    };
    const char *log;
    (void)state;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_contains(load_error(bad[i].text), bad[i].why);

    /* A proxy URL may carry a password: the message says what is wrong without echoing it. */
    log = load_error("[Provisioning]\nProxy=http://user:s3cret@proxy\t:3128\n");
    assert_contains(log, ":2: invalid Proxy= (value not shown");
    assert_null(strstr(log, "s3cret"));
}

/* Only the names openssl rehash and update-ca-certificates give make a CA directory: OpenSSL
 * finds a directory's certificates by subject hash and nothing else. */
static void test_a_hashed_directory_is_told_by_its_names(void **state) {
    static const char *const not_hashed[] = {"ca-certificates.crt", "5ad8a5d.0", "5ad8a5d6.",
                                             "5ad8a5d6.0x", "5ad8a5d6_0", "xad8a5d6.0"};
    (void)state;

    mkdir(in_tmp("certs"), 0755);
    assert_false(config_dir_has_hashed_certs(in_tmp("certs"))); /* empty */
    for (size_t i = 0; i < sizeof(not_hashed) / sizeof(not_hashed[0]); i++) {
        char name[64];
        snprintf(name, sizeof(name), "certs/%s", not_hashed[i]);
        write_file(in_tmp(name), "x");
    }
    assert_false(config_dir_has_hashed_certs(in_tmp("certs")));
    assert_false(config_dir_has_hashed_certs(in_tmp("no-such-dir")));
    write_file(in_tmp("certs/5ad8a5d6.12"), "x");
    assert_true(config_dir_has_hashed_certs(in_tmp("certs")));
}

static void test_missing_file(void **state) {
    struct config c;
    (void)state;

    assert_int_equal(config_init(&c), 0);
    capture_start();
    assert_int_equal(config_load_file(&c, in_tmp("absent.conf")), -ENOENT);
    assert_string_equal(capture_end(), ""); /* the caller decides whether that matters */
    config_done(&c);
}

/* config_load() without any configuration file or directory: a device that uses only the
 * kernel command line. */
static void test_no_config_directory_is_fine(void **state) {
    struct config c;
    (void)state;

    setenv("TPM_PROVISION_CONFIG", in_tmp("etc/tpm-provision/tpm-provision.conf"), 1);
    write_file(in_tmp("cmdline"), "BOOT_IMAGE=/vmlinuz root=/dev/vda1 "
                                  "tpm_provision.id_scope=0ne00000001 quiet\n");
    assert_int_equal(config_init(&c), 0);
    assert_int_equal(config_load(&c), 0);
    assert_string_equal(c.id_scope, "0ne00000001");
    assert_int_equal(config_check_for_registration(&c), 0);
    config_done(&c);
}

static void test_dropin_order_and_masking(void **state) {
    struct config c;
    (void)state;

    /* TPM_PROVISION_CONFIG=<tmp>/tpm-provision.conf: drop-ins in <tmp>/tpm-provision.conf.d. */
    write_file(in_tmp("tpm-provision.conf"),
               "[Provisioning]\nIdScope=0nemain\nNoProxy=main\n[TPM]\nTCTI=main\n");
    assert_int_equal(mkdir(in_tmp("tpm-provision.conf.d"), 0755), 0);
    write_file(in_tmp("tpm-provision.conf.d/50-b.conf"), "[TPM]\nTCTI=fifty\n");
    write_file(in_tmp("tpm-provision.conf.d/10-a.conf"),
               "[Provisioning]\nIdScope=0neten\n[TPM]\nTCTI=ten\n");
    write_file(in_tmp("tpm-provision.conf.d/60-not-conf.txt"), "garbage\n");
    write_file(in_tmp("tpm-provision.conf.d/.70-hidden.conf"), "garbage\n");
    assert_int_equal(symlink("/dev/null", in_tmp("tpm-provision.conf.d/80-null.conf")), 0);
    assert_int_equal(mkdir(in_tmp("tpm-provision.conf.d/90-dir.conf"), 0755), 0);

    assert_int_equal(config_init(&c), 0);
    capture_start();
    assert_int_equal(config_load(&c), 0);
    assert_contains(capture_end(), "90-dir.conf: not a regular file");
    assert_string_equal(c.id_scope, "0neten");
    assert_string_equal(c.no_proxy, "main");
    assert_string_equal(c.tcti, "fifty"); /* 50-b.conf comes after 10-a.conf */
    config_done(&c);

    /* An error in a drop-in names the drop-in. */
    write_file(in_tmp("tpm-provision.conf.d/20-bad.conf"), "[TPM]\nTCTX=x\n");
    assert_int_equal(config_init(&c), 0);
    capture_start();
    assert_int_equal(config_load(&c), -EINVAL);
    assert_contains(capture_end(), "tpm-provision.conf.d/20-bad.conf:2: unknown key TCTX=");
    config_done(&c);
}

/* Like /usr/lib, /run and /etc: a name in a later directory masks the same name earlier, and
 * files are read in the order of their names across all directories. */
static void test_dropin_masking_across_directories(void **state) {
    const char *dirs[] = {strdup(in_tmp("usr")), strdup(in_tmp("run")), strdup(in_tmp("etc")),
                          strdup(in_tmp("absent"))};
    struct config c;
    (void)state;

    for (size_t i = 0; i < 3; i++)
        assert_int_equal(mkdir(dirs[i], 0755), 0);
    write_file(in_tmp("usr/10-x.conf"), "[Provisioning]\nIdScope=0neusr10\n");
    write_file(in_tmp("usr/20-y.conf"), "[TPM]\nTCTI=usr20\n");
    write_file(in_tmp("usr/30-z.conf"), "[Provisioning]\nNoProxy=usr30\n");
    write_file(in_tmp("run/05-w.conf"), "[Provisioning]\nIdScope=0nerun05\n[TPM]\nTCTI=run05\n");
    write_file(in_tmp("run/20-y.conf"), "[TPM]\nTCTI=run20\n");
    write_file(in_tmp("run/30-z.conf"), "[Provisioning]\nNoProxy=run30\n");
    assert_int_equal(symlink("/dev/null", in_tmp("etc/10-x.conf")), 0);
    write_file(in_tmp("etc/30-z.conf"), "[Provisioning]\nNoProxy=etc30\n");

    assert_int_equal(config_init(&c), 0);
    assert_int_equal(config_load_dropin_dirs(&c, dirs, 4), 0);
    assert_string_equal(c.id_scope, "0nerun05"); /* usr/10-x.conf masked by /dev/null */
    assert_string_equal(c.tcti, "run20");        /* run/20-y.conf replaces usr's, read after 05 */
    assert_string_equal(c.no_proxy, "etc30");
    config_done(&c);
    for (size_t i = 0; i < 4; i++)
        free((char *)dirs[i]);
}

static void test_cmdline(void **state) {
    struct config c;
    (void)state;

    assert_int_equal(config_init(&c), 0);
    capture_start();
    assert_int_equal(config_load_cmdline(&c, "BOOT_IMAGE=/vmlinuz-6.1 root=UUID=1234 ro quiet\t"
                                             "tpm_provision.id_scope=0ne00000001 "
                                             "tpm-provision.endpoint=https://dps.example:8443/ "
                                             "tpm_provision.registration-id=device-01 "
                                             "tpm_provision.proxy=\"http://a.example:3128\" "
                                             "\"tpm_provision.tcti=swtpm:path=/run/a b.sock\" "
                                             "tpm_provision.ca_bundle=/etc/ssl/dps.pem "
                                             "tpm_provision.api_version=2019-03-31 "
                                             "tpm_provision.timeout=5min "
                                             "tpm_provisionx.id_scope=ignored "
                                             "tpm_provision.ca-bundle="
                                             "\n"),
                     0);
    assert_string_equal(capture_end(), "");
    assert_string_equal(c.id_scope, "0ne00000001");
    assert_string_equal(c.endpoint, "https://dps.example:8443");
    assert_string_equal(c.registration_id, "device-01");
    assert_string_equal(c.proxy, "http://a.example:3128");
    assert_string_equal(c.tcti, "swtpm:path=/run/a b.sock");
    assert_null(c.ca_bundle); /* the empty value at the end reset it */
    assert_string_equal(c.api_version, "2019-03-31");
    assert_int_equal(c.deadline_sec, 300);
    config_done(&c);
}

/* A typo on the kernel command line must not stop the boot, but it must be visible. */
static void test_cmdline_unknown_key_warns(void **state) {
    struct config c;
    const char *log;
    (void)state;

    assert_int_equal(config_init(&c), 0);
    capture_start();
    assert_int_equal(config_load_cmdline(&c, "quiet tpm_provision.id_scop=0ne00000001 "
                                             "tpm_provision.prxy=http://u:s3cret@p "
                                             "tpm_provision.tcti "
                                             "tpm_provision.EKHandle=0x81010002"),
                     0);
    log = capture_end();
    assert_contains(log, "<4>Kernel command line: unknown key tpm_provision.id_scop ignored");
    assert_contains(log, "known keys: id_scope, endpoint, registration_id");
    assert_contains(log, "unknown key tpm_provision.prxy");
    assert_null(strstr(log, "s3cret"));
    assert_contains(log, "<4>Kernel command line: tpm_provision.tcti has no value");
    assert_contains(log, "unknown key tpm_provision.EKHandle");
    assert_null(strstr(log, "<3>"));
    assert_null(c.id_scope);
    assert_null(c.tcti); /* the default device, found by tpm_open */
    assert_int_equal(c.ek_handle, 0x81010001);

    /* A known key with a bad value cannot be ignored: using the default instead would talk to
     * the wrong place. */
    capture_start();
    assert_int_equal(config_load_cmdline(&c, "tpm_provision.endpoint=http://dps.example"), -EINVAL);
    assert_contains(capture_end(),
                    "Kernel command line: invalid tpm_provision.endpoint=http://dps.example");
    capture_start();
    assert_int_equal(config_load_cmdline(&c, "tpm_provision.timeout=soon"), -EINVAL);
    assert_contains(capture_end(), "invalid tpm_provision.timeout=soon");
    config_done(&c);
}

static void test_environment_override_order(void **state) {
    struct config c;
    (void)state;

    write_file(in_tmp("tpm-provision.conf"),
               "[Provisioning]\nIdScope=0nefile\nGlobalEndpoint=https://file.example\n"
               "CABundle=/file.pem\nRegistrationId=file\nApiVersion=2000-01-01\n"
               "[TPM]\nTCTI=file\nEKHandle=0x81010002\n");
    assert_int_equal(mkdir(in_tmp("tpm-provision.conf.d"), 0755), 0);
    write_file(in_tmp("tpm-provision.conf.d/10.conf"),
               "[Provisioning]\nIdScope=0nedropin\nApiVersion=2000-02-02\n"
               "[TPM]\nEKHandle=0x81010003\n");
    write_file(in_tmp("cmdline"),
               "tpm_provision.id_scope=0necmdline "
               "tpm_provision.endpoint=https://cmdline.example "
               "tpm_provision.tcti=cmdline tpm_provision.api_version=2000-03-03\n");
    setenv("TPM_PROVISION_ID_SCOPE", "0neenv", 1);
    setenv("TPM_PROVISION_ENDPOINT", "", 1); /* empty: ignored */
    setenv("TPM_PROVISION_CA_BUNDLE", "/env.pem", 1);
    setenv("TPM_PROVISION_REGISTRATION_ID", "env", 1);

    assert_int_equal(config_init(&c), 0);
    assert_int_equal(config_load(&c), 0);
    assert_string_equal(c.id_scope, "0neenv");
    assert_string_equal(c.endpoint, "https://cmdline.example");
    assert_string_equal(c.ca_bundle, "/env.pem");
    assert_string_equal(c.registration_id, "env");
    assert_string_equal(c.api_version, "2000-03-03");
    assert_string_equal(c.tcti, "cmdline");
    assert_int_equal(c.ek_handle, 0x81010003);
    config_done(&c);

    /* A bad environment value is an error naming the variable. */
    setenv("TPM_PROVISION_TCTI", "a\tb", 1);
    assert_int_equal(config_init(&c), 0);
    capture_start();
    assert_int_equal(config_load(&c), -EINVAL);
    assert_contains(capture_end(), "Environment: invalid TPM_PROVISION_TCTI=");
    config_done(&c);

    /* An explicit kernel command line file that is missing is an error, not silence, and
     * one to fix (-EINVAL: exit 2). */
    unsetenv("TPM_PROVISION_TCTI");
    setenv("TPM_PROVISION_CMDLINE", in_tmp("no-such-cmdline"), 1);
    assert_int_equal(config_init(&c), 0);
    capture_start();
    assert_int_equal(config_load(&c), -EINVAL);
    assert_contains(capture_end(), "no-such-cmdline");
    config_done(&c);
}

/* Field case B05: a registration ID DPS would refuse is caught before any network call. */
static void test_b05_registration_id_override_rules(void **state) {
    char long_id[130];
    struct config c;
    const char *log;
    (void)state;

    assert_int_equal(config_init(&c), 0);
    setenv("TPM_PROVISION_REGISTRATION_ID", "Device_01", 1);
    assert_int_equal(config_load(&c), 0); /* parsing keeps it; the check below refuses it */
    assert_string_equal(c.registration_id, "Device_01");
    free(c.id_scope);
    c.id_scope = strdup("0ne00000001");

    capture_start();
    assert_int_equal(config_check_for_registration(&c), -EINVAL);
    log = capture_end();
    assert_contains(log, "RegistrationId 'Device_01' is not a valid DPS registration ID");
    assert_contains(log, "lowercase");

    memset(long_id, 'a', 129);
    long_id[129] = '\0';
    free(c.registration_id);
    c.registration_id = strdup(long_id);
    capture_start();
    assert_int_equal(config_check_for_registration(&c), -EINVAL);
    assert_contains(capture_end(), "longer than 128 characters");

    long_id[128] = '\0';
    free(c.registration_id);
    c.registration_id = strdup(long_id);
    assert_int_equal(config_check_for_registration(&c), 0);

    free(c.registration_id);
    c.registration_id = strdup("device-01.line_2:a");
    assert_int_equal(config_check_for_registration(&c), 0);

    free(c.registration_id);
    c.registration_id = NULL; /* derived from the EK later */
    assert_int_equal(config_check_for_registration(&c), 0);
    config_done(&c);
}

static void test_b05_scope_and_endpoint_checked(void **state) {
    struct config c;
    const char *log;
    (void)state;

    assert_int_equal(config_init(&c), 0);
    capture_start();
    assert_int_equal(config_check_for_registration(&c), -EINVAL);
    assert_contains(capture_end(), "No ID scope configured: set IdScope=");

    c.id_scope = strdup("");
    capture_start();
    assert_int_equal(config_check_for_registration(&c), -EINVAL);
    assert_contains(capture_end(), "No ID scope configured");

    /* Values set behind the parser's back (main.c options) are checked again, and every
     * problem is reported at once. */
    free(c.id_scope);
    c.id_scope = strdup("0ne-bad");
    free(c.endpoint);
    c.endpoint = strdup("http://global.azure-devices-provisioning.net");
    c.registration_id = strdup("Device_01");
    capture_start();
    assert_int_equal(config_check_for_registration(&c), -EINVAL);
    log = capture_end();
    assert_contains(log, "ID scope '0ne-bad' is not valid");
    assert_contains(log, "Device_01");
    assert_contains(
        log,
        "Global endpoint 'http://global.azure-devices-provisioning.net' is not valid: plain http:// is not accepted, TLS is never optional");
    config_done(&c);
}

static void test_config_done_is_safe(void **state) {
    struct config c = {0};
    (void)state;

    config_done(&c);
    assert_int_equal(config_init(&c), 0);
    c.proxy = strdup("http://p");
    config_done(&c);
    config_done(&c);
    assert_null(c.endpoint);
    assert_null(c.proxy);
}

/* The man page lists every key the parser knows, in all its forms; the list comes from the
 * parser's own "valid keys" message, so a new key without documentation fails here. */
static void test_man_page_lists_every_key(void **state) {
    static const char *const sections[] = {"Provisioning", "TPM"};
    static const char *const forms[] = {
        "TPM_PROVISION_ID_SCOPE",
        "TPM_PROVISION_ENDPOINT",
        "TPM_PROVISION_TCTI",
        "TPM_PROVISION_CA_BUNDLE",
        "TPM_PROVISION_REGISTRATION_ID",
        "TPM_PROVISION_CONFIG",
        "TPM_PROVISION_CMDLINE",
        "/usr/lib/tpm\\-provision/tpm\\-provision.conf.d",
        "/run/tpm\\-provision/tpm\\-provision.conf.d",
    };
    char *man = NULL, *p;
    size_t size = 0;
    FILE *f;
    (void)state;

    f = fopen("docs/tpm-provision.conf.5", "re");
    if (!f)
        skip(); /* run from outside the source tree */
    assert_true(getdelim(&man, &size, '\0', f) > 0);
    fclose(f);

    for (size_t s = 0; s < 2; s++) {
        char text[64], listed[1024];
        const char *log;

        snprintf(text, sizeof(text), "[%s]\nNoSuchKey=1\n", sections[s]);
        log = load_error(text);
        p = strstr(log, "valid keys: ");
        assert_non_null(p);
        snprintf(listed, sizeof(listed), "%s", p + strlen("valid keys: "));
        for (char *k = strtok(listed, ", .\n"); k; k = strtok(NULL, ", .\n"))
            assert_contains(man, k);
    }

    {
        struct config c;
        char listed[1024];

        assert_int_equal(config_init(&c), 0);
        capture_start();
        config_load_cmdline(&c, "tpm_provision.nosuchkey=1");
        capture_end();
        config_done(&c);
        p = strstr(captured, "known keys: ");
        assert_non_null(p);
        snprintf(listed, sizeof(listed), "%s", p + strlen("known keys: "));
        for (char *k = strtok(listed, ", .\n"); k; k = strtok(NULL, ", .\n")) {
            char full[128];

            snprintf(full, sizeof(full), "tpm_provision.%s=", k);
            assert_contains(man, full);
        }
    }
    for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++)
        assert_contains(man, forms[i]);
    free(man);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_a_hashed_directory_is_told_by_its_names, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_every_key_parsed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_comments_continuation_quotes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_empty_value_resets, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_key_names_file_and_line, setup, teardown),
        cmocka_unit_test_setup_teardown(test_syntax_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nul_byte_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_numbers_and_ranges, setup, teardown),
        cmocka_unit_test_setup_teardown(test_number_bounds_accepted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_strings, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_config_directory_is_fine, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dropin_order_and_masking, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dropin_masking_across_directories, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cmdline, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cmdline_unknown_key_warns, setup, teardown),
        cmocka_unit_test_setup_teardown(test_environment_override_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_b05_registration_id_override_rules, setup, teardown),
        cmocka_unit_test_setup_teardown(test_b05_scope_and_endpoint_checked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_done_is_safe, setup, teardown),
        cmocka_unit_test_setup_teardown(test_man_page_lists_every_key, setup, teardown),
    };
    return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
