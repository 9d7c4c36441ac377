/* A stand-in CUDA driver (libcuda.so.1) for checking, on a machine without a GPU, that every
 * kernel a training step launches through `--device cuda` compiles for an H200, or for
 * another NVIDIA GPU ($CUDA_STANDIN_SM, below).
 *
 * It answers as one H200 (compute capability 9.0, 132 SMs) would, keeps "device" memory in
 * host memory (so uploads and reads work), and runs no kernel (but the runner's device probe,
 * below). What it checks is what a real driver checks before a kernel runs: cubecl has
 * already compiled each kernel's CUDA C++ with the real NVRTC for the compute capability
 * answered; `cuModuleLoadData` here assembles that PTX for it with the real nvJitLink, and
 * `cuModuleGetFunction` finds the entry point in it. A failure returns the driver's own error
 * code (so the runner reports it as it would on the GPU) and leaves the PTX and nvJitLink's
 * log in $CUDA_COMPILE_FAILED ($CUDA_COMPILE_KEEP, if set, gets every module's PTX). Counts
 * are printed at exit.
 *
 * Graph capture (`runner bench --graph`) is played as a driver's rules have it: while a stream
 * records, the calls that would break a recording (allocations, copies from or to the host,
 * synchronizations) fail with CUDA's own code for it, and launches are recorded, not counted as
 * run; a graph's replay runs nothing either.
 *
 * Built and used by bench/cuda-compile.sh. Only the calls cubecl-cuda 0.11 makes are here;
 * cudarc loads each symbol on first use, so a missing one panics with its name. */
#define _GNU_SOURCE
#include <nvJitLink.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef void *CUhandle;

enum {
    OK = 0,
    OUT_OF_MEMORY = 2,
    INVALID_VALUE = 1,
    INVALID_PTX = 218,
    NOT_FOUND = 500,
    STREAM_CAPTURE_UNSUPPORTED = 900,
    STREAM_CAPTURE_UNMATCHED = 904,
};

static struct {
    long modules, modules_failed, functions, launches, allocations;
    long graphs, recorded, replays, refused_in_capture;
} counts;
/* Whether a stream is recording a graph (one stream answers for all here). */
static int capturing;
/* A call that would break a recording, made while one runs: named, and refused as CUDA does. */
static int refused_in_capture(const char *call) {
    if (!capturing) return 0;
    fprintf(stderr, "fake libcuda: %s while a stream records a graph: refused\n", call);
    counts.refused_in_capture++;
    return 1;
}
static char handle_storage[1]; /* every context, stream and event is this address */

/* The compute capability answered, as NVRTC spells it: $CUDA_STANDIN_SM, 90 (an H100 or
 * H200) unless set; 80 an A100, 86 an RTX 30xx, 89 an L4 or RTX 40xx, 100 a B200. */
static int sm(void) {
    const char *value = getenv("CUDA_STANDIN_SM");
    return value ? atoi(value) : 90;
}
/* The shared memory a block may opt in to on that GPU. */
static int shared_opt_in(void) {
    int version = sm();
    if (version >= 90) return 232448;
    if (version == 80 || version == 87) return 166912;
    if (version >= 86) return 101376;
    return version >= 75 ? 65536 : 49152;
}
/* The target nvJitLink assembles for: cubecl compiles for `sm_XXa` from 9.0 on. */
static void arch_option(char *option, size_t size) {
    snprintf(option, size, "-arch=sm_%d%s", sm(), sm() >= 90 ? "a" : "");
}

static void report(void) {
    fprintf(stderr,
            "fake libcuda: %ld modules assembled for sm_%d (%ld refused), %ld entry points, "
            "%ld launches (not run), %ld allocations; %ld graphs captured (%ld launches recorded), "
            "%ld replays, %ld calls refused while recording\n",
            counts.modules, sm(), counts.modules_failed, counts.functions, counts.launches,
            counts.allocations, counts.graphs, counts.recorded, counts.replays,
            counts.refused_in_capture);
}

CUresult cuInit(unsigned flags) {
    (void)flags;
    static int once;
    if (!once++) atexit(report);
    return OK;
}
CUresult cuDriverGetVersion(int *version) { *version = 13000; return OK; }
CUresult cuDeviceGetCount(int *count) { *count = 1; return OK; }
CUresult cuDeviceGet(CUdevice *device, int ordinal) {
    *device = ordinal;
    return ordinal == 0 ? OK : INVALID_VALUE;
}
CUresult cuDeviceGetName(char *name, int len, CUdevice device) {
    (void)device;
    snprintf(name, len, "NVIDIA stand-in for sm_%d (bench/cuda-compile)", sm());
    return OK;
}
CUresult cuDeviceGetPCIBusId(char *bus, int len, CUdevice device) {
    (void)device;
    snprintf(bus, len, "0000:00:00.0");
    return OK;
}
CUresult cuDeviceGetLuid(char *luid, unsigned *mask, CUdevice device) {
    (void)device;
    memset(luid, 0, 8);
    *mask = 0;
    return OK;
}
CUresult cuDeviceTotalMem_v2(size_t *bytes, CUdevice device) {
    (void)device;
    *bytes = 143771566080ull; /* an H200's 141 GB; only reserved, never touched */
    return OK;
}

/* An H200's answers (cudaDeviceProp), but the compute capability's own; anything else asked
 * reads 0. */
CUresult cuDeviceGetAttribute(int *value, int attribute, CUdevice device) {
    (void)device;
    switch (attribute) {
    case 1: *value = 1024; break;             /* max threads per block */
    case 2: case 3: *value = 1024; break;     /* max block dim x, y */
    case 4: *value = 64; break;               /* max block dim z */
    case 5: *value = 2147483647; break;       /* max grid dim x */
    case 6: case 7: *value = 65535; break;    /* max grid dim y, z */
    case 8: *value = 49152; break;            /* shared memory per block */
    case 10: *value = 32; break;              /* warp size */
    case 16: *value = 132; break;             /* multiprocessors */
    case 75: *value = sm() / 10; break;       /* compute capability major */
    case 76: *value = sm() % 10; break;       /* minor */
    case 97: *value = shared_opt_in(); break; /* shared memory per block, opt-in */
    case 115: *value = 1; break;              /* memory pools supported */
    default: *value = 0;
    }
    return OK;
}

CUresult cuDevicePrimaryCtxRetain(CUhandle *context, CUdevice device) {
    (void)device;
    *context = handle_storage;
    return OK;
}
CUresult cuCtxSetCurrent(CUhandle context) { (void)context; return OK; }
CUresult cuCtxGetStreamPriorityRange(int *least, int *greatest) {
    *least = 0;
    *greatest = -5;
    return OK;
}
CUresult cuStreamCreate(CUhandle *stream, unsigned flags) {
    (void)flags;
    *stream = handle_storage;
    return OK;
}
CUresult cuStreamCreateWithPriority(CUhandle *stream, unsigned flags, int priority) {
    (void)priority;
    return cuStreamCreate(stream, flags);
}
CUresult cuStreamDestroy_v2(CUhandle stream) { (void)stream; return OK; }
CUresult cuStreamSynchronize(CUhandle stream) {
    (void)stream;
    return refused_in_capture("cuStreamSynchronize") ? STREAM_CAPTURE_UNSUPPORTED : OK;
}
CUresult cuStreamWaitEvent(CUhandle stream, CUhandle event, unsigned flags) {
    (void)stream, (void)event, (void)flags;
    return OK;
}
CUresult cuEventCreate(CUhandle *event, unsigned flags) {
    (void)flags;
    *event = handle_storage;
    return OK;
}
CUresult cuEventRecord(CUhandle event, CUhandle stream) { (void)event, (void)stream; return OK; }
CUresult cuEventSynchronize(CUhandle event) {
    (void)event;
    return refused_in_capture("cuEventSynchronize") ? STREAM_CAPTURE_UNSUPPORTED : OK;
}
CUresult cuEventDestroy_v2(CUhandle event) { (void)event; return OK; }
CUresult cuEventElapsedTime(float *ms, CUhandle start, CUhandle end) {
    (void)start, (void)end;
    *ms = 0.001f;
    return OK;
}

/* Device memory is zeroed host memory (large pools stay virtual until touched). */
CUresult cuMemAlloc_v2(CUdeviceptr *pointer, size_t bytes) {
    if (refused_in_capture("an allocation")) return STREAM_CAPTURE_UNSUPPORTED;
    void *memory = calloc(1, bytes ? bytes : 1);
    if (!memory) return OUT_OF_MEMORY;
    counts.allocations++;
    *pointer = (CUdeviceptr)(uintptr_t)memory;
    return OK;
}
CUresult cuMemAllocAsync(CUdeviceptr *pointer, size_t bytes, CUhandle stream) {
    (void)stream;
    return cuMemAlloc_v2(pointer, bytes);
}
CUresult cuMemFree_v2(CUdeviceptr pointer) { free((void *)(uintptr_t)pointer); return OK; }
CUresult cuMemFreeAsync(CUdeviceptr pointer, CUhandle stream) {
    (void)stream;
    return cuMemFree_v2(pointer);
}
CUresult cuMemAllocHost_v2(void **pointer, size_t bytes) {
    *pointer = calloc(1, bytes ? bytes : 1);
    return *pointer ? OK : OUT_OF_MEMORY;
}
CUresult cuMemFreeHost(void *pointer) { free(pointer); return OK; }
CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr to, const void *from, size_t bytes, CUhandle stream) {
    (void)stream;
    if (refused_in_capture("a copy from the host")) return STREAM_CAPTURE_UNSUPPORTED;
    memmove((void *)(uintptr_t)to, from, bytes);
    return OK;
}
CUresult cuMemcpyDtoHAsync_v2(void *to, CUdeviceptr from, size_t bytes, CUhandle stream) {
    (void)stream;
    if (refused_in_capture("a copy to the host")) return STREAM_CAPTURE_UNSUPPORTED;
    memmove(to, (const void *)(uintptr_t)from, bytes);
    return OK;
}
CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr to, CUdeviceptr from, size_t bytes, CUhandle stream) {
    (void)stream;
    memmove((void *)(uintptr_t)to, (const void *)(uintptr_t)from, bytes);
    return OK;
}

typedef struct {
    size_t src_x_bytes, src_y;
    int src_type;
    const void *src_host;
    CUdeviceptr src_device;
    void *src_array;
    size_t src_pitch;
    size_t dst_x_bytes, dst_y;
    int dst_type;
    void *dst_host;
    CUdeviceptr dst_device;
    void *dst_array;
    size_t dst_pitch;
    size_t width_bytes, height;
} Copy2d;

/* Both sides are host memory here, whichever kind (1 host, 2 device) the copy names. */
CUresult cuMemcpy2DAsync_v2(const Copy2d *copy, CUhandle stream) {
    (void)stream;
    if (refused_in_capture("a pitched copy")) return STREAM_CAPTURE_UNSUPPORTED;
    const char *from = copy->src_type == 1 ? copy->src_host : (const char *)(uintptr_t)copy->src_device;
    char *to = copy->dst_type == 1 ? copy->dst_host : (char *)(uintptr_t)copy->dst_device;
    for (size_t row = 0; row < copy->height; row++)
        memmove(to + (copy->dst_y + row) * copy->dst_pitch + copy->dst_x_bytes,
                from + (copy->src_y + row) * copy->src_pitch + copy->src_x_bytes,
                copy->width_bytes);
    return OK;
}

/* Writes a module's PTX, and what nvJitLink said of it if anything, to `module-PID-N.ptx` in the
 * folder named by the environment variable `folder_variable`, if set. */
static void keep_module(const char *folder_variable, const char *ptx, const char *log) {
    const char *dir = getenv(folder_variable);
    if (!dir) return;
    char path[4096];
    snprintf(path, sizeof path, "%s/module-%d-%ld.ptx", dir, (int)getpid(),
             counts.modules + counts.modules_failed);
    FILE *file = fopen(path, "w");
    if (file) {
        fputs(ptx, file);
        if (log) fprintf(file, "\n// nvJitLink:\n%s", log);
        fclose(file);
    }
}

CUresult cuModuleLoadData(CUhandle *module, const void *image) {
    const char *ptx = image;
    char arch[32];
    arch_option(arch, sizeof arch);
    const char *options[] = {arch};
    nvJitLinkHandle link;
    if (nvJitLinkCreate(&link, 1, options) != NVJITLINK_SUCCESS) return INVALID_VALUE;
    nvJitLinkResult result = nvJitLinkAddData(link, NVJITLINK_INPUT_PTX, ptx, strlen(ptx) + 1, "kernel");
    if (result == NVJITLINK_SUCCESS) result = nvJitLinkComplete(link);
    if (result != NVJITLINK_SUCCESS) {
        size_t size = 0;
        nvJitLinkGetErrorLogSize(link, &size);
        char *log = calloc(1, size + 1);
        nvJitLinkGetErrorLog(link, log);
        fprintf(stderr, "fake libcuda: nvJitLink refused a module (%s):\n%s\n", arch, log);
        keep_module("CUDA_COMPILE_FAILED", ptx, log);
        free(log);
        nvJitLinkDestroy(&link);
        counts.modules_failed++;
        return INVALID_PTX;
    }
    nvJitLinkDestroy(&link);
    keep_module("CUDA_COMPILE_KEEP", ptx, NULL);
    counts.modules++;
    *module = strdup(ptx);
    return OK;
}
CUresult cuModuleUnload(CUhandle module) { free(module); return OK; }

/* The entry point must be declared in the module's PTX, as `.entry NAME(`; its name is
 * appended to $CUDA_COMPILE_ENTRIES. */
CUresult cuModuleGetFunction(CUhandle *function, CUhandle module, const char *name) {
    char *entry = NULL;
    if (asprintf(&entry, ".entry %s(", name) < 0) return OUT_OF_MEMORY;
    int found = strstr(module, entry) != NULL;
    free(entry);
    if (!found) {
        fprintf(stderr, "fake libcuda: no entry point %s in its module\n", name);
        return NOT_FOUND;
    }
    counts.functions++;
    const char *list = getenv("CUDA_COMPILE_ENTRIES");
    FILE *file = list ? fopen(list, "a") : NULL;
    if (file) {
        fprintf(file, "%s\n", name);
        fclose(file);
    }
    *function = handle_storage;
    return OK;
}
CUresult cuFuncSetAttribute(CUhandle function, int attribute, int value) {
    (void)function;
    /* 8: the dynamic shared memory a launch may ask for, at most the opt-in limit */
    return attribute == 8 && value > shared_opt_in() ? INVALID_VALUE : OK;
}
CUresult cuLaunchKernel(CUhandle function, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                        unsigned by, unsigned bz, unsigned shared, CUhandle stream, void **params,
                        void **extra) {
    (void)function, (void)gx, (void)gy, (void)gz, (void)stream, (void)extra;
    if ((unsigned long)bx * by * bz > 1024 || shared > (unsigned)shared_opt_in()) return INVALID_VALUE;
    if (capturing) {
        counts.recorded++;
        return OK;
    }
    /* The one kernel whose effect is played: the runner's device probe, its first launch,
     * `1 + 1`, which fusion compiles to writing the constant 2 to its one buffer. */
    if (counts.launches++ == 0) **(float **)params[0] = 2.0f;
    return OK;
}

/* Graphs: a recording holds no nodes here (no memory nodes, which cubecl refuses), and every
 * graph and executable is the handle address. */
CUresult cuStreamBeginCapture_v2(CUhandle stream, int mode) {
    (void)stream, (void)mode;
    if (capturing) return STREAM_CAPTURE_UNSUPPORTED;
    capturing = 1;
    return OK;
}
CUresult cuStreamEndCapture(CUhandle stream, CUhandle *graph) {
    (void)stream;
    if (!capturing) return STREAM_CAPTURE_UNMATCHED;
    capturing = 0;
    counts.graphs++;
    *graph = handle_storage;
    return OK;
}
CUresult cuGraphGetNodes(CUhandle graph, CUhandle *nodes, size_t *count) {
    (void)graph, (void)nodes;
    *count = 0;
    return OK;
}
CUresult cuGraphNodeGetType(CUhandle node, int *type) {
    (void)node;
    *type = 0; /* a kernel */
    return OK;
}
CUresult cuGraphInstantiateWithFlags(CUhandle *exec, CUhandle graph, unsigned long long flags) {
    (void)graph, (void)flags;
    *exec = handle_storage;
    return OK;
}
CUresult cuGraphUpload(CUhandle exec, CUhandle stream) { (void)exec, (void)stream; return OK; }
CUresult cuGraphLaunch(CUhandle exec, CUhandle stream) {
    (void)exec, (void)stream;
    counts.replays++;
    return OK;
}
CUresult cuGraphExecDestroy(CUhandle exec) { (void)exec; return OK; }
CUresult cuGraphDestroy(CUhandle graph) { (void)graph; return OK; }

/* NVRTC 13 opens the process's libcuda for its compile cache and, finding a libcuda without
 * this call, crashes; refusing it (801, not supported) makes it compile uncached. */
CUresult cuGetExportTable(const void **table, const void *id) {
    (void)id;
    *table = NULL;
    return 801;
}

static const char *error_text = "an error of the stand-in driver (bench/cuda-compile)";
CUresult cuGetErrorString(CUresult error, const char **text) {
    (void)error;
    *text = error_text;
    return OK;
}
CUresult cuGetErrorName(CUresult error, const char **text) { return cuGetErrorString(error, text); }
