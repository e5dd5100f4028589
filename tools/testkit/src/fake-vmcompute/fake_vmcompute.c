/*
 * A fake vmcompute for testing @lcow/hcs on Linux: the exports the LCOW flow uses, with the same C
 * signatures (char16_t strings, HRESULT as int32_t, handles as pointers), over an in-memory state machine.
 * Asynchronous operations answer HCS_E_OPERATION_PENDING and complete later from another thread through
 * the registered notification callback, as the real service does. Notifications that arrive before a
 * callback is registered are queued (the real HCS does the same; hcsshim registers after Create returns).
 *
 * Fault injection: FakeHcsControl(L"op=Start;hr=0x80070005;result={...};delay=50;silent=1;exit=1") arms the
 * next call of `op`: fail it with `hr` (and a result document), delay its notification (Create, Start…) or
 * the call itself (Modify, CreateProcess; `op=Run;cmd=mount` only the guest command starting so), send none
 * (`silent`), or send SystemExited instead of the completion (`exit`). FakeHcsLiveAllocations() and
 * FakeHcsLiveHandles() let tests prove every out-string was freed and every handle closed.
 *
 * A strict witness: create, modify, process and query documents are parsed and checked against the schema1
 * structures the real service reads (unknown fields, wrong types, missing required ones and impossible
 * requests are refused with HCS_E_INVALID_JSON); a remove of a disk not attached is ERROR_NOT_FOUND, a second
 * add of one ERROR_SHARING_VIOLATION; a guest program the LCOW guest does not have exits 127. Create documents
 * are journaled too ("create <json>").
 *
 * Build: cc -shared -fPIC -O2 -Wall -o libvmcompute.so fake_vmcompute.c -lpthread
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uchar.h>
#include <unistd.h>

typedef int32_t HRESULT;
typedef uint32_t DWORD;
typedef void (*HCS_NOTIFICATION_CALLBACK)(DWORD type, void *context, HRESULT status, const char16_t *data);

#define S_OK 0
#define HCS_E_OPERATION_PENDING ((HRESULT)0xC0370103)
#define HCS_E_INVALID_STATE ((HRESULT)0xC0370105)
#define HCS_E_INVALID_JSON ((HRESULT)0xC037010D)
#define HCS_E_SYSTEM_NOT_FOUND ((HRESULT)0xC037010E)
#define HCS_E_SYSTEM_ALREADY_EXISTS ((HRESULT)0xC037010F)
#define HCS_E_SYSTEM_ALREADY_STOPPED ((HRESULT)0xC0370110)
#define E_INVALIDARG ((HRESULT)0x80070057)
#define ERROR_INVALID_HANDLE ((HRESULT)0x80070006)

enum { N_EXITED = 1, N_CREATE = 2, N_START = 3, N_MODIFY = 0xC, N_DISCONNECT = 0x01000000 };
enum { ST_CREATED, ST_RUNNING, ST_STOPPED };

#define MAX_REGS 8
typedef struct System System;
typedef struct {
  System *sys;
  HCS_NOTIFICATION_CALLBACK cb;
  void *context;
} Registration;

struct System {
  char id[256];
  int state;
  int closed;
  int handles;          /* open handles to it */
  int term_on_close;    /* TerminateOnLastHandleClosed: the last close stops it, as the service does */
  /* every handle opened on the system may register its own callback */
  Registration *regs[MAX_REGS];
  /* notifications waiting for a callback */
  DWORD queued_type[16];
  HRESULT queued_status[16];
  int queued;
  int modifies;
  char disks[64][256]; /* host paths by LUN on controller 0 */
  System *next;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
/* What the fake was asked to do, newline-separated: "modify <json>" and "run <argv joined by spaces>". */
static char journal[1 << 16];
static size_t journal_len;
static void journal_add(const char *kind, const char *text) {
  size_t need = strlen(kind) + 1 + strlen(text) + 1;
  if (journal_len + need >= sizeof journal) return;
  journal_len += (size_t)snprintf(journal + journal_len, sizeof journal - journal_len, "%s %s\n", kind, text);
}
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static System *systems;
static int live_allocations;
static int live_handles;

/* One armed fault. */
static struct {
  char op[32];
  HRESULT hr;
  char result[512];
  int delay_ms;
  int silent;
  int exit_instead;
  char cmd[64]; /* op=Run: the guest command (its first words) the fault waits for */
  int armed;
} fault;

static void to_ascii(const char16_t *s, char *out, size_t n) {
  size_t i = 0;
  if (!s) {
    out[0] = 0;
    return;
  }
  for (; s[i] && i + 1 < n; i++) out[i] = s[i] < 128 ? (char)s[i] : '?';
  out[i] = 0;
}

static char16_t *alloc16(const char *s) {
  size_t n = strlen(s);
  char16_t *out = malloc((n + 1) * sizeof(char16_t));
  for (size_t i = 0; i < n; i++) out[i] = (unsigned char)s[i];
  out[n] = 0;
  __sync_fetch_and_add(&live_allocations, 1);
  return out;
}

void LocalFree(void *p) {
  if (!p) return;
  __sync_fetch_and_sub(&live_allocations, 1);
  free(p);
}
void CoTaskMemFree(void *p) { LocalFree(p); }
int FakeHcsLiveAllocations(void) { return live_allocations; }
int FakeHcsLiveHandles(void) { return live_handles; }

/* Returns 1 (and fills *hr / *result) when the armed fault matches `op` and fails it. */
static int take_fault(const char *op, HRESULT *hr, char16_t **result, int *delay, int *silent, int *exit_instead) {
  int fail = 0;
  pthread_mutex_lock(&mu);
  if (fault.armed && strcmp(fault.op, op) == 0) {
    fault.armed = 0;
    if (delay) *delay = fault.delay_ms;
    if (silent) *silent = fault.silent;
    if (exit_instead) *exit_instead = fault.exit_instead;
    if (fault.hr != 0) {
      fail = 1;
      *hr = fault.hr;
      if (result && fault.result[0]) *result = alloc16(fault.result);
    }
  }
  pthread_mutex_unlock(&mu);
  return fail;
}

HRESULT FakeHcsControl(const char16_t *spec) {
  char s[1024];
  to_ascii(spec, s, sizeof s);
  pthread_mutex_lock(&mu);
  memset(&fault, 0, sizeof fault);
  fault.armed = 1;
  char *save = NULL;
  for (char *kv = strtok_r(s, ";", &save); kv; kv = strtok_r(NULL, ";", &save)) {
    char *eq = strchr(kv, '=');
    if (!eq) continue;
    *eq = 0;
    const char *v = eq + 1;
    if (!strcmp(kv, "op")) snprintf(fault.op, sizeof fault.op, "%s", v);
    else if (!strcmp(kv, "hr")) fault.hr = (HRESULT)strtoul(v, NULL, 0);
    else if (!strcmp(kv, "result")) snprintf(fault.result, sizeof fault.result, "%s", v);
    else if (!strcmp(kv, "delay")) fault.delay_ms = atoi(v);
    else if (!strcmp(kv, "silent")) fault.silent = atoi(v);
    else if (!strcmp(kv, "exit")) fault.exit_instead = atoi(v);
    else if (!strcmp(kv, "cmd")) snprintf(fault.cmd, sizeof fault.cmd, "%s", v);
  }
  pthread_mutex_unlock(&mu);
  return S_OK;
}

/* Delivers (or queues) a notification; called with `mu` held. */
static void notify_locked(System *sys, DWORD type, HRESULT status) {
  Registration copy[MAX_REGS];
  int n = 0;
  for (int i = 0; i < MAX_REGS; i++)
    if (sys->regs[i]) copy[n++] = *sys->regs[i];
  if (n > 0) {
    pthread_mutex_unlock(&mu);
    for (int i = 0; i < n; i++) copy[i].cb(type, copy[i].context, status, NULL);
    pthread_mutex_lock(&mu);
  } else if (sys->queued < 16) {
    sys->queued_type[sys->queued] = type;
    sys->queued_status[sys->queued] = status;
    sys->queued++;
  }
}

typedef struct {
  System *sys;
  DWORD type;
  HRESULT status;
  int delay_ms;
  int state_after;
} Later;

static void *later_main(void *arg) {
  Later *l = arg;
  usleep((useconds_t)(l->delay_ms > 0 ? l->delay_ms : 2) * 1000);
  pthread_mutex_lock(&mu);
  if (!l->sys->closed) {
    if (l->state_after >= 0) l->sys->state = l->state_after;
    notify_locked(l->sys, l->type, l->status);
  }
  pthread_mutex_unlock(&mu);
  free(l);
  return NULL;
}

static void later(System *sys, DWORD type, HRESULT status, int delay_ms, int state_after) {
  Later *l = malloc(sizeof *l);
  *l = (Later){sys, type, status, delay_ms, state_after};
  pthread_t t;
  pthread_create(&t, NULL, later_main, l);
  pthread_detach(t);
}

/* ---------------------------------------------------------------------------------------------------- */
/* A strict witness of the documents: every JSON the real service would parse is parsed here and checked  */
/* against the schema1 structures (field names, types, required fields) the 2019 LCOW flow uses. A        */
/* document the real service would refuse gets HCS_E_INVALID_JSON and a result naming what is wrong.      */

enum { T_NULL = 1, T_BOOL = 2, T_NUM = 4, T_STR = 8, T_ARR = 16, T_OBJ = 32 };
typedef struct J {
  int t;
  int b;
  char *str;
  int n;
  char **keys;
  struct J **vals;
} J;

typedef struct {
  const char *p;
  char err[200];
} Parser;

static void jfree(J *j) {
  if (!j) return;
  free(j->str);
  for (int i = 0; i < j->n; i++) {
    if (j->keys) free(j->keys[i]);
    jfree(j->vals[i]);
  }
  free(j->keys);
  free(j->vals);
  free(j);
}

static void jws(Parser *ps) {
  while (*ps->p == ' ' || *ps->p == '\n' || *ps->p == '\t' || *ps->p == '\r') ps->p++;
}

static void jfail(Parser *ps, const char *what) {
  if (!ps->err[0]) snprintf(ps->err, sizeof ps->err, "%s", what);
}

static char *jstring(Parser *ps) {
  size_t cap = 32, len = 0;
  char *out = malloc(cap);
  ps->p++;
  while (*ps->p && *ps->p != '"') {
    char c = *ps->p++;
    if ((unsigned char)c < 0x20) jfail(ps, "control character in a string");
    if (c == '\\') {
      char e = *ps->p++;
      if (e == 'u') {
        for (int i = 0; i < 4; i++)
          if (!ps->p[i] || !strchr("0123456789abcdefABCDEF", ps->p[i])) jfail(ps, "bad \\u escape");
        if (!ps->err[0]) ps->p += 4;
        c = '?';
      } else if (e && strchr("\"\\/bfnrt", e)) {
        c = e == 'n' ? '\n' : e == 't' ? '\t' : e == 'r' ? '\r' : e == 'b' ? '\b' : e == 'f' ? '\f' : e;
      } else {
        jfail(ps, "bad escape");
        break;
      }
    }
    if (len + 2 > cap) out = realloc(out, cap *= 2);
    out[len++] = c;
  }
  if (*ps->p == '"') ps->p++;
  else jfail(ps, "unterminated string");
  out[len] = 0;
  return out;
}

static J *jvalue(Parser *ps, int depth);

static void jpush(J *j, char *key, J *v) {
  j->vals = realloc(j->vals, sizeof *j->vals * (size_t)(j->n + 1));
  if (key) j->keys = realloc(j->keys, sizeof *j->keys * (size_t)(j->n + 1)), j->keys[j->n] = key;
  j->vals[j->n++] = v;
}

static J *jvalue(Parser *ps, int depth) {
  jws(ps);
  J *j = calloc(1, sizeof *j);
  if (depth > 32) {
    jfail(ps, "nested too deeply");
    return j;
  }
  char c = *ps->p;
  if (c == '{' || c == '[') {
    int obj = c == '{';
    j->t = obj ? T_OBJ : T_ARR;
    ps->p++;
    jws(ps);
    if (*ps->p == (obj ? '}' : ']')) {
      ps->p++;
      return j;
    }
    for (;;) {
      char *key = NULL;
      if (obj) {
        jws(ps);
        if (*ps->p != '"') {
          jfail(ps, "object key expected");
          return j;
        }
        key = jstring(ps);
        for (int i = 0; i < j->n; i++)
          if (!strcmp(j->keys[i], key)) jfail(ps, "duplicate key");
        jws(ps);
        if (*ps->p != ':') {
          free(key);
          jfail(ps, "':' expected");
          return j;
        }
        ps->p++;
      }
      jpush(j, key, jvalue(ps, depth + 1));
      if (ps->err[0]) return j;
      jws(ps);
      if (*ps->p == ',') {
        ps->p++;
        continue;
      }
      if (*ps->p == (obj ? '}' : ']')) {
        ps->p++;
        return j;
      }
      jfail(ps, obj ? "',' or '}' expected" : "',' or ']' expected");
      return j;
    }
  }
  if (c == '"') {
    j->t = T_STR;
    j->str = jstring(ps);
  } else if (!strncmp(ps->p, "true", 4) || !strncmp(ps->p, "false", 5)) {
    j->t = T_BOOL;
    j->b = c == 't';
    ps->p += j->b ? 4 : 5;
  } else if (!strncmp(ps->p, "null", 4)) {
    j->t = T_NULL;
    ps->p += 4;
  } else if (c == '-' || (c >= '0' && c <= '9')) {
    char *end;
    strtod(ps->p, &end);
    j->t = T_NUM;
    ps->p = end;
  } else
    jfail(ps, "value expected");
  return j;
}

/* The parsed document, or NULL with `err` filled. */
static J *jparse(const char *text, char *err, size_t n) {
  Parser ps = {text, ""};
  J *j = jvalue(&ps, 0);
  jws(&ps);
  if (!ps.err[0] && *ps.p) jfail(&ps, "text after the document");
  if (ps.err[0]) {
    snprintf(err, n, "%s (offset %ld)", ps.err, (long)(ps.p - text));
    jfree(j);
    return NULL;
  }
  return j;
}

static J *jget(J *o, const char *key) {
  if (!o || o->t != T_OBJ) return NULL;
  for (int i = 0; i < o->n; i++)
    if (!strcmp(o->keys[i], key)) return o->vals[i];
  return NULL;
}

typedef int (*Check)(J *v, char *err, size_t n);
typedef struct {
  const char *name;
  int types;
  int required;
  Check check;
} Field;

/* Every key known, of an allowed type, its own check passed; every required key present. */
static int check_fields(J *o, const char *what, const Field *fs, char *err, size_t n) {
  if (!o || o->t != T_OBJ) return snprintf(err, n, "%s: not an object", what), 0;
  for (int i = 0; i < o->n; i++) {
    const Field *f = fs;
    while (f->name && strcmp(f->name, o->keys[i])) f++;
    if (!f->name) return snprintf(err, n, "%s: unknown field \"%s\"", what, o->keys[i]), 0;
    if (!(o->vals[i]->t & f->types)) return snprintf(err, n, "%s.%s: wrong type", what, f->name), 0;
    if (f->check && o->vals[i]->t != T_NULL && !f->check(o->vals[i], err, n)) return 0;
  }
  for (const Field *f = fs; f->name; f++)
    if (f->required && !jget(o, f->name)) return snprintf(err, n, "%s: \"%s\" is required", what, f->name), 0;
  return 1;
}

static int check_mapped_disk(J *v, char *err, size_t n) {
  static const Field fs[] = {{"HostPath", T_STR, 1, NULL},      {"ContainerPath", T_STR, 0, NULL},
                             {"CreateInUtilityVM", T_BOOL, 0, NULL}, {"ReadOnly", T_BOOL, 0, NULL},
                             {"Cache", T_STR, 0, NULL},         {"AttachOnly", T_BOOL, 0, NULL},
                             {NULL, 0, 0, NULL}};
  if (!check_fields(v, "MappedVirtualDisk", fs, err, n)) return 0;
  J *cuvm = jget(v, "CreateInUtilityVM");
  /* In a utility VM the disk goes to the VM itself; without the flag the service looks for a container. */
  if (!cuvm || !cuvm->b) return snprintf(err, n, "MappedVirtualDisk: CreateInUtilityVM must be true for a utility VM"), 0;
  return 1;
}

static int check_disks(J *v, char *err, size_t n) {
  for (int i = 0; i < v->n; i++)
    if (!check_mapped_disk(v->vals[i], err, n)) return 0;
  return 1;
}

static int check_layers(J *v, char *err, size_t n) {
  static const Field fs[] = {{"ID", T_STR, 1, NULL}, {"Path", T_STR, 1, NULL}, {NULL, 0, 0, NULL}};
  for (int i = 0; i < v->n; i++)
    if (!check_fields(v->vals[i], "Layer", fs, err, n)) return 0;
  return 1;
}

static int check_runtime(J *v, char *err, size_t n) {
  static const Field fs[] = {{"ImagePath", T_STR, 0, NULL},          {"SkipTemplate", T_BOOL, 0, NULL},
                             {"LinuxInitrdFile", T_STR, 0, NULL},    {"LinuxKernelFile", T_STR, 0, NULL},
                             {"LinuxBootParameters", T_STR, 0, NULL}, {"BootSource", T_STR, 0, NULL},
                             {"WritableBootSource", T_BOOL, 0, NULL}, {NULL, 0, 0, NULL}};
  return check_fields(v, "HvRuntime", fs, err, n);
}

static int check_system_type(J *v, char *err, size_t n) {
  if (strcasecmp(v->str, "Container")) return snprintf(err, n, "SystemType \"%s\": not Container", v->str), 0;
  return 1;
}

static int check_container_type(J *v, char *err, size_t n) {
  if (strcmp(v->str, "linux") && strcmp(v->str, "windows"))
    return snprintf(err, n, "ContainerType \"%s\": linux or windows", v->str), 0;
  return 1;
}

/* schema1 ContainerConfig. */
static int valid_create(J *doc, char *err, size_t n) {
  static const Field fs[] = {
      {"SystemType", T_STR, 1, check_system_type},
      {"Name", T_STR, 0, NULL},
      {"Owner", T_STR, 0, NULL},
      {"VolumePath", T_STR, 0, NULL},
      {"IgnoreFlushesDuringBoot", T_BOOL, 0, NULL},
      {"LayerFolderPath", T_STR, 0, NULL},
      {"Layers", T_NULL | T_ARR, 0, check_layers},
      {"Credentials", T_STR, 0, NULL},
      {"ProcessorCount", T_NUM, 0, NULL},
      {"ProcessorWeight", T_NUM, 0, NULL},
      {"ProcessorMaximum", T_NUM, 0, NULL},
      {"StorageIOPSMaximum", T_NUM, 0, NULL},
      {"StorageBandwidthMaximum", T_NUM, 0, NULL},
      {"StorageSandboxSize", T_NUM, 0, NULL},
      {"MemoryMaximumInMB", T_NUM, 0, NULL},
      {"HostName", T_STR, 0, NULL},
      {"MappedDirectories", T_NULL | T_ARR, 0, NULL},
      {"MappedPipes", T_NULL | T_ARR, 0, NULL},
      {"HvPartition", T_BOOL, 0, NULL},
      {"NetworkSharedContainerName", T_STR, 0, NULL},
      {"EndpointList", T_NULL | T_ARR, 0, NULL},
      {"HvRuntime", T_NULL | T_OBJ, 0, check_runtime},
      {"Servicing", T_BOOL, 0, NULL},
      {"AllowUnqualifiedDNSQuery", T_BOOL, 0, NULL},
      {"DNSSearchList", T_STR, 0, NULL},
      {"ContainerType", T_STR, 0, check_container_type},
      {"TerminateOnLastHandleClosed", T_BOOL, 0, NULL},
      {"MappedVirtualDisks", T_NULL | T_ARR, 0, check_disks},
      {"AssignedDevices", T_NULL | T_ARR, 0, NULL},
      {NULL, 0, 0, NULL},
  };
  if (!check_fields(doc, "ContainerConfig", fs, err, n)) return 0;
  J *hv = jget(doc, "HvPartition");
  J *rt = jget(doc, "HvRuntime");
  if (hv && hv->b && (!rt || rt->t != T_OBJ))
    return snprintf(err, n, "ContainerConfig: an HvPartition needs its HvRuntime"), 0;
  return 1;
}

/* schema1 ResourceModificationRequestResponse for a MappedVirtualDisk (the only resource LCOW modifies). */
static int check_resource_type(J *v, char *err, size_t n) {
  if (strcmp(v->str, "MappedVirtualDisk"))
    return snprintf(err, n, "ResourceType \"%s\": not one a utility VM modifies", v->str), 0;
  return 1;
}
static int check_request_type(J *v, char *err, size_t n) {
  if (strcmp(v->str, "Add") && strcmp(v->str, "Remove")) return snprintf(err, n, "RequestType \"%s\"", v->str), 0;
  return 1;
}
static int valid_modify(J *doc, char *err, size_t n) {
  static const Field fs[] = {{"ResourceType", T_STR, 1, check_resource_type},
                             {"Settings", T_OBJ, 1, check_mapped_disk},
                             {"RequestType", T_STR, 1, check_request_type},
                             {NULL, 0, 0, NULL}};
  if (!check_fields(doc, "ResourceModificationRequestResponse", fs, err, n)) return 0;
  J *s = jget(doc, "Settings");
  J *attach = jget(s, "AttachOnly");
  J *path = jget(s, "ContainerPath");
  if (!strcmp(jget(doc, "RequestType")->str, "Add") && !(attach && attach->b) && (!path || !path->str[0]))
    return snprintf(err, n, "MappedVirtualDisk: a disk to mount needs a ContainerPath"), 0;
  return 1;
}

static int check_strings(J *v, char *err, size_t n) {
  for (int i = 0; i < v->n; i++)
    if (v->vals[i]->t != T_STR) return snprintf(err, n, "an array of strings expected"), 0;
  return 1;
}
static int check_console(J *v, char *err, size_t n) {
  if (v->n != 2 || v->vals[0]->t != T_NUM || v->vals[1]->t != T_NUM)
    return snprintf(err, n, "ConsoleSize: two numbers"), 0;
  return 1;
}
static int check_env(J *v, char *err, size_t n) {
  for (int i = 0; i < v->n; i++)
    if (v->vals[i]->t != T_STR) return snprintf(err, n, "Environment.%s: not a string", v->keys[i]), 0;
  return 1;
}

/* schema1 ProcessConfig, as a utility-VM process. */
static int valid_process(J *doc, char *err, size_t n) {
  static const Field fs[] = {
      {"ApplicationName", T_STR, 0, NULL},    {"CommandLine", T_STR, 0, NULL},
      {"CommandArgs", T_ARR, 0, check_strings}, {"User", T_STR, 0, NULL},
      {"WorkingDirectory", T_STR, 0, NULL},   {"Environment", T_OBJ, 0, check_env},
      {"EmulateConsole", T_BOOL, 0, NULL},    {"CreateStdInPipe", T_BOOL, 0, NULL},
      {"CreateStdOutPipe", T_BOOL, 0, NULL},  {"CreateStdErrPipe", T_BOOL, 0, NULL},
      {"ConsoleSize", T_ARR, 0, check_console}, {"CreateInUtilityVm", T_BOOL, 0, NULL},
      {"OCISpecification", T_NULL | T_OBJ, 0, NULL}, {NULL, 0, 0, NULL},
  };
  if (!check_fields(doc, "ProcessConfig", fs, err, n)) return 0;
  J *uvm = jget(doc, "CreateInUtilityVm");
  if (!uvm || !uvm->b) return snprintf(err, n, "ProcessConfig: CreateInUtilityVm must be true in a utility VM"), 0;
  J *args = jget(doc, "CommandArgs");
  J *line = jget(doc, "CommandLine");
  if ((!args || args->n == 0) && (!line || !line->str[0]))
    return snprintf(err, n, "ProcessConfig: no CommandLine and no CommandArgs"), 0;
  return 1;
}

/* schema1 PropertyQuery: {} or the property types LCOW asks for. */
static int check_property_types(J *v, char *err, size_t n) {
  static const char *known[] = {"Statistics", "ProcessList", "MappedVirtualDisk", "GuestConnection", NULL};
  for (int i = 0; i < v->n; i++) {
    if (v->vals[i]->t != T_STR) return snprintf(err, n, "PropertyTypes: strings expected"), 0;
    const char **k = known;
    while (*k && strcmp(*k, v->vals[i]->str)) k++;
    if (!*k) return snprintf(err, n, "PropertyTypes: unknown \"%s\"", v->vals[i]->str), 0;
  }
  return 1;
}
static int valid_query(J *doc, char *err, size_t n) {
  static const Field fs[] = {{"PropertyTypes", T_ARR, 0, check_property_types}, {NULL, 0, 0, NULL}};
  return check_fields(doc, "PropertyQuery", fs, err, n);
}

/* Parses and checks `text`; on failure fills `*result` with the service's invalid-JSON answer. */
static int witness(const char *text, int (*valid)(J *, char *, size_t), char16_t **result) {
  char err[240] = "";
  J *doc = jparse(text, err, sizeof err);
  int ok = doc && valid(doc, err, sizeof err);
  jfree(doc);
  if (ok) return 1;
  if (result) {
    char json[600];
    size_t o = (size_t)snprintf(json, sizeof json, "{\"Error\":-1070137075,\"ErrorMessage\":\"The JSON document is invalid: ");
    for (const char *c = err; *c && o + 8 < sizeof json; c++) {
      if (*c == '"' || *c == '\\') json[o++] = '\\';
      json[o++] = (unsigned char)*c < 0x20 ? ' ' : *c;
    }
    snprintf(json + o, sizeof json - o, "\"}");
    *result = alloc16(json);
  }
  return 0;
}

static System *find(const char *id) {
  for (System *s = systems; s; s = s->next)
    if (!s->closed && !strcmp(s->id, id)) return s;
  return NULL;
}

static HRESULT put_result(char16_t **result, const char *json) {
  if (result) *result = json ? alloc16(json) : NULL;
  return S_OK;
}

HRESULT HcsCreateComputeSystem(const char16_t *id, const char16_t *config, void *identity, System **out, char16_t **result) {
  (void)identity;
  char sid[256], cfg[16384];
  to_ascii(id, sid, sizeof sid);
  pthread_mutex_lock(&mu);
  to_ascii(config, cfg, sizeof cfg);
  journal_add("create", cfg);
  int valid = witness(cfg, valid_create, NULL);
  pthread_mutex_unlock(&mu);
  if (result) *result = NULL;
  *out = NULL;
  HRESULT hr;
  int delay = 0, silent = 0, ex = 0;
  if (take_fault("Create", &hr, result, &delay, &silent, &ex)) return hr;
  if (!valid) {
    witness(cfg, valid_create, result);
    return HCS_E_INVALID_JSON;
  }
  pthread_mutex_lock(&mu);
  if (find(sid)) {
    pthread_mutex_unlock(&mu);
    put_result(result, "{\"Error\":-1070137073,\"ErrorMessage\":\"A compute system with the specified identifier already exists.\"}");
    return HCS_E_SYSTEM_ALREADY_EXISTS;
  }
  System *s = calloc(1, sizeof *s);
  snprintf(s->id, sizeof s->id, "%s", sid);
  s->state = ST_CREATED;
  s->handles = 1;
  s->term_on_close = strstr(cfg, "\"TerminateOnLastHandleClosed\":true") != NULL;
  s->next = systems;
  systems = s;
  live_handles++;
  pthread_mutex_unlock(&mu);
  *out = s;
  if (!silent) later(s, ex ? N_EXITED : N_CREATE, S_OK, delay, ex ? ST_STOPPED : -1);
  return HCS_E_OPERATION_PENDING;
}

HRESULT HcsOpenComputeSystem(const char16_t *id, System **out, char16_t **result) {
  char sid[256];
  to_ascii(id, sid, sizeof sid);
  if (result) *result = NULL;
  pthread_mutex_lock(&mu);
  System *s = find(sid);
  if (s) {
    live_handles++;
    s->handles++;
  }
  pthread_mutex_unlock(&mu);
  *out = s;
  return s ? S_OK : HCS_E_SYSTEM_NOT_FOUND;
}

HRESULT HcsCloseComputeSystem(System *s) {
  if (!s) return ERROR_INVALID_HANDLE;
  pthread_mutex_lock(&mu);
  live_handles--;
  s->handles--;
  /* A stopped system is gone once its handle closes; a running one lives on (it can be opened again)
     unless it asked to be terminated with its last handle — then it stops, and a start still pending
     never completes. */
  if (s->state == ST_STOPPED || (s->term_on_close && s->handles <= 0)) {
    s->state = ST_STOPPED;
    s->closed = 1;
  }
  pthread_mutex_unlock(&mu);
  return S_OK;
}

static HRESULT async_op(System *s, const char *op, DWORD done, int need, int after, char16_t **result) {
  if (result) *result = NULL;
  if (!s) return ERROR_INVALID_HANDLE;
  HRESULT hr;
  int delay = 0, silent = 0, ex = 0;
  if (take_fault(op, &hr, result, &delay, &silent, &ex)) return hr;
  pthread_mutex_lock(&mu);
  if (s->state == ST_STOPPED && done == N_EXITED) {
    pthread_mutex_unlock(&mu);
    return HCS_E_SYSTEM_ALREADY_STOPPED;
  }
  if (need >= 0 && s->state != need) {
    pthread_mutex_unlock(&mu);
    put_result(result, "{\"Error\":-1070137083,\"ErrorMessage\":\"The requested virtual machine or container operation is not valid in the current state.\"}");
    return HCS_E_INVALID_STATE;
  }
  pthread_mutex_unlock(&mu);
  if (!silent) later(s, ex ? N_EXITED : done, S_OK, delay, ex ? ST_STOPPED : after);
  return HCS_E_OPERATION_PENDING;
}

HRESULT HcsStartComputeSystem(System *s, const char16_t *options, char16_t **result) {
  (void)options;
  /* The state changes before the notification goes out: a caller may act on it at once. */
  return async_op(s, "Start", N_START, ST_CREATED, ST_RUNNING, result);
}

HRESULT HcsShutdownComputeSystem(System *s, const char16_t *options, char16_t **result) {
  (void)options;
  return async_op(s, "Shutdown", N_EXITED, -1, ST_STOPPED, result);
}

HRESULT HcsTerminateComputeSystem(System *s, const char16_t *options, char16_t **result) {
  (void)options;
  return async_op(s, "Terminate", N_EXITED, -1, ST_STOPPED, result);
}

HRESULT HcsGetComputeSystemProperties(System *s, const char16_t *query, char16_t **props, char16_t **result) {
  if (result) *result = NULL;
  *props = NULL;
  if (!s) return ERROR_INVALID_HANDLE;
  HRESULT hr;
  if (take_fault("Properties", &hr, result, NULL, NULL, NULL)) return hr;
  char json[8192];
  char q[256];
  to_ascii(query, q, sizeof q);
  if (!witness(q, valid_query, result)) return HCS_E_INVALID_JSON;
  pthread_mutex_lock(&mu);
  if (strstr(q, "MappedVirtualDisk")) {
    size_t o = (size_t)snprintf(json, sizeof json, "{\"MappedVirtualDiskControllers\":{\"0\":{\"MappedVirtualDisks\":{");
    int first = 1;
    for (int i = 0; i < 64; i++) {
      if (!s->disks[i][0]) continue;
      o += (size_t)snprintf(json + o, sizeof json - o, "%s\"%d\":{\"HostPath\":\"%s\",\"ContainerPath\":\"\"}", first ? "" : ",", i, s->disks[i]);
      first = 0;
    }
    snprintf(json + o, sizeof json - o, "}}}}");
    pthread_mutex_unlock(&mu);
    *props = alloc16(json);
    return S_OK;
  }
  static const char *names[] = {"Created", "Running", "Stopped"};
  snprintf(json, sizeof json,
           "{\"Id\":\"%s\",\"SystemType\":\"Container\",\"RuntimeOsType\":\"Linux\",\"State\":\"%s\",\"Modifications\":%d}",
           s->id, names[s->state], s->modifies);
  pthread_mutex_unlock(&mu);
  *props = alloc16(json);
  return S_OK;
}

#define ERROR_NOT_FOUND ((HRESULT)0x80070490)
#define ERROR_SHARING_VIOLATION ((HRESULT)0x80070020)

/* The JSON string value of `key` in `doc`, copied into `out` (escapes kept as written), or "" when absent. */
static void string_field(const char *doc, const char *key, char *out, size_t n) {
  char pat[64];
  snprintf(pat, sizeof pat, "\"%s\":\"", key);
  const char *v = strstr(doc, pat);
  size_t o = 0;
  if (v)
    for (v += strlen(pat); *v && *v != '"' && o + 1 < n; v++) {
      if (*v == '\\' && v[1]) out[o++] = *v++;
      out[o++] = *v;
    }
  out[o] = 0;
}

HRESULT HcsModifyComputeSystem(System *s, const char16_t *config, char16_t **result) {
  char cfg[4096];
  to_ascii(config, cfg, sizeof cfg);
  pthread_mutex_lock(&mu);
  journal_add("modify", cfg);
  pthread_mutex_unlock(&mu);
  if (result) *result = NULL;
  if (!s) return ERROR_INVALID_HANDLE;
  HRESULT hr;
  int delay = 0;
  int fail = take_fault("Modify", &hr, result, &delay, NULL, NULL);
  if (delay > 0) usleep((useconds_t)delay * 1000); /* a slow SCSI attach: the caller's thread waits */
  if (fail) return hr;
  if (!witness(cfg, valid_modify, result)) return HCS_E_INVALID_JSON;
  pthread_mutex_lock(&mu);
  if (s->state != ST_RUNNING) {
    pthread_mutex_unlock(&mu);
    put_result(result, "{\"Error\":-1070137083,\"ErrorMessage\":\"The requested virtual machine or container operation is not valid in the current state.\"}");
    return HCS_E_INVALID_STATE;
  }
  /* MappedVirtualDisk adds and removes by HostPath (JSON backslashes kept as written), as the service: a
     second add of an attached file is a sharing violation, a remove of one not attached is not found. */
  char host[256], type[16];
  string_field(cfg, "HostPath", host, sizeof host);
  string_field(cfg, "RequestType", type, sizeof type);
  int add = !strcmp(type, "Add");
  int at = -1, free_slot = -1;
  for (int i = 0; i < 64; i++) {
    if (s->disks[i][0] && !strcmp(s->disks[i], host)) at = i;
    if (!s->disks[i][0] && free_slot < 0) free_slot = i;
  }
  HRESULT out = S_OK;
  if (add && at >= 0) {
    out = ERROR_SHARING_VIOLATION;
    put_result(result, "{\"Error\":-2147024864,\"ErrorMessage\":\"The process cannot access the file because it is being used by another process.\"}");
  } else if (!add && at < 0) {
    out = ERROR_NOT_FOUND;
    put_result(result, "{\"Error\":-2147023728,\"ErrorMessage\":\"Element not found.\"}");
  } else if (add && free_slot < 0) {
    out = E_INVALIDARG;
  } else {
    if (add) snprintf(s->disks[free_slot], sizeof s->disks[free_slot], "%s", host);
    else s->disks[at][0] = 0;
    s->modifies++;
  }
  pthread_mutex_unlock(&mu);
  return out;
}

HRESULT HcsRegisterComputeSystemCallback(System *s, HCS_NOTIFICATION_CALLBACK cb, void *context, void **handle) {
  if (!s || !cb) return E_INVALIDARG;
  pthread_mutex_lock(&mu);
  int slot = -1;
  for (int i = 0; i < MAX_REGS; i++)
    if (!s->regs[i]) {
      slot = i;
      break;
    }
  if (slot < 0) {
    pthread_mutex_unlock(&mu);
    return E_INVALIDARG;
  }
  Registration *r = malloc(sizeof *r);
  *r = (Registration){s, cb, context};
  s->regs[slot] = r;
  live_handles++;
  /* Deliver what arrived before anyone listened, from this thread's point of view later: a helper thread. */
  for (int i = 0; i < s->queued; i++) later(s, s->queued_type[i], s->queued_status[i], 1, -1);
  s->queued = 0;
  pthread_mutex_unlock(&mu);
  *handle = r;
  return S_OK;
}

HRESULT HcsUnregisterComputeSystemCallback(void *handle) {
  Registration *r = handle;
  if (!r) return ERROR_INVALID_HANDLE;
  pthread_mutex_lock(&mu);
  for (int i = 0; i < MAX_REGS; i++)
    if (r->sys->regs[i] == r) r->sys->regs[i] = NULL;
  free(r);
  live_handles--;
  pthread_cond_broadcast(&cv);
  pthread_mutex_unlock(&mu);
  return S_OK;
}

/* Sends a notification nobody asked for (SystemExited, ServiceDisconnect) to the system named `id`. */
HRESULT FakeHcsNotify(const char16_t *id, DWORD type, HRESULT status) {
  char sid[256];
  to_ascii(id, sid, sizeof sid);
  pthread_mutex_lock(&mu);
  System *s = find(sid);
  pthread_mutex_unlock(&mu);
  if (!s) return HCS_E_SYSTEM_NOT_FOUND;
  later(s, type, status, 1, type == N_EXITED ? ST_STOPPED : -1);
  return S_OK;
}

/* ---------------------------------------------------------------------------------------------------- */
/* Processes. A fake process is a thread behind three pipes whose file descriptors are handed out as the  */
/* HANDLEs: its CommandArgs/CommandLine picks a behaviour — `echo WORDS` (stdout, exit 0), `cat` (stdin to */
/* stdout), `fail N TEXT` (stderr, exit N), `sleep` (runs until terminated).                               */

typedef struct {
  uint32_t ProcessId;
  uint32_t Reserved;
  void *StdInput;
  void *StdOutput;
  void *StdError;
} HCS_PROCESS_INFORMATION;

#define N_PROCESS_EXITED 0x00010000
#define HCS_E_PROCESS_ALREADY_STOPPED ((HRESULT)0x8037011F)

typedef struct Process {
  System *sys;
  uint32_t pid;
  int in_r, out_w, err_w;
  int exited;
  int exit_code;
  int killed;
  char cmd[1024];
  HCS_NOTIFICATION_CALLBACK cb;
  void *context;
  int registered;
  int pending_exit;
  pthread_t thread;
} Process;

static uint32_t next_pid = 100;

static void process_exit(Process *p, int code) {
  pthread_mutex_lock(&mu);
  if (p->exited) {
    pthread_mutex_unlock(&mu);
    return;
  }
  p->exited = 1;
  p->exit_code = code;
  if (p->registered && p->cb) {
    HCS_NOTIFICATION_CALLBACK cb = p->cb;
    void *ctx = p->context;
    pthread_mutex_unlock(&mu);
    cb(N_PROCESS_EXITED, ctx, S_OK, NULL);
    return;
  }
  p->pending_exit = 1;
  pthread_mutex_unlock(&mu);
}

static void write_all(int fd, const char *s, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, s, n);
    if (w <= 0) return;
    s += w;
    n -= (size_t)w;
  }
}

/* The programs of the 2019 LCOW guest the driver runs (beyond the fake's own echo/cat/fail/sleep). */
static int known_command(const char *cmd) {
  static const char *known[] = {"mkdir", "mount", "umount", "test", "ls", "mkfs.ext4", "exportSandbox", NULL};
  size_t len = strcspn(cmd, " ");
  for (const char **k = known; *k; k++)
    if (strlen(*k) == len && !strncmp(cmd, *k, len)) return 1;
  return 0;
}

/* One regular-file entry of a ustar archive (name < 100 bytes), written to `fd`. */
static void tar_file(int fd, const char *name, const char *body) {
  char h[512];
  memset(h, 0, sizeof h);
  size_t len = strlen(body);
  snprintf(h, 100, "%s", name);
  snprintf(h + 100, 8, "%07o", 0644);
  snprintf(h + 108, 8, "%07o", 0);
  snprintf(h + 116, 8, "%07o", 0);
  snprintf(h + 124, 12, "%011o", (unsigned)len);
  snprintf(h + 136, 12, "%011o", 1700000000u);
  memset(h + 148, ' ', 8);
  h[156] = '0';
  memcpy(h + 257, "ustar", 6);
  memcpy(h + 263, "00", 2);
  unsigned sum = 0;
  for (int i = 0; i < 512; i++) sum += (unsigned char)h[i];
  snprintf(h + 148, 8, "%06o", sum);
  h[155] = ' ';
  write_all(fd, h, 512);
  write_all(fd, body, len);
  char pad[512] = {0};
  if (len % 512) write_all(fd, pad, 512 - len % 512);
}

static void *process_main(void *arg) {
  Process *p = arg;
  int code = 0;
  if (!strncmp(p->cmd, "echo ", 5)) {
    write_all(p->out_w, p->cmd + 5, strlen(p->cmd + 5));
    write_all(p->out_w, "\n", 1);
  } else if (!strcmp(p->cmd, "cat")) {
    char buf[65536];
    ssize_t n;
    while ((n = read(p->in_r, buf, sizeof buf)) > 0) write_all(p->out_w, buf, (size_t)n);
  } else if (!strncmp(p->cmd, "fail ", 5)) {
    char *end;
    code = (int)strtol(p->cmd + 5, &end, 10);
    if (*end == ' ') end++;
    write_all(p->err_w, end, strlen(end));
  } else if (!strcmp(p->cmd, "sleep")) {
    while (!p->killed) usleep(1000);
    code = 137;
  } else if (!strncmp(p->cmd, "ls /sys/bus/scsi/devices/", 25)) {
    write_all(p->out_w, "sdb\n", 4);
  } else if (!strncmp(p->cmd, "unknown", 7)) {
    write_all(p->err_w, "unknown command", 15);
    code = 127;
  } else if (!strncmp(p->cmd, "exportSandbox -path ", 20)) {
    /* The guest's export of a sandbox mounted at PATH: a small archive that names PATH (so a test sees which
       disk was exported) and deletes "gone" (a whiteout), then the end-of-archive blocks. */
    char body[1100];
    snprintf(body, sizeof body, "%s\n", p->cmd + 20);
    tar_file(p->out_w, "exported-from", body);
    tar_file(p->out_w, ".wh.gone", "");
    char end[1024] = {0};
    write_all(p->out_w, end, sizeof end);
  } else if (known_command(p->cmd)) {
    /* What the driver asks of the guest (mkdir, mount, umount, …) succeeds; the journal records it. */
  } else {
    /* As the guest: a program it does not have. */
    char msg[1100];
    int n = snprintf(msg, sizeof msg, "exec: \"%.*s\": executable file not found in $PATH", (int)strcspn(p->cmd, " "), p->cmd);
    write_all(p->err_w, msg, (size_t)n);
    code = 127;
  }
  close(p->out_w);
  close(p->err_w);
  close(p->in_r);
  process_exit(p, code);
  return NULL;
}

/* The command: "CommandArgs" joined by spaces when present, else "CommandLine" (a tiny JSON scan). */
static void command_of(const char *json, char *out, size_t n) {
  out[0] = 0;
  const char *a = strstr(json, "\"CommandArgs\":[");
  if (a) {
    a += 15;
    size_t o = 0;
    while (*a && *a != ']' && o + 1 < n) {
      if (*a == '"') {
        a++;
        while (*a && *a != '"' && o + 1 < n) out[o++] = *a++;
        if (*a == '"') a++;
        if (o + 1 < n) out[o++] = ' ';
      } else a++;
    }
    if (o > 0) o--;
    out[o] = 0;
    return;
  }
  const char *c = strstr(json, "\"CommandLine\":\"");
  if (!c) return;
  c += 15;
  size_t o = 0;
  while (*c && *c != '"' && o + 1 < n) out[o++] = *c++;
  out[o] = 0;
}

HRESULT HcsCreateProcess(System *s, const char16_t *params, HCS_PROCESS_INFORMATION *info, Process **out, char16_t **result) {
  if (result) *result = NULL;
  *out = NULL;
  if (!s) return ERROR_INVALID_HANDLE;
  HRESULT hr;
  int delay = 0;
  int fail = take_fault("CreateProcess", &hr, result, &delay, NULL, NULL);
  if (delay > 0) usleep((useconds_t)delay * 1000); /* a guest slow to start the program */
  if (fail) return hr;
  char json[8192];
  to_ascii(params, json, sizeof json);
  if (!witness(json, valid_process, result)) return HCS_E_INVALID_JSON;
  pthread_mutex_lock(&mu);
  int running = s->state == ST_RUNNING;
  Process *p = calloc(1, sizeof *p);
  command_of(json, p->cmd, sizeof p->cmd);
  journal_add("run", p->cmd);
  /* op=Run;cmd=PREFIX;delay=MS: the guest is slow to start that one command (a hanging mount). */
  int run_delay = 0;
  if (fault.armed && !strcmp(fault.op, "Run") && !strncmp(p->cmd, fault.cmd, strlen(fault.cmd))) {
    fault.armed = 0;
    run_delay = fault.delay_ms;
  }
  pthread_mutex_unlock(&mu);
  if (run_delay > 0) usleep((useconds_t)run_delay * 1000);
  if (!running) {
    free(p);
    put_result(result, "{\"Error\":-1070137083,\"ErrorMessage\":\"The system is not running.\"}");
    return HCS_E_INVALID_STATE;
  }
  int in[2], o[2], e[2];
  if (pipe(in) || pipe(o) || pipe(e)) {
    free(p);
    return E_INVALIDARG;
  }
  p->sys = s;
  p->pid = __sync_fetch_and_add(&next_pid, 1);
  p->in_r = in[0];
  p->out_w = o[1];
  p->err_w = e[1];
  info->ProcessId = p->pid;
  info->Reserved = 0;
  info->StdInput = (void *)(intptr_t)in[1];
  info->StdOutput = (void *)(intptr_t)o[0];
  info->StdError = (void *)(intptr_t)e[0];
  pthread_mutex_lock(&mu);
  live_handles++;
  pthread_mutex_unlock(&mu);
  pthread_create(&p->thread, NULL, process_main, p);
  pthread_detach(p->thread);
  *out = p;
  return S_OK;
}

static void *deliver_exit_main(void *arg) {
  Process *p = arg;
  usleep(1000);
  process_exit(p, p->exit_code);
  return NULL;
}

HRESULT HcsRegisterProcessCallback(Process *p, HCS_NOTIFICATION_CALLBACK cb, void *context, void **handle) {
  if (!p || !cb) return E_INVALIDARG;
  pthread_mutex_lock(&mu);
  p->cb = cb;
  p->context = context;
  p->registered = 1;
  live_handles++;
  int pending = p->pending_exit;
  p->pending_exit = 0;
  pthread_mutex_unlock(&mu);
  *handle = p;
  if (pending) {
    /* An exit that happened before registration is delivered later from another thread, as HCS does:
       never from inside the Register call itself. */
    pthread_mutex_lock(&mu);
    p->exited = 0;
    pthread_mutex_unlock(&mu);
    pthread_t t;
    pthread_create(&t, NULL, deliver_exit_main, p);
    pthread_detach(t);
  }
  return S_OK;
}

HRESULT HcsUnregisterProcessCallback(void *handle) {
  Process *p = handle;
  if (!p) return ERROR_INVALID_HANDLE;
  pthread_mutex_lock(&mu);
  p->registered = 0;
  p->cb = NULL;
  live_handles--;
  pthread_mutex_unlock(&mu);
  return S_OK;
}

HRESULT HcsGetProcessProperties(Process *p, char16_t **props, char16_t **result) {
  if (result) *result = NULL;
  *props = NULL;
  if (!p) return ERROR_INVALID_HANDLE;
  char json[256];
  pthread_mutex_lock(&mu);
  snprintf(json, sizeof json, "{\"ProcessId\":%u,\"Exited\":%s,\"ExitCode\":%d,\"LastWaitResult\":0}", p->pid,
           p->exited ? "true" : "false", p->exit_code);
  pthread_mutex_unlock(&mu);
  *props = alloc16(json);
  return S_OK;
}

HRESULT HcsTerminateProcess(Process *p, char16_t **result) {
  if (result) *result = NULL;
  if (!p) return ERROR_INVALID_HANDLE;
  pthread_mutex_lock(&mu);
  int exited = p->exited;
  p->killed = 1;
  pthread_mutex_unlock(&mu);
  return exited ? HCS_E_PROCESS_ALREADY_STOPPED : S_OK;
}

HRESULT HcsModifyProcess(Process *p, const char16_t *settings, char16_t **result) {
  (void)settings;
  if (result) *result = NULL;
  return p ? S_OK : ERROR_INVALID_HANDLE;
}

HRESULT HcsCloseProcess(Process *p) {
  if (!p) return ERROR_INVALID_HANDLE;
  pthread_mutex_lock(&mu);
  live_handles--;
  pthread_mutex_unlock(&mu);
  return S_OK;
}

/* Hands the journal to the caller (free it with LocalFree) and starts a new one. */
char16_t *FakeHcsTakeJournal(void) {
  pthread_mutex_lock(&mu);
  journal[journal_len] = 0;
  char16_t *out = alloc16(journal);
  journal_len = 0;
  pthread_mutex_unlock(&mu);
  return out;
}
