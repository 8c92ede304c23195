/*
 * lua.c -- Lua 5.4 handlers of a projection file: `function on.OrderPlaced(e) ... end`
 * gets the event as a table and may run SQL in the batch's transaction (sql), keep
 * per-partition state in the target (state_get/state_set), append events (emit), and
 * return values for the SQL of its [on] section (:v.name) or false to skip that SQL.
 * One lua_State per projection; nothing global in C.
 *
 * The file may come from anyone who can register a projection (later: over the network),
 * so the state is a sandbox: text chunks only (Lua 5.4 does not verify bytecode), no
 * files, processes, debug library or modules, and every run of Lua code (the chunk at
 * open, each handler call) has a time budget enforced by a count hook, which also stops
 * it when the projection is cancelled. Parsing a file only compiles the chunk.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "project_int.h"

struct pj_lua {
    lua_State *L;
    annal_proj *p;
    const pj_lua_host *host; /* the engine's services (borrowed) */
    annal_proj_tx *tx;       /* during a call */
    int ret_ref;             /* the table the last handler returned, or LUA_NOREF */
    annal_err infra;         /* a database or store failure inside the call */
    const char *fname;
    uint32_t budget_ms;       /* per run of Lua code */
    struct timespec deadline; /* CLOCK_MONOTONIC */
    int stopped;              /* STOP_*: why the hook interrupted the run */
    char stop_msg[320];       /* "file:line: why", from where it first stopped */
};

enum { STOP_NONE, STOP_BUDGET, STOP_CANCEL };

/* Instructions between two looks at the clock: cheap next to them, and a few
 * microseconds of work at most, so the budget is kept to well under a millisecond. */
#define HOOK_EVERY 10000

static pj_lua *self(lua_State *L) { return *(pj_lua **)lua_getextraspace(L); }

/* ---------------------------------------------------------------- JSON <-> Lua */

static void push_json(lua_State *L, json_t *j, int depth) {
    luaL_checkstack(L, 4, "JSON too deep");
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        lua_createtable(L, 0, (int)json_object_size(j));
        const char *k;
        json_t *v;
        if (depth > 100) return;
        json_object_foreach(j, k, v) {
            push_json(L, v, depth + 1);
            lua_setfield(L, -2, k);
        }
        return;
    }
    case JSON_ARRAY: {
        lua_createtable(L, (int)json_array_size(j), 0);
        if (depth > 100) return;
        for (size_t i = 0; i < json_array_size(j); i++) {
            push_json(L, json_array_get(j, i), depth + 1);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        return;
    }
    case JSON_STRING: lua_pushlstring(L, json_string_value(j), json_string_length(j)); return;
    case JSON_INTEGER: lua_pushinteger(L, (lua_Integer)json_integer_value(j)); return;
    case JSON_REAL: lua_pushnumber(L, json_real_value(j)); return;
    case JSON_TRUE: lua_pushboolean(L, 1); return;
    case JSON_FALSE: lua_pushboolean(L, 0); return;
    case JSON_NULL: lua_pushnil(L); return;
    }
    lua_pushnil(L);
}

/* Push the decoded JSON text, or the raw string when it is not JSON. */
static void push_json_text(lua_State *L, const char *s, size_t n) {
    json_error_t e;
    json_t *j = n ? json_loadb(s, n, JSON_DECODE_ANY, &e) : NULL;
    if (j) {
        push_json(L, j, 0);
        json_decref(j);
    } else if (n) {
        lua_pushlstring(L, s, n);
    } else {
        lua_pushnil(L);
    }
}

static json_t *to_json(lua_State *L, int idx, int depth) {
    idx = lua_absindex(L, idx);
    switch (lua_type(L, idx)) {
    case LUA_TNIL: return json_null();
    case LUA_TBOOLEAN: return json_boolean(lua_toboolean(L, idx));
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) return json_integer((json_int_t)lua_tointeger(L, idx));
        return json_real(lua_tonumber(L, idx));
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);
        return json_stringn(s, n);
    }
    case LUA_TTABLE: {
        if (depth > 100) return NULL;
        lua_Integer len = (lua_Integer)lua_rawlen(L, idx);
        int array = 1;
        lua_Integer count = 0;
        lua_pushnil(L);
        while (lua_next(L, idx)) {
            count++;
            if (!lua_isinteger(L, -2) || lua_tointeger(L, -2) < 1 || lua_tointeger(L, -2) > len)
                array = 0;
            lua_pop(L, 1);
        }
        if (count == 0) array = 0; /* {} is an object: events' data are objects */
        json_t *out = array ? json_array() : json_object();
        if (!out) return NULL;
        if (array) {
            for (lua_Integer i = 1; i <= len; i++) {
                lua_rawgeti(L, idx, i);
                json_t *v = to_json(L, -1, depth + 1);
                lua_pop(L, 1);
                if (!v || json_array_append_new(out, v)) {
                    json_decref(out);
                    return NULL;
                }
            }
            return out;
        }
        lua_pushnil(L);
        while (lua_next(L, idx)) {
            lua_pushvalue(L, -2);
            const char *k = lua_tostring(L, -1); /* on the copy: lua_next needs the key intact */
            json_t *v = k ? to_json(L, -2, depth + 1) : NULL;
            if (!v || json_object_set_new(out, k, v)) {
                lua_pop(L, 3);
                json_decref(out);
                return NULL;
            }
            lua_pop(L, 2);
        }
        return out;
    }
    default: return NULL;
    }
}

/* Encode the value at idx as JSON text, pushed as a Lua string (so it lives on the stack). */
static const char *push_encoded(lua_State *L, int idx, size_t *len) {
    json_t *j = to_json(L, idx, 0);
    if (!j) luaL_error(L, "value cannot be written as JSON (functions, deep nesting)");
    char *s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY | JSON_SORT_KEYS); /* deterministic */
    json_decref(j);
    if (!s) luaL_error(L, "out of memory");
    lua_pushstring(L, s);
    free(s);
    return lua_tolstring(L, -1, len);
}

/* ---------------------------------------------------------------- functions for Lua */

static void need_tx(lua_State *L, pj_lua *l, const char *fn) {
    if (!l->tx) luaL_error(L, "%s() can only be called inside a handler", fn);
}

static annal_proj_value lua_arg(lua_State *L, int idx) {
    annal_proj_value v;
    memset(&v, 0, sizeof v);
    switch (lua_type(L, idx)) {
    case LUA_TNIL: v.kind = ANNAL_PROJ_NULL; break;
    case LUA_TBOOLEAN:
        v.kind = ANNAL_PROJ_INT;
        v.i = lua_toboolean(L, idx);
        break;
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) {
            v.kind = ANNAL_PROJ_INT;
            v.i = (int64_t)lua_tointeger(L, idx);
        } else {
            v.kind = ANNAL_PROJ_REAL;
            v.d = lua_tonumber(L, idx);
        }
        break;
    case LUA_TSTRING:
        v.kind = ANNAL_PROJ_TEXT;
        v.s = lua_tolstring(L, idx, &v.len);
        break;
    case LUA_TTABLE:
        v.kind = ANNAL_PROJ_TEXT;
        v.s = push_encoded(L, idx, &v.len);
        lua_replace(L, idx); /* keep the text alive in the argument's slot */
        break;
    default: luaL_error(L, "sql(): argument %d cannot be bound", idx - 1);
    }
    return v;
}

static void push_value(lua_State *L, const annal_proj_value *v) {
    switch (v->kind) {
    case ANNAL_PROJ_NULL: lua_pushnil(L); break;
    case ANNAL_PROJ_INT: lua_pushinteger(L, (lua_Integer)v->i); break;
    case ANNAL_PROJ_REAL: lua_pushnumber(L, v->d); break;
    case ANNAL_PROJ_TEXT: lua_pushlstring(L, v->s, v->len); break;
    }
}

typedef struct rows_ctx {
    lua_State *L;
    lua_Integer n;
} rows_ctx;

static int lua_row(void *ctx, int n, const char *const *names, const annal_proj_value *v) {
    rows_ctx *r = ctx;
    lua_State *L = r->L;
    lua_createtable(L, 0, n);
    for (int c = 0; c < n; c++) {
        push_value(L, &v[c]);
        lua_setfield(L, -2, names[c]);
    }
    lua_rawseti(L, -2, ++r->n);
    return 0;
}

/* sql(text, ...): run one statement with ? parameters; returns the rows as tables. */
static int l_sql(lua_State *L) {
    pj_lua *l = self(L);
    need_tx(L, l, "sql");
    size_t len;
    const char *q = luaL_checklstring(L, 1, &len);
    if (strlen(q) != len) return luaL_error(L, "sql(): the text holds a NUL byte");
    int n = lua_gettop(L) - 1;
    if (n > 64) return luaL_error(L, "sql(): at most 64 parameters");
    annal_proj_value v[64];
    for (int i = 0; i < n; i++) v[i] = lua_arg(L, i + 2);
    pj_stmt st;
    char msg[256];
    int line;
    if (annal__pj_sql_translate(q, len, 1, 0, &st, msg, sizeof msg, &line) != 0)
        return luaL_error(L, "sql(): %s", msg);
    if ((int)st.nparams != n) {
        annal__pj_stmt_free(&st);
        return luaL_error(L, "sql(): %d parameters given for %d '?'", n, (int)st.nparams);
    }
    lua_newtable(L);
    rows_ctx r = {L, 0};
    /* st is already in the target's dialect: annal_proj_exec would translate it again
     * and turn ?1 into ?11, binding NULLs */
    annal_err rc = l->host->exec_native(
        l->tx, l->host->kind(l->tx) == PJ_T_PG ? st.sql_pg : st.sql_sqlite, v, n, lua_row, &r);
    annal__pj_stmt_free(&st);
    if (rc != ANNAL_OK) {
        if (rc == ANNAL_EIO || rc == ANNAL_ENOMEM) l->infra = rc;
        return luaL_error(L, "sql(): %s", l->host->errmsg(l->tx));
    }
    return 1;
}

/* emit(stream, type, data [, metadata]): data and metadata are tables (JSON) or strings. */
static int l_emit(lua_State *L) {
    pj_lua *l = self(L);
    need_tx(L, l, "emit");
    const char *stream = luaL_checkstring(L, 1);
    const char *type = luaL_checkstring(L, 2);
    size_t dn = 0, mn = 0;
    const char *d = NULL, *m = NULL;
    if (lua_istable(L, 3))
        d = push_encoded(L, 3, &dn);
    else if (!lua_isnoneornil(L, 3))
        d = luaL_checklstring(L, 3, &dn);
    if (lua_istable(L, 4))
        m = push_encoded(L, 4, &mn);
    else if (!lua_isnoneornil(L, 4))
        m = luaL_checklstring(L, 4, &mn);
    annal_err rc = l->host->emit(l->tx, stream, type, d, dn, m, mn);
    if (rc != ANNAL_OK) {
        if (rc == ANNAL_EIO || rc == ANNAL_EFAILED || rc == ANNAL_ENOMEM) l->infra = rc;
        return luaL_error(L, "emit(): %s", l->host->errmsg(l->tx));
    }
    return 0;
}

static int l_state_get(lua_State *L) {
    pj_lua *l = self(L);
    need_tx(L, l, "state_get");
    const char *key = luaL_checkstring(L, 1);
    char *json = NULL;
    annal_err rc = l->host->state_get(l->tx, key, &json);
    if (rc != ANNAL_OK) {
        if (rc == ANNAL_EIO || rc == ANNAL_ENOMEM) l->infra = rc;
        return luaL_error(L, "state_get(): %s", l->host->errmsg(l->tx));
    }
    if (!json) {
        lua_pushnil(L);
        return 1;
    }
    push_json_text(L, json, strlen(json));
    free(json);
    return 1;
}

static int l_state_set(lua_State *L) {
    pj_lua *l = self(L);
    need_tx(L, l, "state_set");
    const char *key = luaL_checkstring(L, 1);
    luaL_checkany(L, 2);
    size_t n;
    const char *json = push_encoded(L, 2, &n);
    annal_err rc = l->host->state_set(l->tx, key, json);
    if (rc != ANNAL_OK) {
        if (rc == ANNAL_EIO || rc == ANNAL_ENOMEM) l->infra = rc;
        return luaL_error(L, "state_set(): %s", l->host->errmsg(l->tx));
    }
    return 0;
}

static int l_json(lua_State *L) {
    luaL_checkany(L, 1);
    push_encoded(L, 1, NULL);
    return 1;
}

/* ---------------------------------------------------------------- budget */

static void budget_hook(lua_State *L, lua_Debug *ar) {
    pj_lua *l = self(L);
    if (l->stopped == STOP_NONE) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (l->p && l->host->canceled(l->p))
            l->stopped = STOP_CANCEL;
        else if (now.tv_sec > l->deadline.tv_sec ||
                 (now.tv_sec == l->deadline.tv_sec && now.tv_nsec >= l->deadline.tv_nsec))
            l->stopped = STOP_BUDGET;
        else
            return;
        lua_getinfo(L, "Sl", ar);
        if (l->stopped == STOP_CANCEL)
            annal__pj_fmt(l->stop_msg, sizeof l->stop_msg,
                          "%s:%d: interrupted: the projection is stopping", ar->short_src,
                          ar->currentline);
        else
            annal__pj_fmt(l->stop_msg, sizeof l->stop_msg,
                          "%s:%d: Lua ran longer than its budget of %u ms", ar->short_src,
                          ar->currentline, (unsigned)l->budget_ms);
        /* From now on at every instruction: a pcall in the handler that catches this
         * error gets back control for one instruction only. */
        lua_sethook(L, budget_hook, LUA_MASKCOUNT, 1);
    }
    lua_pushstring(L, l->stop_msg);
    lua_error(L);
}

static void budget_start(pj_lua *l) {
    clock_gettime(CLOCK_MONOTONIC, &l->deadline);
    l->deadline.tv_sec += (time_t)(l->budget_ms / 1000);
    l->deadline.tv_nsec += (long)(l->budget_ms % 1000) * 1000000L;
    if (l->deadline.tv_nsec >= 1000000000L) {
        l->deadline.tv_sec++;
        l->deadline.tv_nsec -= 1000000000L;
    }
    l->stopped = STOP_NONE;
    lua_sethook(l->L, budget_hook, LUA_MASKCOUNT, HOOK_EVERY);
}

static void budget_end(pj_lua *l) { lua_sethook(l->L, NULL, 0, 0); }

/* ---------------------------------------------------------------- states */

/* load() for text only: binary chunks are unverified bytecode that can crash the process. */
static int l_load(lua_State *L) {
    luaL_checkany(L, 1);
    int env = lua_gettop(L) >= 4; /* env given (even nil) is not env absent */
    lua_settop(L, 4);             /* absent arguments are nils, below what is pushed next */
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushvalue(L, 1);
    lua_pushvalue(L, 2);
    lua_pushliteral(L, "t");
    if (env) lua_pushvalue(L, 4);
    lua_call(L, env ? 4 : 3, LUA_MULTRET);
    return lua_gettop(L) - 4;
}

static lua_State *new_state(pj_lua *l) {
    lua_State *L = luaL_newstate();
    if (!L) return NULL;
    *(pj_lua **)lua_getextraspace(L) = l;
    static const luaL_Reg libs[] = {
        {LUA_GNAME, luaopen_base},        {LUA_TABLIBNAME, luaopen_table},
        {LUA_STRLIBNAME, luaopen_string}, {LUA_MATHLIBNAME, luaopen_math},
        {LUA_UTF8LIBNAME, luaopen_utf8},  {NULL, NULL}};
    for (const luaL_Reg *r = libs; r->name; r++) {
        luaL_requiref(L, r->name, r->func, 1);
        lua_pop(L, 1);
    }
    /* No files, processes, modules or debug library (most are never opened; cleared
     * anyway, so that opening one later is a visible change here), no bytecode. */
    static const char *const gone[] = {"dofile", "loadfile", "require",        "package", "os",
                                       "io",     "debug",    "collectgarbage", NULL};
    for (const char *const *g = gone; *g; g++) {
        lua_pushnil(L);
        lua_setglobal(L, *g);
    }
    lua_getglobal(L, LUA_STRLIBNAME);
    lua_pushnil(L);
    lua_setfield(L, -2, "dump");
    lua_pop(L, 1);
    lua_getglobal(L, "load");
    lua_pushcclosure(L, l_load, 1);
    lua_setglobal(L, "load");
    static const luaL_Reg fns[] = {
        {"sql", l_sql},   {"emit", l_emit}, {"state_get", l_state_get}, {"state_set", l_state_set},
        {"json", l_json}, {NULL, NULL}};
    for (const luaL_Reg *r = fns; r->name; r++) {
        lua_pushcfunction(L, r->func);
        lua_setglobal(L, r->name);
    }
    lua_newtable(L);
    lua_setglobal(L, "on");
    return L;
}

static int compile_chunk(pj_lua *l, const annal_proj_def *d, char *msg, size_t msg_n) {
    char chunk[300];
    annal__pj_fmt(chunk, sizeof chunk, "@%s", d->filename);
    if (luaL_loadbufferx(l->L, d->lua, d->lua_len, chunk, "t") != LUA_OK) {
        annal__pj_fmt(msg, msg_n, "%s", lua_tostring(l->L, -1));
        lua_pop(l->L, 1);
        return -1;
    }
    return 0;
}

/* Compile and run the chunk (defining the handlers), within the budget. */
static int load_chunk(pj_lua *l, const annal_proj_def *d, char *msg, size_t msg_n) {
    lua_State *L = l->L;
    if (compile_chunk(l, d, msg, msg_n) != 0) return -1;
    budget_start(l);
    int rc = lua_pcall(L, 0, 0, 0);
    budget_end(l);
    if (rc != LUA_OK) {
        annal__pj_fmt(msg, msg_n, "%s", lua_tostring(L, -1));
        lua_pop(L, 1);
        return -1;
    }
    /* every member of `on` must be a handler */
    lua_getglobal(L, "on");
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        annal__pj_fmt(msg, msg_n, "%s:%d: [lua]: 'on' must stay a table of handlers", d->filename,
                      d->lua_line);
        return -1;
    }
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        if (!lua_isfunction(L, -1) || lua_type(L, -2) != LUA_TSTRING) {
            annal__pj_fmt(msg, msg_n, "%s:%d: [lua]: on.%s is not a function", d->filename,
                          d->lua_line, lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?");
            lua_pop(L, 3);
            return -1;
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return 0;
}

int annal__pj_lua_check(const annal_proj_def *d, char *msg, size_t msg_n) {
    pj_lua l;
    memset(&l, 0, sizeof l);
    l.ret_ref = LUA_NOREF;
    l.L = new_state(&l);
    if (!l.L) {
        annal__pj_fmt(msg, msg_n, "out of memory");
        return -1;
    }
    /* compiled, not run: running it is the projector's business, under its budget */
    int rc = compile_chunk(&l, d, msg, msg_n);
    lua_close(l.L);
    return rc;
}

annal_err annal__pj_lua_open(const annal_proj_def *d, annal_proj *p, const pj_lua_host *host,
                             uint32_t budget_ms, pj_lua **out, char *err, size_t err_n) {
    *out = NULL;
    pj_lua *l = calloc(1, sizeof *l);
    if (!l) return ANNAL_ENOMEM;
    l->p = p;
    l->host = host;
    l->budget_ms = budget_ms;
    l->ret_ref = LUA_NOREF;
    l->fname = d->filename;
    l->L = new_state(l);
    if (!l->L) {
        free(l);
        return ANNAL_ENOMEM;
    }
    if (load_chunk(l, d, err, err_n) != 0) {
        annal_err rc = l->stopped == STOP_CANCEL ? ANNAL_ECANCELED : ANNAL_EINVAL;
        annal__pj_lua_close(l);
        return rc;
    }
    *out = l;
    return ANNAL_OK;
}

void annal__pj_lua_close(pj_lua *l) {
    if (!l) return;
    lua_close(l->L);
    free(l);
}

int annal__pj_lua_has(pj_lua *l, const char *type) {
    lua_State *L = l->L;
    int t = LUA_TNIL;
    lua_getglobal(L, "on");
    if (lua_istable(L, -1)) {
        t = lua_getfield(L, -1, type);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return t == LUA_TFUNCTION;
}

static void set_s(lua_State *L, const char *k, const char *s, size_t n) {
    lua_pushlstring(L, s, n);
    lua_setfield(L, -2, k);
}

static void set_i(lua_State *L, const char *k, lua_Integer i) {
    lua_pushinteger(L, i);
    lua_setfield(L, -2, k);
}

annal_err annal__pj_lua_call(pj_lua *l, const char *type, annal_proj_tx *tx, const annal_event *ev,
                             int *skip_sql, char *err, size_t err_n) {
    lua_State *L = l->L;
    *skip_sql = 0;
    luaL_unref(L, LUA_REGISTRYINDEX, l->ret_ref);
    l->ret_ref = LUA_NOREF;
    lua_getglobal(L, "on");
    lua_getfield(L, -1, type);
    lua_remove(L, -2);
    lua_createtable(L, 0, 12);
    set_s(L, "stream", ev->stream, ev->stream_len);
    const char *dash = memchr(ev->stream, '-', ev->stream_len);
    if (dash) {
        set_s(L, "stream_id", dash + 1, ev->stream_len - (size_t)(dash + 1 - ev->stream));
        set_s(L, "category", ev->stream, (size_t)(dash - ev->stream));
    } else {
        set_s(L, "stream_id", ev->stream, ev->stream_len);
        set_s(L, "category", ev->stream, ev->stream_len);
    }
    set_s(L, "type", ev->type, ev->type_len);
    char id[37];
    annal_uuid_format(&ev->id, id);
    set_s(L, "id", id, 36);
    set_i(L, "revision", (lua_Integer)ev->revision);
    set_i(L, "position", (lua_Integer)ev->position);
    set_i(L, "timestamp_ms", (lua_Integer)(ev->timestamp_ns / 1000000));
    push_json_text(L, ev->data, ev->data_len);
    lua_setfield(L, -2, "data");
    push_json_text(L, ev->metadata, ev->metadata_len);
    lua_setfield(L, -2, "metadata");
    l->tx = tx;
    l->infra = ANNAL_OK;
    budget_start(l);
    int rc = lua_pcall(L, 1, 1, 0);
    budget_end(l);
    l->tx = NULL;
    if (l->stopped != STOP_NONE) { /* the hook's word, even if Lua caught it and went on */
        annal__pj_fmt(err, err_n, "%s", l->stop_msg);
        lua_pop(L, 1);
    } else if (rc != LUA_OK) {
        annal__pj_fmt(err, err_n, "%s", lua_tostring(L, -1));
        lua_pop(L, 1);
    }
    if (l->stopped == STOP_CANCEL) return ANNAL_ECANCELED;
    if (l->stopped == STOP_BUDGET) return ANNAL_ETIMEDOUT;
    if (rc != LUA_OK) return l->infra != ANNAL_OK ? l->infra : ANNAL_EINVAL;
    if (lua_isboolean(L, -1) && !lua_toboolean(L, -1)) *skip_sql = 1;
    if (lua_istable(L, -1)) {
        l->ret_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    } else {
        lua_pop(L, 1);
    }
    return ANNAL_OK;
}

int annal__pj_lua_value(pj_lua *l, const char *key, annal_proj_value *v) {
    lua_State *L = l->L;
    memset(v, 0, sizeof *v);
    v->kind = ANNAL_PROJ_NULL;
    if (l->ret_ref == LUA_NOREF) return 0;
    lua_rawgeti(L, LUA_REGISTRYINDEX, l->ret_ref);
    lua_getfield(L, -1, key);
    switch (lua_type(L, -1)) {
    case LUA_TBOOLEAN:
        v->kind = ANNAL_PROJ_INT;
        v->i = lua_toboolean(L, -1);
        break;
    case LUA_TNUMBER:
        if (lua_isinteger(L, -1)) {
            v->kind = ANNAL_PROJ_INT;
            v->i = (int64_t)lua_tointeger(L, -1);
        } else {
            v->kind = ANNAL_PROJ_REAL;
            v->d = lua_tonumber(L, -1);
        }
        break;
    case LUA_TSTRING:
        /* the string stays alive: it is held by the referenced table */
        v->kind = ANNAL_PROJ_TEXT;
        v->s = lua_tolstring(L, -1, &v->len);
        break;
    default: break;
    }
    lua_pop(L, 2);
    return 1;
}
