/* Stream metadata and deletion (placeholder). */
#include "store/db_int.h"
