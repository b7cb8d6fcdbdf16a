/*
 * topology_hwloc.c - RDMA device locality and NIC-local memory with hwloc.
 * The topology is loaded once per process, on first use.
 */
#include "topology.h"
#include "log.h"

#include <hwloc.h>
#include <sys/mman.h>
#include <stdlib.h>
#include <string.h>

static hwloc_topology_t topo;
static int topo_state; /* 0: not loaded, 1: loaded, -1: failed */

static hwloc_topology_t get_topo(void)
{
    if (topo_state == 0) {
        topo_state = -1;
        if (hwloc_topology_init(&topo) == 0) {
            hwloc_topology_set_io_types_filter(topo, HWLOC_TYPE_FILTER_KEEP_IMPORTANT);
            if (hwloc_topology_load(topo) == 0)
                topo_state = 1;
            else
                hwloc_topology_destroy(topo);
        }
    }
    return topo_state == 1 ? topo : NULL;
}

/* The non-I/O object (package, NUMA node...) an RDMA device hangs below. */
static hwloc_obj_t nic_ancestor(hwloc_topology_t t, const char *ibdev)
{
    for (hwloc_obj_t o = hwloc_get_next_osdev(t, NULL); o; o = hwloc_get_next_osdev(t, o))
        if (o->attr->osdev.type == HWLOC_OBJ_OSDEV_OPENFABRICS && o->name && strcmp(o->name, ibdev) == 0)
            return hwloc_get_non_io_ancestor_obj(t, o);
    return NULL;
}

int terse__topo_nic_score(const char *ibdev)
{
    hwloc_topology_t t = get_topo();
    hwloc_obj_t anc = t && ibdev ? nic_ancestor(t, ibdev) : NULL;
    if (!anc || !anc->cpuset)
        return 0;
    hwloc_bitmap_t mine = hwloc_bitmap_alloc();
    int score = 1;
    if (mine && hwloc_get_cpubind(t, mine, HWLOC_CPUBIND_PROCESS) == 0 &&
        hwloc_bitmap_isincluded(mine, anc->cpuset))
        score = 2;
    hwloc_bitmap_free(mine);
    return score;
}

/* Whole pages from mmap, backed only when touched; munmap frees them, and
 * hwloc's NIC-local allocations too (they are mmap'ed and bound). Without a
 * device the topology is never loaded (it costs tens of milliseconds). */
static void *map_pages(size_t len)
{
    void *p = mmap(NULL, len ? len : 1, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

void *terse__topo_alloc(const char *ibdev, size_t len)
{
    hwloc_topology_t t = ibdev ? get_topo() : NULL;
    hwloc_obj_t anc = t ? nic_ancestor(t, ibdev) : NULL;
    if (anc && anc->nodeset && !hwloc_bitmap_iszero(anc->nodeset)) {
        void *p = hwloc_alloc_membind(t, len, anc->nodeset, HWLOC_MEMBIND_BIND, HWLOC_MEMBIND_BYNODESET);
        if (p) {
            TERSE_INFO(NET, "allocated %zu bytes on the NUMA node of %s", len, ibdev);
            return p;
        }
    }
    return map_pages(len);
}

void terse__topo_free(void *ptr, size_t len)
{
    if (ptr)
        munmap(ptr, len ? len : 1);
}
