/* topology_none.c - build without hwloc: no locality, plain allocations. */
#include "topology.h"

#include <stdlib.h>

int terse__topo_nic_score(const char *ibdev)
{
    (void)ibdev;
    return 0;
}

void *terse__topo_alloc(const char *ibdev, size_t len)
{
    (void)ibdev;
    return aligned_alloc(4096, (len + 4095) & ~(size_t)4095);
}

void terse__topo_free(void *ptr, size_t len)
{
    (void)len;
    free(ptr);
}
