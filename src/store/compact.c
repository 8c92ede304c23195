/* Compaction (placeholder). */
#include "store/db_int.h"
