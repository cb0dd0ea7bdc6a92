/* mls_format.h: the .mls model container. Pure C: no Python, no globals.
 *
 * Byte layout (all integers little-endian; offsets from the file start):
 *
 *   header, 128 bytes
 *     0   u8[8]  magic "\x89MLS\r\n\x1a\n"
 *     8   u16    format major version (MLS_FORMAT_MAJOR); a reader rejects a
 *                file whose major is newer than its own. 2 changed only
 *                the section checksum (chunked); this build reads 1.x too
 *     10  u16    format minor version (additive changes only)
 *     12  u32    model kind (mls_kind in mls_model.h; opaque here)
 *     16  u64    total file size in bytes
 *     24  u64    metadata offset      32  u64  metadata length (UTF-8 JSON)
 *     40  u64    section table offset 48  u32  section count  52 u32 flags (0)
 *     56  u64    header checksum, a chain: h = checksum64(header with this
 *                field zeroed, seed 0); h = checksum64(metadata, seed h);
 *                h = checksum64(section table, seed h)
 *     64  u8[64] reserved, zero
 *   metadata JSON (not NUL-terminated), then the section table:
 *   n x 128-byte entries:
 *     0   char[64] name, NUL-padded, NUL-terminated, [A-Za-z0-9_.]+
 *     64  u32    dtype (mls_dtype)   68 u32 ndim (0..4)
 *     72  u64[4] shape (unused dims 0)
 *     104 u64    data offset (multiple of 64)  112 u64 data length in bytes
 *     120 u64    checksum of the data bytes: 2.x chunked (4 MiB chunks, so
 *                that a load verifies a large section on several threads),
 *                1.x checksum64(data, seed 0); exact rule in mls_format.c
 *   then each section's data, starting on a 64-byte boundary.
 *
 * Every offset, length, count and shape is checked against the bytes that
 * remain and against overflow before it is used; a data length must equal
 * prod(shape) * dtype size. Sections may not overlap the header, the
 * metadata, the table or each other.
 */
#ifndef MLS_FORMAT_H
#define MLS_FORMAT_H

#include <stddef.h>
#include <stdint.h>

#include "mls_array.h"
#include "mls_status.h"

#define MLS_FORMAT_MAJOR 2
#define MLS_FORMAT_MINOR 0
#define MLS_FORMAT_ALIGN 64
#define MLS_SECTION_NAME_MAX 64 /* including the terminating NUL */
#define MLS_SECTION_MAX_NDIM 4
#define MLS_FORMAT_MAX_SECTIONS 4096
#define MLS_FORMAT_MAX_METADATA (16u * 1024u * 1024u)

/* One named array. For writing, `data` points at nbytes the caller owns; in
 * an opened file it points into the mapping (64-byte aligned). */
typedef struct mls_section {
    char name[MLS_SECTION_NAME_MAX];
    mls_dtype dtype;
    int32_t ndim;
    int64_t shape[MLS_SECTION_MAX_NDIM];
    const void *data;
    uint64_t nbytes;
} mls_section;

/* Elements in a section (product of its shape; 1 for ndim 0). */
int64_t mls_section_size(const mls_section *s);

/* Writes a complete .mls file to `path` atomically: the bytes go to a
 * temporary file in the same directory, which is fsync'ed and renamed over
 * `path`; on any failure the temporary file is removed and `path` is left as
 * it was. Validates names, dtypes, shapes and nbytes first. */
mls_status mls_format_write(const char *path, uint32_t kind, const char *metadata,
                            size_t metadata_len, const mls_section *sections,
                            size_t n_sections, mls_error *err);

typedef struct mls_file mls_file;

/* Maps `path` read-only and validates it (see the layout above). With
 * verify_data, the checksum of every section's data is checked too (one read
 * pass, sections of 32 MiB and more on up to 4 threads for a 2.x file); the
 * header, metadata and table are always checked. */
mls_status mls_format_open(const char *path, int verify_data, mls_file **out,
                           mls_error *err);

/* Same validation over a caller-owned buffer (no copy; the buffer must
 * outlive the mls_file). For in-memory use and fuzzing. */
mls_status mls_format_parse(const void *buf, size_t len, int verify_data,
                            mls_file **out, mls_error *err);

void mls_file_close(mls_file *f); /* NULL is fine */

uint32_t mls_file_kind(const mls_file *f);
void mls_file_version(const mls_file *f, uint16_t *major, uint16_t *minor);
const char *mls_file_metadata(const mls_file *f, size_t *len);
size_t mls_file_section_count(const mls_file *f);
const mls_section *mls_file_section(const mls_file *f, size_t i);
/* NULL when no section has that name. */
const mls_section *mls_file_find_section(const mls_file *f, const char *name);
/* Base address and length of the whole mapped file. */
const void *mls_file_bytes(const mls_file *f, size_t *len);

/* 64-bit checksum used by the format (fast, not cryptographic). */
uint64_t mls_checksum64(const void *data, size_t len, uint64_t seed);

#endif /* MLS_FORMAT_H */
