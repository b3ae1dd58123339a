/*
 * ncclload.c - see ncclload.h.
 *
 * Where libnccl.so.2 is looked for, in order (the first that loads wins):
 *   1. $PINPOOL_NCCL_LIB (only that file, when set);
 *   2. "libnccl.so.2" through the dynamic loader: LD_LIBRARY_PATH, the
 *      ld.so cache (Debian's libnccl2 package, /etc/ld.so.conf.d);
 *   3. $CUDA_HOME/lib64, /usr/local/cuda/lib64, /usr/local/nccl/lib;
 *   4. the nvidia-nccl-cu* wheel of a Python environment:
 *      $VIRTUAL_ENV, /opt/venv, /venv, /usr/local and /usr (dist- and
 *      site-packages), ~/.local: lib/python3.*\/{site,dist}-packages/nvidia/nccl/lib.
 */
#include "ncclload.h"

#include <errno.h>
#include <stdio.h>

#ifndef PINPOOL_HAVE_NCCL

int ipc_nccl_load(char *err, size_t errlen)
{
    snprintf(err, errlen, "this pinpool was built without nccl.h: NCCL methods are unavailable");
    return -ELIBACC;
}

const char *ipc_nccl_describe(char *buf, size_t len)
{
    snprintf(buf, len, "missing: built without nccl.h");
    return buf;
}

#else

#include <dlfcn.h>
#include <glob.h>
#include <stdlib.h>
#include <string.h>

#include "once.h"

ipc_nccl_t ipc_nccl;

static ipc_once_t loaded = IPC_ONCE_INIT;

static void *try_open(const char *path, char *tried, size_t triedlen)
{
    void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    size_t n = strlen(tried);

    if (lib != NULL) {
        /* The file the loader picked, for the log and the bench. */
        Dl_info info;
        void *sym = dlsym(lib, "ncclGetVersion");
        if (sym != NULL && dladdr(sym, &info) != 0 && info.dli_fname != NULL)
            snprintf(ipc_nccl.path, sizeof(ipc_nccl.path), "%s", info.dli_fname);
        else
            snprintf(ipc_nccl.path, sizeof(ipc_nccl.path), "%s", path);
        return lib;
    }
    if (n + 3 < triedlen)
        snprintf(tried + n, triedlen - n, "%s%s", n ? ", " : "", path);
    return NULL;
}

static void *search(char *tried, size_t triedlen)
{
    const char *env = getenv("PINPOOL_NCCL_LIB"), *home = getenv("HOME");
    const char *venv = getenv("VIRTUAL_ENV"), *cuda = getenv("CUDA_HOME");
    char buf[512];
    void *lib;

    if (env != NULL && env[0] != '\0')
        return try_open(env, tried, triedlen);
    if ((lib = try_open("libnccl.so.2", tried, triedlen)) != NULL)
        return lib;
    if (cuda != NULL && cuda[0] != '\0') {
        snprintf(buf, sizeof(buf), "%s/lib64/libnccl.so.2", cuda);
        if ((lib = try_open(buf, tried, triedlen)) != NULL)
            return lib;
    }
    static const char *const fixed[] = {"/usr/local/cuda/lib64/libnccl.so.2",
                                        "/usr/local/nccl/lib/libnccl.so.2"};
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
        if ((lib = try_open(fixed[i], tried, triedlen)) != NULL)
            return lib;
    const char *roots[] = {venv, "/opt/venv", "/venv", "/usr/local", "/usr", NULL};
    char homeroot[256];
    if (home != NULL) {
        snprintf(homeroot, sizeof(homeroot), "%s/.local", home);
        roots[5] = homeroot;
    }
    for (size_t i = 0; i < sizeof(roots) / sizeof(roots[0]); i++) {
        glob_t g;
        if (roots[i] == NULL || roots[i][0] == '\0')
            continue;
        snprintf(buf, sizeof(buf), "%s/lib/python3*/*-packages/nvidia/nccl/lib/libnccl.so.2",
                 roots[i]);
        if (glob(buf, 0, NULL, &g) != 0) {
            size_t n = strlen(tried);
            if (n + 3 < triedlen)
                snprintf(tried + n, triedlen - n, ", %s", buf);
            continue;
        }
        for (size_t k = 0; k < g.gl_pathc; k++)
            if ((lib = try_open(g.gl_pathv[k], tried, triedlen)) != NULL) {
                globfree(&g);
                return lib;
            }
        globfree(&g);
    }
    return NULL;
}

#define XSTR(x) STR(x)
#define STR(x) #x

static void load(void)
{
    char tried[768] = "";
    void *lib;

    loaded.rc = -ELIBACC;
    /* Before NCCL reads its environment: never NVLink multicast (NVLS). */
    setenv("NCCL_NVLS_ENABLE", "0", 0);
    lib = search(tried, sizeof(tried));
    if (lib == NULL) {
        snprintf(loaded.msg, sizeof(loaded.msg),
                 "NCCL not found (libnccl.so.2; tried %s); set PINPOOL_NCCL_LIB to its path", tried);
        return;
    }
#define RESOLVE(f)                                                                             \
    ipc_nccl.f = (__typeof__(ipc_nccl.f))dlsym(lib, XSTR(f));                                  \
    if (ipc_nccl.f == NULL) {                                                                  \
        snprintf(loaded.msg, sizeof(loaded.msg), "%s lacks %s (too old an NCCL)",              \
                 ipc_nccl.path, XSTR(f));                                                      \
        return;                                                                                \
    }
    IPC_NCCL_FUNCS(RESOLVE)
#undef RESOLVE
    if (ipc_nccl.ncclGetVersion(&ipc_nccl.version) != ncclSuccess) {
        snprintf(loaded.msg, sizeof(loaded.msg), "%s: ncclGetVersion failed", ipc_nccl.path);
        return;
    }
    loaded.rc = 0;
}

int ipc_nccl_load(char *err, size_t errlen)
{
    return ipc_once(&loaded, load, err, errlen);
}

const char *ipc_nccl_describe(char *buf, size_t len)
{
    char why[1024];

    if (ipc_nccl_load(why, sizeof(why)) != 0) {
        snprintf(buf, len, "missing: %s", why);
        return buf;
    }
    /* Since 2.9: major * 10000 + minor * 100 + patch. */
    snprintf(buf, len, "%d.%d.%d (%s)", ipc_nccl.version / 10000, ipc_nccl.version / 100 % 100,
             ipc_nccl.version % 100, ipc_nccl.path);
    return buf;
}

#endif
