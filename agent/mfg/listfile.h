/* SPDX-License-Identifier: MIT */
/*
 * EK list files on disk (the format is in ekrows.h): reading under a shared lock, and
 * appending one row so that a crash never leaves a half row and two stations appending to one
 * file at once neither interleave nor both add the same device.
 */
#pragma once

#include <stdbool.h>

#include "mfg/ekrows.h"

/*
 * Reads and parses path under a shared flock, then checks every row (ekrows_check_row). A file
 * that cannot be read or parsed at all is logged here and fails; rows with problems are kept
 * with ->error for the caller to report.
 */
int listfile_load(const char *path, struct ekrows *ret);

/* For a list compared against (--previous): a half row at its end is refused, since the device
 * on it would go uncompared. -EINVAL, logged, naming the line. */
int listfile_require_whole(const char *path, const struct ekrows *l);

/* What listfile_append() found when the row was not added. */
struct listfile_conflict {
    const struct ekrow *row; /* the row that is there already (in the list or in a batch) */
    const char *where;       /* the file it is in */
    bool same_device;        /* same EK, registration ID and device serial: nothing to do */
};

/*
 * Appends row to path under an exclusive flock: creates the file (mode 0644) when missing,
 * cuts off a half row a crash left at its end (with a warning naming the file and line),
 * refuses a row whose EK, registration ID or device serial is already in the file or in one
 * of the previous lists (field case B06), and writes the CSV header (for a new CSV file) and
 * the row with one write() on an O_APPEND descriptor followed by fsync(). format may be
 * EKROWS_FORMAT_UNKNOWN: the file's own format, else its extension (.csv, .jsonl), decides.
 * Returns 0 when appended; -EEXIST with *ret_conflict filled (pointing into *ret_list, which
 * the caller frees with ekrows_done) when the row is already there; other negative errnos
 * after logging.
 */
int listfile_append(const char *path, enum ekrows_format format, const struct ekrow *row,
                    struct ekrows *const *previous, const char *const *previous_names,
                    size_t n_previous, struct ekrows *ret_list,
                    struct listfile_conflict *ret_conflict);
