/* checkpoint.c - the shared checkpoint frame (see checkpoint.h). */
#include "checkpoint.h"
#include "log.h"
#include "net.h"

#include <string.h>

#define CKPT_SEED 0x636b7074ull /* "ckpt" */

void terse__ckpt_id(terse_ckpt_id_t *id, const char *magic, uint32_t version, int rank, int size)
{
    memset(id, 0, sizeof(*id));
    memcpy(id->magic, magic, sizeof(id->magic));
    id->version = version;
    id->rank = (uint32_t)rank;
    id->size = (uint32_t)size;
}

void terse__ckpt_seal(void *buf, size_t body)
{
    uint64_t sum = terse__hash64(buf, body, CKPT_SEED);
    memcpy((char *)buf + body, &sum, sizeof(sum));
}

terse_status_t terse__ckpt_check(const void *buf, size_t len, const char *magic, uint32_t version, int rank,
                                 int size, const char *who)
{
    terse_ckpt_id_t id;
    if (len < sizeof(id) + TERSE_CKPT_TRAILER) {
        TERSE_WARN(COLL, "%s: %zu bytes is too short for a checkpoint", who, len);
        return TERSE_ERR_INVALID_ARG;
    }
    memcpy(&id, buf, sizeof(id));
    if (memcmp(id.magic, magic, sizeof(id.magic)) != 0) {
        TERSE_WARN(COLL, "%s: not a checkpoint of this kind (magic %.8s, want %.8s)", who, id.magic, magic);
        return TERSE_ERR_INVALID_ARG;
    }
    if (id.version != version) {
        TERSE_WARN(COLL, "%s: checkpoint format %u, this library reads %u", who, id.version, version);
        return TERSE_ERR_INVALID_ARG;
    }
    if (id.rank != (uint32_t)rank || id.size != (uint32_t)size) {
        TERSE_WARN(COLL, "%s: checkpoint of rank %u of %u, this is rank %d of %d", who, id.rank, id.size, rank, size);
        return TERSE_ERR_INVALID_ARG;
    }
    uint64_t sum;
    memcpy(&sum, (const char *)buf + len - TERSE_CKPT_TRAILER, sizeof(sum));
    if (sum != terse__hash64(buf, len - TERSE_CKPT_TRAILER, CKPT_SEED)) {
        TERSE_WARN(COLL, "%s: checkpoint is corrupt (checksum)", who);
        return TERSE_ERR_INVALID_ARG;
    }
    return TERSE_OK;
}
