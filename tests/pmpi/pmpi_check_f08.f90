! pmpi_check_f08.f90 - Fortran callers of libterse_pmpi through "use mpi_f08"
! (Open MPI: the ompi_*_f functions the module calls). Large calls, which terse takes:
! REAL, DOUBLE PRECISION and INTEGER sums, in place (the Fortran MPI_IN_PLACE
! sentinel) and not, on MPI_COMM_WORLD and on a split; MAX; a broadcast and
! an allgather. Every result is checked against its closed form.
program pmpi_check_f08
  use mpi_f08
  implicit none
  integer, parameter :: n = 300000
  integer :: ierr, rank, nproc, i, hrank, hsize, failures, total
  real, allocatable :: a(:), b(:)
  double precision, allocatable :: d(:), e(:)
  integer, allocatable :: k(:), m(:), g(:)
  logical :: ok
  type(MPI_Comm) :: half

  call MPI_Init(ierr)
  call MPI_Comm_rank(MPI_COMM_WORLD, rank, ierr)
  call MPI_Comm_size(MPI_COMM_WORLD, nproc, ierr)
  allocate(a(n), b(n), d(n), e(n), k(n), m(n), g(n * nproc))
  failures = 0

  do i = 1, n
    a(i) = real(mod(i, 64)) / 4.0 + rank
    d(i) = dble(mod(i, 1000)) / 8.0 + rank
    k(i) = i + rank * 1000
  end do
  call MPI_Allreduce(a, b, n, MPI_REAL, MPI_SUM, MPI_COMM_WORLD, ierr)
  ok = ierr == MPI_SUCCESS
  do i = 1, n
    ok = ok .and. b(i) == nproc * (real(mod(i, 64)) / 4.0) + nproc * (nproc - 1) / 2
  end do
  call report(ok, 'real sum')

  call MPI_Allreduce(MPI_IN_PLACE, d, n, MPI_DOUBLE_PRECISION, MPI_SUM, MPI_COMM_WORLD, ierr)
  ok = ierr == MPI_SUCCESS
  do i = 1, n
    ok = ok .and. d(i) == nproc * (dble(mod(i, 1000)) / 8.0) + nproc * (nproc - 1) / 2
  end do
  call report(ok, 'double precision sum in place')

  call MPI_Allreduce(k, m, n, MPI_INTEGER, MPI_MAX, MPI_COMM_WORLD, ierr)
  ok = ierr == MPI_SUCCESS
  do i = 1, n
    ok = ok .and. m(i) == i + (nproc - 1) * 1000
  end do
  call report(ok, 'integer max')

  call MPI_Comm_split(MPI_COMM_WORLD, mod(rank, 2), rank, half, ierr)
  call MPI_Comm_rank(half, hrank, ierr)
  call MPI_Comm_size(half, hsize, ierr)
  m = 1
  call MPI_Allreduce(MPI_IN_PLACE, m, n, MPI_INTEGER, MPI_SUM, half, ierr)
  ok = ierr == MPI_SUCCESS .and. all(m == hsize)
  call report(ok, 'integer sum in place on a split')
  call MPI_Comm_free(half, ierr)

  if (rank == 0) then
    e = 2.5d0
  else
    e = 0
  end if
  call MPI_Bcast(e, n, MPI_DOUBLE_PRECISION, 0, MPI_COMM_WORLD, ierr)
  call report(ierr == MPI_SUCCESS .and. all(e == 2.5d0), 'bcast')

  k = rank
  call MPI_Allgather(k, n, MPI_INTEGER, g, n, MPI_INTEGER, MPI_COMM_WORLD, ierr)
  ok = ierr == MPI_SUCCESS
  do i = 0, nproc - 1
    ok = ok .and. all(g(i * n + 1:(i + 1) * n) == i)
  end do
  call report(ok, 'allgather')

  call MPI_Allreduce(failures, total, 1, MPI_INTEGER, MPI_SUM, MPI_COMM_WORLD, ierr)
  if (rank == 0) print '(a,i0,a,i0,a)', 'pmpi_check_f08: ', nproc, ' ranks, ', total, ' failed'
  call MPI_Finalize(ierr)
  if (total /= 0) stop 1
contains
  subroutine report(good, what)
    logical, intent(in) :: good
    character(*), intent(in) :: what
    if (.not. good) then
      failures = failures + 1
      print '(a,i0,2a)', 'FAIL rank ', rank, ': ', what
    end if
  end subroutine report
end program pmpi_check_f08
