/*
 * icount: a QEMU TCG plugin (plugin API v1, QEMU 7.x user mode) that counts executed guest
 * instructions, for vlrface's emulated ARM latency backend (vlrface/latency/emulate.py).
 *
 * Debian's qemu-user loads plugins but ships neither a plugin nor qemu-plugin.h, so the handful
 * of API functions used here are declared below with the v1 signatures.
 *
 * Counting: each translated block gets a callback that adds its instruction count to the
 * counter of the guest thread (vCPU) that runs it. Markers report the counter of the thread that
 * sets them, so instructions of a runtime's background threads (onnxruntime starts one that wakes
 * up now and then, a timing-dependent few hundred thousand instructions) stay out of the figure.
 *
 * Markers: the guest program calls lseek(-1, MARK_MAGIC, id) (which fails with EBADF, harmless);
 * the syscall hook then writes "mark <id> <count>" (that thread's count) so that the host can
 * difference the counts between points of the program. At exit it writes "total <count>": all
 * threads together.
 *
 * Arguments: out=<path> writes the lines to that file (default: QEMU's log, i.e. stderr);
 * magic=<hex> listens for another program's marker constant instead of "vlrf" (the LCE
 * benchmark runner of shared/tools/lce-aarch64 sets its end-of-runs marker 0 with "lcea",
 * 0x6c636561).
 * Build: gcc -O2 -shared -fPIC -o libicount.so icount.c
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef uint64_t qemu_plugin_id_t;
typedef struct qemu_info_t qemu_info_t;
struct qemu_plugin_tb;

enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS = 0 };

typedef void (*tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*udata_cb_t)(qemu_plugin_id_t id, void *userdata);
typedef void (*vcpu_udata_cb_t)(unsigned int vcpu_index, void *userdata);
typedef void (*syscall_cb_t)(qemu_plugin_id_t id, unsigned int vcpu_index, int64_t num,
                             uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5,
                             uint64_t a6, uint64_t a7, uint64_t a8);

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, tb_trans_cb_t cb);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
void qemu_plugin_register_vcpu_tb_exec_cb(struct qemu_plugin_tb *tb, vcpu_udata_cb_t cb,
                                          enum qemu_plugin_cb_flags flags, void *userdata);
void qemu_plugin_register_vcpu_syscall_cb(qemu_plugin_id_t id, syscall_cb_t cb);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, udata_cb_t cb, void *userdata);
void qemu_plugin_outs(const char *string);

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

#define AARCH64_SYS_LSEEK 62
#define MARK_MAGIC 0x766c7266ULL /* "vlrf" */

static uint64_t mark_magic = MARK_MAGIC;

#define MAX_VCPUS 4096 /* guest threads; later ones share the last slot */

static uint64_t insn_count[MAX_VCPUS];
static FILE *out_file;

static unsigned int slot(unsigned int vcpu_index)
{
    return vcpu_index < MAX_VCPUS ? vcpu_index : MAX_VCPUS - 1;
}

static void emit(const char *line)
{
    if (out_file) {
        fputs(line, out_file);
        fflush(out_file);
    } else {
        qemu_plugin_outs(line);
    }
}

static void on_tb_exec(unsigned int vcpu_index, void *userdata)
{
    /* each vCPU (guest thread) writes only its own slot */
    insn_count[slot(vcpu_index)] += (uint64_t)(uintptr_t)userdata;
}

static void on_tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    qemu_plugin_register_vcpu_tb_exec_cb(tb, on_tb_exec, QEMU_PLUGIN_CB_NO_REGS,
                                         (void *)(uintptr_t)qemu_plugin_tb_n_insns(tb));
}

static void on_syscall(qemu_plugin_id_t id, unsigned int vcpu_index, int64_t num, uint64_t a1,
                       uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6,
                       uint64_t a7, uint64_t a8)
{
    char line[96];
    (void)id; (void)a4; (void)a5; (void)a6; (void)a7; (void)a8;
    if (num != AARCH64_SYS_LSEEK || a1 != UINT64_MAX || a2 != mark_magic) {
        return;
    }
    snprintf(line, sizeof line, "mark %" PRIu64 " %" PRIu64 "\n", a3,
             insn_count[slot(vcpu_index)]);
    emit(line);
}

static void on_exit_cb(qemu_plugin_id_t id, void *userdata)
{
    char line[64];
    uint64_t total = 0;
    (void)id; (void)userdata;
    for (unsigned int i = 0; i < MAX_VCPUS; i++) {
        total += insn_count[i];
    }
    snprintf(line, sizeof line, "total %" PRIu64 "\n", total);
    emit(line);
    if (out_file) {
        fclose(out_file);
        out_file = NULL;
    }
}

__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id,
                                                               const qemu_info_t *info, int argc,
                                                               char **argv)
{
    (void)info;
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "out=", 4) == 0) {
            out_file = fopen(argv[i] + 4, "w");
            if (!out_file) {
                fprintf(stderr, "icount: cannot open %s for writing\n", argv[i] + 4);
                return -1;
            }
        } else if (strncmp(argv[i], "magic=", 6) == 0) {
            char *end = NULL;
            mark_magic = strtoull(argv[i] + 6, &end, 16);
            if (end == argv[i] + 6 || *end != '\0') {
                fprintf(stderr, "icount: magic=%s is not a hex number\n", argv[i] + 6);
                return -1;
            }
        } else {
            fprintf(stderr, "icount: unknown argument %s (expected out=<path> or magic=<hex>)\n",
                    argv[i]);
            return -1;
        }
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_tb_trans);
    qemu_plugin_register_vcpu_syscall_cb(id, on_syscall);
    qemu_plugin_register_atexit_cb(id, on_exit_cb, NULL);
    return 0;
}
