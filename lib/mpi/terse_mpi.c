/* terse_mpi.c - terse_comm_create_from_mpi: rendezvous data travels by MPI_Bcast. */
#include "terse_mpi.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Rank 0: "ip:port" of a port free right now on this host. */
static void pick_root(char *out, size_t len)
{
    char host[256] = "127.0.0.1", ip[64] = "127.0.0.1";
    struct addrinfo hints = {.ai_family = AF_INET}, *res = NULL;
    if (gethostname(host, sizeof(host)) == 0 && getaddrinfo(host, NULL, &hints, &res) == 0 && res) {
        inet_ntop(AF_INET, &((struct sockaddr_in *)res->ai_addr)->sin_addr, ip, sizeof(ip));
        freeaddrinfo(res);
    }
    int port = 0, fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_ANY)};
    socklen_t al = sizeof(a);
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &al) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    snprintf(out, len, "%s:%d", ip, port);
}

terse_status_t terse_comm_create_from_mpi(MPI_Comm mpi_comm, terse_comm_t **comm)
{
    int rank, size;
    if (!comm || MPI_Comm_rank(mpi_comm, &rank) != MPI_SUCCESS || MPI_Comm_size(mpi_comm, &size) != MPI_SUCCESS)
        return TERSE_ERR_INVALID_ARG;
    struct {
        char root[128];
        char secret[64];
    } info;
    memset(&info, 0, sizeof(info));
    if (rank == 0) {
        pick_root(info.root, sizeof(info.root));
        unsigned char rnd[16] = {0};
        int fd = open("/dev/urandom", O_RDONLY);
        if (fd >= 0) {
            if (read(fd, rnd, sizeof(rnd)) != (ssize_t)sizeof(rnd))
                memset(rnd, 0, sizeof(rnd));
            close(fd);
        }
        for (int i = 0; i < 16; i++)
            snprintf(info.secret + 2 * i, 3, "%02x", rnd[i]);
    }
    if (MPI_Bcast(&info, (int)sizeof(info), MPI_BYTE, 0, mpi_comm) != MPI_SUCCESS)
        return TERSE_ERR_SYSTEM;
    /* An explicit TERSE_ROOT_ADDR in the environment wins inside terse_comm_create
     * only when root_addr is NULL; keep the MPI-chosen one otherwise. */
    terse_comm_params_t p = {.rank = rank, .size = size, .root_addr = info.root, .secret = info.secret};
    return terse_comm_create(&p, comm);
}
