// gloo_allreduce_bench - Gloo allreduce float32 sum sweep over Gloo's TCP
// transport, the Gloo columns of perf/compare.sh (loopback) and perf/cluster.sh
// (GLOO_ADDR: the address of this rank's interface in its namespace).
//   gloo_allreduce_bench RANK SIZE STOREDIR ring_chunked|halving_doubling MIN MAX FACTOR
// Prints "bytes busbw_GBps time_us wrong" per size on rank 0; iterations as in
// mpi_allreduce_bench.c.
#include <gloo/allreduce_halving_doubling.h>
#include <gloo/allreduce_ring_chunked.h>
#include <gloo/barrier_all_to_all.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/file_store.h>
#include <gloo/transport/tcp/device.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

int main(int argc, char **argv)
{
    if (argc < 8) {
        std::fprintf(stderr, "usage: %s RANK SIZE STOREDIR ALGO MIN MAX FACTOR\n", argv[0]);
        return 2;
    }
    int rank = std::atoi(argv[1]), n = std::atoi(argv[2]);
    std::string algo = argv[4];
    size_t minb = std::strtoull(argv[5], nullptr, 10), maxb = std::strtoull(argv[6], nullptr, 10);
    size_t f = std::strtoull(argv[7], nullptr, 10);
    const char *addr = std::getenv("GLOO_ADDR");
    gloo::transport::tcp::attr attr(addr && *addr ? addr : "127.0.0.1");
    auto dev = gloo::transport::tcp::CreateDevice(attr);
    gloo::rendezvous::FileStore store(argv[3]);
    auto ctx = std::make_shared<gloo::rendezvous::Context>(rank, n);
    ctx->setTimeout(std::chrono::seconds(300));
    ctx->connectFullMesh(store, dev);
    std::vector<float> buf(maxb / 4);
    gloo::BarrierAllToAll barrier(ctx);
    for (size_t b = minb; b <= maxb; b *= f) {
        int count = (int)(b / 4);
        std::vector<float *> ptrs{buf.data()};
        std::unique_ptr<gloo::Algorithm> a;
        if (algo == "ring_chunked")
            a.reset(new gloo::AllreduceRingChunked<float>(ctx, ptrs, count));
        else
            a.reset(new gloo::AllreduceHalvingDoubling<float>(ctx, ptrs, count));
        long iters = (long)((256u << 20) / b);
        iters = iters < 5 ? 5 : iters > 200 ? 200 : iters;
        for (int i = 0; i < 2; i++) {
            for (int k = 0; k < count; k++)
                buf[k] = (float)((rank + k % 13) % 5);
            a->run();
        }
        barrier.run();
        auto t0 = std::chrono::steady_clock::now();
        for (long i = 0; i < iters; i++)
            a->run();
        barrier.run();
        double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / (double)iters;
        // Gloo reduces in place: check one fresh run.
        for (int k = 0; k < count; k++)
            buf[k] = (float)((rank + k % 13) % 5);
        a->run();
        long wrong = 0;
        for (int k = 0; k < count; k++) {
            double want = 0;
            for (int r = 0; r < n; r++)
                want += (r + k % 13) % 5;
            wrong += buf[k] != (float)want;
        }
        if (rank == 0)
            std::printf("%zu %.3f %.1f %ld\n", b, (double)b / el / 1e9 * 2.0 * (n - 1) / n, el * 1e6, wrong);
        std::fflush(stdout);
    }
    return 0;
}
