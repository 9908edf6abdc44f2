/* SPDX-License-Identifier: MIT */
/*
 * Logging to stderr with <N> syslog priority prefixes, which journald turns into priorities.
 * Levels mean one thing each (STYLE.md): error = this run failed; warning = degraded but going
 * on; notice = a lasting change to the TPM or the state; info = progress; debug = details.
 */
#pragma once

#include <errno.h>
#include <syslog.h>

#include "macro.h"

void log_set_max_level(int level);
int log_get_max_level(void);

/* Logs one line; returns -abs(error) so callers can write `return log_error_errno(r, ...)`. */
int log_internal(int level, int error, const char *func, const char *fmt, ...) _printf_(4, 5);

#define log_full_errno(level, error, ...) log_internal(level, error, __func__, __VA_ARGS__)
#define log_debug(...) log_full_errno(LOG_DEBUG, 0, __VA_ARGS__)
#define log_info(...) log_full_errno(LOG_INFO, 0, __VA_ARGS__)
#define log_notice(...) log_full_errno(LOG_NOTICE, 0, __VA_ARGS__)
#define log_warning(...) log_full_errno(LOG_WARNING, 0, __VA_ARGS__)
#define log_error(...) log_full_errno(LOG_ERR, 0, __VA_ARGS__)
#define log_warning_errno(e, ...) log_full_errno(LOG_WARNING, e, __VA_ARGS__)
#define log_error_errno(e, ...) log_full_errno(LOG_ERR, e, __VA_ARGS__)
#define log_debug_errno(e, ...) log_full_errno(LOG_DEBUG, e, __VA_ARGS__)

/*
 * The few events an operator searches the journal for, each with its own MESSAGE_ID
 * (128-bit, as `journalctl MESSAGE_ID=...` takes it). Sent as a structured entry with the
 * given fields when stderr is the journal (systemd units), else nothing: the ordinary log line
 * that accompanies each event already went to stderr.
 */
#define LOG_EVENT_PROVISIONED "3f4c2b8e9d1a4e7fb6c05d2a71e9c4b0"
#define LOG_EVENT_DPS_REFUSED "a91d7e3c5b2f4a68908e1c4d7b3f2e65"
#define LOG_EVENT_TPM_UNUSABLE "5e8b1f0a2c7d4e93b4a6f18d0c2e7a39"
#define LOG_EVENT_EK_PERSISTED "c27a9e41d05b4f8c8e3a6b19f4d2c7e0"

/* fields: NULL-terminated list of "KEY=value" strings (no secrets). */
void log_event(const char *message_id, int priority, const char *message, const char *const *fields);
