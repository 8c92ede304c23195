/* Error names and messages, version queries and annal_free. The switches have no
 * default so that -Wswitch flags a code without a message. */
#include <stdlib.h>

#include "annal.h"

int annal_version_number(void) { return ANNAL_VERSION_NUMBER; }
const char *annal_version_string(void) { return ANNAL_VERSION_STRING; }
void annal_free(void *p) { free(p); }

const char *annal_strerror(annal_err e) {
    switch (e) {
    case ANNAL_OK: return "success";
    case ANNAL_END: return "no more items";
    case ANNAL_ENOMEM: return "out of memory";
    case ANNAL_EINVAL: return "invalid argument";
    case ANNAL_EIO: return "input/output error";
    case ANNAL_ENOSPC: return "no space left on device";
    case ANNAL_ECORRUPT: return "data is corrupt";
    case ANNAL_ENOTFOUND: return "not found";
    case ANNAL_ECONFLICT: return "wrong expected revision";
    case ANNAL_EDUPLICATE: return "event id already used";
    case ANNAL_ETOOBIG: return "event or batch too big";
    case ANNAL_EBUSY: return "store is open for writing by another process";
    case ANNAL_EREADONLY: return "store is open read-only";
    case ANNAL_EFAILED: return "an earlier write failed: reopen the store to recover";
    case ANNAL_EVERSION: return "unsupported store format version";
    case ANNAL_ECANCELED: return "canceled";
    case ANNAL_EDELETED: return "stream deleted";
    case ANNAL_ETIMEDOUT: return "timed out";
    case ANNAL_EPERM: return "permission denied";
    case ANNAL_ECONDITION: return "an event matching the append condition exists";
    case ANNAL_ENOTSUP: return "not supported";
    case ANNAL_ERR_COUNT: break;
    }
    return "unknown error";
}

const char *annal_errname(annal_err e) {
    switch (e) {
    case ANNAL_OK: return "ANNAL_OK";
    case ANNAL_END: return "ANNAL_END";
    case ANNAL_ENOMEM: return "ANNAL_ENOMEM";
    case ANNAL_EINVAL: return "ANNAL_EINVAL";
    case ANNAL_EIO: return "ANNAL_EIO";
    case ANNAL_ENOSPC: return "ANNAL_ENOSPC";
    case ANNAL_ECORRUPT: return "ANNAL_ECORRUPT";
    case ANNAL_ENOTFOUND: return "ANNAL_ENOTFOUND";
    case ANNAL_ECONFLICT: return "ANNAL_ECONFLICT";
    case ANNAL_EDUPLICATE: return "ANNAL_EDUPLICATE";
    case ANNAL_ETOOBIG: return "ANNAL_ETOOBIG";
    case ANNAL_EBUSY: return "ANNAL_EBUSY";
    case ANNAL_EREADONLY: return "ANNAL_EREADONLY";
    case ANNAL_EFAILED: return "ANNAL_EFAILED";
    case ANNAL_EVERSION: return "ANNAL_EVERSION";
    case ANNAL_ECANCELED: return "ANNAL_ECANCELED";
    case ANNAL_EDELETED: return "ANNAL_EDELETED";
    case ANNAL_ETIMEDOUT: return "ANNAL_ETIMEDOUT";
    case ANNAL_EPERM: return "ANNAL_EPERM";
    case ANNAL_ECONDITION: return "ANNAL_ECONDITION";
    case ANNAL_ENOTSUP: return "ANNAL_ENOTSUP";
    case ANNAL_ERR_COUNT: break;
    }
    return "ANNAL_E?";
}
