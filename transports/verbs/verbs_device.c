/*
 * verbs_device.c - choose the RDMA device and port (TERSE_IB_DEVICE=name:port,
 * else the active port closest to this process, by hwloc) and the IPv4
 * address RDMA CM will use on it:
 * TERSE_IB_ADDR, else the IPv4-mapped entry of the port's GID table, which is
 * exactly the RoCE v2 GID RDMA CM resolves to.
 */
#include "verbs.h"
#include "../../lib/log.h"
#include "../../lib/topology.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int gid_ipv4(const union ibv_gid *g, struct in_addr *ip)
{
    static const uint8_t prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (memcmp(g->raw, prefix, 12) != 0)
        return 0;
    memcpy(&ip->s_addr, g->raw + 12, 4);
    return ip->s_addr != 0;
}

terse_status_t terse__verbs_pick_address(const terse_tp_params_t *params, struct sockaddr_in *out)
{
    memset(out, 0, sizeof(*out));
    out->sin_family = AF_INET;
    if (params->ib_addr && *params->ib_addr) {
        if (inet_pton(AF_INET, params->ib_addr, &out->sin_addr) != 1) {
            TERSE_WARN(NET, "TERSE_IB_ADDR '%s' is not an IPv4 address", params->ib_addr);
            return TERSE_ERR_INVALID_ARG;
        }
        return TERSE_OK;
    }
    char want[64] = "";
    int want_port = 0;
    if (params->ib_device && *params->ib_device) {
        snprintf(want, sizeof(want), "%s", params->ib_device);
        char *colon = strchr(want, ':');
        if (colon) {
            *colon = 0;
            want_port = atoi(colon + 1);
        }
    }
    int ndev = 0;
    struct ibv_device **list = ibv_get_device_list(&ndev);
    if (!list || ndev == 0) {
        if (list)
            ibv_free_device_list(list);
        TERSE_INFO(NET, "verbs: no RDMA device found");
        return TERSE_ERR_NO_DEVICE;
    }
    /* Among active ports with an IPv4 GID, prefer the device closest to the
     * CPUs this process runs on (hwloc); the first one wins a tie. */
    terse_status_t st = TERSE_ERR_NO_DEVICE;
    int best = -1;
    char chosen[64] = "";
    for (int d = 0; d < ndev; d++) {
        const char *name = ibv_get_device_name(list[d]);
        if (want[0] && strcmp(name, want) != 0)
            continue;
        int score = terse__topo_nic_score(name);
        if (score <= best)
            continue;
        struct ibv_context *ctx = ibv_open_device(list[d]);
        struct ibv_device_attr da;
        if (!ctx || ibv_query_device(ctx, &da) != 0) {
            if (ctx)
                ibv_close_device(ctx);
            continue;
        }
        int found = 0;
        for (int port = 1; port <= da.phys_port_cnt && !found; port++) {
            struct ibv_port_attr pa;
            if ((want_port && port != want_port) || ibv_query_port(ctx, (uint8_t)port, &pa) != 0 ||
                pa.state != IBV_PORT_ACTIVE)
                continue;
            for (int gi = 0; gi < pa.gid_tbl_len && !found; gi++) {
                union ibv_gid g;
                struct in_addr ip;
                if (params->ib_gid_index >= 0 && gi != params->ib_gid_index)
                    continue;
                if (ibv_query_gid(ctx, (uint8_t)port, gi, &g) == 0 && gid_ipv4(&g, &ip)) {
                    char txt[32];
                    inet_ntop(AF_INET, &ip, txt, sizeof(txt));
                    TERSE_INFO(NET, "verbs: candidate %s port %d, GID index %d = %s, locality %d", name,
                               port, gi, txt, score);
                    out->sin_addr = ip;
                    snprintf(chosen, sizeof(chosen), "%s", name);
                    best = score;
                    found = 1;
                    st = TERSE_OK;
                }
            }
        }
        ibv_close_device(ctx);
    }
    if (st == TERSE_OK)
        TERSE_INFO(NET, "verbs: using %s", chosen);
    ibv_free_device_list(list);
    if (st != TERSE_OK)
        TERSE_INFO(NET, "verbs: no active port with an IPv4 GID%s%s (set TERSE_IB_ADDR for IPoIB)",
                   want[0] ? " on " : "", want);
    return st;
}
