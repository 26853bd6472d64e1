/*
 * nvml_sim.c - a SIMULATED NVIDIA Management Library (libnvidia-ml.so.1).
 *
 * THIS IS A STAND-IN FOR HARDWARE WE DO NOT HAVE. It talks to no GPU and no driver. It implements the subset of
 * NVML's C ABI that pai-monitoring's GPU collector calls (through the real `pynvml` binding), and answers from a
 * plain-text scenario file named by the environment variable PAI_NVML_SIM_SCENARIO. The file is re-read whenever
 * it changes, so tests can inject faults (ECC errors, Xid events, a lost GPU, a call that blocks, a process that
 * belongs to no job) while a collector is running. See README.md next to this file for the scenario format.
 *
 * Types and constants are declared here from the public NVML API documentation; no NVIDIA header is used.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))

/* ---- NVML return codes (values from the public API) ---- */
enum {
    OK = 0,
    E_UNINITIALIZED = 1,
    E_INVALID_ARGUMENT = 2,
    E_NOT_SUPPORTED = 3,
    E_NO_PERMISSION = 4,
    E_NOT_FOUND = 6,
    E_INSUFFICIENT_SIZE = 7,
    E_DRIVER_NOT_LOADED = 9,
    E_TIMEOUT = 10,
    E_FUNCTION_NOT_FOUND = 13,
    E_GPU_IS_LOST = 15,
    E_RESET_REQUIRED = 16,
    E_LIB_RM_VERSION_MISMATCH = 18,
    E_NO_DATA = 21,
    E_ARGUMENT_VERSION_MISMATCH = 25,
    E_UNKNOWN = 999,
};
/* Not an NVML code: a fault of this value makes the call crash the process (abort), like a driver library that
 * segfaults. */
#define CRASH_FAULT (-2)

#define EVENT_XID 0x8ULL
#define VALUE_NOT_AVAILABLE_ULL (~0ULL)
#define INVALID_ID 0xFFFFFFFFu

#define MAX_GPUS 64
#define MAX_PROCS 64
#define MAX_MIG 8
#define MAX_XID 1024
#define MAX_FAULTS 256
#define MAX_SETS 16
#define MAX_LINKS 36 /* NVML_NVLINK_MAX_LINKS of the installed nvidia-ml-py */
#define MAX_GI 16
#define MAX_UTIL_PROCS 16
#define STR 96

/* ---- ABI structures (layouts as pynvml declares them) ---- */
typedef struct {
    char busIdLegacy[16];
    unsigned int domain, bus, device, pciDeviceId, pciSubSystemId;
    char busId[32];
} sim_pci_info_t;

typedef struct { unsigned int gpu, memory; } sim_utilization_t;
typedef struct { unsigned long long total, free, used; } sim_memory_t;
typedef struct { unsigned int version; unsigned long long total, reserved, free, used; } sim_memory_v2_t;
/* nvmlMemory_v2 as NVML defines it: the structure's size with the version number in the top byte. */
#define MEMORY_V2_VERSION ((unsigned int)(sizeof(sim_memory_v2_t) | (2u << 24)))
typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
    unsigned int gpuInstanceId, computeInstanceId;
} sim_process_info_t;

/* nvmlFieldValue_t: fieldId, scopeId, timestamp, latencyUsec, valueType, nvmlReturn, value (a union of 8 bytes). */
typedef union {
    double d;
    unsigned int ui;
    unsigned long ul;
    unsigned long long ull;
    long long sll;
    int si;
    unsigned short us;
} sim_value_t;
typedef struct {
    unsigned int fieldId, scopeId;
    long long timestamp, latencyUsec;
    unsigned int valueType;
    int nvmlReturn;
    sim_value_t value;
} sim_field_value_t;
_Static_assert(sizeof(sim_field_value_t) == 40, "nvmlFieldValue_t is 40 bytes in pynvml");
#define VALUE_TYPE_UNSIGNED_INT 1
#define VALUE_TYPE_UNSIGNED_LONG_LONG 3

/* Per-process utilisation: nvmlProcessUtilizationSample_t (the old call) and the v1 structures of
 * nvmlDeviceGetProcessesUtilizationInfo. */
typedef struct {
    unsigned int pid;
    unsigned long long timeStamp;
    unsigned int smUtil, memUtil, encUtil, decUtil;
} sim_proc_util_sample_t;
_Static_assert(sizeof(sim_proc_util_sample_t) == 32, "nvmlProcessUtilizationSample_t is 32 bytes in pynvml");
typedef struct {
    unsigned long long timeStamp;
    unsigned int pid, smUtil, memUtil, encUtil, decUtil, jpgUtil, ofaUtil;
} sim_proc_util_info_t;
_Static_assert(sizeof(sim_proc_util_info_t) == 40, "nvmlProcessUtilizationInfo_v1_t is 40 bytes in pynvml");
typedef struct {
    unsigned int version, processSamplesCount;
    unsigned long long lastSeenTimeStamp;
    sim_proc_util_info_t *procUtilArray;
} sim_procs_util_info_t;
_Static_assert(sizeof(sim_procs_util_info_t) == 24, "nvmlProcessesUtilizationInfo_v1_t is 24 bytes in pynvml");
/* ProcessesUtilizationInfo_v1 as pynvml defines it (0x01000018): the size with the version in the top byte. */
#define PROCS_UTIL_INFO_V1 ((unsigned int)(sizeof(sim_procs_util_info_t) | (1u << 24)))

/* GPM (GPU Performance Monitoring). The metric ids are pynvml's NVML_GPM_METRIC_* values; the sample is opaque to
 * the caller. */
#define GPM_METRICS_GET_VERSION 1 /* NVML_GPM_METRICS_GET_VERSION */
#define GPM_SUPPORT_VERSION 1     /* NVML_GPM_SUPPORT_VERSION */
#define GPM_METRIC_MAX 477        /* NVML_GPM_METRIC_MAX: the size of nvmlGpmMetricsGet_t.metrics */
static const struct { unsigned int id; const char *name, *unit; } GPM_METRICS[] = {
    {1, "graphics", "%"},       {2, "sm", "%"},           {3, "sm_occupancy", "%"}, {4, "integer", "%"},
    {5, "tensor", "%"},         {6, "dfma_tensor", "%"},  {7, "hmma_tensor", "%"},  {8, "dmma_tensor", "%"},
    {9, "imma_tensor", "%"},    {10, "dram_bw", "%"},     {11, "fp64", "%"},        {12, "fp32", "%"},
    {13, "fp16", "%"},          {20, "pcie_tx", "MiB/s"}, {21, "pcie_rx", "MiB/s"}, {60, "nvlink_rx", "MiB/s"},
    {61, "nvlink_tx", "MiB/s"},
};
#define GPM_N ((int)(sizeof GPM_METRICS / sizeof GPM_METRICS[0]))
#define GPM_NOT_OFFERED (-1.0)
typedef struct { const char *shortName, *longName, *unit; } sim_gpm_metric_info_t;
typedef struct {
    unsigned int metricId;
    int nvmlReturn;
    double value;
    sim_gpm_metric_info_t metricInfo;
} sim_gpm_metric_t;
_Static_assert(sizeof(sim_gpm_metric_t) == 40, "nvmlGpmMetric_t is 40 bytes in pynvml");
struct sim_gpm_sample;
typedef struct sim_gpm_sample *nvmlGpmSample_t;
typedef struct {
    unsigned int version, numMetrics;
    nvmlGpmSample_t sample1, sample2;
    sim_gpm_metric_t metrics[GPM_METRIC_MAX];
} sim_gpm_metrics_get_t;
_Static_assert(sizeof(sim_gpm_metrics_get_t) == 19104, "nvmlGpmMetricsGet_t is 19104 bytes in pynvml");
typedef struct { unsigned int version, isSupportedDevice; } sim_gpm_support_t;
#define GPM_SAMPLE_MAGIC 0x5e5e0002u
struct sim_gpm_sample {
    unsigned int magic;
    int taken, gpu, gi;          /* gi -1: the whole GPU */
    unsigned long long at_ns;    /* CLOCK_MONOTONIC when taken */
    double values[GPM_N];        /* the activity the scenario gave at that moment */
};

struct sim_handle {
    unsigned int magic;
    int gpu;
    int mig; /* -1: the physical GPU */
};
#define HANDLE_MAGIC 0x5e5e0001u
typedef struct sim_handle *nvmlDevice_t;

typedef struct {
    nvmlDevice_t device;
    unsigned long long eventType, eventData;
    unsigned int gpuInstanceId, computeInstanceId;
} sim_event_data_t;

struct sim_event_set {
    int used;
    unsigned long long types[MAX_GPUS];
    long delivered; /* highest Xid sequence number handed out (or present at creation) */
};
typedef struct sim_event_set *nvmlEventSet_t;

/* ---- the scenario ---- */
struct proc { unsigned int pid; unsigned long long used; int graphics; };
struct proc_util { unsigned int pid, sm, mem; };
struct link {
    unsigned int state;
    unsigned long long crc, crc_data, replay, recovery, tx_kib, rx_kib;
};
/* PCIe counters read as field values, by the name used in the scenario (gpu.<i>.pcie.<name>). */
static const struct { unsigned int field; const char *name; } PCIE_FIELDS[] = {
    {95, "replay_rollover"}, {169, "l0_to_recovery"}, {173, "correctable"},
    {174, "naks_received"},  {175, "receiver_error"},  {176, "bad_tlp"},        {177, "naks_sent"},
    {178, "bad_dllp"},       {179, "non_fatal"},       {180, "fatal"},          {181, "unsupported_req"},
    {182, "lcrc"},           {197, "tx_bytes"},        {198, "rx_bytes"},
};
#define PCIE_N ((int)(sizeof PCIE_FIELDS / sizeof PCIE_FIELDS[0]))
struct mig {
    int present;
    char uuid[STR], profile[STR];
    unsigned int gi, ci;
    unsigned long long used, total;
};
struct gpu {
    char name[STR], uuid[STR], pci_bus_id[32];
    unsigned int minor, pci_device_id;
    unsigned int util_gpu, util_mem, temperature, power_mw, power_limit_mw, clock_sm, clock_mem, fan, pcie_replay;
    unsigned long long mem_total, mem_used, mem_reserved, energy_mj;
    unsigned long long ecc_vol[2], ecc_agg[2];
    unsigned int retired[2], retired_pending;
    unsigned int remap_corr, remap_unc, remap_pending, remap_failure;
    unsigned long long clock_reasons;
    int pstate, lost, mig_mode;
    int nprocs;
    struct proc procs[MAX_PROCS];
    struct mig migs[MAX_MIG];
    int n_util;
    struct proc_util util[MAX_UTIL_PROCS];
    int gpm_supported;
    double gpm[GPM_N];
    double gi_gpm[MAX_GI][GPM_N];
    int nvlink_count, nvlink_legacy, pcie_counters;
    struct link links[MAX_LINKS];
    unsigned long long pcie[PCIE_N];
};
struct xid { long seq; int gpu; unsigned long long code; };
struct fault { int gpu; char fn[64]; int is_block; double value; };

static struct {
    char driver_version[STR], nvml_version[STR];
    int cuda_version;
    int gpu_count;
    int device_nodes;          /* 1: a device handle opens the GPU's device node, as the real library does */
    char device_dir[STR];      /* where the device nodes are: /dev */
    struct gpu gpus[MAX_GPUS];
    int nxid;
    struct xid xids[MAX_XID];
    int nfaults;
    struct fault faults[MAX_FAULTS];
} S;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static int g_loaded;
static int g_init_count;
static struct timespec g_mtime;
static ino_t g_ino;
static off_t g_size;
static struct sim_handle g_handles[MAX_GPUS];
static struct sim_handle g_mig_handles[MAX_GPUS][MAX_MIG];
static struct sim_event_set g_sets[MAX_SETS];

static void warn(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("nvml-sim: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void copy_str(char *dst, size_t size, const char *src) {
    snprintf(dst, size, "%s", src);
}

static unsigned long long num(const char *v) { return strtoull(v, NULL, 0); }

static void gpu_defaults(struct gpu *g, int i) {
    memset(g, 0, sizeof *g);
    copy_str(g->name, sizeof g->name, "NVIDIA Simulated GPU");
    snprintf(g->uuid, sizeof g->uuid, "GPU-5e5e5e5e-0000-4000-8000-%012x", (unsigned int)i);
    snprintf(g->pci_bus_id, sizeof g->pci_bus_id, "00000000:%02X:00.0", (unsigned int)(0x10 + i));
    g->minor = (unsigned int)i;
    g->pci_device_id = 0x20B010DE;
    g->mem_total = 16ULL << 30;
    g->temperature = 40;
    g->power_mw = 50000;
    g->power_limit_mw = 300000;
    g->clock_sm = 1410;
    g->clock_mem = 1215;
    g->fan = 30;
    g->pcie_counters = 1;
    for (int l = 0; l < MAX_LINKS; l++) g->links[l].state = 1; /* NVML_NVLINK_STATE_ACTIVE */
}

static int gpm_index(const char *name) {
    for (int k = 0; k < GPM_N; k++)
        if (strcmp(GPM_METRICS[k].name, name) == 0) return k;
    return -1;
}

/* gpm.<name> = <value or -> into one of the GPM value tables. */
static int set_gpm(double *table, const char *name, const char *v) {
    int k = gpm_index(name);
    if (k < 0) return 0;
    table[k] = strcmp(v, "-") == 0 ? GPM_NOT_OFFERED : strtod(v, NULL);
    return 1;
}

static int set_link_prop(struct gpu *g, const char *prop, const char *v) {
    unsigned int l;
    int n;
    if (strcmp(prop, "count") == 0) { g->nvlink_count = (int)num(v); return 1; }
    if (strcmp(prop, "legacy") == 0) { g->nvlink_legacy = (int)num(v); return 1; }
    if (sscanf(prop, "%u.%n", &l, &n) != 1 || l >= MAX_LINKS) return 0;
    struct link *k = &g->links[l];
    const char *what = prop + n;
#define L(key, field) if (strcmp(what, key) == 0) { k->field = num(v); return 1; }
    L("crc", crc) L("crc_data", crc_data) L("replay", replay) L("recovery", recovery) L("tx_kib", tx_kib)
    L("rx_kib", rx_kib)
#undef L
    if (strcmp(what, "state") == 0) { k->state = (unsigned int)num(v); return 1; }
    return 0;
}

static int set_pcie_prop(struct gpu *g, const char *prop, const char *v) {
    if (strcmp(prop, "counters") == 0) { g->pcie_counters = (int)num(v); return 1; }
    for (int k = 0; k < PCIE_N; k++)
        if (strcmp(PCIE_FIELDS[k].name, prop) == 0) { g->pcie[k] = num(v); return 1; }
    return 0;
}

static void reset_scenario(void) {
    memset(&S, 0, sizeof S);
    copy_str(S.driver_version, sizeof S.driver_version, "550.54.15");
    copy_str(S.nvml_version, sizeof S.nvml_version, "12.550.54.15");
    S.cuda_version = 12040;
    copy_str(S.device_dir, sizeof S.device_dir, "/dev");
    for (int i = 0; i < MAX_GPUS; i++) gpu_defaults(&S.gpus[i], i);
}

static char *trim(char *s) {
    while (*s == ' ' || *s == '\t') s++;
    char *end = s + strlen(s);
    while (end > s && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\n' || end[-1] == '\r')) *--end = '\0';
    return s;
}

static int parse_error_name(const char *v) {
    static const struct { const char *name; int code; } names[] = {
        {"UNINITIALIZED", E_UNINITIALIZED}, {"INVALID_ARGUMENT", E_INVALID_ARGUMENT},
        {"NOT_SUPPORTED", E_NOT_SUPPORTED}, {"NO_PERMISSION", E_NO_PERMISSION}, {"NOT_FOUND", E_NOT_FOUND},
        {"DRIVER_NOT_LOADED", E_DRIVER_NOT_LOADED}, {"TIMEOUT", E_TIMEOUT},
        {"FUNCTION_NOT_FOUND", E_FUNCTION_NOT_FOUND}, {"GPU_IS_LOST", E_GPU_IS_LOST},
        {"RESET_REQUIRED", E_RESET_REQUIRED}, {"LIB_RM_VERSION_MISMATCH", E_LIB_RM_VERSION_MISMATCH},
        {"NO_DATA", E_NO_DATA}, {"ARGUMENT_VERSION_MISMATCH", E_ARGUMENT_VERSION_MISMATCH},
        {"UNKNOWN", E_UNKNOWN}, {"CRASH", CRASH_FAULT},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(v, names[i].name) == 0) return names[i].code;
    char *end;
    long code = strtol(v, &end, 0);
    if (*v && *end == '\0' && code > 0) return (int)code;
    return 0;
}

static void add_fault(int gpu, const char *fn, int is_block, const char *value) {
    if (S.nfaults >= MAX_FAULTS) { warn("too many faults, ignoring %s", fn); return; }
    struct fault *f = &S.faults[S.nfaults];
    f->gpu = gpu;
    f->is_block = is_block;
    copy_str(f->fn, sizeof f->fn, fn);
    if (is_block) {
        f->value = strtod(value, NULL);
    } else {
        int code = parse_error_name(value);
        if (code == 0) { warn("unknown error name %s for %s", value, fn); return; }
        f->value = code;
    }
    S.nfaults++;
}


static int set_gpu_prop(struct gpu *g, int gi, const char *prop, const char *v) {
    unsigned int j;
    int n;
#define U(key, field) if (strcmp(prop, key) == 0) { g->field = (unsigned int)num(v); return 1; }
#define ULL(key, field) if (strcmp(prop, key) == 0) { g->field = num(v); return 1; }
    if (strcmp(prop, "name") == 0) { copy_str(g->name, sizeof g->name, v); return 1; }
    if (strcmp(prop, "uuid") == 0) { copy_str(g->uuid, sizeof g->uuid, v); return 1; }
    if (strcmp(prop, "pci_bus_id") == 0) { copy_str(g->pci_bus_id, sizeof g->pci_bus_id, v); return 1; }
    U("minor", minor) U("pci_device_id", pci_device_id)
    U("utilization.gpu", util_gpu) U("utilization.memory", util_mem)
    ULL("memory.total", mem_total) ULL("memory.used", mem_used) ULL("memory.reserved", mem_reserved)
    U("temperature", temperature) U("power", power_mw) U("power_limit", power_limit_mw) ULL("energy", energy_mj)
    U("clock.sm", clock_sm) U("clock.mem", clock_mem) U("fan", fan) U("pcie_replay", pcie_replay)
    ULL("ecc.corrected", ecc_vol[0]) ULL("ecc.uncorrected", ecc_vol[1])
    ULL("ecc.aggregate.corrected", ecc_agg[0]) ULL("ecc.aggregate.uncorrected", ecc_agg[1])
    U("retired_pages.single_bit", retired[0]) U("retired_pages.double_bit", retired[1])
    U("retired_pages.pending", retired_pending)
    U("remapped_rows.correctable", remap_corr) U("remapped_rows.uncorrectable", remap_unc)
    U("remapped_rows.pending", remap_pending) U("remapped_rows.failure", remap_failure)
    ULL("clocks_event_reasons", clock_reasons)
#undef U
#undef ULL
    if (strcmp(prop, "pstate") == 0) { g->pstate = (int)num(v); return 1; }
    if (strcmp(prop, "lost") == 0) { g->lost = (int)num(v); return 1; }
    if (strcmp(prop, "mig.mode") == 0) { g->mig_mode = (int)num(v); return 1; }
    if (strncmp(prop, "fault.", 6) == 0) { add_fault(gi, prop + 6, 0, v); return 1; }
    if (strncmp(prop, "block.", 6) == 0) { add_fault(gi, prop + 6, 1, v); return 1; }
    if (strncmp(prop, "field.", 6) == 0) { add_fault(gi, prop, 0, v); return 1; }
    if (strcmp(prop, "gpm.supported") == 0) { g->gpm_supported = (int)num(v); return 1; }
    if (strncmp(prop, "gpm.", 4) == 0) return set_gpm(g->gpm, prop + 4, v);
    if (sscanf(prop, "gi.%u.gpm.%n", &j, &n) == 1 && n > 0) {
        if (j >= MAX_GI) { warn("gpu instance id %u out of range", j); return 1; }
        return set_gpm(g->gi_gpm[j], prop + n, v);
    }
    if (strncmp(prop, "nvlink.", 7) == 0) return set_link_prop(g, prop + 7, v);
    if (strncmp(prop, "pcie.", 5) == 0) return set_pcie_prop(g, prop + 5, v);
    if (sscanf(prop, "process_util.%u%n", &j, &n) == 1 && prop[n] == '\0') {
        if (g->n_util >= MAX_UTIL_PROCS) { warn("too many process_util lines on gpu %d", gi); return 1; }
        struct proc_util *u = &g->util[g->n_util];
        if (sscanf(v, "%u %u %u", &u->pid, &u->sm, &u->mem) != 3) { warn("bad process_util line: %s", v); return 1; }
        g->n_util++;
        return 1;
    }
    if (sscanf(prop, "process.%u%n", &j, &n) == 1 && prop[n] == '\0') {
        if (g->nprocs >= MAX_PROCS) { warn("too many processes on gpu %d", gi); return 1; }
        struct proc *p = &g->procs[g->nprocs];
        char used[64] = "", kind[32] = "compute";
        if (sscanf(v, "%u %63s %31s", &p->pid, used, kind) < 2) { warn("bad process line: %s", v); return 1; }
        p->used = strcmp(used, "-") == 0 ? VALUE_NOT_AVAILABLE_ULL : num(used);
        p->graphics = strcmp(kind, "graphics") == 0;
        g->nprocs++;
        return 1;
    }
    if (sscanf(prop, "mig.%u%n", &j, &n) == 1 && prop[n] == '\0') {
        if (j >= MAX_MIG) { warn("mig index %u out of range", j); return 1; }
        struct mig *m = &g->migs[j];
        if (sscanf(v, "%95s %u %u %95s %llu %llu", m->uuid, &m->gi, &m->ci, m->profile, &m->used, &m->total) != 6) {
            warn("bad mig line: %s", v);
            return 1;
        }
        m->present = 1;
        return 1;
    }
    return 0;
}

static void parse_line(char *line) {
    char *s = trim(line);
    if (*s == '\0' || *s == '#') return;
    char *eq = strchr(s, '=');
    if (!eq) { warn("line without '=': %s", s); return; }
    *eq = '\0';
    char *key = trim(s), *v = trim(eq + 1);
    int i, n;
    long seq;
    if (strcmp(key, "driver_version") == 0) { copy_str(S.driver_version, sizeof S.driver_version, v); return; }
    if (strcmp(key, "nvml_version") == 0) { copy_str(S.nvml_version, sizeof S.nvml_version, v); return; }
    if (strcmp(key, "cuda_version") == 0) { S.cuda_version = (int)num(v); return; }
    if (strcmp(key, "device_nodes") == 0) { S.device_nodes = (int)num(v); return; }
    if (strcmp(key, "device_dir") == 0) { copy_str(S.device_dir, sizeof S.device_dir, v); return; }
    if (strcmp(key, "gpu_count") == 0) {
        S.gpu_count = (int)num(v);
        if (S.gpu_count > MAX_GPUS) S.gpu_count = MAX_GPUS;
        return;
    }
    if (strncmp(key, "fault.", 6) == 0) { add_fault(-1, key + 6, 0, v); return; }
    if (strncmp(key, "block.", 6) == 0) { add_fault(-1, key + 6, 1, v); return; }
    if (sscanf(key, "xid.%ld%n", &seq, &n) == 1 && key[n] == '\0') {
        if (S.nxid >= MAX_XID) { warn("too many xid events"); return; }
        struct xid *x = &S.xids[S.nxid];
        if (sscanf(v, "%d %llu", &x->gpu, &x->code) != 2) { warn("bad xid line: %s", v); return; }
        x->seq = seq;
        S.nxid++;
        return;
    }
    if (sscanf(key, "gpu.%d.%n", &i, &n) == 1 && n > 0) {
        if (i < 0 || i >= MAX_GPUS) { warn("gpu index out of range: %s", key); return; }
        if (!set_gpu_prop(&S.gpus[i], i, key + n, v)) warn("unknown key %s", key);
        return;
    }
    warn("unknown key %s", key);
}

/* Re-read the scenario when the file changed. Called with g_lock held. Returns 0 or an NVML error. */
static int reload(void) {
    const char *path = getenv("PAI_NVML_SIM_SCENARIO");
    struct stat st;
    if (!path || stat(path, &st) != 0) {
        if (!g_loaded) warn("PAI_NVML_SIM_SCENARIO unset or unreadable: behaving as a host without a driver");
        return E_DRIVER_NOT_LOADED;
    }
    if (g_loaded && st.st_ino == g_ino && st.st_size == g_size && st.st_mtim.tv_sec == g_mtime.tv_sec &&
        st.st_mtim.tv_nsec == g_mtime.tv_nsec)
        return OK;
    FILE *f = fopen(path, "r");
    if (!f) return E_DRIVER_NOT_LOADED;
    reset_scenario();
    char line[512];
    while (fgets(line, sizeof line, f)) parse_line(line);
    fclose(f);
    g_loaded = 1;
    g_ino = st.st_ino;
    g_size = st.st_size;
    g_mtime = st.st_mtim;
    return OK;
}

static double find_fault(const char *fn, int gpu, int is_block) {
    for (int i = S.nfaults - 1; i >= 0; i--) {
        struct fault *f = &S.faults[i];
        if (f->is_block == is_block && (f->gpu == -1 || f->gpu == gpu) && strcmp(f->fn, fn) == 0) return f->value;
    }
    return 0;
}

static void sleep_seconds(double seconds) {
    struct timespec ts = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Common entry: reload, honour a "block" (without the lock), check init, honour a "fault". On success returns 0
 * with g_lock held; otherwise returns the error with the lock released. */
static int enter(const char *fn, int gpu, int needs_init) {
    pthread_mutex_lock(&g_lock);
    int rc = reload();
    double block = rc == OK ? find_fault(fn, gpu, 1) : 0;
    if (block > 0) {
        pthread_mutex_unlock(&g_lock);
        sleep_seconds(block);
        pthread_mutex_lock(&g_lock);
        rc = reload();
    }
    if (rc == OK && needs_init && g_init_count <= 0) rc = E_UNINITIALIZED;
    if (rc == OK) rc = (int)find_fault(fn, gpu, 0);
    if (rc == CRASH_FAULT) {
        warn("%s: crashing as the scenario asks", fn);
        abort();
    }
    if (rc != OK) pthread_mutex_unlock(&g_lock);
    return rc;
}

#define ENTER(gpu) do { int _e = enter(__func__, (gpu), 1); if (_e) return _e; } while (0)
#define RETURN(v) do { int _r = (v); pthread_mutex_unlock(&g_lock); return _r; } while (0)

static int valid_handle(nvmlDevice_t h) {
    return h && h->magic == HANDLE_MAGIC && h->gpu >= 0 && h->gpu < MAX_GPUS;
}

/* Resolve a physical-GPU handle after ENTER: NULL and *rc set when invalid or lost. */
static struct gpu *gpu_of(nvmlDevice_t h, int *rc) {
    if (h->gpu >= S.gpu_count) { *rc = E_INVALID_ARGUMENT; return NULL; }
    struct gpu *g = &S.gpus[h->gpu];
    if (g->lost) { *rc = E_GPU_IS_LOST; return NULL; }
    *rc = OK;
    return g;
}

#define DEVICE_FN(name, ...) EXPORT int name(nvmlDevice_t dev, __VA_ARGS__)
#define GET_GPU(allow_mig)                                                  \
    if (!valid_handle(dev)) return E_INVALID_ARGUMENT;                      \
    ENTER(dev->gpu);                                                        \
    int rc;                                                                 \
    struct gpu *g = gpu_of(dev, &rc);                                       \
    if (!g) RETURN(rc);                                                     \
    if (!(allow_mig) && dev->mig >= 0) RETURN(E_NOT_SUPPORTED);             \
    struct mig *m = dev->mig >= 0 ? &g->migs[dev->mig] : NULL;              \
    if (m && !(g->mig_mode && m->present)) RETURN(E_INVALID_ARGUMENT);      \
    (void)m

/* ---- library lifetime ---- */
EXPORT int nvmlInitWithFlags(unsigned int flags) {
    (void)flags;
    int rc = enter(__func__, -1, 0);
    if (rc) return rc;
    g_init_count++;
    for (int i = 0; i < MAX_GPUS; i++) {
        g_handles[i] = (struct sim_handle){HANDLE_MAGIC, i, -1};
        for (int j = 0; j < MAX_MIG; j++) g_mig_handles[i][j] = (struct sim_handle){HANDLE_MAGIC, i, j};
    }
    RETURN(OK);
}
EXPORT int nvmlInit_v2(void) { return nvmlInitWithFlags(0); }
EXPORT int nvmlInit(void) { return nvmlInitWithFlags(0); }

EXPORT int nvmlShutdown(void) {
    pthread_mutex_lock(&g_lock);
    if (g_init_count <= 0) RETURN(E_UNINITIALIZED);
    g_init_count--;
    RETURN(OK);
}

EXPORT const char *nvmlErrorString(int result) {
    switch (result) {
    case OK: return "Success";
    case E_UNINITIALIZED: return "Uninitialized";
    case E_INVALID_ARGUMENT: return "Invalid Argument";
    case E_NOT_SUPPORTED: return "Not Supported";
    case E_NO_PERMISSION: return "Insufficient Permissions";
    case E_NOT_FOUND: return "Not Found";
    case E_INSUFFICIENT_SIZE: return "Insufficient Size";
    case E_DRIVER_NOT_LOADED: return "Driver Not Loaded";
    case E_TIMEOUT: return "Timeout";
    case E_GPU_IS_LOST: return "GPU is lost";
    case E_ARGUMENT_VERSION_MISMATCH: return "Argument version mismatch";
    default: return "Unknown Error (simulated NVML)";
    }
}

/* ---- system ---- */
static int put_str(char *dst, unsigned int len, const char *src) {
    if (!dst) return E_INVALID_ARGUMENT;
    if (strlen(src) + 1 > len) return E_INSUFFICIENT_SIZE;
    memcpy(dst, src, strlen(src) + 1);
    return OK;
}

EXPORT int nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    ENTER(-1);
    RETURN(put_str(version, length, S.driver_version));
}
EXPORT int nvmlSystemGetNVMLVersion(char *version, unsigned int length) {
    ENTER(-1);
    RETURN(put_str(version, length, S.nvml_version));
}
EXPORT int nvmlSystemGetCudaDriverVersion(int *v) {
    if (!v) return E_INVALID_ARGUMENT;
    ENTER(-1);
    *v = S.cuda_version;
    RETURN(OK);
}
EXPORT int nvmlSystemGetCudaDriverVersion_v2(int *v) {
    if (!v) return E_INVALID_ARGUMENT;
    ENTER(-1);
    *v = S.cuda_version;
    RETURN(OK);
}

/* ---- device enumeration ---- */
EXPORT int nvmlDeviceGetCount_v2(unsigned int *count) {
    if (!count) return E_INVALID_ARGUMENT;
    ENTER(-1);
    *count = (unsigned int)S.gpu_count;
    RETURN(OK);
}
EXPORT int nvmlDeviceGetCount(unsigned int *count) { return nvmlDeviceGetCount_v2(count); }

/* With device_nodes = 1: open the GPU's device node for reading and writing, as the real library does when it
 * first talks to a GPU, and close it again. ENXIO (a node the device cgroup lets through, with no driver behind it:
 * this stand-in has none) is success; a device cgroup or file mode that refuses is NO_PERMISSION, as is a missing
 * node (see README.md). Called with g_lock held. */
static int open_device_node(const struct gpu *g) {
    if (!S.device_nodes) return OK;
    char path[STR + 32];
    snprintf(path, sizeof path, "%s/nvidia%u", S.device_dir, g->minor);
    int fd = open(path, O_RDWR | O_CLOEXEC | O_NOCTTY);
    if (fd >= 0) {
        close(fd);
        return OK;
    }
    switch (errno) {
    case ENXIO: return OK;
    case EPERM: case EACCES: case ENOENT: return E_NO_PERMISSION;
    default: return E_UNKNOWN;
    }
}

EXPORT int nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    if (!device) return E_INVALID_ARGUMENT;
    ENTER((int)index);
    if (index >= (unsigned int)S.gpu_count) RETURN(E_INVALID_ARGUMENT);
    if (S.gpus[index].lost) RETURN(E_GPU_IS_LOST);
    int rc = open_device_node(&S.gpus[index]);
    if (rc != OK) RETURN(rc);
    *device = &g_handles[index];
    RETURN(OK);
}
EXPORT int nvmlDeviceGetHandleByIndex(unsigned int index, nvmlDevice_t *device) {
    return nvmlDeviceGetHandleByIndex_v2(index, device);
}

/* ---- identity ---- */
DEVICE_FN(nvmlDeviceGetMinorNumber, unsigned int *minor) {
    GET_GPU(0);
    *minor = g->minor;
    RETURN(OK);
}
EXPORT int nvmlDeviceGetUUID(nvmlDevice_t dev, char *uuid, unsigned int length) {
    GET_GPU(1);
    RETURN(put_str(uuid, length, m ? m->uuid : g->uuid));
}
EXPORT int nvmlDeviceGetName(nvmlDevice_t dev, char *name, unsigned int length) {
    GET_GPU(1);
    char buf[2 * STR + 8];
    if (m) snprintf(buf, sizeof buf, "%s MIG %s", g->name, m->profile);
    else copy_str(buf, sizeof buf, g->name);
    RETURN(put_str(name, length, buf));
}
DEVICE_FN(nvmlDeviceGetPciInfo_v3, sim_pci_info_t *pci) {
    GET_GPU(0);
    memset(pci, 0, sizeof *pci);
    copy_str(pci->busId, sizeof pci->busId, g->pci_bus_id);
    snprintf(pci->busIdLegacy, sizeof pci->busIdLegacy, "%s", g->pci_bus_id + (strlen(g->pci_bus_id) > 12 ? 4 : 0));
    sscanf(g->pci_bus_id, "%x:%x:%x", &pci->domain, &pci->bus, &pci->device);
    pci->pciDeviceId = g->pci_device_id;
    RETURN(OK);
}
DEVICE_FN(nvmlDeviceIsMigDeviceHandle, unsigned int *is_mig) {
    if (!valid_handle(dev)) return E_INVALID_ARGUMENT;
    *is_mig = dev->mig >= 0;
    return OK;
}

/* ---- readings ---- */
DEVICE_FN(nvmlDeviceGetUtilizationRates, sim_utilization_t *u) {
    GET_GPU(0);
    if (g->mig_mode) RETURN(E_NOT_SUPPORTED); /* as real drivers: no whole-GPU utilisation in MIG mode */
    u->gpu = g->util_gpu;
    u->memory = g->util_mem;
    RETURN(OK);
}
/* The scenario's memory.used is what processes and contexts allocated; memory.reserved is what the driver and firmware
 * set aside. As documented for drivers that have both calls, v1 counts the reserved memory as used, v2 reports it
 * apart: total = reserved + used + free. A MIG device has no reserved memory of its own. */
static void memory_of(struct gpu *g, struct mig *m, unsigned long long *total, unsigned long long *reserved,
                      unsigned long long *used) {
    *total = m ? m->total : g->mem_total;
    *reserved = m ? 0 : g->mem_reserved;
    *used = m ? m->used : g->mem_used;
}
DEVICE_FN(nvmlDeviceGetMemoryInfo, sim_memory_t *mem) {
    GET_GPU(1);
    unsigned long long total, reserved, used;
    memory_of(g, m, &total, &reserved, &used);
    mem->total = total;
    mem->used = used + reserved;
    mem->free = total > used + reserved ? total - used - reserved : 0;
    RETURN(OK);
}
DEVICE_FN(nvmlDeviceGetMemoryInfo_v2, sim_memory_v2_t *mem) {
    if (!valid_handle(dev) || !mem) return E_INVALID_ARGUMENT;
    if (mem->version != MEMORY_V2_VERSION) return E_ARGUMENT_VERSION_MISMATCH;
    GET_GPU(1);
    unsigned long long total, reserved, used;
    memory_of(g, m, &total, &reserved, &used);
    mem->total = total;
    mem->reserved = reserved;
    mem->used = used;
    mem->free = total > used + reserved ? total - used - reserved : 0;
    RETURN(OK);
}
DEVICE_FN(nvmlDeviceGetTemperature, int sensor, unsigned int *t) {
    GET_GPU(0);
    if (sensor != 0) RETURN(E_INVALID_ARGUMENT);
    *t = g->temperature;
    RETURN(OK);
}
DEVICE_FN(nvmlDeviceGetPowerUsage, unsigned int *mw) {
    GET_GPU(0);
    *mw = g->power_mw;
    RETURN(OK);
}
DEVICE_FN(nvmlDeviceGetEnforcedPowerLimit, unsigned int *mw) {
    GET_GPU(0);
    *mw = g->power_limit_mw;
    RETURN(OK);
}
DEVICE_FN(nvmlDeviceGetTotalEnergyConsumption, unsigned long long *mj) {
    GET_GPU(0);
    *mj = g->energy_mj;
    RETURN(OK);
}
DEVICE_FN(nvmlDeviceGetClockInfo, int type, unsigned int *mhz) {
    GET_GPU(0);
    if (type == 1) *mhz = g->clock_sm;
    else if (type == 2) *mhz = g->clock_mem;
    else if (type == 0) *mhz = g->clock_sm; /* graphics */
    else RETURN(E_INVALID_ARGUMENT);
    RETURN(OK);
}
DEVICE_FN(nvmlDeviceGetFanSpeed, unsigned int *pct) {
    GET_GPU(0);
    *pct = g->fan;
    RETURN(OK);
}
DEVICE_FN(nvmlDeviceGetPcieReplayCounter, unsigned int *n) {
    GET_GPU(0);
    *n = g->pcie_replay;
    RETURN(OK);
}
DEVICE_FN(nvmlDeviceGetTotalEccErrors, int error_type, int counter_type, unsigned long long *n) {
    GET_GPU(0);
    if (error_type < 0 || error_type > 1 || counter_type < 0 || counter_type > 1) RETURN(E_INVALID_ARGUMENT);
    *n = counter_type == 0 ? g->ecc_vol[error_type] : g->ecc_agg[error_type];
    RETURN(OK);
}
static int retired_pages(nvmlDevice_t dev, int cause, unsigned int *count, unsigned long long *addrs,
                         unsigned long long *times, const char *fn) {
    if (!valid_handle(dev) || !count) return E_INVALID_ARGUMENT;
    int rc = enter(fn, dev->gpu, 1);
    if (rc) return rc;
    struct gpu *g = gpu_of(dev, &rc);
    if (!g) RETURN(rc);
    if (cause < 0 || cause > 1) RETURN(E_INVALID_ARGUMENT);
    unsigned int n = g->retired[cause];
    if (*count < n || (!addrs && n > 0)) {
        *count = n;
        RETURN(E_INSUFFICIENT_SIZE);
    }
    for (unsigned int i = 0; i < n; i++) {
        addrs[i] = 0x100000ULL * (i + 1) + (unsigned long long)cause;
        if (times) times[i] = 1700000000ULL + i;
    }
    *count = n;
    RETURN(OK);
}
DEVICE_FN(nvmlDeviceGetRetiredPages, int cause, unsigned int *count, unsigned long long *addrs) {
    return retired_pages(dev, cause, count, addrs, NULL, __func__);
}
DEVICE_FN(nvmlDeviceGetRetiredPages_v2, int cause, unsigned int *count, unsigned long long *addrs,
          unsigned long long *times) {
    return retired_pages(dev, cause, count, addrs, times, __func__);
}
DEVICE_FN(nvmlDeviceGetRetiredPagesPendingStatus, int *pending) {
    GET_GPU(0);
    *pending = g->retired_pending ? 1 : 0;
    RETURN(OK);
}
DEVICE_FN(nvmlDeviceGetRemappedRows, unsigned int *corr, unsigned int *unc, unsigned int *pending,
          unsigned int *failure) {
    GET_GPU(0);
    *corr = g->remap_corr;
    *unc = g->remap_unc;
    *pending = g->remap_pending ? 1 : 0;
    *failure = g->remap_failure ? 1 : 0;
    RETURN(OK);
}
DEVICE_FN(nvmlDeviceGetCurrentClocksEventReasons, unsigned long long *reasons) {
    GET_GPU(0);
    *reasons = g->clock_reasons;
    RETURN(OK);
}
DEVICE_FN(nvmlDeviceGetCurrentClocksThrottleReasons, unsigned long long *reasons) {
    GET_GPU(0);
    *reasons = g->clock_reasons;
    RETURN(OK);
}
DEVICE_FN(nvmlDeviceGetPerformanceState, int *pstate) {
    GET_GPU(0);
    *pstate = g->pstate;
    RETURN(OK);
}

/* ---- processes ---- */
static int running_processes(nvmlDevice_t dev, unsigned int *count, sim_process_info_t *infos, int graphics,
                             const char *fn) {
    if (!valid_handle(dev) || !count) return E_INVALID_ARGUMENT;
    int rc = enter(fn, dev->gpu, 1);
    if (rc) return rc;
    struct gpu *g = gpu_of(dev, &rc);
    if (!g) RETURN(rc);
    unsigned int n = 0;
    for (int i = 0; i < g->nprocs; i++)
        if (g->procs[i].graphics == graphics) n++;
    if (n == 0) {
        *count = 0;
        RETURN(OK);
    }
    if (*count < n || !infos) {
        *count = n;
        RETURN(E_INSUFFICIENT_SIZE);
    }
    unsigned int k = 0;
    for (int i = 0; i < g->nprocs; i++) {
        if (g->procs[i].graphics != graphics) continue;
        infos[k].pid = g->procs[i].pid;
        infos[k].usedGpuMemory = g->procs[i].used;
        infos[k].gpuInstanceId = INVALID_ID;
        infos[k].computeInstanceId = INVALID_ID;
        k++;
    }
    *count = n;
    RETURN(OK);
}
DEVICE_FN(nvmlDeviceGetComputeRunningProcesses_v3, unsigned int *count, sim_process_info_t *infos) {
    return running_processes(dev, count, infos, 0, __func__);
}
DEVICE_FN(nvmlDeviceGetGraphicsRunningProcesses_v3, unsigned int *count, sim_process_info_t *infos) {
    return running_processes(dev, count, infos, 1, __func__);
}

/* ---- MIG ---- */
DEVICE_FN(nvmlDeviceGetMigMode, unsigned int *current, unsigned int *pending) {
    GET_GPU(0);
    *current = (unsigned int)g->mig_mode;
    *pending = (unsigned int)g->mig_mode;
    RETURN(OK);
}
DEVICE_FN(nvmlDeviceGetMaxMigDeviceCount, unsigned int *count) {
    GET_GPU(0);
    *count = g->mig_mode ? MAX_MIG - 1 : 0;
    RETURN(OK);
}
DEVICE_FN(nvmlDeviceGetMigDeviceHandleByIndex, unsigned int index, nvmlDevice_t *mig) {
    GET_GPU(0);
    if (!g->mig_mode) RETURN(E_INVALID_ARGUMENT);
    if (index >= MAX_MIG) RETURN(E_INVALID_ARGUMENT);
    if (!g->migs[index].present) RETURN(E_NOT_FOUND);
    *mig = &g_mig_handles[dev->gpu][index];
    RETURN(OK);
}
DEVICE_FN(nvmlDeviceGetDeviceHandleFromMigDeviceHandle, nvmlDevice_t *parent) {
    GET_GPU(1);
    *parent = &g_handles[dev->gpu];
    RETURN(OK);
}
DEVICE_FN(nvmlDeviceGetGpuInstanceId, unsigned int *id) {
    GET_GPU(1);
    if (!m) RETURN(E_INVALID_ARGUMENT);
    *id = m->gi;
    RETURN(OK);
}
DEVICE_FN(nvmlDeviceGetComputeInstanceId, unsigned int *id) {
    GET_GPU(1);
    if (!m) RETURN(E_INVALID_ARGUMENT);
    *id = m->ci;
    RETURN(OK);
}

/* ---- events: Xid errors ----
 * Like the real library, an event set only sees events that happen after it was created: the Xid lines present in
 * the scenario when nvmlEventSetCreate runs count as history. Each later line (by sequence number) is delivered
 * once per event set. */
static long max_xid_seq(void) {
    long best = 0;
    for (int i = 0; i < S.nxid; i++)
        if (S.xids[i].seq > best) best = S.xids[i].seq;
    return best;
}

EXPORT int nvmlEventSetCreate(nvmlEventSet_t *set) {
    if (!set) return E_INVALID_ARGUMENT;
    ENTER(-1);
    for (int i = 0; i < MAX_SETS; i++) {
        if (g_sets[i].used) continue;
        memset(&g_sets[i], 0, sizeof g_sets[i]);
        g_sets[i].used = 1;
        g_sets[i].delivered = max_xid_seq();
        *set = &g_sets[i];
        RETURN(OK);
    }
    RETURN(E_UNKNOWN);
}
DEVICE_FN(nvmlDeviceGetSupportedEventTypes, unsigned long long *types) {
    GET_GPU(0);
    *types = EVENT_XID | 0x1ULL | 0x2ULL;
    RETURN(OK);
}
EXPORT int nvmlDeviceRegisterEvents(nvmlDevice_t dev, unsigned long long types, nvmlEventSet_t set) {
    if (!set || set < g_sets || set >= g_sets + MAX_SETS || !set->used) return E_INVALID_ARGUMENT;
    GET_GPU(0);
    set->types[dev->gpu] |= types;
    RETURN(OK);
}
EXPORT int nvmlEventSetWait_v2(nvmlEventSet_t set, sim_event_data_t *data, unsigned int timeout_ms) {
    if (!set || set < g_sets || set >= g_sets + MAX_SETS || !data) return E_INVALID_ARGUMENT;
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        ENTER(-1);
        if (!set->used) RETURN(E_INVALID_ARGUMENT);
        struct xid *next = NULL;
        for (int i = 0; i < S.nxid; i++) {
            struct xid *x = &S.xids[i];
            if (x->seq <= set->delivered || x->gpu < 0 || x->gpu >= MAX_GPUS) continue;
            if (!(set->types[x->gpu] & EVENT_XID)) continue;
            if (!next || x->seq < next->seq) next = x;
        }
        if (next) {
            set->delivered = next->seq;
            memset(data, 0, sizeof *data);
            data->device = &g_handles[next->gpu];
            data->eventType = EVENT_XID;
            data->eventData = next->code;
            data->gpuInstanceId = INVALID_ID;
            data->computeInstanceId = INVALID_ID;
            RETURN(OK);
        }
        /* nothing new: skip events that were written without a registered GPU */
        pthread_mutex_unlock(&g_lock);
        clock_gettime(CLOCK_MONOTONIC, &now);
        double waited = (double)(now.tv_sec - start.tv_sec) * 1e3 + (double)(now.tv_nsec - start.tv_nsec) / 1e6;
        if (waited >= timeout_ms) return E_TIMEOUT;
        double left = timeout_ms - waited;
        sleep_seconds((left < 100 ? left : 100) / 1e3);
    }
}
EXPORT int nvmlEventSetWait(nvmlEventSet_t set, sim_event_data_t *data, unsigned int timeout_ms) {
    return nvmlEventSetWait_v2(set, data, timeout_ms);
}
EXPORT int nvmlEventSetFree(nvmlEventSet_t set) {
    if (!set || set < g_sets || set >= g_sets + MAX_SETS) return E_INVALID_ARGUMENT;
    pthread_mutex_lock(&g_lock);
    set->used = 0;
    RETURN(OK);
}

/* ---- clocks ---- */
static long long realtime_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}
static unsigned long long monotonic_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (unsigned long long)ts.tv_sec * 1000000000ULL + (unsigned long long)ts.tv_nsec;
}

/* ---- field values: NVLink and PCIe counters ----
 * Field ids are pynvml's NVML_FI_DEV_*. A GPU answers the NVLink fields of its generation: Hopper and later the
 * per-link fields with the link as scope id (NVML_FI_DEV_NVLINK_GET_STATE, ..._ERROR_DL_*), earlier GPUs
 * (nvlink.legacy = 1) the fields with the link in their name (..._CRC_FLIT_ERROR_COUNT_L<n>, L0-L11), each
 * answering NOT_SUPPORTED for the other generation's fields, as the driver does. */
#define FI_NVLINK_LINK_COUNT 91
#define FI_NVLINK_THROUGHPUT_DATA_TX 138
#define FI_NVLINK_THROUGHPUT_DATA_RX 139
#define FI_NVLINK_ERROR_DL_REPLAY 161
#define FI_NVLINK_ERROR_DL_RECOVERY 162
#define FI_NVLINK_ERROR_DL_CRC 163
#define FI_NVLINK_GET_STATE 165
enum { LEGACY_CRC_FLIT, LEGACY_CRC_DATA, LEGACY_REPLAY, LEGACY_RECOVERY };

/* The legacy per-link error fields: L0-L5 in one block, L6-L11 in a later one. */
static int legacy_field(unsigned int id, int *kind, unsigned int *link) {
    static const unsigned int first[4] = {32, 39, 46, 53}, second[4] = {96, 102, 108, 114};
    for (int k = 0; k < 4; k++) {
        if (id >= first[k] && id < first[k] + 6) { *kind = k; *link = id - first[k]; return 1; }
        if (id >= second[k] && id < second[k] + 6) { *kind = k; *link = 6 + id - second[k]; return 1; }
    }
    return 0;
}

static void put_ull(sim_field_value_t *f, unsigned long long v) {
    f->valueType = VALUE_TYPE_UNSIGNED_LONG_LONG;
    f->value.ull = v;
}
static void put_ui(sim_field_value_t *f, unsigned int v) {
    f->valueType = VALUE_TYPE_UNSIGNED_INT;
    f->value.ui = v;
}

static int field_value(struct gpu *g, int gpu, sim_field_value_t *f) {
    char name[32];
    snprintf(name, sizeof name, "field.%u", f->fieldId);
    int fault = (int)find_fault(name, gpu, 0);
    if (fault) return fault;
    unsigned int id = f->fieldId, link = f->scopeId;
    int kind;
    if (id == FI_NVLINK_LINK_COUNT) {
        if (g->nvlink_count <= 0) return E_NOT_SUPPORTED;
        put_ui(f, (unsigned int)g->nvlink_count);
        return OK;
    }
    if (id == FI_NVLINK_THROUGHPUT_DATA_TX || id == FI_NVLINK_THROUGHPUT_DATA_RX) {
        if (link >= (unsigned int)g->nvlink_count) return g->nvlink_count ? E_INVALID_ARGUMENT : E_NOT_SUPPORTED;
        put_ull(f, id == FI_NVLINK_THROUGHPUT_DATA_TX ? g->links[link].tx_kib : g->links[link].rx_kib);
        return OK;
    }
    if (id == FI_NVLINK_ERROR_DL_REPLAY || id == FI_NVLINK_ERROR_DL_RECOVERY || id == FI_NVLINK_ERROR_DL_CRC ||
        id == FI_NVLINK_GET_STATE) {
        if (g->nvlink_legacy || g->nvlink_count <= 0) return E_NOT_SUPPORTED;
        if (link >= (unsigned int)g->nvlink_count) return E_INVALID_ARGUMENT;
        struct link *k = &g->links[link];
        if (id == FI_NVLINK_GET_STATE) put_ui(f, k->state);
        else put_ull(f, id == FI_NVLINK_ERROR_DL_CRC ? k->crc : id == FI_NVLINK_ERROR_DL_REPLAY ? k->replay : k->recovery);
        return OK;
    }
    if (legacy_field(id, &kind, &link)) {
        if (!g->nvlink_legacy || link >= (unsigned int)g->nvlink_count) return E_NOT_SUPPORTED;
        struct link *k = &g->links[link];
        unsigned long long v[4] = {k->crc, k->crc_data, k->replay, k->recovery};
        put_ull(f, v[kind]);
        return OK;
    }
    for (int k = 0; k < PCIE_N; k++) {
        if (PCIE_FIELDS[k].field != id) continue;
        if (!g->pcie_counters) return E_NOT_SUPPORTED;
        put_ull(f, g->pcie[k]);
        return OK;
    }
    return E_NOT_SUPPORTED;
}

EXPORT int nvmlDeviceGetFieldValues(nvmlDevice_t dev, int count, sim_field_value_t *values) {
    GET_GPU(0);
    if (count < 0 || (count > 0 && !values)) RETURN(E_INVALID_ARGUMENT);
    long long now = realtime_us();
    for (int i = 0; i < count; i++) {
        values[i].timestamp = now;
        values[i].latencyUsec = 0;
        values[i].nvmlReturn = field_value(g, dev->gpu, &values[i]);
    }
    RETURN(OK);
}

/* The older per-link call: 1 while the link is up (active or asleep). */
DEVICE_FN(nvmlDeviceGetNvLinkState, unsigned int link, unsigned int *is_active) {
    GET_GPU(0);
    if (g->nvlink_count <= 0) RETURN(E_NOT_SUPPORTED);
    if (link >= (unsigned int)g->nvlink_count || !is_active) RETURN(E_INVALID_ARGUMENT);
    *is_active = g->links[link].state == 1 || g->links[link].state == 2;
    RETURN(OK);
}

/* ---- per-process utilisation ----
 * The driver keeps a short history of samples per process; each call returns those newer than the caller's
 * lastSeenTimeStamp (microseconds since 1970), or NOT_FOUND when there are none. Here every process_util line yields
 * one sample per UTIL_PERIOD_US over the last UTIL_HISTORY periods, all with the scenario's figures. Not supported in
 * MIG mode, as documented for the real calls. */
#define UTIL_PERIOD_US 100000LL
#define UTIL_HISTORY 50

static unsigned int util_samples(struct gpu *g, unsigned long long last_seen, long long *newest, long long *oldest) {
    *newest = realtime_us() / UTIL_PERIOD_US * UTIL_PERIOD_US;
    long long from = *newest - (UTIL_HISTORY - 1) * UTIL_PERIOD_US;
    if ((long long)last_seen >= from) from = ((long long)last_seen / UTIL_PERIOD_US + 1) * UTIL_PERIOD_US;
    *oldest = from;
    if (from > *newest || g->n_util == 0) return 0;
    return (unsigned int)((*newest - from) / UTIL_PERIOD_US + 1) * (unsigned int)g->n_util;
}

DEVICE_FN(nvmlDeviceGetProcessUtilization, sim_proc_util_sample_t *samples, unsigned int *count,
          unsigned long long last_seen) {
    GET_GPU(0);
    if (!count) RETURN(E_INVALID_ARGUMENT);
    if (g->mig_mode) RETURN(E_NOT_SUPPORTED);
    long long newest, t;
    unsigned int n = util_samples(g, last_seen, &newest, &t), k = 0;
    if (n == 0) RETURN(E_NOT_FOUND);
    if (!samples || *count < n) {
        *count = n;
        RETURN(E_INSUFFICIENT_SIZE);
    }
    for (; t <= newest; t += UTIL_PERIOD_US) {
        for (int i = 0; i < g->n_util; i++, k++) {
            memset(&samples[k], 0, sizeof samples[k]);
            samples[k].pid = g->util[i].pid;
            samples[k].timeStamp = (unsigned long long)t;
            samples[k].smUtil = g->util[i].sm;
            samples[k].memUtil = g->util[i].mem;
        }
    }
    *count = n;
    RETURN(OK);
}

DEVICE_FN(nvmlDeviceGetProcessesUtilizationInfo, sim_procs_util_info_t *info) {
    if (!valid_handle(dev) || !info) return E_INVALID_ARGUMENT;
    if (info->version != PROCS_UTIL_INFO_V1) return E_ARGUMENT_VERSION_MISMATCH;
    GET_GPU(0);
    if (g->mig_mode) RETURN(E_NOT_SUPPORTED);
    long long newest, t;
    unsigned int n = util_samples(g, info->lastSeenTimeStamp, &newest, &t), k = 0;
    if (n == 0) RETURN(E_NOT_FOUND);
    if (!info->procUtilArray || info->processSamplesCount < n) {
        info->processSamplesCount = n;
        RETURN(E_INSUFFICIENT_SIZE);
    }
    for (; t <= newest; t += UTIL_PERIOD_US) {
        for (int i = 0; i < g->n_util; i++, k++) {
            sim_proc_util_info_t *s = &info->procUtilArray[k];
            memset(s, 0, sizeof *s);
            s->pid = g->util[i].pid;
            s->timeStamp = (unsigned long long)t;
            s->smUtil = g->util[i].sm;
            s->memUtil = g->util[i].mem;
        }
    }
    info->processSamplesCount = n;
    RETURN(OK);
}

/* ---- GPM ----
 * A sample records the moment it was taken and the activity the scenario gives at that moment (gpm.<name> for the
 * whole GPU, gi.<id>.gpm.<name> for a GPU instance in MIG mode). nvmlGpmMetricsGet reports, for the window between
 * two samples of the same GPU (or GPU instance), the mean of the two recorded figures: activity that changes between
 * the samples shows as the average over the window, as counters read at both ends would. A metric a scenario sets
 * to "-" is not offered by that GPU (NOT_SUPPORTED in its entry). In MIG mode the whole GPU cannot be sampled, only
 * its GPU instances (an assumption of this stand-in; see README.md). */
static int gi_present(struct gpu *g, unsigned int gi) {
    for (int j = 0; j < MAX_MIG; j++)
        if (g->migs[j].present && g->migs[j].gi == gi) return 1;
    return 0;
}

static int valid_sample(nvmlGpmSample_t s) { return s && s->magic == GPM_SAMPLE_MAGIC; }

DEVICE_FN(nvmlGpmQueryDeviceSupport, sim_gpm_support_t *support) {
    if (!valid_handle(dev) || !support) return E_INVALID_ARGUMENT;
    if (support->version != GPM_SUPPORT_VERSION) return E_ARGUMENT_VERSION_MISMATCH;
    GET_GPU(0);
    support->isSupportedDevice = g->gpm_supported ? 1 : 0;
    RETURN(OK);
}

EXPORT int nvmlGpmSampleAlloc(nvmlGpmSample_t *sample) {
    if (!sample) return E_INVALID_ARGUMENT;
    ENTER(-1);
    struct sim_gpm_sample *s = calloc(1, sizeof *s);
    if (!s) RETURN(E_UNKNOWN);
    s->magic = GPM_SAMPLE_MAGIC;
    *sample = s;
    RETURN(OK);
}

EXPORT int nvmlGpmSampleFree(nvmlGpmSample_t sample) {
    if (!valid_sample(sample)) return E_INVALID_ARGUMENT;
    ENTER(-1);
    sample->magic = 0;
    free(sample);
    RETURN(OK);
}

static void take_sample(nvmlGpmSample_t s, int gpu, int gi, const double *values) {
    s->taken = 1;
    s->gpu = gpu;
    s->gi = gi;
    s->at_ns = monotonic_ns();
    memcpy(s->values, values, sizeof s->values);
}

DEVICE_FN(nvmlGpmSampleGet, nvmlGpmSample_t sample) {
    if (!valid_sample(sample)) return E_INVALID_ARGUMENT;
    GET_GPU(0);
    if (!g->gpm_supported || g->mig_mode) RETURN(E_NOT_SUPPORTED);
    take_sample(sample, dev->gpu, -1, g->gpm);
    RETURN(OK);
}

DEVICE_FN(nvmlGpmMigSampleGet, unsigned int gi, nvmlGpmSample_t sample) {
    if (!valid_sample(sample)) return E_INVALID_ARGUMENT;
    GET_GPU(0);
    if (!g->gpm_supported) RETURN(E_NOT_SUPPORTED);
    if (!g->mig_mode || gi >= MAX_GI) RETURN(E_INVALID_ARGUMENT);
    if (!gi_present(g, gi)) RETURN(E_NOT_FOUND);
    take_sample(sample, dev->gpu, (int)gi, g->gi_gpm[gi]);
    RETURN(OK);
}

EXPORT int nvmlGpmMetricsGet(sim_gpm_metrics_get_t *get) {
    if (!get) return E_INVALID_ARGUMENT;
    if (get->version != GPM_METRICS_GET_VERSION) return E_ARGUMENT_VERSION_MISMATCH;
    ENTER(-1);
    nvmlGpmSample_t a = get->sample1, b = get->sample2;
    if (!valid_sample(a) || !valid_sample(b) || !a->taken || !b->taken) RETURN(E_INVALID_ARGUMENT);
    if (a->gpu != b->gpu || a->gi != b->gi || a->at_ns >= b->at_ns) RETURN(E_INVALID_ARGUMENT);
    if (get->numMetrics > GPM_METRIC_MAX) RETURN(E_INVALID_ARGUMENT);
    for (unsigned int i = 0; i < get->numMetrics; i++) {
        sim_gpm_metric_t *m = &get->metrics[i];
        m->nvmlReturn = E_NOT_SUPPORTED;
        m->value = 0;
        memset(&m->metricInfo, 0, sizeof m->metricInfo);
        for (int k = 0; k < GPM_N; k++) {
            if (GPM_METRICS[k].id != m->metricId) continue;
            if (a->values[k] == GPM_NOT_OFFERED || b->values[k] == GPM_NOT_OFFERED) break;
            m->nvmlReturn = OK;
            m->value = (a->values[k] + b->values[k]) / 2;
            m->metricInfo.shortName = GPM_METRICS[k].name;
            m->metricInfo.longName = GPM_METRICS[k].name;
            m->metricInfo.unit = GPM_METRICS[k].unit;
            break;
        }
    }
    RETURN(OK);
}
