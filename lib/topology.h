/* topology.h - where RDMA devices sit relative to this process (hwloc), and
 * memory allocated on a device's NUMA node. Without hwloc: no preference,
 * ordinary page-aligned allocations (topology_none.c). */
#ifndef TERSE_TOPOLOGY_H
#define TERSE_TOPOLOGY_H

#include <stddef.h>

/* 2: the device hangs below the CPUs this process is bound to; 1: it is
 * elsewhere in the machine; 0: unknown (no hwloc, virtual device such as rxe). */
int terse__topo_nic_score(const char *ibdev);

/* len bytes, page-aligned, bound to the NUMA node of ibdev when known
 * (ibdev NULL: anywhere). Release with terse__topo_free(ptr, len). */
void *terse__topo_alloc(const char *ibdev, size_t len);
void terse__topo_free(void *ptr, size_t len);

#endif
