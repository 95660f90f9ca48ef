// Kernel launches go through VLRT_LAUNCH so that tests/kernels/emulator can run the device code
// on the CPU (it defines the macro before this header is read); with nvcc it is a plain launch.
#ifndef VLRT_LAUNCH_CUH
#define VLRT_LAUNCH_CUH

#ifndef VLRT_LAUNCH
#define VLRT_LAUNCH(kernel, grid, block, shared_bytes, stream) kernel<<<grid, block, shared_bytes, stream>>>
#endif

#endif  // VLRT_LAUNCH_CUH
