/* Subscriptions (placeholder). */
#include "store/db_int.h"
