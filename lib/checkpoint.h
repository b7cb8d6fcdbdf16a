/* checkpoint.h - the frame every terse checkpoint shares (compressed
 * allreduce, SASG): an identity the loader checks and explains - magic,
 * format version, the rank and size that saved it - then the handle's body,
 * then a 64-bit hash of everything before it. Host byte order: a checkpoint
 * is for the same kind of machine. */
#ifndef TERSE_CHECKPOINT_H
#define TERSE_CHECKPOINT_H

#include "terse.h"

#include <stddef.h>
#include <stdint.h>

typedef struct terse_ckpt_id {
    char magic[8];
    uint32_t version, rank, size, pad;
} terse_ckpt_id_t;

#define TERSE_CKPT_TRAILER 8 /* the hash */

void terse__ckpt_id(terse_ckpt_id_t *id, const char *magic, uint32_t version, int rank, int size);

/* Write the hash of buf[0 .. body) at buf + body. */
void terse__ckpt_seal(void *buf, size_t body);

/* Check a checkpoint of len bytes against the identity this handle would
 * write and its hash; TERSE_ERR_INVALID_ARG with the reason logged (who
 * names the caller). */
terse_status_t terse__ckpt_check(const void *buf, size_t len, const char *magic, uint32_t version, int rank,
                                 int size, const char *who);

#endif
