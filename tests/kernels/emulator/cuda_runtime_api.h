// A CPU stand-in for the parts of CUDA that kernels/*.cu use, so that their device code runs under
// g++ on a machine without a GPU (tests/kernels/test_emulated_kernels.py).
//
// Each block runs on one OS thread; each CUDA thread is a fiber (ucontext) with its own stack.
// Fibers switch only at __syncthreads and warp shuffles, where every thread of the block (or warp)
// must arrive before any goes on, so the code sees the same barrier semantics as on a GPU. What
// this cannot show: data races between barriers, the memory model, warp-synchronous code without
// __syncwarp, timing, and anything hardware-specific (fp16 comes from GCC's _Float16, which rounds
// to nearest even as __float2half_rn does). "Device" pointers are host pointers.
#ifndef VLRT_CUDA_EMULATION_H
#define VLRT_CUDA_EMULATION_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>

#include <algorithm>
#include <memory>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__
#define __align__(n) __attribute__((aligned(n)))

using std::max;
using std::min;

typedef void* cudaStream_t;
enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1 };
enum cudaMemcpyKind { cudaMemcpyDeviceToDevice = 3 };

struct uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x, y, z;
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct float3 {
    float x, y, z;
};
inline float3 make_float3(float x, float y, float z) { return float3{x, y, z}; }

inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline const char* cudaGetErrorString(cudaError_t) { return "emulated CUDA error"; }
inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind, cudaStream_t) {
    memmove(dst, src, bytes);
    return cudaSuccess;
}

inline uint3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;

// Dynamic shared memory: the kernels declare `extern __shared__ unsigned char shared[]` inside
// functions of an unnamed namespace, which names this (per translation unit) buffer.
namespace {
[[maybe_unused]] alignas(16) unsigned char shared[1 << 16];
}

namespace vlrt_emu {

constexpr size_t kStackBytes = 1 << 16;
constexpr int kMaxWarps = 32;

struct Fiber {
    ucontext_t context;
    std::unique_ptr<char[]> stack;
    uint3 tid;
    bool done;
};

struct Block {
    ucontext_t scheduler;
    std::vector<Fiber> fibers;
    int current = 0;
    unsigned threads = 0;
    bool progress = false;
    unsigned long generation = 0;
    unsigned arrived = 0;
    unsigned long warp_generation[kMaxWarps] = {};
    unsigned warp_arrived[kMaxWarps] = {};
    float warp_values[kMaxWarps][32] = {};
    void (*body)(void*) = nullptr;
    void* closure = nullptr;
};

inline Block block;

inline void yield() { swapcontext(&block.fibers[block.current].context, &block.scheduler); }

inline unsigned linear_tid() { return (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x; }

// All `count` members arrive before any leaves; `generation` tells the waiting ones it happened.
inline void barrier(unsigned long& generation, unsigned& arrived, unsigned count) {
    const unsigned long mine = generation;
    block.progress = true;
    if (++arrived == count) {
        arrived = 0;
        ++generation;
        return;
    }
    while (generation == mine) yield();
}

inline void warp_barrier() {
    const unsigned w = linear_tid() / 32;
    const unsigned members = min(32u, block.threads - 32 * w);
    barrier(block.warp_generation[w], block.warp_arrived[w], members);
}

inline float shuffle(float v, unsigned source_lane, bool in_range) {
    const unsigned w = linear_tid() / 32, lane = linear_tid() % 32;
    block.warp_values[w][lane] = v;
    warp_barrier();
    const float r = in_range ? block.warp_values[w][source_lane] : v;
    warp_barrier();
    return r;
}

inline void trampoline() {
    block.body(block.closure);
    block.fibers[block.current].done = true;
    block.progress = true;
}

// Runs one block to completion; aborts on a deadlock (threads waiting at different barriers).
inline void run_block(const dim3& b) {
    block.threads = b.x * b.y * b.z;
    if (block.threads > 32u * kMaxWarps) {
        fprintf(stderr, "emulator: %u threads per block is more than it supports\n", block.threads);
        abort();
    }
    block.fibers.resize(block.threads);
    for (unsigned i = 0; i < block.threads; ++i) {
        Fiber& f = block.fibers[i];
        if (!f.stack) f.stack.reset(new char[kStackBytes]);
        f.tid = uint3{i % b.x, (i / b.x) % b.y, i / (b.x * b.y)};
        f.done = false;
        getcontext(&f.context);
        f.context.uc_stack.ss_sp = f.stack.get();
        f.context.uc_stack.ss_size = kStackBytes;
        f.context.uc_link = &block.scheduler;
        makecontext(&f.context, trampoline, 0);
    }
    for (unsigned remaining = block.threads; remaining > 0;) {
        block.progress = false;
        remaining = 0;
        for (unsigned i = 0; i < block.threads; ++i) {
            if (block.fibers[i].done) continue;
            block.current = static_cast<int>(i);
            threadIdx = block.fibers[i].tid;
            swapcontext(&block.scheduler, &block.fibers[i].context);
            remaining += !block.fibers[i].done;
        }
        if (remaining > 0 && !block.progress) {
            fprintf(stderr, "emulator: deadlock in block (%u, %u, %u)\n", blockIdx.x, blockIdx.y, blockIdx.z);
            abort();
        }
    }
}

template <typename Kernel>
struct Launch {
    dim3 grid, threads;
    size_t shared_bytes;
    Kernel kernel;

    template <typename... Args>
    void operator()(Args... args) const {
        if (shared_bytes > sizeof(shared)) {
            fprintf(stderr, "emulator: %zu bytes of shared memory requested\n", shared_bytes);
            abort();
        }
        auto call = [&]() { kernel(args...); };
        block.body = [](void* c) { (*static_cast<decltype(call)*>(c))(); };
        block.closure = &call;
        gridDim = grid;
        blockDim = threads;
        for (unsigned z = 0; z < grid.z; ++z)
            for (unsigned y = 0; y < grid.y; ++y)
                for (unsigned x = 0; x < grid.x; ++x) {
                    blockIdx = uint3{x, y, z};
                    run_block(threads);
                }
    }
};

template <typename Kernel>
Launch<Kernel> launch(dim3 grid, dim3 threads, size_t shared_bytes, cudaStream_t, Kernel kernel) {
    return Launch<Kernel>{grid, threads, shared_bytes, kernel};  // one stream: launches run in order
}

}  // namespace vlrt_emu

inline void __syncthreads() {
    vlrt_emu::barrier(vlrt_emu::block.generation, vlrt_emu::block.arrived, vlrt_emu::block.threads);
}
inline float __shfl_down_sync(unsigned, float v, unsigned delta) {
    const unsigned lane = vlrt_emu::linear_tid() % 32;
    return vlrt_emu::shuffle(v, lane + delta, lane + delta < 32);
}
inline float __shfl_sync(unsigned, float v, int source_lane) { return vlrt_emu::shuffle(v, source_lane, true); }

#define VLRT_LAUNCH(kernel, grid, threads, shared_bytes, stream) \
    vlrt_emu::launch(grid, threads, shared_bytes, stream, kernel)

#endif  // VLRT_CUDA_EMULATION_H
