/* meta.c -- merges a command's metadata (correlation, causation, user, extra members) and
 * the schema version into the JSON metadata of each event the command produces.
 * Texts are made with json_dumpb into our own malloc'd buffer, so an application that
 * swaps jansson's allocator never gets memory freed by the wrong free. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "write.h"

static annal_err set_str(json_t *o, const char *key, const char *val, char *err, size_t errlen) {
    if (!val) return ANNAL_OK;
    json_t *s = json_string(val);
    if (!s) {
        snprintf(err, errlen, "command metadata %s is not valid UTF-8", key);
        return ANNAL_EINVAL;
    }
    return json_object_set_new(o, key, s) == 0 ? ANNAL_OK : ANNAL_ENOMEM;
}

annal_err annal__write_cmeta_init(annal__write_cmeta *cm, const annal_command_meta *meta, char *err,
                                  size_t errlen) {
    cm->obj = NULL;
    if (!meta || (!meta->correlation_id && !meta->causation_id && !meta->user && !meta->extra))
        return ANNAL_OK;
    json_t *o;
    if (meta->extra) {
        json_error_t je;
        o = json_loads(meta->extra, 0, &je);
        if (!o || !json_is_object(o)) {
            json_decref(o);
            snprintf(err, errlen, "command metadata extra is not a JSON object: %s",
                     o ? "other value" : je.text);
            return ANNAL_EINVAL;
        }
    } else if (!(o = json_object())) {
        return ANNAL_ENOMEM;
    }
    annal_err rc = set_str(o, "correlationId", meta->correlation_id, err, errlen);
    if (rc == ANNAL_OK) rc = set_str(o, "causationId", meta->causation_id, err, errlen);
    if (rc == ANNAL_OK) rc = set_str(o, "user", meta->user, err, errlen);
    if (rc != ANNAL_OK) {
        json_decref(o);
        return rc;
    }
    cm->obj = o;
    return ANNAL_OK;
}

void annal__write_cmeta_free(annal__write_cmeta *cm) {
    json_decref(cm->obj);
    cm->obj = NULL;
}

annal_err annal__write_meta_merge(const annal__write_cmeta *cm, uint32_t schema, const void *meta,
                                  size_t len, char **out, size_t *out_len, char *err,
                                  size_t errlen) {
    *out = NULL;
    *out_len = 0;
    if (!cm->obj && schema <= 1) return ANNAL_OK;
    json_t *o;
    if (len) {
        json_error_t je;
        o = json_loadb(meta, len, 0, &je);
        if (!o || !json_is_object(o)) {
            json_decref(o);
            snprintf(err, errlen, "event metadata is not a JSON object: %s",
                     o ? "other value" : je.text);
            return ANNAL_EINVAL;
        }
    } else if (!(o = json_object())) {
        return ANNAL_ENOMEM;
    }
    annal_err rc = ANNAL_OK;
    if (cm->obj && json_object_update(o, cm->obj) != 0) rc = ANNAL_ENOMEM;
    if (rc == ANNAL_OK && schema > 1 &&
        json_object_set_new(o, ANNAL_SCHEMA_KEY, json_integer((json_int_t)schema)) != 0)
        rc = ANNAL_ENOMEM;
    if (rc == ANNAL_OK) {
        size_t n = json_dumpb(o, NULL, 0, JSON_COMPACT);
        char *buf = n ? malloc(n) : NULL;
        if (!buf || json_dumpb(o, buf, n, JSON_COMPACT) != n) {
            free(buf);
            rc = ANNAL_ENOMEM;
        } else {
            *out = buf;
            *out_len = n;
        }
    }
    json_decref(o);
    return rc;
}
