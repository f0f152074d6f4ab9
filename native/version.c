/*
** version.c: see version.h.
*/
#include <sqlite3.h>

#include "version.h"

const char *rmt_sqlite_version(void) {
    return sqlite3_libversion();
}
