# cluster_ns.sh - sourced by perf/cluster.sh and perf/pmpi.sh: an emulated
# cluster of network namespaces (../shared/docs/cluster.md has the recipe).
# The caller sets P (a name prefix unique to the run) and W (a work folder).
#   build_cluster N RATE   ranks $P-r0.. at 10.200.0.(r+1) on pe0, behind the
#                          bridge of $P-sw (10.200.0.254); every veth end
#                          rate-limited to RATE Gbit/s with tbf
#   drop_ns                delete every namespace of this run
#   mpi_in_ns              writes $W/in_ns.sh: an mpirun rank wrapper that
#                          enters its rank's namespace, with terse told its
#                          address and an emulated host of its own
#   mpirun_cluster N ARGS  Open MPI over TCP between the namespaces
drop_ns() { for ns in $(ip netns list | awk '{print $1}' | grep "^$P-" || true); do ip netns del "$ns"; done; }

build_cluster() { # n rate
    drop_ns
    burst=128kb; [ "$2" -ge 10 ] && burst=256kb
    ip netns add "$P-sw"
    ip -n "$P-sw" link set lo up
    ip -n "$P-sw" link add br0 type bridge
    ip -n "$P-sw" addr add 10.200.0.254/24 dev br0
    ip -n "$P-sw" link set br0 up
    r=0
    while [ "$r" -lt "$1" ]; do
        ns="$P-r$r"
        ip netns add "$ns"
        ip -n "$ns" link set lo up
        ip -n "$P-sw" link add "sp$r" type veth peer name pe0 netns "$ns"
        ip -n "$P-sw" link set "sp$r" master br0 up
        ip -n "$ns" addr add "10.200.0.$((r + 1))/24" dev pe0
        ip -n "$ns" link set pe0 up
        tc -n "$ns" qdisc add dev pe0 root tbf rate "${2}gbit" burst "$burst" latency 20ms
        tc -n "$P-sw" qdisc add dev "sp$r" root tbf rate "${2}gbit" burst "$burst" latency 20ms
        r=$((r + 1))
    done
}

mpi_in_ns() {
    {
        echo '#!/bin/sh'
        echo 'r=$OMPI_COMM_WORLD_RANK'
        echo 'export TERSE_BIND_ADDR=10.200.0.$((r + 1)) TERSE_HOST_ID=emulated-node-$r'
        echo "exec ip netns exec \"$P-r\$r\" \"\$@\""
    } > "$W/in_ns.sh"
    chmod +x "$W/in_ns.sh"
}

mpirun_cluster() { # n mpirun-args...
    n=$1
    shift
    ip netns exec "$P-sw" env PMIX_MCA_ptl_tcp_if_include=10.200.0.0/24 \
        mpirun --allow-run-as-root --oversubscribe --bind-to none -n "$n" \
        --mca pml ob1 --mca btl self,tcp --mca btl_tcp_if_include 10.200.0.0/24 \
        --mca oob_tcp_if_include 10.200.0.0/24 -x PMIX_MCA_ptl_tcp_if_include "$@"
}
