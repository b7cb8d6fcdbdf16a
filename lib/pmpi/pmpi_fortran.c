/*
 * pmpi_fortran.c - Fortran callers under Open MPI, whose Fortran bindings
 * call PMPI_* directly (past the C interposers): the mpif.h / "use mpi"
 * names (mpi_allreduce_, mpi_allreduce__, mpi_allreduce, MPI_ALLREDUCE) and
 * the ompi_*_f functions the mpi_f08 module calls. Handles are converted
 * with PMPI_*_f2c; the Fortran MPI_IN_PLACE is a common block whose address
 * is the sentinel. A call terse does not take goes to the MPI's own Fortran
 * function (the next definition, found with dlsym(RTLD_NEXT)), so its
 * semantics are untouched. MPICH's Fortran bindings call the C MPI_* names,
 * which the C interposers already catch - except the mpi_f08 module's
 * MPI_Init, MPI_Init_thread and MPI_Finalize, which call PMPI_*: those three
 * are wrapped at the end.
 */
#include "pmpi.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

static void *next_fn(const char *name)
{
    void *f = dlsym(RTLD_NEXT, name);
    if (!f) {
        fprintf(stderr, "terse-pmpi: the MPI's Fortran %s is missing (%s); link the MPI's Fortran library\n", name,
                dlerror());
        abort();
    }
    return f;
}

#define NEXT(type, name)                              \
    static type real_;                                \
    if (!real_)                                       \
        real_ = (type)next_fn(name)

typedef void (*init_f_t)(MPI_Fint *);
typedef void (*init_thread_f_t)(MPI_Fint *, MPI_Fint *, MPI_Fint *);
typedef void (*finalize_f_t)(MPI_Fint *);

#if defined(OPEN_MPI) && OPEN_MPI

/* Open MPI's Fortran sentinels (only one spelling is defined per build). */
extern int mpi_fortran_in_place_ __attribute__((weak));
extern int mpi_fortran_in_place __attribute__((weak));
extern int mpi_fortran_in_place__ __attribute__((weak));
extern int MPI_FORTRAN_IN_PLACE __attribute__((weak));
extern int mpi_fortran_bottom_ __attribute__((weak));
extern int mpi_fortran_bottom __attribute__((weak));
extern int mpi_fortran_bottom__ __attribute__((weak));
extern int MPI_FORTRAN_BOTTOM __attribute__((weak));

static int f_in_place(const void *p)
{
    return p && (p == &mpi_fortran_in_place_ || p == &mpi_fortran_in_place || p == &mpi_fortran_in_place__ ||
                 p == &MPI_FORTRAN_IN_PLACE);
}

static int f_bottom(const void *p)
{
    return p && (p == &mpi_fortran_bottom_ || p == &mpi_fortran_bottom || p == &mpi_fortran_bottom__ ||
                 p == &MPI_FORTRAN_BOTTOM);
}

/* The four mpif.h spellings, all the wrapper. */
#define F_ALIASES(lower, upper, wrapper, proto)                                           \
    void lower proto __attribute__((alias(#wrapper), visibility("default")));             \
    void lower##_ proto __attribute__((alias(#wrapper), visibility("default")));          \
    void lower##__ proto __attribute__((alias(#wrapper), visibility("default")));         \
    void upper proto __attribute__((alias(#wrapper), visibility("default")));

typedef void (*allreduce_f_t)(char *, char *, MPI_Fint *, MPI_Fint *, MPI_Fint *, MPI_Fint *, MPI_Fint *);
typedef void (*rsb_f_t)(char *, char *, MPI_Fint *, MPI_Fint *, MPI_Fint *, MPI_Fint *, MPI_Fint *);
typedef void (*allgather_f_t)(char *, MPI_Fint *, MPI_Fint *, char *, MPI_Fint *, MPI_Fint *, MPI_Fint *,
                              MPI_Fint *);
typedef void (*bcast_f_t)(char *, MPI_Fint *, MPI_Fint *, MPI_Fint *, MPI_Fint *, MPI_Fint *);
typedef void (*barrier_f_t)(MPI_Fint *, MPI_Fint *);

__attribute__((visibility("default"))) void ompi_init_f(MPI_Fint *ierr)
{
    NEXT(init_f_t, "ompi_init_f");
    real_(ierr);
    if (!ierr || *ierr == MPI_SUCCESS) {
        int provided = MPI_THREAD_SINGLE;
        PMPI_Query_thread(&provided);
        terse_pmpi__start(provided);
    }
}
F_ALIASES(mpi_init, MPI_INIT, ompi_init_f, (MPI_Fint *))

__attribute__((visibility("default"))) void ompi_init_thread_f(MPI_Fint *required, MPI_Fint *provided,
                                                               MPI_Fint *ierr)
{
    NEXT(init_thread_f_t, "ompi_init_thread_f");
    real_(required, provided, ierr);
    if (!ierr || *ierr == MPI_SUCCESS)
        terse_pmpi__start((int)*provided);
}
F_ALIASES(mpi_init_thread, MPI_INIT_THREAD, ompi_init_thread_f, (MPI_Fint *, MPI_Fint *, MPI_Fint *))

__attribute__((visibility("default"))) void ompi_finalize_f(MPI_Fint *ierr)
{
    NEXT(finalize_f_t, "ompi_finalize_f");
    terse_pmpi__stop();
    real_(ierr);
}
F_ALIASES(mpi_finalize, MPI_FINALIZE, ompi_finalize_f, (MPI_Fint *))

__attribute__((visibility("default"))) void ompi_allreduce_f(char *s, char *r, MPI_Fint *count, MPI_Fint *dt,
                                                             MPI_Fint *op, MPI_Fint *comm, MPI_Fint *ierr)
{
    NEXT(allreduce_f_t, "ompi_allreduce_f");
    int taken = 0, rc = MPI_SUCCESS;
    if (!f_bottom(s) && !f_bottom(r))
        rc = terse_pmpi__allreduce(f_in_place(s) ? MPI_IN_PLACE : s, r, (int)*count, PMPI_Type_f2c(*dt),
                                   PMPI_Op_f2c(*op), PMPI_Comm_f2c(*comm), &taken);
    if (!taken)
        real_(s, r, count, dt, op, comm, ierr);
    else if (ierr)
        *ierr = (MPI_Fint)rc;
}
F_ALIASES(mpi_allreduce, MPI_ALLREDUCE, ompi_allreduce_f,
          (char *, char *, MPI_Fint *, MPI_Fint *, MPI_Fint *, MPI_Fint *, MPI_Fint *))

__attribute__((visibility("default"))) void ompi_reduce_scatter_block_f(char *s, char *r, MPI_Fint *count,
                                                                        MPI_Fint *dt, MPI_Fint *op,
                                                                        MPI_Fint *comm, MPI_Fint *ierr)
{
    NEXT(rsb_f_t, "ompi_reduce_scatter_block_f");
    int taken = 0, rc = MPI_SUCCESS;
    if (!f_bottom(s) && !f_bottom(r))
        rc = terse_pmpi__reduce_scatter_block(f_in_place(s) ? MPI_IN_PLACE : s, r, (int)*count,
                                              PMPI_Type_f2c(*dt), PMPI_Op_f2c(*op), PMPI_Comm_f2c(*comm), &taken);
    if (!taken)
        real_(s, r, count, dt, op, comm, ierr);
    else if (ierr)
        *ierr = (MPI_Fint)rc;
}
F_ALIASES(mpi_reduce_scatter_block, MPI_REDUCE_SCATTER_BLOCK, ompi_reduce_scatter_block_f,
          (char *, char *, MPI_Fint *, MPI_Fint *, MPI_Fint *, MPI_Fint *, MPI_Fint *))

__attribute__((visibility("default"))) void ompi_allgather_f(char *s, MPI_Fint *scount, MPI_Fint *sdt, char *r,
                                                             MPI_Fint *rcount, MPI_Fint *rdt, MPI_Fint *comm,
                                                             MPI_Fint *ierr)
{
    NEXT(allgather_f_t, "ompi_allgather_f");
    int taken = 0, rc = MPI_SUCCESS;
    if (!f_bottom(s) && !f_bottom(r))
        rc = terse_pmpi__allgather(f_in_place(s) ? MPI_IN_PLACE : s, (int)*scount, PMPI_Type_f2c(*sdt), r,
                                   (int)*rcount, PMPI_Type_f2c(*rdt), PMPI_Comm_f2c(*comm), &taken);
    if (!taken)
        real_(s, scount, sdt, r, rcount, rdt, comm, ierr);
    else if (ierr)
        *ierr = (MPI_Fint)rc;
}
F_ALIASES(mpi_allgather, MPI_ALLGATHER, ompi_allgather_f,
          (char *, MPI_Fint *, MPI_Fint *, char *, MPI_Fint *, MPI_Fint *, MPI_Fint *, MPI_Fint *))

__attribute__((visibility("default"))) void ompi_bcast_f(char *buf, MPI_Fint *count, MPI_Fint *dt, MPI_Fint *root,
                                                         MPI_Fint *comm, MPI_Fint *ierr)
{
    NEXT(bcast_f_t, "ompi_bcast_f");
    int taken = 0, rc = MPI_SUCCESS;
    if (!f_bottom(buf))
        rc = terse_pmpi__bcast(buf, (int)*count, PMPI_Type_f2c(*dt), (int)*root, PMPI_Comm_f2c(*comm), &taken);
    if (!taken)
        real_(buf, count, dt, root, comm, ierr);
    else if (ierr)
        *ierr = (MPI_Fint)rc;
}
F_ALIASES(mpi_bcast, MPI_BCAST, ompi_bcast_f, (char *, MPI_Fint *, MPI_Fint *, MPI_Fint *, MPI_Fint *, MPI_Fint *))

__attribute__((visibility("default"))) void ompi_barrier_f(MPI_Fint *comm, MPI_Fint *ierr)
{
    NEXT(barrier_f_t, "ompi_barrier_f");
    int taken = 0, rc = terse_pmpi__barrier(PMPI_Comm_f2c(*comm), &taken);
    if (!taken)
        real_(comm, ierr);
    else if (ierr)
        *ierr = (MPI_Fint)rc;
}
F_ALIASES(mpi_barrier, MPI_BARRIER, ompi_barrier_f, (MPI_Fint *, MPI_Fint *))
#else /* MPICH: the mpi_f08 module's start and end (ierror is optional: may be NULL) */
TERSE_PMPI_EXPORT void mpi_init_f08_(MPI_Fint *ierr)
{
    NEXT(init_f_t, "mpi_init_f08_");
    MPI_Fint rc = MPI_SUCCESS;
    real_(&rc);
    if (ierr)
        *ierr = rc;
    if (rc == MPI_SUCCESS) {
        int provided = MPI_THREAD_SINGLE;
        PMPI_Query_thread(&provided);
        terse_pmpi__start(provided);
    }
}

TERSE_PMPI_EXPORT void mpi_init_thread_f08_(MPI_Fint *required, MPI_Fint *provided, MPI_Fint *ierr)
{
    NEXT(init_thread_f_t, "mpi_init_thread_f08_");
    MPI_Fint rc = MPI_SUCCESS;
    real_(required, provided, &rc);
    if (ierr)
        *ierr = rc;
    if (rc == MPI_SUCCESS)
        terse_pmpi__start((int)*provided);
}

TERSE_PMPI_EXPORT void mpi_finalize_f08_(MPI_Fint *ierr)
{
    NEXT(finalize_f_t, "mpi_finalize_f08_");
    terse_pmpi__stop();
    real_(ierr);
}
#endif
