// Keeps the addon loadable on glibc 2.28, the oldest glibc that Node's
// official Linux x64 binaries support, although it is built against a newer
// one (Debian 12: 2.36).
//
// glibc 2.34 moved libpthread and libdl into libc and gave their functions
// new symbol versions; a plain build therefore asks for pthread_create@GLIBC_2.34,
// dlopen@GLIBC_2.34 and so on, which older systems lack. Every glibc still
// exports the original @GLIBC_2.2.5 versions, so the linker is told
// (--wrap=..., see binding.gyp) to send each reference — ours and those inside
// the static libstdc++ — through a wrapper here that calls the old version.
// Symbols newer than 2.28 that have no old version are provided instead:
// __libc_single_threaded (2.32), read by libstdc++'s inline reference
// counting; arc4random (2.36), reached by the static libstdc++'s
// std::random_device, which this addon never calls; and _dl_find_object
// (2.35), with which the static libgcc unwinder finds a function's unwind
// tables (the running glibc's when it has one, else the same answer from
// dl_iterate_phdr).
#include <dlfcn.h>
#include <link.h>
#include <pthread.h>
#include <sys/random.h>
#include <unistd.h>

#include <cstdint>

#define MOE_COMPAT(name, version) __asm__(".symver moe_compat_" #name "," #name "@" version)

extern "C" {

int moe_compat_pthread_create(pthread_t*, const pthread_attr_t*, void* (*)(void*), void*);
int moe_compat_pthread_detach(pthread_t);
int moe_compat_pthread_join(pthread_t, void**);
int moe_compat_pthread_key_create(pthread_key_t*, void (*)(void*));
int moe_compat___pthread_key_create(pthread_key_t*, void (*)(void*));
int moe_compat_pthread_key_delete(pthread_key_t);
int moe_compat_pthread_once(pthread_once_t*, void (*)(void));
void* moe_compat_pthread_getspecific(pthread_key_t);
int moe_compat_pthread_setspecific(pthread_key_t, const void*);
void* moe_compat_dlopen(const char*, int);
void* moe_compat_dlsym(void*, const char*);
char* moe_compat_dlerror(void);
MOE_COMPAT(pthread_create, "GLIBC_2.2.5");
MOE_COMPAT(pthread_detach, "GLIBC_2.2.5");
MOE_COMPAT(pthread_join, "GLIBC_2.2.5");
MOE_COMPAT(pthread_key_create, "GLIBC_2.2.5");
MOE_COMPAT(__pthread_key_create, "GLIBC_2.2.5");
MOE_COMPAT(pthread_key_delete, "GLIBC_2.2.5");
MOE_COMPAT(pthread_once, "GLIBC_2.2.5");
MOE_COMPAT(pthread_getspecific, "GLIBC_2.2.5");
MOE_COMPAT(pthread_setspecific, "GLIBC_2.2.5");
MOE_COMPAT(dlopen, "GLIBC_2.2.5");
MOE_COMPAT(dlsym, "GLIBC_2.2.5");
MOE_COMPAT(dlerror, "GLIBC_2.2.5");

int __wrap_pthread_create(pthread_t* thread, const pthread_attr_t* attr, void* (*start)(void*), void* arg) {
  return moe_compat_pthread_create(thread, attr, start, arg);
}
int __wrap_pthread_detach(pthread_t thread) { return moe_compat_pthread_detach(thread); }
int __wrap_pthread_join(pthread_t thread, void** result) { return moe_compat_pthread_join(thread, result); }
int __wrap_pthread_key_create(pthread_key_t* key, void (*destructor)(void*)) {
  return moe_compat_pthread_key_create(key, destructor);
}
int __wrap___pthread_key_create(pthread_key_t* key, void (*destructor)(void*)) {
  return moe_compat___pthread_key_create(key, destructor);
}
int __wrap_pthread_key_delete(pthread_key_t key) { return moe_compat_pthread_key_delete(key); }
int __wrap_pthread_once(pthread_once_t* once, void (*init)(void)) { return moe_compat_pthread_once(once, init); }
void* __wrap_pthread_getspecific(pthread_key_t key) { return moe_compat_pthread_getspecific(key); }
int __wrap_pthread_setspecific(pthread_key_t key, const void* value) { return moe_compat_pthread_setspecific(key, value); }
void* __wrap_dlopen(const char* file, int mode) { return moe_compat_dlopen(file, mode); }
void* __wrap_dlsym(void* handle, const char* name) { return moe_compat_dlsym(handle, name); }
char* __wrap_dlerror(void) { return moe_compat_dlerror(); }

// 0: "more than one thread may exist", so libstdc++ always uses atomic
// reference counts (always correct; the flag only enables a shortcut).
__attribute__((visibility("hidden"))) char __libc_single_threaded = 0;

uint32_t __wrap_arc4random(void) {
  uint32_t value = 0;
  while (getrandom(&value, sizeof value, 0) != static_cast<ssize_t>(sizeof value)) {
  }
  return value;
}

namespace {
struct FindObject {
  uintptr_t pc;
  dl_find_object* result;
};

int findObjectInPhdrs(dl_phdr_info* info, size_t, void* data) {
  auto* find = static_cast<FindObject*>(data);
  uintptr_t start = UINTPTR_MAX, end = 0;
  void* ehFrame = nullptr;
  bool contains = false;
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const ElfW(Phdr)& phdr = info->dlpi_phdr[i];
    const uintptr_t begin = info->dlpi_addr + phdr.p_vaddr;
    if (phdr.p_type == PT_LOAD) {
      start = begin < start ? begin : start;
      end = begin + phdr.p_memsz > end ? begin + phdr.p_memsz : end;
      contains |= find->pc >= begin && find->pc < begin + phdr.p_memsz;
    } else if (phdr.p_type == PT_GNU_EH_FRAME) {
      ehFrame = reinterpret_cast<void*>(begin);
    }
  }
  if (!contains) return 0;
  find->result->dlfo_flags = 0;
  find->result->dlfo_map_start = reinterpret_cast<void*>(start);
  find->result->dlfo_map_end = reinterpret_cast<void*>(end);
  find->result->dlfo_link_map = nullptr;
  find->result->dlfo_eh_frame = ehFrame;
  return 1;
}
}  // namespace

int __wrap__dl_find_object(void* pc, dl_find_object* result) {
  using Real = int (*)(void*, dl_find_object*);
  static const Real real = reinterpret_cast<Real>(moe_compat_dlsym(RTLD_DEFAULT, "_dl_find_object"));
  if (real != nullptr) return real(pc, result);
  FindObject find{reinterpret_cast<uintptr_t>(pc), result};
  return dl_iterate_phdr(findObjectInPhdrs, &find) ? 0 : -1;
}

}  // extern "C"
